"""Convolutional spiking models over sequences, the usual event-camera SNN (N-MNIST / DVS style): each
frame (C, H, W) goes through blocks of ``QConv2d`` -> a neuron layer with one state per channel and pixel
-> a 2-d sum pool, then is flattened into the pairs of :class:`~edgesnn.temporal.model.SpikingSequence`
(QLinear -> LIF ... -> LI). Exported, each block is the IR's static ``conv2d`` and ``sum_pool2d`` run once
per step around a ``lif`` / ``cuba_lif`` whose states have shape (H, W, C) (edgesnn/temporal/export.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.ir.packing import widen
from edgesnn.temporal.model import SpikingSequence
from edgesnn.temporal.neurons import LI, LIF, CubaLIF, QLinear, _requantize, round_ste

CONV_NEURONS = (LIF, CubaLIF)  # a recurrent all-to-all weight over every pixel is not a conv layer's
CONV_CURRENTS = ("int8", "state")  # a conv's current: int8 (TFLite's convolutions keep int8), or the state's dtype


class QConv2d(nn.Conv2d):
    """A stride-1 "same" convolution with int8 weights per output channel (straight-through) whose output
    is the current on the next neuron's grid, as :class:`QLinear`'s. Eval computes the IR ``conv2d``: the
    exact integer sums (float64 holds them: |x|, |w| <= 127, at most 2**53 / 127**2 taps) plus the integer
    bias, requantized per output channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3):
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise EdgesnnError(f"kernel must be a positive odd integer (a 'same' convolution), got {kernel!r}")
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)

    # weights int8 per output channel, or on fewer bits (QLinear.set_weight_grid: quantize --method qsnn)
    weight_quantizer, weight_bits, weight_t = QLinear.weight_quantizer, QLinear.weight_bits, QLinear.weight_t
    set_weight_grid, weight_code, weight_grid = QLinear.set_weight_grid, QLinear.weight_code, QLinear.weight_grid
    integers = QLinear.integers  # weight [out, in, kh, kw]; the bias, multipliers and shifts as QLinear's

    @property
    def out_features(self) -> int:  # what QLinear.integers sizes the bias by
        return self.out_channels

    def step(self, x: torch.Tensor, in_scale: float, out_scale: float, current: tuple[int, int]) -> torch.Tensor:
        """One timestep: integer frames (N, C, H, W) on ``in_scale`` -> integer currents on ``out_scale``."""
        if not x.is_floating_point():
            p = self.integers(in_scale, out_scale)
            w = torch.from_numpy(widen(p["weight"], p["weight_bits"], p["weight_code"])).to(torch.float64)
            acc = F.conv2d(x.to(torch.float64), w, padding=self.padding)
            acc = acc.to(torch.int64) + torch.from_numpy(p["bias"]).to(torch.int64)[:, None, None]
            where = f"conv {self.in_channels}->{self.out_channels}"
            y = _requantize(acc.permute(0, 2, 3, 1), p["multiplier"], p["shift"], current, where)  # channels last
            return y.permute(0, 3, 1, 2)
        w, _, _ = self.weight_grid()
        cur = F.conv2d(x * in_scale, w, self.bias, padding=self.padding)
        return torch.clamp(round_ste(cur / out_scale), *current)


def _check_pool(pool) -> int:
    if isinstance(pool, bool) or not isinstance(pool, int) or not 1 <= pool <= 11:
        raise EdgesnnError(f"pool must be an integer in 1..11 (its window sum of spikes fits int8), got {pool!r}")
    return pool


def sum_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """The exact k x k window sum, stride k, no padding (the IR's ``sum_pool2d``; odd edges dropped)."""
    if not x.is_floating_point():
        return F.avg_pool2d(x.to(torch.float64), k, k, divisor_override=1).to(torch.int64)
    return F.avg_pool2d(x, k, k, divisor_override=1)


