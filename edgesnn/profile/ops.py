"""Operations per layer: MACs of the dense equivalent, and synaptic operations (SOPs) counted from
the integer spike counts the layer really receives, measured on data with the golden interpreter.

An SFA neuron's output s in [0, D] is s spikes (its spike train at inference), so a layer reading
spikes performs one accumulate per spike per synapse: SOPs = sum over inputs of s_i x fan-out_i.
A layer reading non-spike integers (the image, a membrane stream) multiplies: its MACs count.
"""

from __future__ import annotations

import numpy as np

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
    """Tensors that carry spike counts, with the factor their integers are scaled by: a neuron's
    output (factor 1) and the exact x2^k widenings, reshapes and pools of it that feed layers (a
    sum pool's value is the spikes of its window, all reaching the same synapses)."""
    found = {name: 1 for name, spec in graph.tensors.items() if spec.spike_D is not None}
    for op in graph.ops:
        src = op.inputs[0] if op.inputs else None
        if src not in found:
            continue
        if op.kind in ("reshape", "max_pool2d", "sum_pool2d"):
            found[op.output] = found[src]
        elif op.kind == "requantize" and np.size(op.multiplier) == 1 and int(op.multiplier[0]) == 1 << 30:
            found[op.output] = found[src] << max(int(op.shift[0]) - 1, 0)  # exact x 2^(shift-1)
    return found


def layer_ops(graph: g.Graph, xq: np.ndarray) -> list[dict]:
    """Per conv/dense layer: MACs, measured SOPs per inference (None when its input is not spikes:
    it multiplies), and the firing rate of its own neurons (mean spike count per neuron per
    inference, None for a layer without a neuron)."""
    values = graph.run_integer(xq, keep_all=True)
    scaled = spike_tensors(graph)
    rows = []
    for op in graph.ops:
        if op.kind not in ("conv2d", "dense"):
            continue
        src = op.inputs[0]
        row = {"name": op.name, "kind": op.kind, "macs": macs(graph, op), "sops": None, "firing_rate": None}
        if src in scaled:
            counts = np.abs(values[src].reshape(len(xq), -1).astype(np.int64)) // scaled[src]
            row["sops"] = float((counts * fan_out(graph, op)).sum(1).mean())
        if graph.tensors[op.output].spike_D is not None:
            row["firing_rate"] = float(np.abs(values[op.output].astype(np.int64)).mean())
        rows.append(row)
    return rows
