"""Write (and read back) an IR graph in lava-dl's netx HDF5 layout, for the layers netx can load,
checked against the limits of the Lava processes netx builds from it.

netx (``lava.lib.dl.netx.hdf5.Network``) builds a strictly sequential chain of ``input``, ``conv``,
``dense`` and ``flatten`` layers; every value is an HDF5 *dataset* under ``/layer/<i>/``. This module
maps the integer IR onto that chain so the network can be handed to Lava's own loader; ops netx
cannot express raise :class:`EdgesnnError` and stay with the Lava-only process network.

Units. A netx weight is the IR's widened integer weight divided by the layer's common factor g (the
gcd of its weights; 2**(8 - b) for b-bit weights), so netx's accumulator is a_in = acc / g exactly
and every threshold, and the readout, carry the g (``weight_divisor`` per layer). netx's dense loader
(``optimize_weight_bits``) and Lava's Dense pass such int8 weights through exactly; its conv uses them
as they are.

Mapping (``write_netx`` returns it per layer, with ``exact`` and the ``reasons`` when not):

- input: ``shape`` (C, H, W) with an SDNN neuron of vThMant 0 (a Delta encoder that sends the
  difference from its previous input, every value). The source sends the offset integers
  ``x - zero_point`` (``input_offset``; the IR's accumulators use exactly these), with netx's
  ``spike_exp=0`` so the payload is unscaled, and a step of zeros after each sample.
- conv2d / dense whose output is a spike tensor (clamp [0, D]): a CUBA neuron with
  iDecay = vDecay = 4096, so u and v forget everything each step and ``v = (a_in + bias) << 6``; it
  spikes iff ``a_in + bias > vThMant``. The IR neuron fires (y >= 1) iff its accumulator reaches the
  first integer T_c where TFLite's requantization gives 1; T_c is found by bisection on the very
  fixed-point function the IR uses, and any exact x k rescale of spikes in between (the IR's
  ``requantize`` "spikes x 64") is folded into it with g: a_in >= ceil((T_c - b_c) / (k g)). One
  global vThMant and a per-channel bias carry these per-channel thresholds; a channel that always or
  never fires over the reachable a_in may take any threshold beyond it, which keeps biases small.
  Graded neurons (D > 1) are approximate: the LIF process netx builds for CUBA sends binary spikes
  (v > vth), so a level in 1..D arrives as 1.
- sum_pool2d: a depthwise ``conv`` (groups = C) with weights 64 and an SDNN neuron of vThMant 0. Its
  SigmaDelta sums every step's input (sigma) and sends the change of relu(sigma) << 6: for
  non-negative inputs (spikes), exactly each step's window sum.
- reshape feeding a dense: ``flatten``; netx flattens in (C, H, W) order, so the dense weight's
  input axis is permuted from the IR's (H, W, C) order.
- the last conv2d / dense (non-spiking logits): an SDNN ``sigma_output`` readout (Lava ``Sigma``)
  that sums W . s over the steps; its increment at the sample's step is the accumulator, and the
  host applies ``k g * acc + bias`` and the IR's requantization (``readout``; :func:`netx_logits`).

Limits (``LIMITS``, with their sources in lava-nc 0.10 / lava-dl 0.6.0: the fixed_pt models
Loihi2SimCfg runs, which are bit-accurate with Loihi). A layer outside one is still written (a bias
is clipped to its mantissa, so the simulator does what the chip would, not the simulator's int16
wrap-around) and marked approximate with the reason; ``exact`` means every output integer equals the
IR's for every input, run the documented way (``usage``).

Timing (``usage``): the synapse of every conv / dense adds one step, so a sample sent at step t
reaches layer i at step t + i and the readout at t + ``latency_steps``. CUBA layers are memoryless;
the Delta encoder and the pools' SigmaDelta keep state, so samples go one every 2 steps (zeros
between) and a run takes at most ``max_samples_per_run`` of them before a pool's 24-bit sum could
wrap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import (INT32_MAX, INT32_MIN, WIDE_INPUTS, linear_requantizer,
                                   multiply_by_quantized_multiplier)
from edgesnn.ir.packing import widen

LAVA_ONLY_REASONS = {
    "add": "netx is a strictly sequential chain with no merge of two streams",
    "mul": "netx blocks have no multiplicative interaction between two streams",
    "reduce_sum": "netx has no reduction layer",
    "max_pool2d": "netx's `pool` layer raises NotImplementedError and no CUBA/SDNN neuron computes a max",
    "transpose": "netx has no layer that permutes a tensor's axes (its only reshape is a flatten before a dense)",
    "batch_matmul": "netx layers hold trained weights and read one stream; a product of two activation tensors has "
                    "no netx layer",
}
STATE_EXP = 6  # netx's bias_exp / state_exp: Lava shifts a_in, bias and vth 6 bits up
UNIT_WEIGHT = 1 << STATE_EXP  # a weight of 64 passes a value through an SDNN neuron unchanged
CUBA_DECAY = 4096  # iDecay = vDecay = 4096: current and voltage forget everything each step
WEIGHT_RANGE = (-128, 127)
BIAS_MANT_RANGE = (-(1 << 12), (1 << 12) - 1)
VTH_MAX = (1 << 17) - 1
LIF_A_IN_RANGE = (-(1 << 17) + 1, 1 << 17)  # a_in << 6 inside (-2**23, 2**23]
STATE_RANGE = (-(1 << 23), (1 << 23) - 1)
STEPS_PER_SAMPLE = 2
LIMITS = {
    "weight": {"range": list(WEIGHT_RANGE), "source": "8-bit signed weight mantissa: lava-dl netx/utils.py "
               "optimize_weight_bits takes a 'standard 8 bit signed weight matrix'; lava proc/dense/models.py "
               "weights precision 8"},
    "bias_mant": {"range": list(BIAS_MANT_RANGE), "source": "lava proc/lif/models.py PyLifModelBitAcc: 'bias_mant: "
                  "signed 13-bit integer' (the simulator stores it as int16 and wraps beyond that)"},
    "bias_exp": {"value": STATE_EXP, "source": "lava-dl netx/hdf5.py get_neuron_params: CUBA bias_exp 6"},
    "vth": {"range": [0, VTH_MAX], "source": "PyLifModelBitAcc: 'vth: unsigned 17-bit integer'"},
    "lif_a_in": {"range": list(LIF_A_IN_RANGE), "source": "lava proc/lif/models.py AbstractPyLifModelFixed: "
                 "u += a_in << 6 in 24 bits, wrapped modulo 2**24 outside (-2**23, 2**23]"},
    "sigma_delta_state": {"range": list(STATE_RANGE), "source": "lava proc/sdn/models.py: Delta, Sigma and "
                          "SigmaDelta a_in, sigma and act precision 24"},
}
_FREE = 1 << 62  # a threshold bound that does not bind


def netx_supported(graph: g.Graph) -> tuple[bool, str]:
    """(True, "") when :func:`write_netx` can write the graph, else (False, the reason)."""
    try:
        _plan(graph)
    except EdgesnnError as e:
        return False, str(e)
    return True, ""


def write_netx(graph: g.Graph, path: str | Path) -> dict:
    """Write the graph as a netx HDF5 file (atomically); returns its summary: per layer what it is,
    whether it is exact and why not, the readout, how to run it (``usage``) and ``lines`` to print.

    Raises EdgesnnError naming the first op netx cannot express; nothing is written then.
    """
    h5py = _h5py()
    plan = _plan(graph)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            root = f.create_group("layer")
            for i, layer in enumerate(plan["layers"]):
                _write_layer(root.create_group(str(i)), layer)
    rows = [{"index": i, "type": layer["type"], "shape": [int(v) for v in layer["shape"]], **layer["info"]}
            for i, layer in enumerate(plan["layers"])]
    exact = all(r["exact"] for r in rows)
    own = [f"layer {r['index']} ({', '.join(r['ir_ops'])}): {'; '.join(r['reasons'])}" for r in rows if r["reasons"]]
    summary = {
        "path": str(path), "format": "lava-dl netx HDF5", "exact": exact,
        "note": "exact: every layer within netx's and Loihi's limits" if exact else "approximate: " + " | ".join(own),
        "layers": rows, "input_offset": plan["input_offset"], "readout": plan["readout"],
        "usage": _usage(graph, plan), "limits": LIMITS,
        "weight_unit": "one netx weight unit = weight_divisor integer LSBs of the IR's widened weight",
    }
    summary["lines"] = _summary_lines(summary)
    return summary


def netx_input(summary: dict, xq: np.ndarray) -> np.ndarray:
    """What a Lava ``io.source.RingBuffer`` sends into ``net.in_layer.neuron.a_in``: the input
    integers ``xq`` (N, *IR input shape) as netx payloads (x - zero_point, in netx's (x, y, z) =
    (W, H, C) order), sample i at step 2i, zeros between and for the readout's latency after the
    last: shape (*netx input shape, steps)."""
    usage = summary["usage"]
    if usage["max_samples_per_run"] is not None and len(xq) > usage["max_samples_per_run"]:
        raise EdgesnnError(f"{len(xq)} samples exceed the {usage['max_samples_per_run']} one netx run takes "
                           "(a pool's 24-bit sum could wrap): run them in several runs")
    payload = xq.astype(np.int64) + summary["input_offset"]
    if payload.ndim == 4:
        payload = payload.transpose(0, 2, 1, 3)
    steps = STEPS_PER_SAMPLE * len(xq) + usage["latency_steps"]
    feed = np.zeros((*payload.shape[1:], steps), dtype=np.int32)
    for i, p in enumerate(payload):
        feed[..., STEPS_PER_SAMPLE * i] = p
    return feed


def netx_logits(graph: g.Graph, summary: dict, recorded: np.ndarray) -> np.ndarray:
    """The IR's output integers (N, output size) from what a sink recorded of ``net.out`` over the
    run that :func:`netx_input` fed: each sample's accumulator is the Sigma readout's increment at
    its arrival step (modulo 2**24, so a wrapped sum still gives it), finished as the IR does."""
    readout, usage = summary["readout"], summary["usage"]
    op = next(o for o in graph.ops if o.name == readout["op"])
    spec, in_dtype = graph.tensors[op.output], graph.tensors[op.inputs[0]].dtype
    total = recorded.astype(np.int64)
    increment = np.diff(total, axis=-1, prepend=0)
    increment = (increment + (1 << 23)) % (1 << 24) - (1 << 23)
    n = (recorded.shape[-1] - usage["latency_steps"]) // STEPS_PER_SAMPLE
    acc = np.stack([increment[..., STEPS_PER_SAMPLE * i + usage["latency_steps"]] for i in range(n)])
    if acc.ndim == 4:
        acc = acc.transpose(0, 2, 1, 3)  # (x, y, z) -> the IR's (H, W, C)
    acc = readout["factor"] * acc + np.asarray(readout["bias"], dtype=np.int64)
    if in_dtype not in WIDE_INPUTS:  # an approximate file's sums may leave what the IR's int32 ever holds
        acc = np.clip(acc, INT32_MIN, INT32_MAX)
    y = linear_requantizer(in_dtype)(acc, op.multiplier, op.shift) + spec.zero_point
    return np.clip(y, *op.clamp).reshape(n, -1)


def read_netx(path: str | Path) -> list[dict]:
    """Parse a netx file as netx's loader does (NetDict + ``Network._create``), without Lava.

    Each layer keeps the datasets as written (``raw``) and the Lava-side values netx derives:
    shapes reversed to (x, y, z) = WHC, conv kernels flipped to Lava's [O, kW, kH, I/g] (Lava's
    convolution is a true convolution), stride/padding/dilation reversed to (x, y), the neuron
    mapped to its Lava process and parameters. Layer types netx does not load raise.
    """
    h5py = _h5py()
    layers, flatten_next, prev_xyz = [], False, None
    with h5py.File(path, "r") as f:
        group = f["layer"]
        for i in range(len(group)):
            raw = _read_group(group[str(i)])
            kind = raw["type"]
            if kind == "flatten":
                flatten_next = True
                layers.append({"type": kind, "raw": raw})
                continue
            if kind not in ("input", "conv", "dense"):
                raise EdgesnnError(f"{path}: layer {i} has type {kind!r}, which netx does not load "
                                   "(NotImplementedError)")
            layer = {"type": kind, "raw": raw, "neuron": _lava_neuron(raw.get("neuron", {}), kind == "input")}
            if kind == "input":
                layer["xyz"] = tuple(int(v) for v in raw["shape"][::-1])
            elif kind == "conv":
                layer.update(_read_conv(raw, prev_xyz, path, i))
            else:
                layer.update(_read_dense(raw, flatten_next))
                flatten_next = False
            prev_xyz = layer["xyz"]
            layers.append(layer)
    return layers


# ---------------------------------------------------------------- planning: IR -> netx layers


def _plan(graph: g.Graph) -> dict:
    """The netx layers for the graph (pure: no file), or EdgesnnError naming the op that blocks it."""
    _check_expressible(graph)
    stream = _input_stream(graph)
    layers = [_input_layer(graph, stream)]
    plan = {"layers": layers, "readout": None, "max_steps": None,
            "input_offset": -int(graph.tensors[graph.input].zero_point)}
    _settle(layers[0], stream)
    ops = graph.ops
    for i, op in enumerate(ops):
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if op.kind == "reshape":
            layers.append(_flatten_layer(graph, op, nxt, stream))
        elif op.kind == "requantize":
            if nxt is None:
                _refuse(op, "a rescale of the graph's output spikes has no later netx layer to fold into")
            stream["factor"] *= _spike_rescale_factor(graph, op)
            stream["ir_ops"].append(op.name)
        elif op.kind == "sum_pool2d":
            layers.append(_pool_layer(graph, op, stream, plan))
        else:
            layers.append(_synaptic_layer(graph, op, stream, last=nxt is None, plan=plan))
        if op.kind != "requantize":
            _settle(layers[-1], stream)
    return plan


def _settle(layer: dict, stream: dict) -> None:
    """A layer is exact when its input is and it keeps every limit (no ``reasons``)."""
    stream["exact"] = stream["exact"] and not layer["info"]["reasons"]
    layer["info"]["exact"] = stream["exact"]


def _check_expressible(graph: g.Graph) -> None:
    """Refuse op kinds, dtypes and topologies netx cannot express, naming the first offending op."""
    previous = graph.input
    for op in graph.ops:
        if op.kind in LAVA_ONLY_REASONS:
            _refuse(op, LAVA_ONLY_REASONS[op.kind])
        wide = [t for t in (*op.inputs, op.output) if graph.tensors[t].dtype != "int8"]
        if wide:
            _refuse(op, f"tensor {wide[0]!r} is {graph.tensors[wide[0]].dtype}; netx layers carry 8-bit weights "
                        "and binary or graded spikes, not int16 streams")
        if op.inputs != [previous]:
            _refuse(op, f"it reads {op.inputs} but netx connects each layer only to the one before "
                        f"({previous!r}): the graph is not a sequential chain")
        previous = op.output
    if graph.outputs != [previous]:
        raise EdgesnnError(f"netx cannot express this graph: its outputs {graph.outputs} are not the end of one "
                           "sequential chain; it stays Lava-only")


def _refuse(op: g.Op, why: str):
    raise EdgesnnError(f"netx cannot express IR op {op.name!r} ({op.kind}): {why}; it stays Lava-only")


def _input_stream(graph: g.Graph) -> dict:
    """What flows between netx layers: the shape (HWC), the payload range netx sends, the integer
    factor k with IR value = k * payload, whether payloads still equal the IR's, and the IR ops folded."""
    spec = graph.tensors[graph.input]
    lo, hi = g.dtype_range(spec.dtype)
    return {"shape": list(spec.shape), "payload": (lo - spec.zero_point, hi - spec.zero_point), "factor": 1,
            "exact": True, "flatten": None, "ir_ops": []}


