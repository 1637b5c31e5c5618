"""Torch neurons with state over T real timesteps, trained by BPTT, that deploy bit for bit as the IR's
``lif`` / ``cuba_lif`` / ``li`` / ``recurrent`` ops (edgesnn/ir/state.py, docs/temporal.md).

Every state is an integer on a fixed grid (Q-SNN's low-bit membrane): real = scale * q, held to ``bits``.
A spiking neuron's grid is its threshold split into ``levels`` steps (scale = threshold / levels), so the
threshold is the integer ``levels``; the leak is Loihi's integer decay d / 4096 (beta = 1 - d / 4096).

Two forwards share one set of formulas, written per step in snnTorch's style:

- training (``exact=False``): float tensors that hold integers; each rounding (the current on the
  membrane's grid, the decay's truncation toward zero) is straight-through and the spike has a
  fast-sigmoid surrogate gradient, so BPTT sees the integer program it deploys;
- eval (``exact=True``): int64 tensors and the IR's arithmetic itself: the linear layers requantize with
  :func:`edgesnn.ir.fixedpoint.multiply_by_quantized_multiplier` from the multipliers the exporter writes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.ir.fixedpoint import effective_multiplier, multiply_by_quantized_multiplier, quantize_multipliers
from edgesnn.ir.packing import check_format, widen, widening_shift
from edgesnn.ir.state import DECAY_SHIFT, DECAY_UNITY, MAX_SPIKE, RESETS

WEIGHT_QMAX = 127  # int8 weights, symmetric per output channel
INT32 = (-(2**31), 2**31 - 1)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def trunc_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.trunc(x) - x).detach()


def decay(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Loihi's decay, |v| shrunk by d / 4096 rounded toward zero: exact on int64, straight-through on float."""
    if not v.is_floating_point():
        p = v * (DECAY_UNITY - d)
        return torch.sign(p) * (p.abs() >> DECAY_SHIFT)
    return trunc_ste(v * ((DECAY_UNITY - d.to(v.dtype)) / DECAY_UNITY))


class _Spike(torch.autograd.Function):
    """[x > 0] with the fast-sigmoid surrogate 1 / (1 + slope |x|)^2 (snnTorch's default)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad / (1 + ctx.slope * x.abs()) ** 2, None


class _MultiSpike(torch.autograd.Function):
    """The count of thresholds k theta (k = 1..D) that v exceeds, clip(floor((v - 1) / theta), 0, D), with
    the sum of the D fast-sigmoid surrogates of (v - k theta) / theta: for D = 1 that is :class:`_Spike`."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, theta: float, top: int, slope: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.theta, ctx.top, ctx.slope = theta, top, slope
        return torch.clamp(torch.floor((v - 1) / theta), 0, top)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (v,) = ctx.saved_tensors
        u = v / ctx.theta
        surrogate = sum(1 / (1 + ctx.slope * (u - k).abs()) ** 2 for k in range(1, ctx.top + 1))
        return grad * surrogate / ctx.theta, None, None, None


