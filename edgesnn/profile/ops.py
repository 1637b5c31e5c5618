"""Operations per layer: MACs of the dense equivalent, and synaptic operations (SOPs) counted from
the integer spike counts the layer really receives, measured on data with the golden interpreter.

An SFA neuron's output s in [0, D] is a spike train at inference, so a layer reading spikes
performs one accumulate per spike per synapse: SOPs = sum over inputs of spikes(s_i) x fan-out_i,
where spikes(s) is s in the rate-burst code and the set bits of s in the bit-plane code
(edgesnn.spikes).
A layer reading non-spike integers (the image, a membrane stream) multiplies: its MACs count.
"""

from __future__ import annotations

import numpy as np

from edgesnn import spikes
from edgesnn.ir import graph as g


def macs(graph: g.Graph, op: g.Op) -> int:
    """Multiply-accumulates of the op run densely (0 for ops without weights)."""
    out = graph.tensors[op.output]
    if op.kind == "conv2d":
        _, kh, kw, cg = op.weight.shape
        return int(np.prod(out.shape)) * kh * kw * cg
    if op.kind == "dense":
        return int(op.weight.size)
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
    """Per conv/dense layer: MACs, measured SOPs per inference in spike code ``code`` (None when
    its input is not spikes: it multiplies), and the firing rate of its own neurons (mean spike
    count per neuron per inference, None for a layer without a neuron).

    A layer reading counts in [0, N] (N = D, or D x window after a sum pool) integrates them as one
    train per inference: ``timesteps`` N (rate-burst) or ceil(log2(N + 1)) (bit-plane), and
    ``sops_by_code`` the spikes of each code x fan-out (|s| or popcount(|s|) per input)."""
    code = spikes.code_name(code)
    values = graph.run_integer(xq, keep_all=True)
    carriers = spikes.count_tensors(graph)
    rows = []
    for op in graph.ops:
        if op.kind not in ("conv2d", "dense"):
            continue
        src = op.inputs[0]
        row = {"name": op.name, "kind": op.kind, "macs": macs(graph, op), "sops": None, "firing_rate": None,
               "timesteps": None, "sops_by_code": None}
        if src in carriers:
            c = carriers[src]
            counts = np.abs(values[src].reshape(len(xq), -1).astype(np.int64)) // c.unit
            fan = fan_out(graph, op)
            row["sops_by_code"] = {k: float((spikes.spike_ops(counts, k) * fan).sum(1).mean()) for k in spikes.CODES}
            row["timesteps"] = {k: spikes.num_steps(c.D, k) for k in spikes.CODES}
            row["sops"] = row["sops_by_code"][code]
        if graph.tensors[op.output].spike_D is not None:
            row["firing_rate"] = float(np.abs(values[op.output].astype(np.int64)).mean())
        rows.append(row)
    return rows