def _chw(shape_hwc) -> tuple[int, ...]:
    """netx writes (C, H, W) for images and (N,) for vectors; the IR is (H, W, C)."""
    return (shape_hwc[2], shape_hwc[0], shape_hwc[1]) if len(shape_hwc) == 3 else tuple(shape_hwc)


def _input_layer(graph: g.Graph, stream: dict) -> dict:
    spec = graph.tensors[graph.input]
    lo, hi = stream["payload"]
    peak = max(abs(lo), abs(hi)) << STATE_EXP  # it sends x, then -x
    reasons = _range_reasons("payload << 6", -peak, peak, STATE_RANGE, "the Delta encoder's 24-bit state")
    return {"type": "input", "shape": _chw(spec.shape), "data": {}, "neuron": _sdnn(0),
            "info": {"ir_ops": [], "reasons": reasons, "weight_divisor": None,
                     "note": f"SDNN Delta encoder (vThMant 0): send x - ({spec.zero_point}) = {lo}..{hi}, "
                             "spike_exp 0, zeros between samples"}}


def _flatten_layer(graph: g.Graph, op: g.Reshape, nxt: g.Op | None, stream: dict) -> dict:
    """A reshape is a netx flatten only right before a dense; the dense then permutes its inputs."""
    out_shape = graph.tensors[op.output].shape
    if nxt is None or nxt.kind != "dense" or len(out_shape) != 1:
        _refuse(op, "netx's flatten only reshapes to a vector right before a dense layer")
    stream["flatten"] = list(stream["shape"]) if len(stream["shape"]) == 3 else None
    stream["shape"] = list(out_shape)
    return {"type": "flatten", "shape": (int(out_shape[0]), 1, 1), "data": {}, "neuron": None,
            "info": {"ir_ops": [op.name], "reasons": [], "weight_divisor": None,
                     "note": "netx flattens in (C, H, W) order"}}


