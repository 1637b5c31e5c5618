"""A netx file (lava-dl's HDF5 layout) for the narrow class of temporal graphs netx holds exactly.

netx's ``Dense`` block is a ``Dense`` synapse (``a = Σ weight · input``, one step of delay) into Lava's
``LIFReset`` neuron (``hdf5.Network(reset_interval=T)``; netx adds 1 to each layer's reset offset, which
is that delay). That is the IR's ``dense`` → ``lif`` / ``cuba_lif`` exactly when:

- the dense requantizes by an exact power of two: multiplier 2^30 and shift s >= 1 on every channel, so
  TFLite's MultiplyByQuantizedMultiplier is ``acc · 2^(s-1)`` with no rounding, and no value of the
  accumulator (bounded from its input's range) reaches the clamp or leaves int32 when shifted;
- the neuron is Lava's LIF (``sequences.loihi_lif``: reset to zero, 24-bit states, one decay and one
  threshold vth · 64, binary spikes) except that its input shift plus the dense's s − 1 is 6: the
  power of two folds into Lava's own input shift (``a_in << 6``), the weights stay the IR's int8;
- the dense's bias is the neuron's ``bias_mant`` (netx's bias exponent 6 adds ``bias << 6`` to v every
  step; the IR adds ``(acc + bias) << 6``), within the 13-bit mantissa, which for ``cuba_lif`` is only
  exact at 0 (Lava adds the bias to v, the IR's passes through the current's decay);
- the graph is input → reshapes → (dense → neuron)+, with one output, the last neuron's spikes, read out
  as ``count`` or ``last``; for ``lif`` (no current state) the shifted input fits Lava's 24-bit u.

Anything else (the trained models: reset by subtraction, 12-bit membranes, requantized currents, an LI
readout, recurrent ops) is refused with the first reason, and no model.net is written.

The file runs as :func:`netx_sequence_feed` and :func:`netx_sequence_spikes` say: the input integers
minus their zero point, flat, into ``net.inp`` as graded payloads (``input_message_bits`` 24), sequence
after sequence (sample n's step t at Lava step n·T + t + 1), and ``reset_offset`` 1; the last layer's
spikes of step t come out L steps later (L dense layers).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from edgesnn.backends.lava.netx import BIAS_MANT_RANGE, _h5py, _write_string
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import INT32_MAX
from edgesnn.ir.packing import widen

LAVA_SHIFT = 6  # Lava's LIF shifts a_in left by 6 (and vth, bias)
INPUT_MESSAGE_BITS = 24  # graded payloads: an int16 frame minus its zero point fits
U_LIMIT = 1 << 23  # LIF's 24-bit current: a_in << 6 must stay inside


def plan(graph: g.Graph) -> list[tuple]:
    """[(dense, neuron, k)] of a graph netx holds exactly (see the module), or EdgesnnError with the reason."""
    from edgesnn.backends.lava.sequences import loihi_lif

    ops = list(graph.ops)
    while ops and ops[0].kind == "reshape":
        ops.pop(0)
    if not ops or len(graph.tensors[ops[0].inputs[0]].shape) != 1:
        raise EdgesnnError("its first layer does not read the frame as a vector")
    blocks, reach, before = [], None, ops[0].inputs[0]
    for i in range(0, len(ops), 2):
        dense, neuron = ops[i], ops[i + 1] if i + 1 < len(ops) else None
        if dense.kind != "dense" or neuron is None or neuron.kind not in ("lif", "cuba_lif"):
            odd = [op for op in (dense, neuron) if op is not None and op.kind not in ("dense", "lif", "cuba_lif")]
            what = odd[0] if odd else dense
            kind = {"li": "an LI readout (netx's CUBA neuron always spikes)",
                    "recurrent": "a recurrent op"}.get(what.kind, f"a {what.kind} op")
            raise EdgesnnError(f"{what.name}: {kind}; netx holds a chain of dense -> lif/cuba_lif blocks")
        if dense.inputs[0] != before or neuron.inputs[0] != dense.output:
            raise EdgesnnError(f"{dense.name}: not a chain (each dense reads the spikes before it)")
        before = neuron.output
        reach = _input_reach(graph, dense.inputs[0]) if reach is None else reach
        k = _power_of_two(dense)
        if neuron.input_shift + k != LAVA_SHIFT:
            raise EdgesnnError(f"{neuron.name}: its input shift {neuron.input_shift} and {dense.name}'s scale 2^{k} "
                               f"shift the accumulator by {neuron.input_shift + k}, Lava's LIF by {LAVA_SHIFT}")
        if getattr(neuron, "max_spike", 1) != 1:
            raise EdgesnnError(f"{neuron.name}: integer spikes (netx's CUBA neuron sends binary spikes)")
        shifted = copy.copy(neuron)
        shifted.input_shift = LAVA_SHIFT
        params, why = loihi_lif(graph, shifted, [])
        if params is None:
            raise EdgesnnError(f"{neuron.name}: not Lava's LIF: {why}")
        _check_dense(graph, dense, neuron, k, reach)
        blocks.append((dense, neuron, k, params))
        reach = 1  # the next dense reads binary spikes
    if graph.outputs != [before] or graph.sequence.readout[before] not in ("count", "last"):
        raise EdgesnnError("its output is not the last neuron's spikes read out as count or last")
    return blocks


def _input_reach(graph: g.Graph, name: str) -> int:
    """The largest |x - zero point| the first dense reads."""
    spec = graph.tensors[name]
    lo, hi = g.dtype_range(spec.dtype)
    if max(abs(lo - spec.zero_point), abs(hi - spec.zero_point)) >= 1 << (INPUT_MESSAGE_BITS - 1):
        raise EdgesnnError(f"its input {spec.dtype} does not fit a {INPUT_MESSAGE_BITS}-bit graded payload")
    return max(abs(lo - spec.zero_point), abs(hi - spec.zero_point))


def _power_of_two(dense) -> int:
    """k where the dense's requantization is exactly acc * 2^k: multiplier 2^30, one shift s >= 1, k = s - 1."""
    m, s = np.asarray(dense.multiplier), np.asarray(dense.shift)
    if not ((m == 1 << 30).all() and (s == s.flat[0]).all() and int(s.flat[0]) >= 1):
        raise EdgesnnError(f"{dense.name}: its requantization is not one exact power of two >= 1 (multiplier 2^30 and "
                           f"one shift >= 1): netx's Dense has no per-channel requantization")
    return int(s.flat[0]) - 1


