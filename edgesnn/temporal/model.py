"""A feed-forward spiking network over sequences (N, T, *frame): each frame flattened, then pairs of a
``QLinear`` and a neuron layer (LIF, CubaLIF, RLIF; an LI only last), read out over the T steps as the
IR's ``sequence.readout`` does (``count`` of the last layer's spikes, ``last`` or ``mean`` of the LI).

``forward`` (training) gives real logits for a loss; :meth:`SpikingSequence.integers` gives, without
gradients, the exact integers :func:`edgesnn.ir.state.run_sequence` gives for the exported graph.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.ir.state import READOUTS
from edgesnn.temporal.neurons import LI, NEURONS, QLinear

INPUT_QMAX = 127  # int8 input frames


class SpikingSequence(nn.Module):
    """``layers``: QLinear, neuron, QLinear, neuron, ... The input scale is the power of two covering the
    largest |x| of the data (:meth:`calibrate`): binary events are exact as the integer 64."""

    def __init__(self, frame_shape, layers: list[nn.Module], readout: str = "mean"):
        super().__init__()
        if not layers or len(layers) % 2 or not all(isinstance(m, QLinear) for m in layers[0::2]) \
                or not all(isinstance(m, NEURONS) for m in layers[1::2]):
            raise EdgesnnError("a spiking sequence model is pairs of QLinear and a neuron layer "
                               "(LIF, CubaLIF, RLIF, LI)")
        if any(isinstance(m, LI) for m in layers[1:-1:2]):
            raise EdgesnnError("an LI layer (no spikes) can only be the last layer")
        if readout not in READOUTS:
            raise EdgesnnError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        last = layers[-1]
        if (readout == "count") == isinstance(last, LI):
            raise EdgesnnError(f"readout {readout!r} does not suit a last layer {type(last).__name__}: count reads "
                               f"spikes, last and mean an LI membrane")
        features = math.prod(frame_shape)
        for lin, neuron in zip(layers[0::2], layers[1::2]):
            if lin.in_features != features or lin.out_features != neuron.channels:
                raise EdgesnnError(f"QLinear {lin.in_features}->{lin.out_features} does not take {features} features "
                                   f"to {type(neuron).__name__}({neuron.channels})")
            features = neuron.channels
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.layers = nn.ModuleList(layers)
        self.readout = readout
        self.register_buffer("input_scale", torch.zeros(()))

    @property
    def pairs(self) -> list[tuple[QLinear, nn.Module]]:
        return list(zip(self.layers[0::2], self.layers[1::2]))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        m = float(torch.as_tensor(x).abs().max()) if torch.as_tensor(x).numel() else 0.0
        self.input_scale.fill_(2.0 ** math.ceil(math.log2(max(m, 1e-30) / INPUT_QMAX)))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """float frames -> int8 levels, as ``Graph.quantize_input`` (float32, round half away from zero)."""
        if float(self.input_scale) <= 0:
            raise EdgesnnError("the model has no input scale yet: calibrate it on the training data first")
        v = x.to(torch.float32) / self.input_scale.to(torch.float32)
        return torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5), -128, 127)

    def steps(self, x: torch.Tensor, exact: bool) -> torch.Tensor:
        """The last layer's output at every step (N, T, C): integer-valued floats, or int64 when ``exact``."""
        if x.dim() != 2 + len(self.frame_shape) or tuple(x.shape[2:]) != self.frame_shape:
            raise EdgesnnError(f"input sequences have shape {tuple(x.shape)}; this model takes (batch, T, "
                               f"{', '.join(map(str, self.frame_shape))})")
        xq = self.quantize_input(x)
        if exact:
            xq = xq.to(torch.int64)
        states = self.init_states(len(x), xq)
        return torch.stack([self.step(xq[:, t], states) for t in range(x.shape[1])], 1)

    def init_states(self, n: int, like: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [neuron.init_state(n, like) for _, neuron in self.pairs]

    def step(self, frame: torch.Tensor, states: list[dict], scale: float | None = None) -> torch.Tensor:
        """One timestep of integer frames (N, *frame) on ``scale`` (default: the input's) through the pairs."""
        h, scale = frame.flatten(1), float(self.input_scale) if scale is None else scale
        for (lin, neuron), state in zip(self.pairs, states):
            h = neuron.step(lin.step(h, scale, neuron.scale, neuron.current), state)
            scale = 1.0  # spikes
        return h

    def reduce(self, steps: torch.Tensor) -> torch.Tensor:
        """The readout's integers over T: count and mean sum, last takes the last step."""
        return steps[:, -1] if self.readout == "last" else steps.sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real logits (N, C): the readout's real value (spike counts; the LI membrane last or mean)."""
        q = self.reduce(self.steps(x, exact=False))
        if self.readout == "count":
            return q
        scale = self.layers[-1].scale
        return q * scale / (x.shape[1] if self.readout == "mean" else 1)

    @torch.no_grad()
    def integers(self, x: torch.Tensor, keep_steps: bool = False) -> dict[str, np.ndarray]:
        """The IR's integers: ``{"readout": (N, C)}`` (int32 for count and mean, the state's dtype for
        last) and with ``keep_steps`` also ``"steps"`` (N, T, C): what ``run_sequence`` gives."""
        steps = self.steps(torch.as_tensor(x), exact=True)
        last = self.layers[-1]
        step_dtype = np.int8 if last.spiking else np.dtype(last.dtype)
        q = self.reduce(steps).cpu().numpy()
        out = {"readout": q.astype(step_dtype if self.readout == "last" else np.int32)}
        if self.readout != "last" and q.size and (q.min() < -(2**31) or q.max() > 2**31 - 1):
            raise EdgesnnError(f"the {self.readout} readout over {x.shape[1]} steps does not fit int32")
        if keep_steps:
            out["steps"] = steps.cpu().numpy().astype(step_dtype)
        return out


def dense_model(frame_shape, classes: int, hidden: int = 64, neuron: str = "lif", beta: float = 0.9,
                bits: int = 12, levels: int = 64, reset: str = "subtract", readout_beta: float = 0.9,
                readout_alpha: float | None = None, learn_beta: bool = False, learn_readout_beta: bool = False,
                max_spike: int = 1, seed: int = 0) -> SpikingSequence:
    """flatten -> Linear -> ``neuron`` (lif, cuba_lif, rlif) -> Linear -> LI, read out as the LI's mean.
    Every argument is plain JSON, so (frame_shape, classes, **kwargs) can be a checkpoint's config; the
    weights are initialized from ``seed`` without touching torch's global generator. ``learn_beta``: the
    hidden layer's beta is trained, quantized to the IR's 12-bit decay in every forward; ``learn_readout_beta``:
    the LI readout's, the same way. ``max_spike`` D > 1: the hidden layer emits 0..D spikes per step (MultiSpike)."""
    from edgesnn.temporal.neurons import LIF, RLIF, CubaLIF

    kinds = {"lif": LIF, "cuba_lif": CubaLIF, "rlif": RLIF}
    if neuron not in kinds:
        raise EdgesnnError(f"neuron must be one of {', '.join(kinds)}, got {neuron!r}")
    features = math.prod(frame_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hidden_layer = kinds[neuron](hidden, beta=beta, bits=bits, levels=levels, reset=reset, learn_beta=learn_beta,
                                     max_spike=max_spike)
        layers = [QLinear(features, hidden), hidden_layer, QLinear(hidden, classes),
                  LI(classes, beta=readout_beta, alpha=readout_alpha, learn_beta=learn_readout_beta)]
    return SpikingSequence(frame_shape, layers, readout="mean")
