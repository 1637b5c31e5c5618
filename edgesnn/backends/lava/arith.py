"""What each Lava process computes on one sample, in Loihi 2's conventions, from the IR op alone.

- Synapses (conv2d, dense) hold integer weights as a b-bit **mantissa with a shared exponent**
  (the IR's widening shift): the synaptic sum is sum(mantissa * x) << exponent.
- The neuron state is **24-bit**: every accumulator must fit; :func:`check_state` refuses a
  graph whose worst case does not, before any process exists.
- The neuron then requantizes (the IR's fixed-point rule, edgesnn.ir.fixedpoint) and clamps; an
  SFA neuron's output is a **graded spike**, its integer payload in [0, D].
- The **product of two activation tensors** (batch_matmul) has no synapse form: Loihi 2's weights
  are stored, not another layer's activity. It is computed as the resource report maps it
  (resources.py): a product compartment per term a[m, k] * b[k, n] (two operand inputs, one
  multiply in the neuron program), then a sum neuron per output element adding its K products
  (unit synapses) and requantizing as any neuron does. Both states must fit 24 bits.
- reshape and transpose compute nothing: they are wiring (network.py), not processes.
Vectors on Lava ports are flat; each function reshapes to the IR's NHWC shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import linear_requantizer, multiply_by_quantized_multiplier
from edgesnn.ir.packing import widen, widening_shift

STATE_BITS = 24
STATE_MAX = 2 ** (STATE_BITS - 1) - 1


def op_function(graph: g.Graph, op: g.Op) -> Callable[[list[np.ndarray]], np.ndarray]:
    """f(inputs as flat int arrays) -> the op's flat output."""
    builder = _BUILDERS.get(op.kind)
    if builder is None:
        raise EdgesnnError(f"lava: IR op '{op.name}' ({op.kind}) has no Lava process")
    return builder(graph, op)


def _finish(y: np.ndarray, op, out: g.TensorSpec) -> np.ndarray:
    return np.clip(y + out.zero_point, op.clamp[0], op.clamp[1]).reshape(-1)


def requantizer(op: g.Op, graph: g.Graph):
    """The neuron's requantization of op's accumulator: the IR's rule by its first input's dtype
    (int16: the 16x8 / 16x16 one), the one definition every accumulating process here uses."""
    return linear_requantizer(graph.tensors[op.inputs[0]].dtype)


def matmul_shapes(graph: g.Graph, op: g.BatchMatMul) -> tuple[int, int, int, int]:
    """(batch, M, K, N) of a batch_matmul: a [..., M, K] x b [..., K, N] (b [..., N, K] with adj_y)."""
    a = graph.tensors[op.inputs[0]].shape
    out = graph.tensors[op.output].shape
    return int(np.prod(a[:-2], dtype=np.int64)), int(a[-2]), int(a[-1]), int(out[-1])


def _synapses(op) -> tuple[np.ndarray, int]:
    """(weight mantissas as int64, shared exponent)."""
    return op.weight.astype(np.int64), widening_shift(op.weight_bits, op.weight_code)


def _dense(graph, op):
    spec_in, out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    mant, exp = _synapses(op)
    requantize = requantizer(op, graph)

    def f(xs):
        acc = ((mant @ (xs[0].astype(np.int64) - spec_in.zero_point)) << exp) + op.bias
        return _finish(requantize(acc, op.multiplier, op.shift), op, out)
    return f