def _check_dense(graph: g.Graph, dense, neuron, k: int, reach: int) -> None:
    out = graph.tensors[dense.output]
    w = widen(dense.weight, dense.weight_bits, dense.weight_code).astype(np.int64)
    bias = np.zeros(len(w), np.int64) if dense.bias is None else np.asarray(dense.bias, np.int64)
    if out.zero_point != 0:
        raise EdgesnnError(f"{dense.name}: its output has zero point {out.zero_point} (Lava's a_in has none)")
    if not w.any():
        raise EdgesnnError(f"{dense.name}: every weight is zero (netx's weight optimizer divides by the largest)")
    worst = np.abs(w).sum(1) * reach
    lo, hi = dense.clamp
    if ((worst + np.abs(bias)) << (k + 1) > INT32_MAX).any() or ((worst + np.abs(bias)) << k > min(-lo, hi)).any():
        raise EdgesnnError(f"{dense.name}: its accumulator x 2^{k} can reach its clamp {dense.clamp} or leave int32 "
                           f"(netx's Dense does not clamp)")
    if neuron.kind == "lif" and ((worst << LAVA_SHIFT) >= U_LIMIT).any():
        raise EdgesnnError(f"{dense.name}: its accumulator << 6 can leave Lava's 24-bit current")
    if neuron.kind == "cuba_lif" and bias.any():
        raise EdgesnnError(f"{dense.name}: a bias before a cuba_lif (Lava adds it to v, the IR to the current)")
    if bias.min(initial=0) < BIAS_MANT_RANGE[0] or bias.max(initial=0) > BIAS_MANT_RANGE[1]:
        raise EdgesnnError(f"{dense.name}: its bias leaves the 13-bit bias mantissa {BIAS_MANT_RANGE}")


