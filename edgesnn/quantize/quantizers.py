"""Weight quantizers for quantization-aware training, written as Brevitas quantizers.

Each quantizer is a small ``tensor_quant`` module injected into Brevitas's ``QuantConv2d`` /
``QuantLinear`` (so Brevitas's QCDQ export writes the quantized weights to ONNX). It returns the
fake-quantized weight ``scale_c * q`` — exactly the integers ``q`` and per-output-channel scales
the IR exporter stores (:meth:`WeightQuant.integers`), so torch and the IR see the same weights.
The integer grids are the IR's weight codes (``edgesnn.ir.packing``): ``signed`` (symmetric,
zero included) and ``odd`` (2**b levels without zero: sign, Q-SNN, ReScaW).

Gradients are straight-through (identity inside the clipping range) unless a method says
otherwise (Q-SNN's 1-bit tanh surrogate).
"""

from __future__ import annotations

import abc

import torch
from brevitas.inject import ExtendedInjector
from brevitas.proxy import WeightQuantProxyFromInjector
from torch import nn

from edgesnn.ir.packing import check_format


def _channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _round_to_odd(x: torch.Tensor) -> torch.Tensor:
    """The nearest odd integer (ties go up): the zero-free grid ..., -3, -1, 1, 3, ..."""
    return 2 * torch.floor(x / 2) + 1