def _conv2d(graph, op):
    spec_in, out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    mant, exp = _synapses(op)  # OHWI
    o, kh, kw, cg = mant.shape
    (sh, sw), (t, b, l, r), groups = op.stride, op.padding, op.groups
    requantize = requantizer(op, graph)
    ho, wo = out.shape[:2]
    w = mant.reshape(groups, o // groups, kh * kw * cg)

    def f(xs):
        x = xs[0].astype(np.int64).reshape(spec_in.shape) - spec_in.zero_point
        x = np.pad(x, ((t, b), (l, r), (0, 0)))  # padding is real zero
        cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))[::sh, ::sw][:ho, :wo]
        cols = cols.reshape(ho * wo, groups, cg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(ho * wo, groups, -1)
        acc = np.einsum("pgk,gok->pgo", cols, w).reshape(ho * wo, o)
        acc = (acc << exp) + op.bias
        return _finish(requantize(acc, op.multiplier, op.shift), op, out)
    return f


def _requantize(graph, op):
    spec_in, out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    c = out.shape[-1]

    def f(xs):
        x = xs[0].astype(np.int64).reshape(-1, c) - spec_in.zero_point
        return _finish(multiply_by_quantized_multiplier(x, op.multiplier, op.shift), op, out)
    return f


def _add(graph, op):
    (a, b), out = [graph.tensors[n] for n in op.inputs], graph.tensors[op.output]
    m, s = op.multiplier, op.shift

    def f(xs):
        sa = multiply_by_quantized_multiplier((xs[0].astype(np.int64) - a.zero_point) << op.left_shift, m[0], s[0])
        sb = multiply_by_quantized_multiplier((xs[1].astype(np.int64) - b.zero_point) << op.left_shift, m[1], s[1])
        return _finish(multiply_by_quantized_multiplier(sa + sb, m[2], s[2]), op, out)
    return f


def _mul(graph, op):
    (a, b), out = [graph.tensors[n] for n in op.inputs], graph.tensors[op.output]

    def f(xs):
        xa = xs[0].astype(np.int64).reshape(a.shape) - a.zero_point
        xb = xs[1].astype(np.int64).reshape(b.shape) - b.zero_point
        prod = xa * xb  # spike masking, with the IR's broadcasting
        return _finish(multiply_by_quantized_multiplier(prod.reshape(-1, out.shape[-1]), op.multiplier, op.shift), op, out)
    return f


def _reduce_sum(graph, op):
    spec_in, out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    requantize = requantizer(op, graph)

    def f(xs):
        x = xs[0].astype(np.int64).reshape(spec_in.shape) - spec_in.zero_point
        return _finish(requantize(x.sum(axis=(0, 1)), op.multiplier, op.shift), op, out)
    return f


def _batch_matmul(graph, op):
    """Product compartments p[.., m, k, n] = a[.., m, k] * b[.., k, n] (zero points are 0: spike
    counts), sum neurons acc[.., m, n] = sum_k p (unit synapses), then the neuron's requantization.
    The K products are summed in int64 (exact), the order a sum neuron adds them in does not matter."""
    (spec_a, spec_b), out = [graph.tensors[n] for n in op.inputs], graph.tensors[op.output]
    batch, m, k, n = matmul_shapes(graph, op)
    requantize = requantizer(op, graph)

    def f(xs):
        a = xs[0].astype(np.int64).reshape(batch, m, k) - spec_a.zero_point
        b = xs[1].astype(np.int64).reshape((batch, n, k) if op.adj_y else (batch, k, n)) - spec_b.zero_point
        acc = np.einsum("bmk,bnk->bmn" if op.adj_y else "bmk,bkn->bmn", a, b)
        return _finish(requantize(acc, op.multiplier, op.shift), op, out)
    return f


def _pool(reduce):
    def build(graph, op):
        spec_in, out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
        (kh, kw), (sh, sw) = op.kernel, op.stride
        offset = spec_in.zero_point if reduce is np.sum else 0

        def f(xs):
            x = xs[0].astype(np.int64).reshape(spec_in.shape) - offset
            win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))[::sh, ::sw]
            y = reduce(win, axis=(-2, -1)) + (out.zero_point if reduce is np.sum else 0)
            return y.reshape(-1)
        return f
    return build


_BUILDERS = {"dense": _dense, "conv2d": _conv2d, "requantize": _requantize, "add": _add, "mul": _mul,
             "reduce_sum": _reduce_sum, "sum_pool2d": _pool(np.sum), "max_pool2d": _pool(np.max),
             "batch_matmul": _batch_matmul}
WIRING = ("reshape", "transpose")  # no process: the consumer's input axons in another order (network.py)


def check_state(graph: g.Graph) -> None:
    """Refuse an op whose worst-case state leaves the 24-bit neuron state: a conv/dense accumulator,
    a product compartment's a * b or a sum neuron's K products (batch_matmul), or a window sum
    (an int16 stream's is int32 in the IR) whose graded payload does not fit 24 bits."""
    bounds = tensor_bounds(graph)
    for op in graph.ops:
        if op.kind == "sum_pool2d" and max(map(abs, bounds[op.output])) > STATE_MAX:
            raise EdgesnnError(f"lava: IR op '{op.name}' ({op.kind}) can sum to {max(map(abs, bounds[op.output]))}, "
                               f"beyond the {STATE_BITS}-bit payload of Loihi 2's graded spikes (|payload| <= {STATE_MAX})")
        if op.kind == "batch_matmul":
            term, total = product_bounds(graph, op, bounds)
            where, reach = ("a product compartment", term) if term > STATE_MAX else ("a sum neuron", total)
            if reach > STATE_MAX:
                raise EdgesnnError(f"lava: IR op '{op.name}' ({op.kind}): {where} can reach {reach}, beyond "
                                   f"Loihi 2's {STATE_BITS}-bit neuron state (|state| <= {STATE_MAX})")
        if op.kind not in ("conv2d", "dense"):
            continue
        spec_in = graph.tensors[op.inputs[0]]
        lo, hi = bounds[op.inputs[0]]
        reach = max(abs(lo - spec_in.zero_point), abs(hi - spec_in.zero_point))
        mant, exp = _synapses(op)
        worst = (np.abs(mant).reshape(len(mant), -1).sum(1) * reach << exp) + np.abs(op.bias.astype(np.int64))
        if worst.max(initial=0) > STATE_MAX:
            raise EdgesnnError(f"lava: IR op '{op.name}' ({op.kind}) can accumulate {int(worst.max())}, beyond Loihi 2's "
                               f"{STATE_BITS}-bit neuron state (|state| <= {STATE_MAX})")


