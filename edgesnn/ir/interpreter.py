"""The golden interpreter: numpy, integer-only, one function per op (TFLite Micro reference style).

It is the single definition of what a deployed model computes; every backend is checked against
it bit for bit. Accumulations are exact integers (int64 here, and required to fit int32).
"""

from __future__ import annotations

import math

import numpy as np

from edgesnn import limits
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import INT32_MAX, INT32_MIN, WIDE_INPUTS, linear_requantizer, multiply_by_quantized_multiplier
from edgesnn.ir.packing import widen

# Integer sums are computed in floating point where that is exact: every partial sum of integer
# products is an integer no larger than max|a| * max|b| * K, which float32 holds exactly below
# 2**24 and float64 below 2**53 (in any summation order, so BLAS may block and reorder freely).
# float32 where it suffices, since it is twice as fast and half the memory; int64 beyond 2**53.
_F32_LIMIT, _EXACT_LIMIT = 2**24, 2**53


def _exact_dtype(bound: int) -> type:
    return np.float32 if bound < _F32_LIMIT else np.float64 if bound < _EXACT_LIMIT else np.int64


def _absmax(x: np.ndarray) -> int:
    return max(abs(int(x.min())), abs(int(x.max()))) if x.size else 0


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dtype = _exact_dtype(_absmax(a) * _absmax(b) * a.shape[-1])
    return np.matmul(a.astype(dtype), b.astype(dtype)).astype(np.int64)


def _check_int32(acc: np.ndarray, op: g.Op) -> np.ndarray:
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"op {op.name}: int32 accumulator overflow")
    return acc