class WeightQuant(nn.Module, metaclass=abc.ABCMeta):
    """Base: ``grid(w)`` gives (continuous proxy, integer levels q, per-channel scale)."""

    name = "base"
    code = "signed"

    def __init__(self, bits: int):
        super().__init__()
        check_format(int(bits), self.code)
        self.bits = int(bits)

    @property
    def container_bits(self) -> int:
        """Bits of the signed integer holding q (what Brevitas reports and QCDQ clips to)."""
        return self.bits + 1 if self.code == "odd" else self.bits

    @abc.abstractmethod
    def grid(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(continuous proxy carrying the gradient, integer levels q, float scale per output channel)."""

    def forward(self, w: torch.Tensor):
        proxy, q, scale = self.grid(w)
        value = _channel_view(scale, w) * q
        if self.training and torch.is_grad_enabled():
            value = proxy + (value - proxy).detach()  # straight-through unless the proxy says otherwise
        bit_width = torch.tensor(float(self.container_bits))
        return value, _channel_view(scale, w), torch.zeros((), dtype=w.dtype), bit_width

    @torch.no_grad()
    def integers(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q as int64 of w's shape, float32 scale per output channel): what the IR stores."""
        _, q, scale = self.grid(w.detach())
        return q.round().to(torch.int64), scale.float()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, code={self.code}"


class UniformWeight(WeightQuant):
    """Symmetric per-channel uniform levels [-(2**(b-1)-1), 2**(b-1)-1] * max|w_c| / (2**(b-1)-1).

    The quantizer of the layers every method keeps at 8 bits (first and last).
    """

    name = "uniform"
    code = "signed"

    def grid(self, w):
        qmax = 2 ** (self.bits - 1) - 1
        absmax = w.detach().abs().flatten(1).amax(1)
        scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
        s = _channel_view(scale, w)
        proxy = torch.maximum(torch.minimum(w, s * qmax), -s * qmax)
        return proxy, torch.clamp(torch.round(w / s), -qmax, qmax), scale


class ReScaWWeight(WeightQuant):
    """QP-SNN's ReScaW: gamma_c = mean|W_c|, W~ = clamp(W / gamma_c, -1, 1), n = (2**b - 1) / 2,
    Q(W) = gamma_c * (round((W~ + 1) n) / n - 1): 2**b uniform levels on [-gamma_c, gamma_c].

    With k = round((W~ + 1) n) the level is q * gamma_c / (2**b - 1) for the odd integer
    q = 2k - (2**b - 1), which is what the IR stores.
    """

    name = "rescaw"
    code = "odd"

    def grid(self, w):
        gamma = w.detach().abs().flatten(1).mean(1).clamp_min(1e-12)
        g = _channel_view(gamma, w)
        n = (2**self.bits - 1) / 2
        w_tilde = torch.clamp(w / g, -1, 1)
        k = torch.round((w_tilde.detach() + 1) * n)
        return g * w_tilde, 2 * k - (2**self.bits - 1), gamma / (2**self.bits - 1)


class _TanhSign(torch.autograd.Function):
    """Q-SNN's 1-bit surrogate: forward is the odd-grid value, backward k t (1 - tanh^2(t x))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor, t: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.t = t
        return value

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        t = ctx.t
        k = max(1.0 / t, 1.0)
        return grad * k * t * (1 - torch.tanh(t * x) ** 2), None, None


class QSNNWeight(WeightQuant):
    """Q-SNN: per-channel standardization w^ = (w - mean_c) / std_c, then 2**b odd levels q * s_c
    with a power-of-two step s_c = 2**round(log2(2 mean|w^_c| / 2**b)).

    For b = 1 this is the paper's sign(w^) * 2**round(log2(mean|w^_c|)) with its tanh surrogate
    gradient, annealed through ``t`` (the method sets t = 10**(-1 + 2 epoch / epochs)). For b > 1
    (our extension: the same zero-free grid, 2**b levels spanning about 2 mean|w^|) the gradient
    is straight-through inside the grid.
    """

    name = "qsnn"
    code = "odd"

    def __init__(self, bits: int):
        super().__init__(bits)
        self.t = 1.0

    def grid(self, w):
        flat = w.flatten(1)
        mean = _channel_view(flat.mean(1), w)
        std = _channel_view(flat.std(1).clamp_min(1e-12), w)
        w_hat = (w - mean) / std
        m = w_hat.detach().abs().flatten(1).mean(1).clamp_min(1e-12)
        step = torch.exp2(torch.round(torch.log2(2 * m / 2**self.bits)))
        s = _channel_view(step, w)
        qmax = 2**self.bits - 1
        q = torch.clamp(_round_to_odd(w_hat.detach() / s), -qmax, qmax)
        if self.bits == 1:
            proxy = _TanhSign.apply(w_hat, (s * q).detach(), self.t)
        else:
            proxy = torch.maximum(torch.minimum(w_hat, s * qmax), -s * qmax)
        return proxy, q, step


class SignWeight(WeightQuant):
    """BESTformer: w_b = sign((w - mu_c) / sigma_c), no scale (the following BN absorbs it);
    identity straight-through gradient. Zero maps to +1."""

    name = "sign"
    code = "odd"

    def __init__(self, bits: int = 1):
        super().__init__(bits)
        if self.bits != 1:
            raise ValueError("the sign quantizer is 1-bit")

    def grid(self, w):
        flat = w.flatten(1)
        w_hat = (w - _channel_view(flat.mean(1), w)) / _channel_view(flat.std(1).clamp_min(1e-12), w)
        q = torch.where(w_hat.detach() >= 0, 1.0, -1.0)
        return w_hat, q, torch.ones(w.shape[0], dtype=w.dtype)


QUANTIZERS: dict[str, type[WeightQuant]] = {
    q.name: q for q in (UniformWeight, ReScaWWeight, QSNNWeight, SignWeight)
}


def injector(quantizer: str, bits: int) -> type[ExtendedInjector]:
    """A Brevitas weight-quant injector for ``QUANTIZERS[quantizer]`` at ``bits``."""
    cls = QUANTIZERS[quantizer]
    tq = cls(bits)  # validates bits for the code
    return type(f"{cls.__name__}{bits}", (ExtendedInjector,), {
        "proxy_class": WeightQuantProxyFromInjector,
        "tensor_quant": cls,
        "bits": int(bits),
        "bit_width": tq.container_bits,
        "signed": True,
        "narrow_range": True,
        # Not "ROUND": Brevitas's QCDQ export then writes our fake-quantized weights instead of
        # re-rounding the float weights with its own round(), which would not reproduce our grids.
        "float_to_int_impl_type": f"EDGESNN_{cls.name.upper()}",
    })


def weight_quant(layer: nn.Module) -> WeightQuant | None:
    """The edgesnn quantizer inside a Brevitas layer, or None for a float layer."""
    proxy = getattr(layer, "weight_quant", None)
    tq = getattr(proxy, "tensor_quant", None) if proxy is not None and proxy.is_quant_enabled else None
    return tq if isinstance(tq, WeightQuant) else None