class ConvSpikingSequence(SpikingSequence):
    """``blocks`` of (QConv2d, LIF or CubaLIF), each followed by a ``pool`` x ``pool`` sum of its spikes
    (counts 0..pool**2 on scale 1), then ``head``: QLinear, neuron, ... as :class:`SpikingSequence`'s,
    over the flattened (C, H, W) features. ``conv_current`` int8: each conv's current is clamped to int8
    on the membrane's grid (the IR tensor is int8, which every backend's convolution writes); ``state``: to
    the membrane's dtype, as a QLinear's."""

    def __init__(self, frame_shape, blocks: list[tuple[QConv2d, nn.Module]], head: list[nn.Module],
                 readout: str = "mean", pool: int = 2, conv_current: str = "int8"):
        if conv_current not in CONV_CURRENTS:
            raise EdgesnnError(f"conv_current must be one of {', '.join(CONV_CURRENTS)}, got {conv_current!r}")
        if len(frame_shape) != 3:
            raise EdgesnnError(f"a convolutional sequence model takes (C, H, W) frames, got {tuple(frame_shape)}")
        _check_pool(pool)
        if not blocks:
            raise EdgesnnError("a convolutional sequence model needs at least one conv block")
        c, h, w = (int(d) for d in frame_shape)
        shapes = []
        for conv, neuron in blocks:
            if not isinstance(conv, QConv2d) or not isinstance(neuron, CONV_NEURONS):
                raise EdgesnnError("a conv block is a QConv2d and a LIF or CubaLIF layer")
            if pool * pool * neuron.max_spike > 127:
                raise EdgesnnError(f"a {pool}x{pool} sum of up to {neuron.max_spike} spikes per step (max_spike) can "
                                   f"reach {pool * pool * neuron.max_spike}, beyond the int8 of the pooled counts")
            if conv.in_channels != c or conv.out_channels != neuron.channels:
                raise EdgesnnError(f"QConv2d {conv.in_channels}->{conv.out_channels} does not take {c} channels to "
                                   f"{type(neuron).__name__}({neuron.channels})")
            shapes.append((neuron.channels, h, w))
            if h < pool or w < pool:
                raise EdgesnnError(f"frames {tuple(frame_shape)} are too small for {len(blocks)} blocks pooled "
                                   f"{pool}x{pool}: a block gets {h}x{w}")
            c, h, w = neuron.channels, h // pool, w // pool
        super().__init__((c, h, w), head, readout)
        self.features_shape, self.frame_shape = (c, h, w), tuple(int(d) for d in frame_shape)
        self.convs = nn.ModuleList([conv for conv, _ in blocks])
        self.conv_neurons = nn.ModuleList([neuron for _, neuron in blocks])
        self.block_shapes, self.pool, self.conv_current = shapes, pool, conv_current

    def current_dtype(self, neuron: nn.Module) -> str:
        """The dtype of the current a conv block's neuron reads."""
        return "int8" if self.conv_current == "int8" else neuron.dtype

    def current_range(self, neuron: nn.Module) -> tuple[int, int]:
        return (-128, 127) if self.conv_current == "int8" else neuron.current

    @property
    def blocks(self) -> list[tuple[QConv2d, nn.Module]]:
        return list(zip(self.convs, self.conv_neurons))

    def init_states(self, n: int, like: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        convs = [neuron.init_state(n, like, shape) for (_, neuron), shape in zip(self.blocks, self.block_shapes)]
        return convs + super().init_states(n, like)

    def step(self, frame: torch.Tensor, states: list[dict], scale: float | None = None) -> torch.Tensor:
        h, scale = frame, float(self.input_scale)
        for (conv, neuron), state in zip(self.blocks, states):
            h = sum_pool(neuron.step(conv.step(h, scale, neuron.scale, self.current_range(neuron)), state), self.pool)
            scale = 1.0  # spike counts
        return super().step(h, states[len(self.convs):], scale)


def conv_model(frame_shape, classes: int, channels=(8, 16), neuron: str = "lif", beta: float = 0.9, bits: int = 12,
               levels: int = 64, reset: str = "subtract", kernel: int = 3, pool: int = 2, conv_current: str = "int8",
               readout_beta: float = 0.9, readout_alpha: float | None = None, learn_beta: bool = False,
               learn_readout_beta: bool = False, max_spike: int = 1, seed: int = 0) -> ConvSpikingSequence:
    """(C, H, W) frames -> per entry of ``channels``: QConv2d kernel x kernel -> ``neuron`` (lif, cuba_lif)
    -> sum pool ``pool`` x ``pool``; then flatten -> QLinear -> LI, read out as the LI's mean. Every argument
    is plain JSON (the dense model's, plus channels, kernel, pool and conv_current; ``learn_beta`` trains each
    conv layer's beta, quantized to the IR's decay in every forward; ``learn_readout_beta`` the LI's); weights come
    from ``seed`` without
    touching torch's global generator."""
    kinds = {"lif": LIF, "cuba_lif": CubaLIF}
    if neuron not in kinds:
        raise EdgesnnError(f"neuron must be one of {', '.join(kinds)}, got {neuron!r}")
    if not isinstance(channels, (list, tuple)) or not channels or len(channels) > 8 \
            or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024 for c in channels):
        raise EdgesnnError(f"channels must be a list of 1 to 8 integers in 1..1024 (one conv block each), "
                           f"got {channels!r}")
    if len(frame_shape) != 3:
        raise EdgesnnError(f"temporal-conv takes (C, H, W) frames, got {tuple(frame_shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks, c = [], int(frame_shape[0])
        for out in channels:
            blocks.append((QConv2d(c, out, kernel),
                           kinds[neuron](out, beta=beta, bits=bits, levels=levels, reset=reset, learn_beta=learn_beta,
                                         max_spike=max_spike)))
            c = out
        h, w = int(frame_shape[1]), int(frame_shape[2])
        for _ in channels:
            h, w = h // _check_pool(pool), w // pool
        features = c * max(h, 1) * max(w, 1)  # a frame too small: ConvSpikingSequence names it
        head = [QLinear(features, classes),
                LI(classes, beta=readout_beta, alpha=readout_alpha, learn_beta=learn_readout_beta)]
    return ConvSpikingSequence(frame_shape, blocks, head, readout="mean", pool=pool, conv_current=conv_current)

