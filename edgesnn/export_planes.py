"""Float weights at up to 16 bits from two int8 planes (``export --weight-bits 16``).

Every target's kernels take int8 weights. A trained float model brought in without retraining loses
most of its agreement with torch to that rounding (docs/bring-your-model.md measures it), so a float
conv or dense can instead use the integers ``W = k * Q1 + Q2`` (Q1, Q2 int8; k a power of two up to
128) on the scale ``s / k``:

    sum_i x_i W_i = sum_i (k x_i) Q1_i + x_i Q2_i

which is one ordinary 16x8 layer over the input's channels doubled into ``[k x_c, x_c]``. The doubling
is a 1x1 depthwise convolution with two outputs per channel and per-channel multipliers k and 1
(exact: a power-of-two multiplier is exact in both TFLite requantizations), on the input widened to
int16. So the IR gains no op, every target runs it, and it stays bit-exact; the cost is the doubled
MACs and weight bytes of the layer plus 2 MACs per input element.

k is as large as three bounds allow: 128 (Q2 in [-64, 63]; the int8 weight code is symmetric, so
256 would need -128), ``k * max|x|`` within int16 (the doubled
input), and the worst-case accumulator within 2^22, half of Loihi 2's 24-bit state, the narrowest of
the targets (as :meth:`edgesnn.export._Exporter.lattice_input`). Spikes into a layer get k = 128 (15-bit
weights); an 8-bit image into the first conv typically 16-64. Grouped and depthwise convolutions keep
8 bits (a TFLite conv is either ordinary or depthwise: a group of two doubled channels is neither).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import effective_multiplier, quantize_multipliers

PLANES_BITS = 16
MAX_K = 128
ACC_LIMIT = 2**22


def plane_factor(weight_row_sum: int, x_absmax: int) -> int:
    """The largest power of two k <= 128 with k * x_absmax in int16 and k * row sum * x_absmax <= 2^22."""
    x_absmax = max(int(x_absmax), 1)
    k = MAX_K
    while k > 1 and (k * x_absmax > 32767 or k * max(int(weight_row_sum), 1) * x_absmax > ACC_LIMIT):
        k //= 2
    return k


def split(w16: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W = k * Q1 + Q2 with Q2 in [-k/2, k/2): both in [-127, 127] for |W| <= 127 k and k <= 128."""
    q1 = torch.floor((w16 + k // 2) / k)
    return q1, w16 - k * q1


def two_planes(exp, v, post_training_grid):
    """``v`` (a float conv2d or dense) reading its input doubled into [k x, x], with its weights split
    into the two int8 planes; None where the layer keeps 8 bits (grouped, or k would be 1)."""
    if v.kind == "conv2d" and v.attrs["groups"] != 1:
        return None
    unscaled = next((raw for raw, scaled in exp.widened.items() if scaled == v.src.name), None)
    if unscaled is not None:  # spikes' int8 headroom (x 2^k) only narrows k here; the planes give the resolution
        v = replace(v, src=replace(v.src, name=unscaled))
    lo, hi = exp.int_range(v.src.name)  # relative to the zero point: what the int16 copy holds
    w = v.weight * v.src.factor
    q8, s8 = post_training_grid(w, 8, "signed")
    k = plane_factor(int(q8.abs().reshape(len(q8), -1).sum(1).max()), max(abs(lo), abs(hi)))
    if k == 1:
        return None
    shape = [-1] + [1] * (w.dim() - 1)
    w16 = torch.round(w / (torch.as_tensor(s8, dtype=torch.float64) / k).view(shape)).clamp(-127 * k, 127 * k)
    q1, q2 = split(w16, k)
    planes = torch.stack([q1, q2], dim=2).reshape(w.shape[0], 2 * w.shape[1], *w.shape[2:])  # [.., k x_c, x_c, ..]
    doubled = _doubled(exp, v.src, k, lo, hi)
    return replace(v, src=replace(v.src, name=doubled, factor=1.0), planes=(planes, s8))


def _doubled(exp, x, k: int, lo: int, hi: int) -> str:
    """The int16 tensor [k x_c, x_c] per channel (scale s / k), made once per (tensor, k)."""
    key = (x.name, "planes", k)
    if key in exp.widened16:
        return exp.widened16[key]
    flat = len(exp.tensors[x.name].shape) == 1
    flattened = next((op for op in reversed(exp.ops) if op.output == x.name and op.kind == "reshape"
                      and len(exp.tensors[op.inputs[0]].shape) == 3), None) if flat else None
    if flattened is not None:  # double the image, then flatten: (h, w, c) -> p becomes (h, w, 2c + j) -> 2p + j
        name = _doubled(exp, replace(x, name=flattened.inputs[0]), k, lo, hi)
        out = exp.new_tensor(f"{name}.flat", [2 * exp.tensors[x.name].shape[0]], "int16", exp.tensors[name].scale)
        exp.ops.append(g.Reshape(out, [name], out))
        exp.bounds[out] = exp.bounds[name]
        exp.widened16[key] = out
        return out
    src = exp.int16_input(x).name
    spec = exp.tensors[src]
    if flat:  # a vector input: the depthwise conv reads it as a 1x1 image (NIR export flattens images only)
        image = exp.new_tensor(f"{src}.image", [1, 1, spec.shape[0]], "int16", spec.scale)
        exp.ops.append(g.Reshape(image, [src], image))
        src, spec = image, exp.tensors[image]
    h, w, c = spec.shape
    name = exp.new_tensor(f"{x.name}.planes{k}", [h, w, 2 * c], "int16", spec.scale / k)
    w_scale = np.tile(np.array([1.0, 1.0 / k], np.float32), c)
    mult, shift = quantize_multipliers(effective_multiplier(spec.scale, w_scale, exp.tensors[name].scale))
    exp.ops.append(g.Conv2D(name, [src], name, weight=np.ones((2 * c, 1, 1, 1), np.int8),
                            bias=np.zeros(2 * c, np.int32), weight_scale=w_scale, multiplier=mult, shift=shift,
                            clamp=list(g.dtype_range("int16")), groups=c))
    exp.bounds[name] = (min(k * lo, lo), max(k * hi, hi))
    if flat:  # back to the vector
        out = exp.new_tensor(f"{name}.flat", [2 * c], "int16", exp.tensors[name].scale)
        exp.ops.append(g.Reshape(out, [name], out))
        exp.bounds[out] = exp.bounds[name]
        name = out
    exp.widened16[key] = name
    return name