def spike_rescale(graph: g.Graph, op: g.Requantize) -> int | None:
    """The integer k of a requantize that maps every level s of a spike tensor to k * s (its clamp
    never binds), or None: such a requantize only rescales spikes, so a threshold or a spike count
    can absorb it. Anything else is a neuron on a membrane stream."""
    spec = graph.tensors[op.inputs[0]]
    if spec.spike_D is None or spec.signed:
        return None
    levels = np.arange(spec.spike_D + 1, dtype=np.int64)
    out = np.clip(multiply_by_quantized_multiplier(levels, op.multiplier, op.shift)
                  + graph.tensors[op.output].zero_point, *op.clamp)
    k = int(out[1])
    return k if k >= 1 and np.array_equal(out, k * levels) else None


def _spike_rescale_factor(graph: g.Graph, op: g.Requantize) -> int:
    """The rescale folded into the next layer's threshold; refuses a neuron on a stream."""
    k = spike_rescale(graph, op)
    if k is None:
        _refuse(op, "a requantize on a stream (a neuron on a membrane stream, or not an exact k * spike "
                    "rescale) has no netx layer of its own")
    return k


def _pool_layer(graph: g.Graph, op: g.SumPool2D, stream: dict, plan: dict) -> dict:
    """A sum pool as netx does pooling: a depthwise conv of ones (64 = 1.0) into a graded SDNN neuron."""
    if stream["payload"][0] < 0:
        _refuse(op, "SDNN's ReLU would clip the negative values it sums")
    (kh, kw), channels = op.kernel, stream["shape"][2]
    out = graph.tensors[op.output].shape
    weight = np.full((channels, 1, kh, kw), UNIT_WEIGHT, dtype=np.int64)
    per_step = UNIT_WEIGHT * kh * kw * stream["payload"][1]  # the most sigma grows by in one step
    steps = STATE_RANGE[1] // max(per_step, 1)
    plan["max_steps"] = steps if plan["max_steps"] is None else min(plan["max_steps"], steps)
    stream.update(shape=list(out), payload=(0, stream["payload"][1] * kh * kw))
    info = {"ir_ops": [*stream.pop("ir_ops"), op.name], "weight_divisor": None,
            "reasons": _range_reasons("sigma per step", 0, per_step, STATE_RANGE, "SigmaDelta's 24-bit sum"),
            "note": f"depthwise conv of 64s into SDNN (vThMant 0): each step's window sum; its sum grows by at "
                    f"most {per_step} a step"}
    stream["ir_ops"] = []
    return {"type": "conv", "shape": _chw(out), "neuron": _sdnn(0), "info": info,
            "data": {"weight": weight, "stride": np.array(op.stride), "padding": np.array([0, 0]),
                     "dilation": np.array([1, 1]), "groups": channels}}


