"""Tensor-shaped operations of the SFA export: reshape, flatten, transpose and permute, the product
of two activation tensors, mean and sum over any axes, and Conv1d.

A value's layout is an index array (:func:`index_of`): for each element of the torch tensor (per
sample), its position in the IR tensor's row-major storage. Transposes and reshapes in torch only
rearrange that array, so they cost nothing until an op needs its operand in a given order (a conv
wants HWC, a batch matmul wants [..., M, K]); then :func:`arrange` writes one IR Reshape and
Transpose, or none when the storage is already in order. Token reshapes around attention (flatten,
transpose, split into heads, permute) thus become at most one transpose each.
"""

from __future__ import annotations

import math
import operator
from dataclasses import replace

import numpy as np
import torch
from torch import fx, nn

from edgesnn import source_lines
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import effective_multiplier, linear_requantizer, quantize_multipliers

VIEWS = ("reshape", "view", "flatten", "transpose", "permute", "contiguous", "clone", torch.reshape, torch.flatten,
         torch.transpose, torch.permute)
MATMUL = (operator.matmul, torch.matmul, "matmul")
REDUCE = ("mean", "sum", torch.mean, torch.sum)
FUNCTIONS = (*VIEWS, *MATMUL, *REDUCE)


def index_of(ex, x) -> np.ndarray:
    """Torch element (per sample) -> position in the IR tensor's storage."""
    if x.index is not None:
        return x.index
    shape = ex.tensors[x.name].shape
    if x.perm is not None:  # a flattened image: IR position i holds torch feature perm[i]
        return np.argsort(x.perm)
    return default_index(shape)


def default_index(shape) -> np.ndarray:
    """A 3-D IR tensor is an image (IR HWC holds torch CHW); any other rank is in torch's order."""
    n = math.prod(shape)
    if len(shape) == 3:
        h, w, c = shape
        return np.arange(n).reshape(h, w, c).transpose(2, 0, 1)
    return np.arange(n).reshape(shape)


def torch_shape(ex, x) -> tuple[int, ...]:
    return tuple(index_of(ex, x).shape)


def with_index(x, index: np.ndarray, ex):
    """``x`` carrying ``index``; None when it is the default for its IR shape (what older code reads)."""
    from edgesnn.export import _Int

    default = default_index(ex.tensors[x.name].shape)
    same = default.shape == index.shape and np.array_equal(default, index)
    return _Int(x.name, x.factor, amplitude=x.amplitude, index=None if same else index)


def arrange(ex, x, order, shape, where: str):
    """``x``'s torch value with its axes in ``order``, as an IR tensor of ``shape`` whose row-major
    storage is that value's: one Reshape + Transpose (+ Reshape) at most, none when already so."""
    from edgesnn.export import _Int

    idx = index_of(ex, x)
    want = np.ascontiguousarray(idx.transpose(order)).ravel()
    name, spec = x.name, ex.tensors[x.name]
    if not np.array_equal(want, np.arange(want.size)):
        found = as_transpose(want)
        if found is None:
            raise EdgesnnError(f"{where}: this rearrangement of a tensor is not one transpose of its storage; "
                               "the IR cannot express it")
        inner, perm = found
        if list(inner) != spec.shape:
            name = reshape_op(ex, name, inner)
        name = transpose_op(ex, name, perm)
    if ex.tensors[name].shape != list(shape):
        name = reshape_op(ex, name, shape)
    transposed = idx.transpose(order).shape
    index = np.arange(want.size).reshape(transposed).transpose(np.argsort(order))
    return with_index(_Int(name, x.factor, amplitude=x.amplitude), index, ex)