def _linear_bounds(graph: g.Graph, op: g.Op, bounds: tuple[int, int]) -> tuple[int, int]:
    """A conv's or dense's output range from its input's: per channel the extreme accumulators (a padded
    tap reads a real zero), requantized (monotone) and clamped. Tighter than the clamp where an op
    rescales a small range, such as the doubling of export --weight-bits 16 (export_planes.py)."""
    zp = graph.tensors[op.inputs[0]].zero_point
    lo, hi = min(bounds[0] - zp, 0), max(bounds[1] - zp, 0)
    w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64).reshape(len(op.weight), -1)
    bias = op.bias.astype(np.int64)
    acc = np.stack([np.minimum(w * lo, w * hi).sum(1) + bias, np.maximum(w * lo, w * hi).sum(1) + bias])
    try:
        ends = requantizer(op, graph)(acc, op.multiplier, op.shift) + graph.tensors[op.output].zero_point
    except OverflowError:
        return tuple(op.clamp)
    return max(op.clamp[0], int(ends.min())), min(op.clamp[1], int(ends.max()))


def product_bounds(graph: g.Graph, op: g.BatchMatMul, bounds: dict | None = None) -> tuple[int, int]:
    """(largest |a * b| of one product compartment, largest |sum of K products| of a sum neuron)."""
    (a_lo, a_hi), (b_lo, b_hi) = _operand_ranges(graph, op, tensor_bounds(graph) if bounds is None else bounds)
    term = max(abs(a_lo), abs(a_hi)) * max(abs(b_lo), abs(b_hi))
    return term, term * matmul_shapes(graph, op)[2]


def _operand_ranges(graph: g.Graph, op: g.BatchMatMul, bounds: dict) -> list[tuple[int, int]]:
    """Each operand's range less its zero point (the values the products multiply)."""
    return [(bounds[n][0] - graph.tensors[n].zero_point, bounds[n][1] - graph.tensors[n].zero_point) for n in op.inputs]


def _accumulator_range(graph: g.Graph, op: g.BatchMatMul, bounds: dict) -> tuple[int, int]:
    """Least and largest accumulator of a batch_matmul: K times the operands' extreme products."""
    (a_lo, a_hi), (b_lo, b_hi) = _operand_ranges(graph, op, bounds)
    corners = [a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi]
    k = matmul_shapes(graph, op)[2]
    return min(corners) * k, max(corners) * k


def tensor_bounds(graph: g.Graph) -> dict[str, tuple[int, int]]:
    """Integer range of every tensor: its producer's clamp (a requantize, and a batch_matmul from its
    operands' ranges, map their accumulator's range monotonically), a window sum's from its input's,
    else its dtype's; wiring keeps it."""
    out = {name: g.dtype_range(spec.dtype) for name, spec in graph.tensors.items()}
    for op in graph.ops:
        if op.kind in ("requantize", "batch_matmul"):
            spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
            if op.kind == "requantize":
                acc, requantize = np.array(out[op.inputs[0]]) - spec_in.zero_point, multiply_by_quantized_multiplier
            else:
                acc, requantize = np.array(_accumulator_range(graph, op, out)), requantizer(op, graph)
            try:
                ends = requantize(acc[:, None], op.multiplier, op.shift) + spec_out.zero_point  # per channel
            except OverflowError:  # beyond the requantizer's accumulator: only the clamp bounds it
                ends = np.array(op.clamp)
            out[op.output] = (max(op.clamp[0], int(ends.min())), min(op.clamp[1], int(ends.max())))
        elif op.kind in ("conv2d", "dense") and graph.tensors[op.inputs[0]].dtype != "int32":
            out[op.output] = _linear_bounds(graph, op, out[op.inputs[0]])
        elif hasattr(op, "clamp") and op.kind != "add":
            out[op.output] = tuple(op.clamp)
        elif op.kind == "sum_pool2d":  # the window's count times its input's range, not the (int32) dtype's
            n, zp_in = op.kernel[0] * op.kernel[1], graph.tensors[op.inputs[0]].zero_point
            lo, hi = out[op.inputs[0]]
            zp = graph.tensors[op.output].zero_point
            out[op.output] = (n * (lo - zp_in) + zp, n * (hi - zp_in) + zp)
        elif op.kind in ("reshape", "transpose", "max_pool2d"):
            out[op.output] = out[op.inputs[0]]
    return out
