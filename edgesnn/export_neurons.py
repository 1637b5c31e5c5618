"""Export of the seed neurons IBRA-LIF and MPBN: both become the IR's SFA neuron, requantize +
clamp to [0, D], with their extra arithmetic folded into the linear op before it.

- IBRA-LIF: s = clamp(round(N u), 0, 2^K - 1). The range-alignment scale N folds into the
  pending op (weights and bias times N, or the input scale of a requantize); the spike tensor
  holds the integer counts (spike_D = 2^K - 1), which bit-plane targets send as K binary spikes.
- MPBN: s = clamp(round(k_c u + b_c), 0, D) with k_c = gamma_c / sqrt(var_c + eps) and
  b_c = beta_c - mu_c k_c. That is a per-channel affine map of the membrane, i.e. the firing
  thresholds move per channel. It folds into the Conv2d / Linear producing u (a negative k_c
  negates the channel's row, k_c = 0 zeroes it: the neuron then fires the constant
  clamp(round(b_c), 0, D)). A membrane that is not such an op's output (a residual sum, a
  pooled value) is an image tensor (H, W, C) here, and the affine map becomes a depthwise 1x1
  convolution into the neuron. A flattened (features,) membrane that no Linear produces is refused.

Called from :meth:`edgesnn.export._Exporter.module`.
"""

from __future__ import annotations

import numpy as np
import torch

from edgesnn.errors import EdgesnnError
from edgesnn.export import _Int, _Linear, _plain, _QuantWeight
from edgesnn.neurons import IBRALIF, MPBNSpike


def ibra(ex, src, m: IBRALIF, node) -> _Int:
    out = ex.counts(src, node, m.N, m.integer, m.D, [0, m.D])
    out.factor = 1.0 / m.D if m.normalize else 1.0 / m.N
    return out


def mpbn(ex, src, m: MPBNSpike, node) -> _Int:
    where = f"layer '{node.target}' (MPBNSpike)"
    k, b = m.affine()
    if isinstance(src, _Linear) and src.kind in ("conv2d", "dense"):
        v = fold_affine(src, k, b, node, where)
    else:
        v = _depthwise(ex, _plain(ex.as_int(src), where), k, b, node, where)
    out = ex.requantize(v, 1.0, [0, m.D], "int8", node.target, spike_D=m.D)
    out.factor = 1.0 / m.D if m.normalize else 1.0
    return out


def fold_affine(v: _Linear, k: torch.Tensor, b: torch.Tensor, node, where: str) -> _Linear:
    """k * (W x + bias) + b as one op: W' = k W (row-wise), bias' = k bias + b."""
    if v.weight.shape[0] != k.numel():
        raise EdgesnnError(f"{where}: {k.numel()} channels, but the layer before it has {v.weight.shape[0]}")
    rows = (-1, *([1] * (v.weight.dim() - 1)))
    bias = (v.bias if v.bias is not None else torch.zeros_like(k)) * k + b
    qw = v.qweight
    if qw is not None:
        if qw.code == "odd" and bool((k == 0).any()):
            raise EdgesnnError(f"{where}: a channel with BN scale 0 fires a constant, which {qw.bits}-bit "
                               f"(+-1) weights cannot express; its layer needs weights with a zero level")
        qw = _QuantWeight(qw.q * (k != 0).to(qw.q.dtype).view(rows), qw.scale * k, qw.bits, qw.code)
    return _Linear(v.kind, v.src, node, v.weight * k.view(rows), bias, v.scale, v.attrs, qw)


def _depthwise(ex, x: _Int, k: torch.Tensor, b: torch.Tensor, node, where: str) -> _Linear:
    """k_c x + b_c on an (H, W, C) tensor: a 1x1 convolution with one weight per channel."""
    shape = ex.tensors[x.name].shape
    if x.perm is not None or len(shape) != 3:
        raise EdgesnnError(f"{where}: its membrane is a flattened (features,) value that no Linear produces; "
                           f"MPBN folds into the Conv2d / Linear before the neuron, or into a depthwise 1x1 "
                           f"convolution on an image (H, W, C) value (a residual sum)")
    if shape[2] != k.numel():
        raise EdgesnnError(f"{where}: {k.numel()} channels, but its membrane has {shape[2]}")
    attrs = {"layer": node.target, "stride": [1, 1], "padding": [0, 0, 0, 0], "groups": int(shape[2])}
    # One weight per channel is exact on any grid (q = +-qmax, scale |k| / qmax). On an int8 stream it is
    # given as trained 8-bit integers (0 for k = 0), so the exporter also places the thresholds; an int16
    # stream takes the post-training grid of --weight-bits (its 16x8 requantization is left as it rounds).
    qw = None
    if ex.tensors[x.name].dtype == "int8":
        qw = _QuantWeight((torch.sign(k) * 127).to(torch.int64).view(-1, 1, 1, 1), k.abs() / 127, 8, "signed")
    return _Linear("conv2d", x, node, k.view(-1, 1, 1, 1).clone(), b.clone(), attrs=attrs, qweight=qw)


def threshold(m: MPBNSpike, level: int) -> np.ndarray:
    """Per channel, the membrane u at which the count reaches ``level`` (1..D), MPBN folded:
    mu + (level - 1/2 - beta) sqrt(var + eps) / gamma; with gamma < 0 the count reaches it for
    u at or below, with gamma = 0 never or always (nan)."""
    k, b = m.affine()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k.numpy() != 0, (level - 0.5 - b.numpy()) / k.numpy(), np.nan)