def as_transpose(seq: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(shape, perm) with ``arange(n).reshape(shape).transpose(perm).ravel() == seq``, if one exists.

    Read from the innermost output axis out: each axis is a run of constant stride in ``seq``;
    sorted by stride, the runs are the source's (row-major) axes."""
    n = int(seq.size)
    if n == 0 or seq[0] != 0:
        return None
    sizes, strides, block = [], [], 1
    while block < n:
        d = int(seq[block])
        s = 1
        while s * block < n and seq[s * block] == s * d:
            s += 1
        if d <= 0 or n % (block * s):
            return None
        sizes.append(s)
        strides.append(d)
        block *= s
    sizes, strides = sizes[::-1], strides[::-1]  # output axes, outermost first
    by_stride = sorted(range(len(sizes)), key=lambda a: -strides[a])
    shape = [sizes[a] for a in by_stride]
    perm = [by_stride.index(a) for a in range(len(sizes))]
    if not np.array_equal(np.arange(n).reshape(shape).transpose(perm).ravel(), seq):
        return None
    return shape, perm


def reshape_op(ex, name: str, shape) -> str:
    spec = ex.tensors[name]
    out = ex.new_tensor(f"{name}.reshape", shape, spec.dtype, spec.scale, spec.zero_point, spec.spike_D)
    ex.tensors[out].signed = spec.signed
    ex.ops.append(g.Reshape(out, [name], out))
    return out


def transpose_op(ex, name: str, perm) -> str:
    spec = ex.tensors[name]
    shape = [spec.shape[p] for p in perm]
    out = ex.new_tensor(f"{name}.transpose", shape, spec.dtype, spec.scale, spec.zero_point, spec.spike_D)
    ex.tensors[out].signed = spec.signed
    ex.ops.append(g.Transpose(out, [name], out, perm=[int(p) for p in perm]))
    return out


# ---- torch operations ----------------------------------------------------------------------

def function(ex, node: fx.Node, env, shapes: dict) -> object:
    """The exporter's value for a view, matmul or reduction node (``shapes``: per-sample torch
    output shapes recorded on the calibration run)."""
    fn, args = node.target, node.args
    where = f"operation {getattr(fn, '__name__', fn)} at {source_lines.where(node)}"
    src = env[args[0]]
    if fn in MATMUL:
        return matmul(ex, env[args[0]], env[args[1]], node, where)
    in_shape = shapes[args[0].name]
    out_shape = shapes[node.name]
    if fn in ("contiguous", "clone"):
        return src
    if fn in REDUCE:
        return reduce(ex, ex.as_int(src), node, in_shape, where)
    if fn in ("reshape", "view", "flatten", torch.reshape, torch.flatten) and tuple(out_shape) == tuple(in_shape):
        return src  # e.g. SDT-V3's .reshape(B, C, H, W) of what is already (B, C, H, W)
    x = src if _pending_product(src) else ex.as_int(src)
    index = x.attrs["index"] if _pending_product(x) else index_of(ex, x)
    rank = len(in_shape)
    if fn in ("reshape", "view", "flatten", torch.reshape, torch.flatten):
        index = index.reshape(out_shape)
    elif fn in ("transpose", torch.transpose):
        d0, d1 = (_axis(d, rank, where) for d in args[1:3])
        index = np.swapaxes(index, d0, d1)
    else:
        dims = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
        dims = [int(d) % (rank + 1) for d in dims]
        if dims[0] != 0:
            raise EdgesnnError(f"{where}: a permute must keep the batch axis first")
        index = index.transpose([d - 1 for d in dims[1:]])
    if _pending_product(x):  # rearranged before it is requantized: the index rides along
        return replace(x, attrs={**x.attrs, "index": index})
    return with_index(x, index, ex)


def _pending_product(v) -> bool:
    return getattr(v, "kind", None) == "batch_matmul"


def _axis(d: int, rank: int, where: str) -> int:
    d = int(d) % (rank + 1)
    if d == 0:
        raise EdgesnnError(f"{where}: moving the batch axis is not supported")
    return d - 1


def reduce(ex, x, node: fx.Node, in_shape, where: str):
    """mean / sum over any axes: the reduced axes are arranged as H x W of an image whose channels
    are the kept ones, and summed by the IR's ReduceSum; 1/count of a mean rides as a factor."""
    from edgesnn.export import _Linear, _plain

    _plain(x, where)
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    rank = len(in_shape)
    dims = list(range(1, rank + 1)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    axes = sorted({_axis(d, rank, where) for d in dims})
    kept = [a for a in range(rank) if a not in axes]
    count = math.prod(in_shape[a] for a in axes)
    channels = math.prod(in_shape[a] for a in kept)
    image = arrange(ex, x, [*axes, *kept], [1, count, channels], where)
    out_shape = [1 if a in axes else in_shape[a] for a in range(rank)] if keep else [in_shape[a] for a in kept]
    scale = image.factor / count if node.target in ("mean", torch.mean) else image.factor
    image = _as_plain(image)
    return _Linear("reduce_sum", image, node, scale=scale,
                   attrs={"layer": node.name, "index": np.arange(channels).reshape(out_shape)})


def matmul(ex, a_val, b_val, node: fx.Node, where: str):
    """a @ b of two activation tensors, batched over the leading axes: an exact integer product
    (the output scale is the product of the inputs', their factors ride along) in int8 or int16,
    whichever holds every product sum; both operands are widened to it, as TFLite's BATCH_MATMUL
    takes one type. b is read transposed (adj_y) when its storage is already that way round."""
    from edgesnn.export import _Int, _Linear, _plain

    a, b = (_plain(ex.as_int(v), where) for v in (a_val, b_val))
    sa, sb = torch_shape(ex, a), torch_shape(ex, b)
    if len(sa) < 2 or len(sa) != len(sb) or sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
        raise EdgesnnError(f"{where}: shapes {sa} and {sb} do not multiply (equal leading axes, no broadcasting)")
    for x in (a, b):
        if ex.tensors[x.name].zero_point != 0:
            raise EdgesnnError(f"{where}: the product of activations needs zero-point-free operands (spikes); "
                               f"'{x.name}' has zero point {ex.tensors[x.name].zero_point}")
    k = sa[-1]
    corners = [p * q for p in ex.int_range(a.name) for q in ex.int_range(b.name)]
    bound = k * max(abs(c) for c in corners)
    wide = bound > g.dtype_range("int16")[1]
    if wide and bound >= 2**31:
        raise EdgesnnError(f"{where}: the integer product reaches {bound:,} ({k} terms of up to "
                           f"{max(abs(c) for c in corners)}), beyond int32")
    dtype = "int8" if bound <= 127 and all(ex.tensors[x.name].dtype == "int8" for x in (a, b)) else "int16"
    rank = len(sa)
    ident = list(range(rank))
    a = arrange(ex, a, ident, list(sa), where)
    swapped = [*ident[:-2], rank - 1, rank - 2]
    b_t = np.ascontiguousarray(index_of(ex, b).transpose(swapped)).ravel()
    adj_y = np.array_equal(b_t, np.arange(b_t.size))  # b's storage is already [..., N, K]
    b = arrange(ex, b, swapped, [*sb[:-2], sb[-1], sb[-2]], where) if adj_y else arrange(ex, b, ident, list(sb), where)
    if dtype == "int16":
        a, b = ex.int16_input(_as_plain(a)), ex.int16_input(_as_plain(b))
    shape = [*sa[:-1], sb[-1]]
    if wide:  # too wide for an exact int16 tensor: requantized straight into what reads it (a neuron)
        return _Linear("batch_matmul", _as_plain(a), node, scale=a.factor * b.factor,
                       attrs={"layer": node.name, "b": _as_plain(b), "adj_y": bool(adj_y), "shape": shape,
                              "index": np.arange(math.prod(shape)).reshape(shape), "where": where})
    s_out = float(np.float32(ex.tensors[a.name].scale) * np.float32(ex.tensors[b.name].scale))
    out = ex.new_tensor(node.name, [*sa[:-1], sb[-1]], dtype, s_out)
    mult, shift = quantize_multipliers(effective_multiplier(ex.tensors[a.name].scale, ex.tensors[b.name].scale, s_out))
    if not (mult[0] == 1 << 30 and shift[0] == 1):
        raise EdgesnnError(f"{where}: the product's scale {s_out} is not exactly the inputs' product in float32")
    ex.ops.append(g.BatchMatMul(out, [a.name, b.name], out, adj_y=bool(adj_y), multiplier=mult, shift=shift,
                                clamp=list(g.dtype_range(dtype))))
    ex.bounds[out] = (k * min(corners), k * max(corners))
    return _Int(out, a.factor * b.factor, index=None if rank != 3 else np.arange(math.prod(ex.tensors[out].shape))
                .reshape(ex.tensors[out].shape))


def requantized_product(ex, v, s_out: float, clamp: list[int], name: str, dtype: str, spike_D: int | None):
    """A product whose sums pass int16, requantized once from its int64 accumulator (TFLite's
    int16 BATCH_MATMUL) into what reads it; a neuron's D thresholds at exactly torch's sums
    (the float32 product scale moved a few steps where needed, as for a reduce_sum)."""
    from edgesnn.export import _Int, _is_neuron, _neuron_sum_scale

    a, b = v.src, v.attrs["b"]
    in_dtype = ex.tensors[a.name].dtype
    s_ab = np.float32(ex.tensors[a.name].scale) * np.float32(ex.tensors[b.name].scale)
    sum_scale = np.float32(v.scale)
    if _is_neuron(clamp, s_out):
        sum_scale = _neuron_sum_scale(sum_scale, float(s_ab) * v.scale, s_ab, clamp, linear_requantizer(in_dtype))
    mult, shift = quantize_multipliers(effective_multiplier(s_ab, sum_scale, s_out))
    if shift[0] > 14:
        raise EdgesnnError(f"{v.attrs['where']}: the product's requantization is too large for int16 kernels")
    lo, hi = g.dtype_range(in_dtype)
    clamp16 = [max(clamp[0], lo), min(clamp[1], hi)]
    shape = v.attrs["shape"]
    wide = ex.new_tensor(name if dtype == in_dtype else f"{name}.{in_dtype}", shape, in_dtype, s_out,
                         spike_D=spike_D if dtype == in_dtype else None)
    ex.ops.append(g.BatchMatMul(wide, [a.name, b.name], wide, adj_y=v.attrs["adj_y"], multiplier=mult, shift=shift,
                                clamp=clamp16))
    out = _Int(wide)
    if dtype != in_dtype:  # narrowed exactly: the clamp fits
        out = ex.rescale(out, ex.new_tensor(name, shape, dtype, s_out, spike_D=spike_D), clamp)
    return _Int(out.name, index=v.attrs.get("index"))


def _as_plain(x):
    """An _Int in its storage order with no index (the op reading it takes the storage as is)."""
    from edgesnn.export import _Int

    return _Int(x.name, x.factor, amplitude=x.amplitude)


def conv1d(ex, node: fx.Node, m: nn.Conv1d, x, out_shape, where: str):
    """Conv1d over (C, L) as the IR's Conv2D over an image 1 x L x C (kernel 1 x k); BatchNorm1d
    then folds into it as BatchNorm2d does into a Conv2d."""
    from edgesnn.export import _Linear, _bias, _plain, _quantized_weight

    _plain(x, where)
    if m.padding_mode != "zeros" or m.dilation[0] != 1 or isinstance(m.padding, str):
        raise EdgesnnError(f"{where}: only undilated Conv1d with numeric zero padding is supported")
    qw = _quantized_weight(m)
    if qw is not None:
        qw.q = qw.q.unsqueeze(2)
    c, length = torch_shape(ex, x)
    image = _as_plain(arrange(ex, x, [1, 0], [1, length, c], where))
    image = ex.headroom(image)
    weight = m.weight.detach().double().unsqueeze(2)  # (O, I, 1, k)
    attrs = {"layer": node.target, "stride": [1, int(m.stride[0])], "padding": [0, 0, int(m.padding[0]), int(m.padding[0])],
             "groups": m.groups}
    o, l_out = out_shape
    attrs["index"] = np.arange(l_out * o).reshape(l_out, o).T  # IR (1, L', O) holds torch (O, L')
    return _Linear("conv2d", image, node, weight, _bias(m), attrs=attrs, qweight=qw)