def _finish(acc: np.ndarray, op: g.Requantized, out: g.TensorSpec, input_dtype: str = "int8") -> np.ndarray:
    """Requantize per output channel (last axis), add the output zero point, clamp, cast.

    ``input_dtype`` int16 (conv2d, dense, reduce_sum, batch_matmul), or int32 (a window sum read by
    conv2d, dense, reduce_sum): TFLite's 16x8 arithmetic, int64 accumulator (see ir/fixedpoint.py).
    A large tensor goes through in blocks of rows, so the fixed-point temporaries stay in cache."""
    if input_dtype not in WIDE_INPUTS:
        acc = _check_int32(acc, op)
    requantizer, dtype = linear_requantizer(input_dtype), g.DTYPES[out.dtype]
    if acc.ndim == 0 or acc.size <= _BLOCK or not acc.shape[-1]:
        y = requantizer(acc, op.multiplier, op.shift) + out.zero_point
        return np.clip(y, op.clamp[0], op.clamp[1]).astype(dtype)
    rows = acc.reshape(-1, acc.shape[-1])
    y = np.empty(rows.shape, dtype)
    step = max(1, _BLOCK // rows.shape[1])
    for i in range(0, len(rows), step):
        part = requantizer(rows[i:i + step], op.multiplier, op.shift) + out.zero_point
        y[i:i + step] = np.clip(part, op.clamp[0], op.clamp[1])
    return y.reshape(acc.shape)


_BLOCK = 1 << 16  # elements requantized at a time


def conv2d(op: g.Conv2D, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    """The exact integer sums of an im2col product, block by block of output rows: each block's
    window matrix (a few MiB, not kh * kw times the whole input) times the weights, or for a
    depthwise conv its kernel taps summed on the block; then the block is requantized."""
    o, kh, kw, cg = op.weight.shape
    sh, sw = op.stride
    t, b, l, r = op.padding
    groups, og = op.groups, o // op.groups
    w = widen(op.weight, op.weight_bits, op.weight_code)
    lo, hi = (int(x.min()) - spec_in.zero_point, int(x.max()) - spec_in.zero_point) if x.size else (0, 0)
    dtype = _exact_dtype(max(abs(lo), abs(hi)) * _absmax(w) * kh * kw * cg)
    xo = np.pad(x.astype(dtype) - dtype(spec_in.zero_point), ((0, 0), (t, b), (l, r), (0, 0)))  # padding: real zero
    n, hp, wp, c = xo.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    windows = np.lib.stride_tricks.sliding_window_view(xo, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # n ho wo c kh kw
    depthwise = cg == 1 and groups == c
    w = w.astype(dtype)
    w = w.reshape(groups, og, kh, kw) if depthwise else w.reshape(groups, og, kh * kw * cg).transpose(0, 2, 1)
    bias = op.bias.astype(np.int64)
    y = np.empty((n, ho, wo, o), g.DTYPES[spec_out.dtype])
    for s, rows in _row_blocks(n, ho, wo * c * kh * kw):
        win = windows[s, rows]  # (samples, rows, wo, c, kh, kw)
        if depthwise:  # output channel ci * og + k reads input channel ci
            acc = np.zeros((*win.shape[:3], groups, og), dtype)
            for i in range(kh):
                for j in range(kw):
                    acc += win[..., i, j, None] * w[:, :, i, j]
        else:
            cols = win.reshape(*win.shape[:3], groups, cg, kh, kw).transpose(3, 0, 1, 2, 5, 6, 4)
            acc = np.matmul(cols.reshape(groups, -1, kh * kw * cg), w)  # (groups, elements, og)
            acc = acc.transpose(1, 0, 2)
        acc = acc.reshape(*win.shape[:3], o).astype(np.int64) + bias
        y[s, rows] = _finish(acc, op, spec_out, spec_in.dtype)
    return y


_CONV_BLOCK = 1 << 21  # window elements per block


def _row_blocks(n: int, ho: int, per_row: int):
    """(sample slice, row slice) blocks of about _CONV_BLOCK window elements: whole samples
    together while one fits, else the rows of one sample in runs."""
    rows = max(1, _CONV_BLOCK // max(1, per_row))
    if rows >= ho:
        step = max(1, rows // max(1, ho))
        for s in range(0, n, step):
            yield slice(s, s + step), slice(0, ho)
        return
    for s in range(n):
        for r in range(0, ho, rows):
            yield slice(s, s + 1), slice(r, r + rows)


def dense(op: g.Dense, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    xo = x.astype(np.int64) - spec_in.zero_point
    acc = _int_matmul(xo, widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64).T) + op.bias.astype(np.int64)
    return _finish(acc, op, spec_out, spec_in.dtype)


def reduce_sum(op: g.ReduceSum, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    acc = (x.astype(np.int64) - spec_in.zero_point).sum(axis=(1, 2), keepdims=True)
    return _finish(acc, op, spec_out, spec_in.dtype)


def mul(op: g.Mul, a: np.ndarray, b: np.ndarray, spec_a, spec_b, spec_out) -> np.ndarray:
    acc = (a.astype(np.int64) - spec_a.zero_point) * (b.astype(np.int64) - spec_b.zero_point)
    return _finish(acc, op, spec_out)


def requantize(op: g.Requantize, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    """Elementwise, so a large tensor is requantized once per distinct input value (a table from
    its minimum to its maximum, both of which occur: any overflow the whole tensor would raise,
    the table raises too) and then indexed; channels = the multiplier's (1, or the last axis)."""
    channels = len(op.multiplier)
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        span = hi - lo + 1
        if channels in (1, x.shape[-1]) and span * channels * _TABLE_RATIO <= x.size:
            values = np.arange(lo, hi + 1, dtype=np.int64)[:, None] - spec_in.zero_point  # (span, 1)
            table = _finish(np.broadcast_to(values, (span, channels)), op, spec_out).ravel()
            index = x.astype(np.intp) - lo
            if channels > 1:
                index *= channels
                index += np.arange(channels)
            return table[index]
    return _finish(x.astype(np.int64) - spec_in.zero_point, op, spec_out)


_TABLE_RATIO = 8  # the table is used when the tensor has at least this many elements per entry


def add(op: g.Add, a: np.ndarray, b: np.ndarray, spec_a, spec_b, spec_out) -> np.ndarray:
    if a.shape == b.shape and a.size > _BLOCK:  # elementwise: in blocks, as _finish
        y = np.empty(a.shape, g.DTYPES[spec_out.dtype])
        fa, fb, fy = a.reshape(-1), b.reshape(-1), y.reshape(-1)
        for i in range(0, a.size, _BLOCK):
            fy[i:i + _BLOCK] = _add(op, fa[i:i + _BLOCK], fb[i:i + _BLOCK], spec_a, spec_b, spec_out)
        return y
    return _add(op, a, b, spec_a, spec_b, spec_out)


def _add(op: g.Add, a: np.ndarray, b: np.ndarray, spec_a, spec_b, spec_out) -> np.ndarray:
    m, s = op.multiplier, op.shift
    sa = multiply_by_quantized_multiplier((a.astype(np.int64) - spec_a.zero_point) << op.left_shift, m[0], s[0])
    sb = multiply_by_quantized_multiplier((b.astype(np.int64) - spec_b.zero_point) << op.left_shift, m[1], s[1])
    y = multiply_by_quantized_multiplier(sa + sb, m[2], s[2]) + spec_out.zero_point
    return np.clip(y, op.clamp[0], op.clamp[1]).astype(g.DTYPES[spec_out.dtype])


def sum_pool2d(op: g.SumPool2D, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    """The exact window sum, which must fit the output dtype (the exporter sizes it: int32 for int16 streams)."""
    (kh, kw), (sh, sw) = op.kernel, op.stride
    win = np.lib.stride_tricks.sliding_window_view(x.astype(np.int64) - spec_in.zero_point, (kh, kw), axis=(1, 2))
    acc = win[:, ::sh, ::sw].sum(axis=(-2, -1)) + spec_out.zero_point
    lo, hi = g.dtype_range(spec_out.dtype)
    if acc.size and (acc.min() < lo or acc.max() > hi):
        raise OverflowError(f"op {op.name}: window sum outside {spec_out.dtype}")
    return acc.astype(g.DTYPES[spec_out.dtype])


def max_pool2d(op: g.MaxPool2D, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    (kh, kw), (sh, sw) = op.kernel, op.stride
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return win[:, ::sh, ::sw].max(axis=(-2, -1)).astype(g.DTYPES[spec_out.dtype])


def reshape(op: g.Reshape, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    return x.reshape((x.shape[0], *spec_out.shape))


def transpose(op: g.Transpose, x: np.ndarray, spec_in: g.TensorSpec, spec_out: g.TensorSpec) -> np.ndarray:
    return x.transpose(0, *(p + 1 for p in op.perm))


def batch_matmul(op: g.BatchMatMul, a: np.ndarray, b: np.ndarray, spec_a, spec_b, spec_out) -> np.ndarray:
    """Exact integer products summed over K; int16 operands accumulate in int64 (TFLite's 16x16)."""
    b = np.swapaxes(b, -1, -2) if op.adj_y else b
    acc = _int_matmul(a, b)
    return _finish(acc, op, spec_out, spec_a.dtype)


KERNELS = {
    "conv2d": conv2d, "dense": dense, "reduce_sum": reduce_sum, "mul": mul, "requantize": requantize,
    "add": add, "sum_pool2d": sum_pool2d, "max_pool2d": max_pool2d, "reshape": reshape, "transpose": transpose,
    "batch_matmul": batch_matmul,
}


def execute(graph: g.Graph, xq: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run the graph on an integer input batch; returns the outputs (every tensor with ``keep_all``).

    The memory the run needs is checked first (:func:`plan`); a batch too big to run at once is
    run in chunks, each chunk's results written into the whole batch's output arrays."""
    n = len(xq)
    # one sample of a graph read from a file was checked when it was loaded (and a latency
    # measurement times this call per sample)
    chunk = n if n <= 1 and graph.path is not None else plan(graph, n, keep_all)
    if chunk >= n:
        return _execute(graph, xq, keep_all)
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, chunk):
        part = _execute(graph, xq[start:start + chunk], keep_all)
        for name, value in part.items():
            if name not in out:
                out[name] = np.empty((n, *value.shape[1:]), value.dtype)
            out[name][start:start + len(value)] = value
    return out


def _execute(graph: g.Graph, xq: np.ndarray, keep_all: bool) -> dict[str, np.ndarray]:
    values = {graph.input: xq.astype(g.DTYPES[graph.tensors[graph.input].dtype])}
    for op in graph.ops:
        args = [values[name] for name in op.inputs]
        specs = [graph.tensors[name] for name in op.inputs]
        values[op.output] = KERNELS[op.kind](op, *args, *specs, graph.tensors[op.output])
    return values if keep_all else {name: values[name] for name in graph.outputs}


# ---------------------------------------------------------------- memory

def plan(graph: g.Graph, n: int, keep_all: bool = False) -> int:
    """Samples to run at once so a run on ``n`` samples stays within the memory budget; refuses
    (needed vs allowed bytes, naming the IR file) a run that cannot, before anything is allocated.

    A run holds the results it returns for the whole batch, and for each chunk every tensor of the
    chunk plus the largest op's temporaries (int64 accumulators, the conv's window matrix, its
    padded input) and the widened weights of one op."""
    names = set(graph.tensors) if keep_all else set(graph.outputs)
    kept = sum(tensor_bytes(graph.tensors[name]) for name in names)
    per_sample = sum(map(tensor_bytes, graph.tensors.values())) + max((op_bytes(graph, op) for op in graph.ops), default=0)
    fixed = max((weight_work_bytes(op) for op in graph.ops), default=0)
    needed = max(n, 1) * kept + per_sample + fixed
    where = graph.path or "the IR"
    limits.check_memory(needed, f"{where}: running it on {max(n, 1):,} sample{'s' if n > 1 else ''}")
    room = limits.memory_budget() - n * kept - fixed
    return max(1, min(n, room // max(per_sample, 1)))


def tensor_bytes(spec: g.TensorSpec) -> int:
    return math.prod(spec.shape) * np.dtype(g.DTYPES[spec.dtype]).itemsize


def op_bytes(graph: g.Graph, op: g.Op) -> int:
    """Upper bound of the temporaries one op's kernel holds per sample (int64 = 8 bytes each)."""
    size = lambda name: math.prod(graph.tensors[name].shape)  # noqa: E731
    ins, out = sum(size(i) for i in op.inputs), size(op.output)
    if op.kind == "conv2d":
        h, w, c = graph.tensors[op.inputs[0]].shape
        t, b, l, r = op.padding
        o, kh, kw, cg = op.weight.shape
        ho, wo, _ = graph.tensors[op.output].shape
        padded, window = (h + t + b) * (w + l + r) * c, ho * wo * op.groups * kh * kw * cg
        return 8 * (ins + padded + 3 * window + 8 * out)
    if op.kind in ("reshape", "transpose"):
        return 0
    if op.kind in ("sum_pool2d", "max_pool2d"):
        return 8 * (ins + 3 * out)
    return 8 * (3 * ins + 8 * out)


def weight_work_bytes(op: g.Op) -> int:
    """The op's weights widened for arithmetic: int32, then int64 and float64 copies (and |w|)."""
    weight = getattr(op, "weight", None)
    return 0 if weight is None else 28 * int(weight.size)