def decay_of(beta: float, where: str) -> int:
    """The integer decay d of a multiplicative leak beta: beta = 1 - d / 4096 (beta 1: IF, no leak)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise EdgesnnError(f"{where}: beta must be a number in 0..1, got {beta!r}")
    return int(round(DECAY_UNITY * (1.0 - beta)))


def _check_bits(bits: int, where: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise EdgesnnError(f"{where}: state bits must be an integer in 2..32, got {bits!r}")
    return bits


def _dtype_of(bits: int) -> str:
    return "int8" if bits <= 8 else "int16" if bits <= 16 else "int32"


class QLinear(nn.Linear):
    """A linear layer with int8 weights per output channel (straight-through) whose output is the current
    on the next neuron's grid: ``round((x_real @ W^T + b) / state_scale)``, clamped to the current's dtype.
    Eval computes the IR dense op: int32 accumulator of the integers plus the integer bias, requantized.

    :meth:`set_weight_grid` puts the weights on fewer bits (``edgesnn quantize --method qsnn``): the IR op
    then holds them as ``weight_bits`` / ``weight_code`` and computes with them widened to int8
    (:func:`edgesnn.ir.packing.widen`), as this layer's eval does."""

    weight_quantizer, weight_bits, weight_t = "uniform", 8, 1.0  # int8, what training writes

    def set_weight_grid(self, quantizer: str, bits: int) -> None:
        """Weights on ``quantizer``'s grid at ``bits``: "uniform" (symmetric, 2..8 bits, code signed) or
        "qsnn" (Q-SNN's odd levels, 1..7 bits). Plain attributes: the state dict stays the same, and a
        checkpoint's quantization spec sets them again on load (edgesnn/quantize/temporal.py)."""
        code = WEIGHT_CODES.get(quantizer)
        if code is None:
            raise EdgesnnError(f"weight quantizer must be one of {', '.join(WEIGHT_CODES)}, got {quantizer!r}")
        try:
            check_format(bits if isinstance(bits, int) and not isinstance(bits, bool) else -1, code)
        except ValueError as e:
            raise EdgesnnError(f"{quantizer} weights: {e}") from None
        self.weight_quantizer, self.weight_bits = quantizer, int(bits)

    @property
    def weight_code(self) -> str:
        return WEIGHT_CODES[self.weight_quantizer]

    def weight_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fake-quantized weight, integer levels, float32 scale per output channel)."""
        return weight_grid(self.weight, self.weight_quantizer, self.weight_bits, self.weight_t)

    @torch.no_grad()
    def integers(self, in_scale: float, out_scale: float) -> dict:
        """What the IR dense op holds: weight [out, in] (int8 levels of ``weight_bits`` in ``weight_code``),
        weight_scale per channel (the scale of the weights widened to int8) and bias (on the accumulator's
        grid in_scale * weight_scale), multiplier and shift. The exporter writes exactly these."""
        _, q, scale = self.weight_grid()
        bits, code = self.weight_bits, self.weight_code
        s_w = (scale.cpu().numpy().astype(np.float32) / np.float32(2 ** widening_shift(bits, code))).astype(np.float32)
        acc_scale = np.float64(np.float32(in_scale)) * s_w.astype(np.float64)
        bias = np.zeros(self.out_features) if self.bias is None else self.bias.detach().cpu().double().numpy()
        bias_q = np.clip(np.round(bias / acc_scale), -(2**31), 2**31 - 1).astype(np.int32)
        mult, shift = quantize_multipliers(effective_multiplier(np.float32(in_scale), s_w, np.float32(out_scale)))
        return {"weight": q.cpu().numpy().astype(np.int8), "weight_scale": s_w, "bias": bias_q,
                "multiplier": mult, "shift": shift, "weight_bits": bits, "weight_code": code}

    def step(self, x: torch.Tensor, in_scale: float, out_scale: float, current: tuple[int, int]) -> torch.Tensor:
        """One timestep: integer inputs x on ``in_scale`` -> integer current on ``out_scale``."""
        if not x.is_floating_point():
            p = self.integers(in_scale, out_scale)
            w = torch.from_numpy(widen(p["weight"], p["weight_bits"], p["weight_code"])).to(torch.int64)
            acc = x @ w.T + torch.from_numpy(p["bias"]).to(torch.int64)
            where = f"linear {self.in_features}->{self.out_features}"
            return _requantize(acc, p["multiplier"], p["shift"], current, where)
        w, _, _ = self.weight_grid()
        cur = (x * in_scale) @ w.T
        if self.bias is not None:
            cur = cur + self.bias
        return torch.clamp(round_ste(cur / out_scale), *current)


WEIGHT_CODES = {"uniform": "signed", "qsnn": "odd"}  # the IR's weight code of each grid (edgesnn/ir/packing.py)


def weight_grid(w: torch.Tensor, quantizer: str = "uniform", bits: int = 8, t: float = 1.0):
    """(fake-quantized weight, integer levels q, float32 scale per output channel) of ``w`` [out, ...].

    - "uniform": symmetric per channel, q in +-(2^(b-1) - 1), scale max|w_c| / (2^(b-1) - 1) (at 8 bits: the
      int8 grid every temporal layer trains on), straight-through;
    - "qsnn": Q-SNN's grid of static qsnn (:class:`edgesnn.quantize.quantizers.QSNNWeight`): the standardized
      weights on 2^b odd levels with a power-of-two step, its gradient (b = 1: the tanh surrogate at ``t``);
      no BatchNorm follows to absorb the standardization here, so the scale is std_c * step_c and the
      weight real std_c * step_c * q (the channel's mean dropped, as in Q-SNN)."""
    view = (-1,) + (1,) * (w.dim() - 1)
    if quantizer == "uniform":
        qmax = 2 ** (bits - 1) - 1
        absmax = w.detach().abs().flatten(1).amax(1)
        scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax)).float()
        q = torch.clamp(torch.round(w.detach() / scale.view(view)), -qmax, qmax)
        return w + (q * scale.view(view) - w).detach(), q, scale
    from edgesnn.quantize.quantizers import QSNNWeight  # Brevitas: imported only for a compressed model

    quant = QSNNWeight(bits)
    quant.t = t
    proxy, q, step = quant.grid(w)
    std = w.flatten(1).std(1).clamp_min(1e-12).view(view)
    scale = (std.detach().flatten() * step).float()
    surrogate = std * proxy
    return q * scale.view(view) + (surrogate - surrogate.detach()), q, scale  # forward: exactly q * scale