def _synaptic_layer(graph: g.Graph, op: g.Requantized, stream: dict, last: bool, plan: dict) -> dict:
    """A conv2d / dense: a CUBA layer when it outputs spikes, the Sigma readout when it is the last op."""
    spec = graph.tensors[op.output]
    weight, divisor = _netx_weight(op, stream)
    factor = stream["factor"] * divisor  # the IR's accumulator = factor * a_in + bias
    data = {"weight": weight, **(_conv_geometry(op) if op.kind == "conv2d" else {})}
    a_lo, a_hi = _accumulator_bounds(weight, stream["payload"])
    ir_ops = [*stream.pop("ir_ops"), op.name]
    reasons = _range_reasons("weights", int(weight.min()), int(weight.max()), WEIGHT_RANGE,
                             "the 8-bit signed weight mantissa")
    if spec.spike_D is not None:
        layer = _cuba_layer(op, spec, data, factor, a_lo, a_hi, reasons)
    elif last:
        reasons += _range_reasons("a_in", int(a_lo.min()), int(a_hi.max()), STATE_RANGE, "Sigma's 24-bit input")
        layer = {"neuron": _sdnn(0, sigma_output=True),
                 "info": {"note": f"Sigma readout of W . s: the host applies {factor} * increment + bias and the "
                                  "IR's per-channel requantization"}}
        plan["readout"] = {"op": op.name, "factor": factor, "bias": op.bias.astype(int).tolist(),
                           "zero_point": int(spec.zero_point), "clamp": [int(v) for v in op.clamp]}
    else:
        _refuse(op, "its output is an int8 stream without a neuron, feeding further layers")
    layer["info"].update(ir_ops=ir_ops, weight_divisor=divisor, reasons=reasons)
    layer.update(type="conv" if op.kind == "conv2d" else "dense",
                 shape=_chw(spec.shape) if op.kind == "conv2d" else (int(spec.shape[-1]),), data=data)
    stream.update(shape=list(spec.shape), payload=(0, 1), factor=1, flatten=None, ir_ops=[])
    return layer


