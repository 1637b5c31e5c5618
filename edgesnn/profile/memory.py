"""Memory of the IR itself, target-independent: parameters, weight bytes at their real bit widths,
the peak of live activation bytes (batch 1, tensors of any rank alive from their producer to their
last reader; a reshape is a view, a transpose a copy), and neuron state."""

from __future__ import annotations

import math

import numpy as np

from edgesnn.ir import graph as g
from edgesnn.ir.packing import packed_nbytes

STATE_BYTES = 4  # an SFA neuron's membrane (its int32 accumulator) while it fires


def tensor_bytes(spec: g.TensorSpec) -> int:
    return math.prod(spec.shape) * np.dtype(g.DTYPES[spec.dtype]).itemsize


def weight_bytes(graph: g.Graph) -> int:
    return sum(packed_nbytes(op.weight.size, op.weight_bits) for op in graph.weight_ops())


def params(graph: g.Graph) -> int:
    return sum(int(op.weight.size + getattr(op, "bias", np.empty(0)).size)  # a recurrent op has no bias
               for op in graph.weight_ops())


def peak_activation_bytes(graph: g.Graph) -> int:
    alias = {}
    first, last = {graph.input: 0}, {graph.input: 0}
    for i, op in enumerate(graph.ops, start=1):
        if op.kind == "reshape":
            alias[op.output] = alias.get(op.inputs[0], op.inputs[0])
            continue
        for name in op.inputs:
            last[alias.get(name, name)] = i
        first[op.output] = last[op.output] = i
    end = len(graph.ops) + 1
    for name in graph.outputs:
        last[alias.get(name, name)] = end
    live = np.zeros(end + 2, dtype=np.int64)  # a sweep over op positions: linear in ops + tensors
    for n in first:
        live[first[n]] += tensor_bytes(graph.tensors[n])
        live[last[n] + 1] -= tensor_bytes(graph.tensors[n])
    return int(np.cumsum(live).max())


def neuron_state_bytes(graph: g.Graph) -> int:
    """State of the neurons: spike tensors an op fires. A reshape, transpose or max pool moves or
    picks spikes already fired, and an exact x 2^k requantize of spikes to the same D only changes
    their dtype or unit (the int16 operands of an activation product): their outputs carry spike_D
    but are no neurons."""
    neurons = sum(math.prod(graph.tensors[op.output].shape) for op in graph.ops if _fires(graph, op))
    return neurons * STATE_BYTES


def _fires(graph: g.Graph, op: g.Op) -> bool:
    out = graph.tensors[op.output]
    if out.spike_D is None or op.kind in ("reshape", "transpose", "max_pool2d"):
        return False
    if op.kind == "requantize":
        exact = np.all(np.asarray(op.multiplier) == 1 << 30) and np.all(np.asarray(op.shift) >= 1)
        return not (exact and graph.tensors[op.inputs[0]].spike_D == out.spike_D)
    return True