def supported(graph: g.Graph) -> tuple[bool, str]:
    try:
        plan(graph)
    except EdgesnnError as e:
        return False, f"netx cannot hold this model over sequences exactly: {e} (see docs/temporal.md#lava)"
    return True, ""


def write(graph: g.Graph, path: str | Path) -> dict:
    """Write model.net (atomically) and return its summary for lava.json's ``netx_summary``."""
    h5py = _h5py()
    blocks = plan(graph)
    first = graph.tensors[blocks[0][0].inputs[0]]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            root = f.create_group("layer")
            layer = root.create_group("0")
            _write_string(layer, "type", "input")
            layer.create_dataset("shape", data=np.asarray(first.shape, np.int64))
            for i, (dense, neuron, _, params) in enumerate(blocks, 1):
                w = widen(dense.weight, dense.weight_bits, dense.weight_code)
                layer = root.create_group(str(i))
                _write_string(layer, "type", "dense")
                layer.create_dataset("shape", data=np.asarray([len(w)], np.int64))
                layer.create_dataset("weight", data=w.astype(np.float64))
                layer.create_dataset("inFeatures", data=w.shape[1])
                layer.create_dataset("outFeatures", data=w.shape[0])
                if dense.bias is not None and np.asarray(dense.bias).any():
                    layer.create_dataset("bias", data=np.asarray(dense.bias, np.float64))
                cuba = layer.create_group("neuron")
                _write_string(cuba, "type", "CUBA")
                for key, value in (("iDecay", params["du"] + 1), ("vDecay", params["dv"]), ("vThMant", params["vth"]),
                                   ("refDelay", 1)):
                    cuba.create_dataset(key, data=int(value))
                cuba.create_dataset("gradedSpike", data=False)
    layers = len(blocks)
    return {"path": str(path), "format": "lava-dl netx HDF5", "exact": True, "sequences": True,
            "note": f"exact: {layers} dense -> Lava LIF blocks, the IR's arithmetic", "latency_steps": layers,
            "layers": [{"index": i, "dense": d.name, "neuron": n.name, "scale_shift": k, **p}
                       for i, (d, n, k, p) in enumerate(blocks, 1)],
            "usage": {"network": f"hdf5.Network(net_config, reset_interval={graph.sequence.steps}, reset_offset=1, "
                                 f"input_message_bits={INPUT_MESSAGE_BITS})",
                      "feed": "netx_state.netx_sequence_feed(graph, xq) into net.inp (RingBuffer)",
                      "read": f"netx_state.netx_sequence_spikes(graph, recorded): step t's spikes come {layers} Lava "
                              f"steps later"},
            "lines": [f"netx: model.net, exact: {layers} dense -> Lava LIF blocks, read {layers} steps later"]}


def netx_sequence_feed(graph: g.Graph, xq: np.ndarray) -> np.ndarray:
    """(features, N·T + L) graded payloads for a RingBuffer into ``net.inp``: each frame flat, minus the input's
    zero point, sequence after sequence, then L steps of zeros for the last spikes to come out."""
    n, steps = xq.shape[:2]
    layers = len(plan(graph))
    flat = xq.reshape(n * steps, -1).astype(np.int64) - graph.tensors[graph.input].zero_point
    feed = np.zeros((flat.shape[1], n * steps + layers), np.int64)
    feed[:, :n * steps] = flat.T
    return feed


def netx_sequence_spikes(graph: g.Graph, recorded: np.ndarray, n: int) -> np.ndarray:
    """The output spikes (N, T, C) of ``n`` sequences from the sink's record (C, N·T + L)."""
    steps, layers = graph.sequence.steps, len(plan(graph))
    out = recorded[:, layers:layers + n * steps].T
    return out.reshape(n, steps, *graph.tensors[graph.outputs[0]].shape).astype(np.int8)


def latency(graph: g.Graph) -> int:
    return len(plan(graph))

