"""Write (and read back) an IR graph in lava-dl's netx HDF5 layout, for the layers netx can load.

netx (``lava.lib.dl.netx.hdf5.Network``) builds a strictly sequential chain of ``input``, ``conv``,
``dense`` and ``flatten`` layers; every value is an HDF5 *dataset* under ``/layer/<i>/``. This module
maps the integer IR onto that chain so the network can be handed to Lava's own loader; ops netx
cannot express raise :class:`EdgesnnError` and stay with the Lava-only process network.

Units. A netx weight here is the IR's widened integer weight itself (one LSB = one integer unit):
netx's dense loader (``optimize_weight_bits``) passes int8 weights through exactly and its conv
loader uses them as they are, so no rescaling is needed and vThMant / bias are in the same units.

Mapping (``write_netx`` returns it per layer, with ``exact`` and a note):

- input: ``shape`` (C, H, W) with an SDNN neuron of vThMant 0 (a Delta encoder that forwards every
  value on the first step). The source must send the offset integers ``x - zero_point``
  (``input_offset`` in the summary; the IR's accumulators use exactly these), with netx's
  ``spike_exp=0`` so the payload is unscaled.
- conv2d / dense whose output is a spike tensor (clamp [0, D]): a CUBA neuron with
  iDecay = vDecay = 4096, so u and v forget everything each step and ``v = (a_in + bias) << 6``; it
  spikes iff ``a_in + bias > vThMant``. The IR neuron fires (y >= 1) iff its accumulator reaches the
  first integer T_c where TFLite's requantization gives 1; T_c is found by bisection on the very
  fixed-point function the IR uses, and any exact x k rescale of spikes in between (the IR's
  ``requantize`` "spikes x 64") is folded into it: a_in >= ceil((T_c - b_c) / k). One global vThMant
  and a per-channel bias carry these per-channel thresholds.
  **Exact for D = 1** (binary neurons): same spikes, bit for bit, given exact inputs.
  **Approximate for D > 1**: netx's CUBA neuron sends binary spikes (the loader forces
  ``use_graded_spikes=False``), so a graded y in 1..D arrives as 1 and the per-channel multiplier
  no longer scales a level; every later layer is then approximate too.
- sum_pool2d: a depthwise ``conv`` (groups = C) with weights 64 and an SDNN neuron of vThMant 0:
  one step from reset SigmaDelta gives ``relu(64 * window_sum) >> 6`` = the window sum, graded.
  Exact for non-negative inputs (spikes), on the first step after a reset (SigmaDelta keeps state).
- reshape feeding a dense: ``flatten``; netx flattens in (C, H, W) order, so the dense weight's
  input axis is permuted from the IR's (H, W, C) order.
- the last conv2d / dense (non-spiking logits): an SDNN ``sigma_output`` readout (Lava ``Sigma``)
  that outputs the raw accumulator W . s; the host applies ``k * acc + bias`` and the IR's
  per-channel requantization (``readout`` in the summary), which makes the logits exact.

Timing: each Lava layer adds one step of latency, so layer i sees the sample at step i; the CUBA
layers are memoryless, the SDNN ones must start from reset. Hardware ranges (vThMant 17 bit
unsigned, bias mantissa 13 bit signed (unverified), 24-bit u/v) are checked and reported as
``warnings``, not enforced: Lava's CPU models run either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import INT32_MAX, multiply_by_quantized_multiplier
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
VTH_MAX = (1 << 17) - 1  # Lava LIF vth: 17 bits unsigned
BIAS_MANT_RANGE = (-(1 << 12), (1 << 12) - 1)  # 13-bit signed bias mantissa (spec: unverified)
STATE_LIMIT = 1 << 23  # u, v are 24-bit signed


def netx_supported(graph: g.Graph) -> tuple[bool, str]:
    """(True, "") when :func:`write_netx` can write the graph, else (False, the reason)."""
    try:
        _plan(graph)
    except EdgesnnError as e:
        return False, str(e)
    return True, ""


def write_netx(graph: g.Graph, path: str | Path) -> dict:
    """Write the graph as a netx HDF5 file (atomically); returns a summary of the layers written.

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
    return {
        "path": str(path), "format": "lava-dl netx HDF5", "layers": rows,
        "exact": all(r["exact"] for r in rows), "input_offset": plan["input_offset"],
        "readout": plan["readout"], "warnings": plan["warnings"],
        "weight_unit": "one netx weight unit = one integer LSB of the IR's widened weight",
    }


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
    layers = [_input_layer(graph)]
    plan = {"layers": layers, "warnings": [], "readout": None,
            "input_offset": -int(graph.tensors[graph.input].zero_point)}
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
            layers.append(_pool_layer(graph, op, stream))
        else:
            layers.append(_synaptic_layer(graph, op, stream, last=nxt is None, plan=plan))
    return plan


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


def _input_layer(graph: g.Graph) -> dict:
    spec = graph.tensors[graph.input]
    return {"type": "input", "shape": _chw(spec.shape), "data": {}, "neuron": _sdnn(0),
            "info": {"ir_ops": [], "exact": True,
                     "note": f"SDNN Delta encoder (vThMant 0): send x - ({spec.zero_point}) as graded payloads, "
                             "spike_exp 0"}}


def _flatten_layer(graph: g.Graph, op: g.Reshape, nxt: g.Op | None, stream: dict) -> dict:
    """A reshape is a netx flatten only right before a dense; the dense then permutes its inputs."""
    out_shape = graph.tensors[op.output].shape
    if nxt is None or nxt.kind != "dense" or len(out_shape) != 1:
        _refuse(op, "netx's flatten only reshapes to a vector right before a dense layer")
    stream["flatten"] = list(stream["shape"]) if len(stream["shape"]) == 3 else None
    stream["shape"] = list(out_shape)
    return {"type": "flatten", "shape": (int(out_shape[0]), 1, 1), "data": {}, "neuron": None,
            "info": {"ir_ops": [op.name], "exact": True, "note": "netx flattens in (C, H, W) order"}}


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


