"""Operations per layer: MACs of the dense equivalent, and synaptic operations (SOPs) counted from
the integer spike counts the layer really receives, measured on data with the golden interpreter.

An SFA neuron's output s in [0, D] is a spike train at inference, so a layer reading spikes
performs one accumulate per spike per synapse: SOPs = sum over inputs of spikes(s_i) x fan-out_i,
where spikes(s) is s in the rate-burst code and the set bits of s in the bit-plane code
(edgesnn.spikes).
A layer reading non-spike integers (the image, a membrane stream) multiplies: its MACs count.

The product of two activation tensors (batch_matmul, a [.., M, K] x b [.., K, N]) has
prod(batch) x M x K x N MACs in dense form. It counts as additions only when both operands are
spike counts: both are then spike trains, and each pair of spikes that meet in a product a_mk x b_kn
is one addition, so SOPs = sum over (batch, m, k, n) of spikes(a_mk) x spikes(b_kn). With binary
spikes (D = 1) that is the number of nonzero products; a count s in [0, D] is spikes(s) spikes,
as for a conv/dense input. Otherwise (an operand is a plain integer, such as q @ k^T read by the
next product) every product is a MAC. Each row says which (``counted_as``). A transpose only moves
data (0 operations); a reshape is a view and has no row.
"""

from __future__ import annotations

import math

import numpy as np

from edgesnn import spikes
from edgesnn.ir import graph as g
from edgesnn.progress import step

ROW_KINDS = ("conv2d", "dense", "batch_matmul", "transpose")  # the ops a profile lists, one row each
ADDITIONS, MACS, MOVES_DATA = "additions", "MACs", "moves data"  # what a row's operations are counted as


def macs(graph: g.Graph, op: g.Op) -> int:
    """Multiply-accumulates of the op run densely (0 for ops that do no arithmetic on weights or products)."""
    out = graph.tensors[op.output]
    if op.kind == "conv2d":
        _, kh, kw, cg = op.weight.shape
        return math.prod(out.shape) * kh * kw * cg
    if op.kind == "dense":
        return int(op.weight.size)
    if op.kind == "batch_matmul":
        *batch, m, k = graph.tensors[op.inputs[0]].shape
        b = graph.tensors[op.inputs[1]].shape
        return math.prod(batch) * m * k * (b[-2] if op.adj_y else b[-1])
    return 0


def fan_out(graph: g.Graph, op: g.Op) -> np.ndarray:
    """Per input element (NHWC, flattened), the number of output accumulations it takes part in."""
    spec_in = graph.tensors[op.inputs[0]]
    if op.kind == "dense":
        return np.full(int(np.prod(spec_in.shape)), op.weight.shape[0], dtype=np.int64)
    h, w, c = spec_in.shape
    o, kh, kw, cg = op.weight.shape
    (sh, sw), (t, b, l, r) = op.stride, op.padding
    ho, wo = graph.tensors[op.output].shape[:2]
    hits = np.outer(_window_hits(h + t + b, ho, sh, kh), _window_hits(w + l + r, wo, sw, kw))  # rows x columns
    per_pixel = hits[t:t + h, l:l + w]
    return np.repeat(per_pixel[:, :, None], c, axis=2).reshape(-1) * (o // op.groups)


def _window_hits(size: int, n_out: int, stride: int, kernel: int) -> np.ndarray:
    """Along one axis, how many of the ``n_out`` windows cover each padded position."""
    edges = np.zeros(size + kernel + 1, dtype=np.int64)
    starts = np.arange(n_out) * stride
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + kernel, -1)
    return np.cumsum(edges)[:size]


def spike_tensors(graph: g.Graph) -> dict[str, int]:
    """Tensors that carry spike counts, with the factor their integers are scaled by (see
    edgesnn.spikes.count_tensors)."""
    return {name: c.unit for name, c in spikes.count_tensors(graph).items()}