def _requantize(acc: torch.Tensor, mult, shift, clamp: tuple[int, int], where: str) -> torch.Tensor:
    try:
        y = multiply_by_quantized_multiplier(acc.cpu().numpy(), mult, shift)
    except OverflowError as e:
        raise EdgesnnError(f"{where}: integer overflow ({e})") from None
    return torch.from_numpy(np.clip(y, *clamp)).to(acc.device)


class _Stateful(nn.Module):
    """A neuron layer of ``channels`` whose states are integers of ``bits`` on ``scale``; the current it
    reads (the linear layer's output) is on the same grid, in the state's dtype."""

    kind = ""
    spiking = True

    def __init__(self, channels: int, bits: int, scale: float, beta: float):
        super().__init__()
        where = type(self).__name__
        self.channels, self.bits = int(channels), _check_bits(bits, where)
        self.scale = float(np.float32(scale))
        if not self.scale > 0:
            raise EdgesnnError(f"{where}: the state's scale must be positive, got {scale!r}")
        self.register_buffer("decay_v", torch.tensor([decay_of(beta, where)], dtype=torch.int64))
        self.learn_beta = False  # a subclass that learns beta sets it, with its Parameter ``beta``

    @property
    def dtype(self) -> str:
        return _dtype_of(self.bits)

    @property
    def bound(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def current(self) -> tuple[int, int]:
        """The clamp of the current tensor: its dtype's range."""
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)

    def leak(self, exact: bool) -> torch.Tensor:
        """The membrane's decay d: the ``decay_v`` buffer, or with ``learn_beta`` round(4096 (1 - beta)),
        beta held to 0..1: int64 when ``exact``, else a float whose rounding is straight-through (so the
        trained decay is the exported one)."""
        if not self.learn_beta:
            return self.decay_v
        d = DECAY_UNITY * (1 - self.beta.clamp(0.0, 1.0))
        with torch.no_grad():
            self.decay_v.copy_(torch.round(d.detach()).to(torch.int64))
        return self.decay_v if exact else round_ste(d)

    def hold(self, v: torch.Tensor) -> torch.Tensor:
        """Saturate to the state's width (the IR's ``overflow: saturate``)."""
        return torch.clamp(v, -self.bound, self.bound)

    def state_names(self) -> list[str]:
        return ["v"]

    def init_state(self, n: int, like: torch.Tensor, shape: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
        """Zero states (n, *shape): shape (channels,) by default, (channels, H, W) for a conv layer's neurons."""
        return {name: like.new_zeros((n, *(shape or (self.channels,)))) for name in self.state_names()}


class LIF(_Stateful):
    """Leaky integrate-and-fire (IF with ``beta`` 1): per step

        v = hold(decay(v, d) + I)          # d = 4096 (1 - beta)
        s = v > theta                      # theta = levels: the threshold on the membrane's grid
        v = v - theta s  (reset "subtract")   or   v = v (1 - s)  (reset "zero")

    with a surrogate gradient for s and the reset detached (snnTorch's default). ``learn_beta``: beta is a
    parameter, and d = round(4096 (1 - beta)) straight-through in every forward, so the trained decay is
    the integer that deploys (:meth:`leak`; the ``decay_v`` buffer follows it). ``max_spike`` D > 1: SFA's
    MultiSpike per step, s = clip(floor((v - 1) / theta), 0, D) spikes (the thresholds theta, 2 theta, ...
    v exceeds; D = 1 is ``v > theta``), the surrogate summed over the D thresholds, v -= theta s or v = 0
    where s > 0: the IR's ``lif`` with ``max_spike`` D."""

    kind = "lif"

    def __init__(self, channels: int, beta: float = 0.9, threshold: float = 1.0, levels: int = 64, bits: int = 12,
                 reset: str = "subtract", slope: float = 5.0, learn_beta: bool = False, max_spike: int = 1):
        if isinstance(max_spike, bool) or not isinstance(max_spike, int) or not 1 <= max_spike <= MAX_SPIKE:
            raise EdgesnnError(f"{type(self).__name__}: max_spike (the most spikes per step) must be an integer in "
                               f"1..{MAX_SPIKE}, got {max_spike!r}")
        if not isinstance(learn_beta, bool):
            raise EdgesnnError(f"{type(self).__name__}: learn_beta must be true or false, got {learn_beta!r}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise EdgesnnError(f"{type(self).__name__}: levels (the threshold's integer) must be a positive integer, "
                               f"got {levels!r}")
        super().__init__(channels, bits, threshold / levels, beta)
        if levels > self.bound:
            raise EdgesnnError(f"{type(self).__name__}: threshold {levels} does not fit {bits} bits "
                               f"(at most {self.bound})")
        if reset not in RESETS:
            raise EdgesnnError(f"{type(self).__name__}: reset must be one of {', '.join(RESETS)}, got {reset!r}")
        self.theta, self.reset, self.slope = levels, reset, float(slope)
        self.learn_beta, self.max_spike = learn_beta, max_spike
        if learn_beta:
            self.beta = nn.Parameter(torch.tensor([float(beta)]))

    def fire(self, v: torch.Tensor) -> torch.Tensor:
        if self.max_spike > 1:
            if not v.is_floating_point():
                return torch.clamp(torch.div(v - 1, self.theta, rounding_mode="floor"), 0, self.max_spike)
            return _MultiSpike.apply(v, float(self.theta), self.max_spike, self.slope)
        if not v.is_floating_point():
            return (v > self.theta).to(v.dtype)
        return _Spike.apply((v - self.theta) / self.theta, self.slope)

    def integrate(self, cur: torch.Tensor, state: dict) -> torch.Tensor:
        return self.hold(decay(state["v"], self.leak(not cur.is_floating_point())) + cur)

    def step(self, cur: torch.Tensor, state: dict) -> torch.Tensor:
        v = self.integrate(cur, state)
        spk = self.fire(v)
        if self.reset == "subtract":
            v = v - spk.detach() * self.theta
        else:
            v = v * (1 - spk.detach().clamp(max=1))
        state["v"] = v
        return spk

    def extra_repr(self) -> str:
        return (f"{self.channels}, decay={int(self.decay_v[0])}/4096, threshold={self.theta} levels, bits={self.bits}, "
                f"reset={self.reset}" + (f", max_spike={self.max_spike}" if self.max_spike > 1 else ""))


class CubaLIF(LIF):
    """Current-based LIF: a synaptic current with its own leak feeds the membrane,

        i = hold(decay(i, d_i) + I);   v = hold(decay(v, d_v) + i);   spike and reset as LIF."""

    kind = "cuba_lif"

    def __init__(self, channels: int, alpha: float = 0.8, beta: float = 0.9, **kw):
        super().__init__(channels, beta=beta, **kw)
        self.register_buffer("decay_i", torch.tensor([decay_of(alpha, type(self).__name__)], dtype=torch.int64))

    def state_names(self) -> list[str]:
        return ["i", "v"]

    def integrate(self, cur: torch.Tensor, state: dict) -> torch.Tensor:
        state["i"] = self.hold(decay(state["i"], self.decay_i) + cur)
        return self.hold(decay(state["v"], self.leak(not cur.is_floating_point())) + state["i"])


class RLIF(LIF):
    """Recurrent LIF (snnTorch's RLeaky, all-to-all): the current gains ``W_rec @ s[t-1]``, with W_rec
    learned, int8 per output channel, requantized onto the membrane's grid as the IR's ``recurrent`` op."""

    kind = "rlif"

    def __init__(self, channels: int, **kw):
        super().__init__(channels, **kw)
        self.recurrent = QLinear(channels, channels, bias=False)
        nn.init.normal_(self.recurrent.weight, std=0.5 / channels**0.5)

    def state_names(self) -> list[str]:
        return ["v", "prev"]

    def step(self, cur: torch.Tensor, state: dict) -> torch.Tensor:
        feedback = self.recurrent.step(state["prev"], 1.0, self.scale, INT32)  # clamped only in the sum, as the IR
        cur = torch.clamp(cur + feedback, *self.current)
        spk = super().step(cur, state)
        state["prev"] = spk
        return spk


class LI(_Stateful):
    """Leaky integrator, the readout layer: ``v = hold(decay(v, d) + I)``, no spike; the output is v on
    ``scale`` (default 1/256 of a unit, 16 bits: logits within +-128). With ``alpha`` the input passes
    through a leaky current first, as CubaLIF's: ``i = hold(decay(i, d_i) + I)``, ``v = hold(decay(v, d) + i)``.
    ``learn_beta``: the membrane's beta is a parameter, as LIF's (:meth:`leak`: the integer decay that deploys)."""

    kind = "li"
    spiking = False

    def __init__(self, channels: int, beta: float = 0.9, bits: int = 16, scale: float = 2.0**-8,
                 alpha: float | None = None, learn_beta: bool = False):
        if not isinstance(learn_beta, bool):
            raise EdgesnnError(f"{type(self).__name__}: learn_beta must be true or false, got {learn_beta!r}")
        super().__init__(channels, bits, scale, beta)
        self.synaptic = alpha is not None
        if self.synaptic:
            self.register_buffer("decay_i", torch.tensor([decay_of(alpha, type(self).__name__)], dtype=torch.int64))
        self.learn_beta = learn_beta
        if learn_beta:
            self.beta = nn.Parameter(torch.tensor([float(beta)]))

    def state_names(self) -> list[str]:
        return ["i", "v"] if self.synaptic else ["v"]

    def step(self, cur: torch.Tensor, state: dict) -> torch.Tensor:
        if self.synaptic:
            state["i"] = self.hold(decay(state["i"], self.decay_i) + cur)
            cur = state["i"]
        state["v"] = self.hold(decay(state["v"], self.leak(not cur.is_floating_point())) + cur)
        return state["v"]

    def extra_repr(self) -> str:
        return f"{self.channels}, decay={int(self.decay_v[0])}/4096, scale={self.scale}, bits={self.bits}"


NEURONS = (LIF, CubaLIF, RLIF, LI)