def _pool_layer(graph: g.Graph, op: g.SumPool2D, stream: dict) -> dict:
    """A sum pool as netx does pooling: a depthwise conv of ones (64 = 1.0) into a graded SDNN neuron."""
    if stream["payload"][0] < 0:
        _refuse(op, "SDNN's ReLU would clip the negative values it sums")
    (kh, kw), channels = op.kernel, stream["shape"][2]
    out = graph.tensors[op.output].shape
    weight = np.full((channels, 1, kh, kw), UNIT_WEIGHT, dtype=np.int64)
    stream.update(shape=list(out), payload=(0, stream["payload"][1] * kh * kw))
    info = {"ir_ops": [*stream.pop("ir_ops"), op.name], "exact": stream["exact"],
            "note": "depthwise conv of 64s into SDNN (vThMant 0): the window sum, from reset"}
    stream["ir_ops"] = []
    return {"type": "conv", "shape": _chw(out), "neuron": _sdnn(0), "info": info,
            "data": {"weight": weight, "stride": np.array(op.stride), "padding": np.array([0, 0]),
                     "dilation": np.array([1, 1]), "groups": channels}}


def _synaptic_layer(graph: g.Graph, op: g.Requantized, stream: dict, last: bool, plan: dict) -> dict:
    """A conv2d / dense: a CUBA layer when it outputs spikes, the Sigma readout when it is the last op."""
    spec = graph.tensors[op.output]
    weight = _netx_weight(op, stream)
    data = {"weight": weight, **(_conv_geometry(op) if op.kind == "conv2d" else {})}
    a_lo, a_hi = _accumulator_bounds(weight, stream["payload"])
    ir_ops = [*stream.pop("ir_ops"), op.name]
    if spec.spike_D is not None:
        layer = _cuba_layer(op, spec, stream, data, a_lo, a_hi, plan["warnings"])
    elif last:
        layer = {"neuron": _sdnn(0, sigma_output=True),
                 "info": {"exact": stream["exact"], "note": "Sigma readout of W . s; the host applies k * acc + "
                          "bias and the IR's per-channel requantization"}}
        plan["readout"] = {"op": op.name, "factor": stream["factor"], "bias": op.bias.astype(int).tolist()}
    else:
        _refuse(op, "its output is an int8 stream without a neuron, feeding further layers")
    _check_state_range(op, a_lo, a_hi, data.get("bias"), plan["warnings"])
    layer["info"]["ir_ops"] = ir_ops
    layer.update(type="conv" if op.kind == "conv2d" else "dense",
                 shape=_chw(spec.shape) if op.kind == "conv2d" else (int(spec.shape[-1]),), data=data)
    stream.update(shape=list(spec.shape), payload=(0, 1), factor=1, flatten=None, ir_ops=[])
    return layer


def _netx_weight(op: g.Requantized, stream: dict) -> np.ndarray:
    """The widened integer weights in netx's layout: conv [O, I/g, kH, kW] (PyTorch OIHW), dense
    [out, in] with the input axis in netx's flatten order (C, H, W) when a flatten precedes it."""
    w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
    if op.kind == "conv2d":
        return w.transpose(0, 3, 1, 2)
    if stream["flatten"] is not None:
        h, wd, c = stream["flatten"]
        w = w.reshape(len(w), h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1)
    return w


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


def _cuba_layer(op, spec, stream, data, a_lo, a_hi, warnings) -> dict:
    """CUBA parameters whose spikes (a_in + bias > vThMant) are the IR neuron's y >= 1."""
    if spec.signed or spec.zero_point != 0 or op.clamp != [0, spec.spike_D]:
        _refuse(op, f"its neuron clamps to {op.clamp} (zero point {spec.zero_point}); netx's CUBA neuron "
                    "only emits non-negative spikes from 0")
    theta = _firing_thresholds(op, stream["factor"], a_lo, a_hi)
    vth = max(0, int(np.median(theta)) - 1)
    bias = vth + 1 - theta
    data["bias"] = bias
    exact = stream["exact"] and spec.spike_D == 1
    stream["exact"] = exact
    if vth > VTH_MAX:
        warnings.append(f"{op.name}: vThMant {vth} exceeds Lava LIF's 17-bit vth")
    if bias.min() < BIAS_MANT_RANGE[0] or bias.max() > BIAS_MANT_RANGE[1]:
        warnings.append(f"{op.name}: bias {int(bias.min())}..{int(bias.max())} exceeds a 13-bit bias mantissa "
                        "(the range is unverified)")
    note = ("binary neuron: exact" if spec.spike_D == 1 else
            f"graded D = {spec.spike_D}: netx's CUBA spike is binary (y >= 1), the level is lost")
    return {"neuron": _cuba(vth), "info": {"exact": exact, "note": note, "vThMant": vth}}


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


def _check_state_range(op, a_lo, a_hi, bias, warnings) -> None:
    b = np.zeros_like(a_lo) if bias is None else bias
    peak = int(max(np.abs(a_lo + b).max(initial=0), np.abs(a_hi + b).max(initial=0)))
    if peak << STATE_EXP >= STATE_LIMIT:
        warnings.append(f"{op.name}: (a_in + bias) << 6 reaches {peak << STATE_EXP}, beyond Lava's 24-bit u/v")


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