def _netx_weight(op: g.Requantized, stream: dict) -> tuple[np.ndarray, int]:
    """The widened integer weights divided by their gcd g, and g, in netx's layout: conv
    [O, I/g, kH, kW] (PyTorch OIHW), dense [out, in] with the input axis in netx's flatten order
    (C, H, W) when a flatten precedes it."""
    w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
    if op.kind == "dense" and not w.any():
        _refuse(op, "all its weights are zero, and netx's dense loader (optimize_weight_bits) divides by the "
                    "largest weight")
    divisor = max(int(np.gcd.reduce(np.abs(w).ravel())), 1)
    w = w // divisor
    if op.kind == "conv2d":
        return w.transpose(0, 3, 1, 2), divisor
    if stream["flatten"] is not None:
        h, wd, c = stream["flatten"]
        w = w.reshape(len(w), h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1)
    return w, divisor


def _conv_geometry(op: g.Conv2D) -> dict:
    """stride / padding / dilation in netx's (H, W) order; Lava pads symmetrically only."""
    top, bottom, left, right = op.padding
    if top != bottom or left != right:
        _refuse(op, f"asymmetric padding {op.padding}: Lava's conv pads each axis symmetrically")
    return {"stride": np.array(op.stride), "padding": np.array([top, left]), "dilation": np.array([1, 1]),
            "groups": int(op.groups)}


