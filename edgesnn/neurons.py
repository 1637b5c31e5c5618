"""Spiking neurons for training, each with its deploy-time spike-train expansion.

Single-step neurons take any tensor; multi-step neurons take a leading time axis (T, B, ...).
All integer neurons round half up (floor(u + 0.5)), as SFA's reference code does, so the
exporter's requantization and the torch model agree on what an integer activation is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgesnn import spikes
from edgesnn.errors import EdgesnnError
from edgesnn.ir.fixedpoint import effective_multiplier, multiply_by_quantized_multiplier, quantize_multipliers


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


class _SFAQuant(torch.autograd.Function):
    """clamp(round_half_up(u), 0, D) with a straight-through gradient inside (0, D)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, D: int) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.D = D
        return torch.clamp(round_half_up(u), 0, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad * ((u > 0) & (u < ctx.D)).to(grad.dtype), None


class _Heaviside(torch.autograd.Function):
    """[u >= 0] with the arctan surrogate gradient alpha / (2 (1 + (pi/2 alpha u)^2))."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * a / (2 * (1 + (torch.pi / 2 * a * u) ** 2)), None


def _quantized(membrane: MembraneQuant | None, u: torch.Tensor) -> torch.Tensor:
    return u if membrane is None else membrane(u)


def _check_D(D: int) -> int:
    if isinstance(D, bool) or int(D) != D or D <= 0:
        raise EdgesnnError(f"D (the largest integer activation) must be a positive integer, got {D}")
    return int(D)


class SpikeExpansion:
    """Deploy-time form shared by all neurons: integer activations become spike trains."""

    D: int = 1

    def expand(self, s, encoding: str = "rate") -> np.ndarray:
        """Spike train (steps, *s.shape) of the integer activations ``s`` this neuron emits."""
        s = s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)
        return spikes.expand(np.rint(s).astype(np.int64), self.D, encoding)


class MembraneQuant(nn.Module):
    """Q-SNN membrane quantization: u -> s * clamp(round(u / s), -(2**(b-1)-1), 2**(b-1)-1).

    Symmetric, per tensor, straight-through. The scale s follows the running max |u| / qmax
    (exponential average while training, frozen in eval) and is saved with the weights, so the
    exporter gives the membrane an integer tensor of exactly this grid.
    """

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        if isinstance(bits, bool) or not 2 <= int(bits) <= 16:
            raise EdgesnnError(f"membrane bits must be between 2 and 16, got {bits}")
        self.bits, self.momentum = int(bits), momentum
        self.register_buffer("scale", torch.zeros(()))  # 0 until the first training batch
        self.read_stream(None)

    def read_stream(self, stream: StreamQuant | None) -> None:
        """Take u from ``stream``'s integers with the IR's requantization (see :meth:`integers`).

        Kept as a plain reference, not a submodule: the stream quantizer's buffers stay in one place
        of the state dict (``streams.N``), and the stream rewrite sets it again when a model loads."""
        self.__dict__["stream"] = stream

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                s = u.abs().max().clamp_min(1e-8) / self.qmax
                self.scale.copy_(s if self.scale <= 0 else (1 - self.momentum) * self.scale + self.momentum * s)
        if not torch.compiler.is_exporting() and self.scale <= 0:
            raise EdgesnnError("membrane quantizer has no scale yet: train (fine-tune) the model first")
        return self.levels(self.integers(u).detach()) + (u - u.detach())  # forward: exactly q * s

    def integers(self, u: torch.Tensor) -> torch.Tensor:
        """The membrane integers q = clamp(round(u / s), -qmax, qmax) (round half to even).

        Read from an int16 stream, q is instead the IR's requantization of the stream integers
        z = u / s_z (TFLite's MultiplyByQuantizedMultiplier, which rounds twice). An int8 stream
        is widened by the exporter so that the IR gives round(u / s) for each of its 255 values;
        an int16 one cannot be (no wider tensor type), and rounding it once in torch put 1-2 % of
        a Q-SNN resnet's mnist5k predictions off the IR's. Here the model trains what deploys."""
        if self.stream is None or self.stream.bits != 16:
            return torch.clamp(torch.round(u / self.scale), -self.qmax, self.qmax)
        s_z = float(self.stream.scale)
        z = torch.round(u.detach() / s_z).to(torch.int64).cpu().numpy()  # exact: u = z * s_z, s_z a power of two
        mult, shift = quantize_multipliers(effective_multiplier(s_z, 1.0, float(self.scale)))
        q = torch.from_numpy(multiply_by_quantized_multiplier(z, mult, shift)).to(u.device, u.dtype)
        return torch.clamp(q, -self.qmax, self.qmax)

    def levels(self, q: torch.Tensor) -> torch.Tensor:
        """The real value of membrane integers q: the float32 product q * s, as the exporter reads it."""
        return q * self.scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class StreamQuant(nn.Module):
    """Residual-stream quantization: x -> s * clamp(round(x / s), lo, hi) on the IR stream's grid.

    The IR carries every residual sum (and each branch output it adds) as an int8 or int16
    tensor; torch would otherwise keep them real, and a neuron reading the rounded stream fires
    differently near its thresholds (1-6 % of a resnet's mnist5k predictions at int8). With
    these quantizers the model trains on the integers it deploys. The scale is the power of two
    that covers the running max |x| (exponential average while training, frozen in eval, saved
    with the weights), so sums of streams, spikes (k / D) and halves stay exact in float32 and in
    TFLite's ADD. Rounding is half away from zero, as TFLite's final rounding divide; the
    gradient passes straight through inside the clamp.
    """

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        if bits not in (8, 16):
            raise EdgesnnError(f"residual streams are int8 or int16, got {bits} bits")
        self.bits, self.momentum = int(bits), momentum
        self.register_buffer("absmax", torch.zeros(()))
        self.register_buffer("scale", torch.zeros(()))  # 0 until the first training batch
        # int16 streams written by a quantized conv / linear: per-channel ratio of the 16x8 kernel's
        # real multiplier to the exact one, a callable of the scale (set by quantize/streams.py);
        # kept in a buffer for torch.export, which cannot run it
        self.writer_ratio = None
        self.register_buffer("ratio16", torch.ones(1), persistent=False)

    @property
    def clamp(self) -> tuple[int, int]:
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m = x.abs().max().clamp_min(1e-8)
                self.absmax.copy_(m if self.absmax <= 0 else (1 - self.momentum) * self.absmax + self.momentum * m)
                self.scale.copy_(torch.exp2(torch.ceil(torch.log2(self.absmax / self.clamp[1]))))
        if not torch.compiler.is_exporting() and self.scale <= 0:
            raise EdgesnnError("stream quantizer has no scale yet: train (fine-tune) the model first")
        lo, hi = self.clamp
        z = x / self.scale
        if self.writer_ratio is not None and not self.training:  # the IR's 16x8 kernel rounds x * M16 / M
            if not torch.compiler.is_exporting():  # (training needs no such detail: the gradient passes straight)
                self.ratio16 = self.writer_ratio(self.scale).to(z.dtype)
            z = z * self.ratio16.view(1, -1, *([1] * (z.dim() - 2)))
        q = torch.clamp(torch.sign(z) * torch.floor(z.abs() + 0.5), lo, hi)
        inside = (z >= lo) & (z <= hi)
        return (q * self.scale).detach() + (x - x.detach()) * inside  # forward: exactly q * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class MultiSpike(nn.Module, SpikeExpansion):
    """SFA integer neuron for one-timestep training: s = clamp(round(u), 0, D), optionally / D.

    With ``normalize`` the output is s / D in [0, 1]; the exporter folds 1/D into the next layer.
    ``membrane`` (None, or a :class:`MembraneQuant` set by Q-SNN) quantizes u before firing.
    ``gain`` scales u first: a library's neuron mapped onto this one keeps its threshold (a binary
    neuron firing at u >= theta is D = 1 with gain 1 / (2 theta)).
    """

    def __init__(self, D: int = 4, normalize: bool = True, gain: float = 1.0):
        super().__init__()
        self.D = _check_D(D)
        self.normalize = normalize
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < float("inf"):
            raise EdgesnnError(f"a neuron's gain must be a positive finite number, got {gain!r}")
        self.gain = float(gain)
        self.membrane: MembraneQuant | None = None

    def integer(self, u: torch.Tensor) -> torch.Tensor:
        if self.membrane is not None:
            u = self.membrane(u)
        return self.fire(u)

    def fire(self, u: torch.Tensor) -> torch.Tensor:
        """The integer count of a (possibly quantized) membrane u."""
        return _SFAQuant.apply(u * self.gain if self.gain != 1 else u, self.D)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = self.integer(u)
        return s / self.D if self.normalize else s

    def extra_repr(self) -> str:
        return f"D={self.D}, normalize={self.normalize}" + (f", gain={self.gain:g}" if self.gain != 1 else "")


class IntegerIF(nn.Module, SpikeExpansion):
    """Multi-step integer IF (SFA Q_IFNode): v += x; s = round(clamp(v, 0, D)); v -= s."""

    def __init__(self, D: int = 4, normalize: bool = False):
        super().__init__()
        self.D = _check_D(D)
        self.normalize = normalize
        self.membrane: MembraneQuant | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            v = _quantized(self.membrane, v + x_t)
            s = _SFAQuant.apply(v, self.D)
            v = v - s
            out.append(s / self.D if self.normalize else s)
        return torch.stack(out)


class ILIF(nn.Module, SpikeExpansion):
    """Integer LIF (SpikeYOLO): u_t = (u_{t-1} - s_{t-1}) * decay + x_t; s_t = round(clamp(u_t, 0, D))."""

    def __init__(self, D: int = 4, decay: float = 0.25, normalize: bool = False):
        super().__init__()
        self.D = _check_D(D)
        self.decay = decay
        self.normalize = normalize
        self.membrane: MembraneQuant | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        s = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            u = _quantized(self.membrane, (u - s) * self.decay + x_t)
            s = _SFAQuant.apply(u, self.D)
            out.append(s / self.D if self.normalize else s)
        return torch.stack(out)


class LIF(nn.Module, SpikeExpansion):
    """Binary LIF: u = decay * u + x; s = [u >= threshold] (arctan surrogate); hard or soft reset."""

    D = 1

    def __init__(self, decay: float = 0.5, threshold: float = 1.0, reset: str = "hard", alpha: float = 2.0):
        super().__init__()
        if reset not in ("hard", "soft"):
            raise EdgesnnError(f"LIF reset must be 'hard' or 'soft', got {reset!r}")
        self.decay, self.threshold, self.reset, self.alpha = decay, threshold, reset, alpha
        self.membrane: MembraneQuant | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        out = []
        for x_t in x:
            u = self.decay * u + x_t
            s = _Heaviside.apply(u - self.threshold, self.alpha)
            u = u * (1 - s) if self.reset == "hard" else u - s * self.threshold
            u = _quantized(self.membrane, u)  # Q-SNN: the stored state is quantized after the reset
            out.append(s)
        return torch.stack(out)


class _TernaryFire(torch.autograd.Function):
    """sign(u) where |u| >= threshold, else 0; rectangular surrogate of height 1/t around +-t."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, threshold: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.threshold = threshold
        return torch.sign(u) * (u.abs() >= threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        t = ctx.threshold
        return grad * ((u.abs() - t).abs() < t / 2).to(grad.dtype) / t, None


class TernarySpike(nn.Module, SpikeExpansion):
    """Ternary spike (Guo et al.): u = decay * u + x; o in {-1, 0, 1}; hard reset; output o * a_c.

    ``a`` is the learnable per-channel amplitude (channel axis 1 of each step's (B, C, ...)); the
    exporter folds it into the next layer's weights, so the deployed spikes stay in {-1, 0, 1}.
    """

    D = 1

    def __init__(self, channels: int, decay: float = 0.25, threshold: float = 0.5, learn_amplitude: bool = True):
        super().__init__()
        self.decay, self.threshold = decay, threshold
        self.amplitude = nn.Parameter(torch.ones(channels), requires_grad=learn_amplitude)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        shape = (1, -1) + (1,) * (x.dim() - 3)
        out = []
        for x_t in x:
            u = self.decay * u + x_t
            o = _TernaryFire.apply(u, self.threshold)
            u = u * (1 - o.abs())
            out.append(o * self.amplitude.view(shape))
        return torch.stack(out)


class TernaryStep(nn.Module, SpikeExpansion):
    """One-timestep ternary spike (T = 1, so u = x): o = sign(u) where |u| >= threshold, else 0;
    output o * a_c with the learnable per-channel amplitude a (channel axis 1).

    o = clamp(round(u / (2 threshold)), -1, 1) with rounding half away from zero, which is how
    the IR's requantization computes it; the exporter folds a_c into the next layer's weights.
    ``learn_amplitude=False`` keeps a_c = 1, for spikes that reach a product (attention), where no
    per-channel factor folds into a weight.
    """

    D = 1

    def __init__(self, channels: int, threshold: float = 0.5, learn_amplitude: bool = True):
        super().__init__()
        self.threshold = float(threshold)
        self.amplitude = nn.Parameter(torch.ones(channels), requires_grad=learn_amplitude)

    def integer(self, u: torch.Tensor) -> torch.Tensor:
        return _TernaryFire.apply(u, self.threshold)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.integer(u) * self.amplitude.view(1, -1, *([1] * (u.dim() - 2)))

    def extra_repr(self) -> str:
        return f"channels={self.amplitude.numel()}, threshold={self.threshold}"


def _spec_value(spec: dict, key: str, kind, where: str):
    """``spec[key]`` as ``kind``, or one error line: the spec comes from a checkpoint's config.json."""
    value = spec.get(key) if isinstance(spec, dict) else None
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (bool, int, float)):
        raise EdgesnnError(f"{where}: '{key}' must be {'true or false' if kind is bool else 'a number'}, got {value!r}")
    if kind is int and value != int(value):
        raise EdgesnnError(f"{where}: '{key}' must be an integer, got {value!r}")
    return kind(value)


class IBRALIF(nn.Module, SpikeExpansion):
    """IBRA-LIF (Ye et al., arXiv 2506.05679) for one-timestep training, deployed as bit-plane spikes.

    Integer training with range alignment: the membrane window [0, ``window``] is aligned with the
    whole K-bit integer range [0, 2^K - 1] by the scale N = (2^K - 1) / window,

        s = clamp(floor(N u + 0.5), 0, 2^K - 1),   output s / (2^K - 1) (``normalize``) or s / N.

    Without the alignment a K-bit integer neuron fires clamp(round(u), 0, 2^K - 1), and a
    normalized membrane never reaches the high integers (the paper's "spike activation
    limitation"); the authors' default D = 5.11, N = 100 aligns the window [0, 5.11] with the
    9-bit range [0, 511]. Gradient: straight-through inside the window. At inference the integer
    s becomes K binary spikes, bit b_k at virtual step k (most significant first): the "binary
    conversion" with s = sum_k b_k 2^(K-1-k). The leak of the LIF acts across real timesteps only;
    edgesnn trains static data with T = 1, where u is the input current (multi-step training is
    issue 24). ``D`` = 2^K - 1 is the largest count, the IR's spike_D.
    """

    def __init__(self, bits: int = 4, window: float = 4.0, normalize: bool = True):
        super().__init__()
        if isinstance(bits, bool) or int(bits) != bits or not 1 <= bits <= 7:
            raise EdgesnnError(f"IBRA-LIF bits must be an integer from 1 to 7 (int8 spike counts), got {bits}")
        if isinstance(window, bool) or not (np.isfinite(float(window)) and float(window) > 0):
            raise EdgesnnError(f"IBRA-LIF window must be a positive number, got {window}")
        self.bits, self.window, self.normalize = int(bits), float(window), bool(normalize)
        self.D = 2**self.bits - 1

    @property
    def N(self) -> float:
        """The range-alignment scale: integer counts per unit of membrane potential."""
        return self.D / self.window

    def integer(self, u: torch.Tensor) -> torch.Tensor:
        return _SFAQuant.apply(u * self.N, self.D)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = self.integer(u)
        return s / self.D if self.normalize else s / self.N

    def expand(self, s, encoding: str = "bitplane") -> np.ndarray:
        """Binary conversion: K bit-plane spikes per count (``rate`` gives 2^K - 1 steps instead)."""
        return super().expand(s, encoding)

    def spec(self) -> dict:
        return {"kind": "ibra", "bits": self.bits, "window": self.window, "normalize": self.normalize}

    @classmethod
    def from_spec(cls, spec: dict, where: str) -> IBRALIF:
        return cls(_spec_value(spec, "bits", int, where), _spec_value(spec, "window", float, where),
                   _spec_value(spec, "normalize", bool, where))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, window={self.window}, normalize={self.normalize}"


class MPBNSpike(nn.Module, SpikeExpansion):
    """MPBN (Guo et al., ICCV 2023): BatchNorm on the membrane potential, then the SFA neuron fires.

        s = clamp(floor(gamma_c (u - mu_c) / sqrt(var_c + eps) + beta_c + 0.5), 0, D),  optionally / D

    per channel c (axis 1; an image's pixels share their channel's statistics). The BN trains
    with the network; at export it folds into the firing thresholds: for gamma_c > 0 the count
    reaches j iff u >= mu_c + (j - 1/2 - beta_c) sqrt(var_c + eps) / gamma_c, gamma_c < 0 turns
    the inequality around, gamma_c = 0 gives the constant clamp(round(beta_c), 0, D). With T = 1
    (edgesnn's static training) the membrane is the input current; the leaky multi-step form is
    issue 24.
    """

    def __init__(self, channels: int, D: int = 4, normalize: bool = True):
        super().__init__()
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise EdgesnnError(f"MPBN channels must be a positive integer, got {channels}")
        self.D = _check_D(D)
        self.normalize = bool(normalize)
        self.bn = nn.BatchNorm1d(int(channels))

    def membrane(self, u: torch.Tensor) -> torch.Tensor:
        """BN(u) over the channel axis 1 ((B, C), or (B, C, ...) with the rest flattened)."""
        return self.bn(u.flatten(2) if u.dim() > 3 else u).view(u.shape)

    def integer(self, u: torch.Tensor) -> torch.Tensor:
        return _SFAQuant.apply(self.membrane(u), self.D)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = self.integer(u)
        return s / self.D if self.normalize else s

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded BN in float64: (k, b) with BN(u) = k u + b per channel."""
        bn = self.bn
        k = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        return k, bn.bias.detach().double() - bn.running_mean.double() * k

    def spec(self) -> dict:
        return {"kind": "mpbn", "channels": self.bn.num_features, "D": self.D, "normalize": self.normalize}

    @classmethod
    def from_spec(cls, spec: dict, where: str) -> MPBNSpike:
        from edgesnn.limits import check_memory

        channels = _spec_value(spec, "channels", int, where)
        check_memory(5 * 4 * max(channels, 0), f"{where}: MPBN statistics of {channels} channels")
        return cls(channels, _spec_value(spec, "D", int, where), _spec_value(spec, "normalize", bool, where))

    def extra_repr(self) -> str:
        return f"D={self.D}, normalize={self.normalize}"


NEURONS = {"multispike": MultiSpike, "if": IntegerIF, "ilif": ILIF, "lif": LIF, "ternary": TernarySpike,
           "ternary_step": TernaryStep, "ibra": IBRALIF, "mpbn": MPBNSpike}