def layer_ops(graph: g.Graph, xq: np.ndarray, code: str = "rate-burst") -> list[dict]:
    """Per conv/dense/batch_matmul/transpose op: MACs, measured SOPs per inference in spike code
    ``code`` (None when it multiplies or only moves data), ``counted_as`` (additions, MACs or moves
    data), and the firing rate of its own neurons (mean spike count per neuron per inference, None
    for an op without a neuron; a transpose has none: it moves its producer's spikes).

    A layer reading counts in [0, N] (N = D, or D x window after a sum pool) integrates them as one
    train per inference: ``timesteps`` N (rate-burst) or ceil(log2(N + 1)) (bit-plane), and
    ``sops_by_code`` the spikes of each code x fan-out (|s| or popcount(|s|) per input). A
    batch_matmul row also has ``nonzero_products`` (per inference, any operands); its timesteps are
    the longer operand train's."""
    code = spikes.code_name(code)
    with step(f"profile: operations and firing rates over {len(xq)} samples"):
        values = graph.run_integer(xq, keep_all=True)
    carriers = spikes.count_tensors(graph)
    rows = []
    for op in graph.ops:
        if op.kind not in ROW_KINDS:
            continue
        row = {"name": op.name, "kind": op.kind, "macs": macs(graph, op), "sops": None, "firing_rate": None,
               "timesteps": None, "sops_by_code": None, "counted_as": MACS}
        if op.kind == "transpose":
            row["counted_as"] = MOVES_DATA
            rows.append(row)
            continue
        if op.kind == "batch_matmul":
            _product(graph, op, values, carriers, row)
        elif op.inputs[0] in carriers:
            src = op.inputs[0]
            c = carriers[src]
            counts = np.abs(values[src].reshape(len(xq), -1).astype(np.int64)) // c.unit
            fan = fan_out(graph, op)
            row["sops_by_code"] = {k: float((spikes.spike_ops(counts, k) * fan).sum(1).mean()) for k in spikes.CODES}
            row["timesteps"] = {k: spikes.num_steps(c.D, k) for k in spikes.CODES}
            row["counted_as"] = ADDITIONS
        if row["sops_by_code"] is not None:
            row["sops"] = row["sops_by_code"][code]
        if graph.tensors[op.output].spike_D is not None:
            row["firing_rate"] = float(np.abs(values[op.output].astype(np.int64)).mean())
        rows.append(row)
    return rows


def _product(graph: g.Graph, op: g.Op, values: dict, carriers: dict, row: dict) -> None:
    """Fill a batch_matmul row: nonzero products always; SOPs, timesteps and "additions" when both
    operands are spike counts (each pair of spikes meeting in a product is one addition)."""
    a, b = (values[name] for name in op.inputs)
    b = np.swapaxes(b, -1, -2) if op.adj_y else b
    row["nonzero_products"] = float(_pairs(a != 0, b != 0).mean())
    ca, cb = (carriers.get(name) for name in op.inputs)
    if ca is None or cb is None:
        return
    sa, sb = (np.abs(v.astype(np.int64)) // c.unit for v, c in ((a, ca), (b, cb)))
    row["sops_by_code"] = {k: float(_pairs(spikes.spike_ops(sa, k), spikes.spike_ops(sb, k)).mean())
                           for k in spikes.CODES}
    row["timesteps"] = {k: max(spikes.num_steps(ca.D, k), spikes.num_steps(cb.D, k)) for k in spikes.CODES}
    row["counted_as"] = ADDITIONS


def _pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per sample, sum over (batch, m, k, n) of x[.., m, k] * y[.., k, n] for x (S, .., M, K) and
    y (S, .., K, N), without forming the products: sum over k of (sum over m of x) (sum over n of y)."""
    per_k = x.astype(np.int64).sum(-2) * y.astype(np.int64).sum(-1)
    return per_k.reshape(len(per_k), -1).sum(1)