def _accumulator_bounds(weight: np.ndarray, payload: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the smallest and largest a_in = W . payload can reach."""
    w = weight.reshape(len(weight), -1)
    lo, hi = np.minimum(w * payload[0], w * payload[1]), np.maximum(w * payload[0], w * payload[1])
    return lo.sum(axis=1), hi.sum(axis=1)


def _range_reasons(what: str, lo: int, hi: int, limit: tuple[int, int], name: str, channels: str = "") -> list[str]:
    """[] when lo..hi lies within the limit, else the one reason why not."""
    if limit[0] <= lo and hi <= limit[1]:
        return []
    return [f"{what} reaches {lo}..{hi}, beyond {name} {limit[0]}..{limit[1]}{channels}"]


def _cuba_layer(op, spec, data, factor, a_lo, a_hi, reasons) -> dict:
    """CUBA parameters whose spikes (a_in + bias > vThMant) are the IR neuron's y >= 1; ``reasons``
    gains every limit the layer cannot keep."""
    if spec.signed or spec.zero_point != 0 or op.clamp != [0, spec.spike_D]:
        _refuse(op, f"its neuron clamps to {op.clamp} (zero point {spec.zero_point}); netx's CUBA neuron "
                    "only emits non-negative spikes from 0")
    theta = _firing_thresholds(op, factor, a_lo, a_hi)
    vth, bias, missed = _threshold_and_bias(theta, a_lo, a_hi)
    data["bias"] = bias
    channels = len(theta)
    if missed:
        fixed = theta[(theta > a_lo) & (theta <= a_hi)]
        reasons.append(f"channel thresholds span a_in {int(fixed.min())}..{int(fixed.max())}, more than one vThMant "
                       f"and the 13-bit bias mantissa {BIAS_MANT_RANGE[0]}..{BIAS_MANT_RANGE[1]} carry ({missed} of "
                       f"{channels} channels miss theirs)")
    wraps = int(((a_lo < LIF_A_IN_RANGE[0]) | (a_hi > LIF_A_IN_RANGE[1])).sum())
    reasons += _range_reasons("a_in", int(a_lo.min()), int(a_hi.max()), LIF_A_IN_RANGE,
                              "what LIF's 24-bit current holds as a_in << 6", f" ({wraps} of {channels} channels)")
    if spec.spike_D != 1:
        reasons.append(f"graded D = {spec.spike_D}: netx's CUBA spike is binary (y >= 1), the level is lost")
    note = (f"CUBA, vThMant {vth}, bias {int(bias.min())}..{int(bias.max())}: spikes iff a_in >= each channel's "
            "threshold")
    return {"neuron": _cuba(vth), "info": {"note": note, "vThMant": vth}}


def _threshold_and_bias(theta: np.ndarray, a_lo: np.ndarray, a_hi: np.ndarray):
    """One vThMant and per-channel biases with a_in + bias > vThMant <=> a_in >= theta_c over the
    reachable a_in, within the 17-bit vth and the 13-bit bias mantissa.

    A channel that fires for every reachable a_in (theta_c <= a_lo) may take any threshold up to
    a_lo, one that never fires any from a_hi + 1. Channel c keeps its threshold iff vThMant lies in
    [lo_c - 1 + bias_min, hi_c - 1 + bias_max]; the vThMant in the most of these windows is chosen,
    and a bias that cannot be kept is clipped to the mantissa (what the chip would hold; Lava's
    simulator would wrap it around int16). Returns (vth, bias, how many channels miss their threshold)."""
    lo = np.where(theta <= a_lo, -_FREE, theta)  # acceptable thresholds per channel: [lo, hi]
    hi = np.where(theta > a_hi, _FREE, theta)
    b_lo, b_hi = BIAS_MANT_RANGE
    first, last = np.clip(lo - 1 + b_lo, 0, VTH_MAX), np.clip(hi - 1 + b_hi, -1, VTH_MAX)
    keepable = first <= last
    starts, ends = np.sort(first[keepable]), np.sort(last[keepable])
    candidates = np.unique(np.append(starts, np.clip(int(np.median(theta)) - 1, 0, VTH_MAX)))
    kept = np.searchsorted(starts, candidates, "right") - np.searchsorted(ends, candidates, "left")
    vth = int(candidates[int(np.argmax(kept))])  # the most windows meet at one of their starts
    chosen = np.clip(theta, np.maximum(lo, vth + 1 - b_hi), np.minimum(hi, vth + 1 - b_lo))
    chosen = np.where(chosen < vth + 1 - b_hi, vth + 1 - b_hi, chosen)  # a missed channel: its bias clipped
    chosen = np.where(chosen > vth + 1 - b_lo, vth + 1 - b_lo, chosen)
    return vth, vth + 1 - chosen, int(((chosen < lo) | (chosen > hi)).sum())


def _firing_thresholds(op: g.Requantized, factor: int, a_lo: np.ndarray, a_hi: np.ndarray) -> np.ndarray:
    """Per channel, the least a_in (netx accumulator) at which the IR neuron fires:
    acc = factor * a_in + bias reaches T_c  <=>  a_in >= ceil((T_c - bias) / factor); clipped to the
    reachable range so channels that never or always fire get bounded, equivalent values."""
    channels = len(a_lo)
    first, never, always = _first_firing_accumulator(op.multiplier, op.shift, channels)
    b = op.bias.astype(np.int64)
    theta = -((b - first) // factor)  # ceil((first - b) / factor)
    theta = np.where(never, a_hi + 1, np.where(always, a_lo, theta))
    return np.clip(theta, a_lo, a_hi + 1).astype(np.int64)


def _first_firing_accumulator(multiplier, shift, channels: int):
    """Bisection for the least int32 accumulator that TFLite's requantization maps to >= 1 (it is
    monotone), per channel; also which channels never / always fire within int32."""
    m = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), (channels,))
    s = np.broadcast_to(np.asarray(shift, dtype=np.int64), (channels,))
    limit = INT32_MAX >> np.maximum(s, 0)  # keeps acc << shift inside int32
    fires = lambda acc: multiply_by_quantized_multiplier(acc, m, s) >= 1  # noqa: E731
    lo, hi = -limit, limit.copy()
    never, always = ~fires(hi), fires(lo)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        f = fires(mid)
        hi, lo = np.where(f, mid, hi), np.where(f, lo, mid)
    return hi, never, always


def _usage(graph: g.Graph, plan: dict) -> dict:
    """How to run the file in lava-dl so that it computes what the summary says (docs/lava.md)."""
    latency = sum(layer["type"] in ("conv", "dense") for layer in plan["layers"])
    max_samples = (None if plan["max_steps"] is None
                   else max(0, (plan["max_steps"] - latency) // STEPS_PER_SAMPLE))
    return {
        "network": "lava.lib.dl.netx.hdf5.Network(net_config=PATH, spike_exp=0)",
        "input_port": "net.in_layer.neuron.a_in",
        "input": f"x - ({graph.tensors[graph.input].zero_point}) (the input integers minus their zero point) in "
                 "netx's (x, y, z) = (W, H, C) order; one sample every 2 steps with zeros between (the Delta "
                 "encoder sends differences)",
        "steps_per_sample": STEPS_PER_SAMPLE, "latency_steps": latency,
        "max_samples_per_run": max_samples,  # None: no limit (no pool)
        "output_port": "net.out (the Sigma readout's running sum)",
        "output": f"the increment (modulo 2**24) of net.out at step t + {latency} is the accumulator of the sample "
                  "sent at step t; logits = the IR's requantization of factor * accumulator + bias (readout)",
        "run_config": "Loihi2SimCfg(select_tag='fixed_pt')",
    }


def _summary_lines(summary: dict) -> list[str]:
    """What ``edgesnn export`` prints about the netx file: the verdict, each layer, how to run it."""
    usage, readout = summary["usage"], summary["readout"]
    lines = [f"netx: {Path(summary['path']).name} is {summary['note']}"]
    for r in summary["layers"]:
        what = "exact" if r["exact"] else "approximate" if r["reasons"] else "approximate (its input is)"
        scale = f"; weights / {r['weight_divisor']}" if (r.get("weight_divisor") or 1) > 1 else ""
        why = f": {'; '.join(r['reasons'])}" if r["reasons"] else ""
        lines.append(f"netx layer {r['index']} {r['type']} {', '.join(r['ir_ops']) or '(input)'}: {what}{why}; "
                     f"{r['note']}{scale}")
    limit = usage["max_samples_per_run"]
    lines.append(f"netx input: hdf5.Network(PATH, spike_exp=0); send x - ({-summary['input_offset']}) as (W, H, C) "
                 f"into {usage['input_port']}, one sample every 2 steps (zeros between)"
                 + (f", at most {limit} per run" if limit is not None else ""))
    lines.append(f"netx output: the increment of net.out at step t + {usage['latency_steps']} for the sample sent "
                 f"at step t; logits = requantize({readout['factor']} * increment + bias of {readout['op']}) "
                 "(lava.json: netx_summary.readout)")
    return lines


def _cuba(vth: int) -> dict:
    return {"type": "CUBA", "iDecay": CUBA_DECAY, "vDecay": CUBA_DECAY, "vThMant": int(vth), "refDelay": 1,
            "gradedSpike": False}


def _sdnn(vth: int, sigma_output: bool = False) -> dict:
    neuron = {"type": "SDNN", "activation": "relu", "vThMant": int(vth)}
    return {**neuron, "sigma_output": True} if sigma_output else neuron


# ---------------------------------------------------------------- HDF5 writing and reading


def _h5py():
    try:
        import h5py
    except ImportError:
        raise EdgesnnError("writing netx files needs h5py: pip install h5py") from None
    return h5py


def _write_string(group, name: str, text: str) -> None:
    """Strings as slayer writes them: a (1,) S10 dataset that NetDict reads as value[0].decode()."""
    group.create_dataset(name, (1,), "S10", [text.encode("ascii")])


def _write_layer(group, layer: dict) -> None:
    _write_string(group, "type", layer["type"])
    group.create_dataset("shape", data=np.asarray(layer["shape"], dtype=np.int64))
    for name, value in layer["data"].items():
        group.create_dataset(name, data=value)
    if layer["type"] == "conv":  # written by slayer's exporter too; netx reads the kernel from the weight
        w = layer["data"]["weight"]
        group.create_dataset("inChannels", data=w.shape[1] * layer["data"]["groups"])
        group.create_dataset("outChannels", data=w.shape[0])
        group.create_dataset("kernelSize", data=np.array(w.shape[2:]))
    if layer["type"] == "dense":
        group.create_dataset("inFeatures", data=layer["data"]["weight"].shape[1])
        group.create_dataset("outFeatures", data=layer["data"]["weight"].shape[0])
    for name, value in (layer["neuron"] or {}).items():
        if isinstance(value, str):
            _write_string(group.require_group("neuron"), name, value)
        else:
            group.require_group("neuron").create_dataset(name, data=value)


def _read_group(group) -> dict:
    """Datasets as NetDict returns them: strings decoded, weight/bias truncated to int, others raw."""
    out = {}
    for name, item in group.items():
        if not hasattr(item, "shape"):
            out[name] = _read_group(item)
            continue
        value = item[()]
        if item.dtype.kind == "S":
            out[name] = value[0].decode("ascii") if np.ndim(value) else value.decode("ascii")
        elif name in ("weight", "bias"):
            out[name] = np.asarray(value).astype(int)
        else:
            out[name] = value
    return out


def _lava_neuron(neuron: dict, is_input: bool) -> dict:
    """netx's get_neuron_params: CUBA -> LIF (du = iDecay - 1, dv = vDecay, bias_exp 6, binary spikes),
    SDNN -> Delta (input) / Sigma (sigma_output) / SigmaDelta (state_exp 6, graded)."""
    kind = neuron.get("type")
    if kind in ("CUBA", "LOIHI"):
        return {"process": "LIF", "vth": int(neuron["vThMant"]), "du": int(neuron["iDecay"]) - 1,
                "dv": int(neuron["vDecay"]), "bias_exp": STATE_EXP, "graded_spikes": False}
    if kind == "SDNN":
        process = "Delta" if is_input else "Sigma" if "sigma_output" in neuron else "SigmaDelta"
        return {"process": process, "vth": int(neuron["vThMant"]), "state_exp": STATE_EXP, "graded_spikes": True}
    return {"process": None}


def _expand(value) -> np.ndarray:
    """netx's expand(): a scalar applies to both axes; a pair is reversed from (H, W) to (x, y)."""
    value = np.asarray(value)
    return np.array([int(value), int(value)]) if value.ndim == 0 else value[::-1].astype(int)


def _read_conv(raw: dict, in_xyz, path, index: int) -> dict:
    w = raw["weight"][:, :, ::-1, ::-1]
    w = w.reshape(w.shape[:4]).transpose(0, 3, 2, 1)  # Lava kernel [O, kW, kH, I/g]
    stride, padding, dilation = (_expand(raw[k]) for k in ("stride", "padding", "dilation"))
    xyz = tuple(int(v) for v in raw["shape"][::-1])
    want = tuple(int((in_xyz[a] + 2 * padding[a] - dilation[a] * (w.shape[1 + a] - 1) - 1) // stride[a] + 1)
                 for a in (0, 1)) + (w.shape[0],)
    if xyz != want:
        raise EdgesnnError(f"{path}: conv layer {index} has shape {xyz} (x, y, z) but its synapse gives {want}")
    return {"xyz": xyz, "lava_weight": w, "stride": stride, "padding": padding, "dilation": dilation,
            "groups": int(raw["groups"]), "bias": raw.get("bias")}


def _read_dense(raw: dict, flatten_before: bool) -> dict:
    n = int(np.prod(raw["shape"]))
    w = raw["weight"] if raw["weight"].ndim == 2 else raw["weight"].reshape(n, -1)
    return {"xyz": (n,), "lava_weight": w, "bias": raw.get("bias"), "flatten_before": flatten_before}
