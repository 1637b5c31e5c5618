"""Loihi 2 resource and energy estimate for an IR graph: neurons, synapses, cores, measured
synaptic operations and the energy those imply, with every hardware figure's source echoed.

The model (stated in the report under ``model`` too):

- Neurons: every op except ``reshape`` and ``transpose`` computes a new tensor, so each output
  element is one neuron (compartment): conv2d, dense, requantize, add, mul, reduce_sum and both
  pools. A requantize that only rescales spikes could be folded into the next layer's weights; it
  is still counted, so the figure is an upper bound for a hand-optimised mapping. A reshape or a
  transpose is wiring: the order of the axons its consumer reads (no neurons, no synapses).
- The product of two activation tensors (batch_matmul, a [B, M, K] x b [B, K, N]) has no native
  Loihi 2 synapse: a synapse multiplies a spike's payload by a *stored* weight, and nothing writes
  one layer's activity into another's weights at spike rate. It is counted as the Lava processes
  compute it (arith.py): B*M*K*N **product compartments**, each receiving a[m, k] and b[k, n] on
  two inputs (2 unit synapses; two 24-bit input states) and multiplying them in its neuron program,
  plus B*M*N **sum neurons**, each adding its K products (K unit synapses) and requantizing. This
  assumes a Loihi 2 neuron program can keep two synaptic inputs apart and multiply them (Intel
  describes the microcode as supporting basic arithmetic; two-input models exist, such as the
  resonate-and-fire neuron); it is not verified on hardware. When both operands are binary spikes a
  product is an AND (a coincidence) and the sum neuron only adds. Each layer row of a batch_matmul
  has a ``product`` entry with these counts, and an ``alternative``: b written into synaptic memory
  as weights (B*M*N neurons, B*K*N stored weights), which is what the Loihi 2 synapse computes
  natively per spike but needs b's values written into the weights every sample (host or embedded
  cores), so it is not counted.
- Synapses: ``synapses`` is the number of stored weights (the IR's weights: a conv kernel is stored
  once and reused at every position); ``synaptic_connections`` is the number of (input, neuron)
  pairs the ops connect, i.e. a conv's weights times their reuse (padding excluded), a dense's
  weights, and the fixed wiring of pools (window), add/mul (one per input, broadcast counted) and
  reduce_sum. ``synaptic_memory_bits`` stores the weights at their trained bit width plus the
  per-channel bias (32 bit) and multiplier + shift (2 x 32 bit), as the IR stores them.
- Cores: a core hosts one layer, so each layer takes max(neurons / neurons_per_core, (synaptic
  memory + neurons x 24-bit state) / memory_per_core), rounded up, and the layers' cores add up.
  ``cores_unshared`` is the same with every connection storing its own weight (no conv weight
  sharing on the core), the other extreme.
- Synaptic operations, measured on calibration data with the golden interpreter: every input element
  whose value (minus its zero point) is nonzero costs one op per synapse it fans out to ("graded":
  one graded spike carries the value). In "rate-burst" mode an element carrying a spike count n
  (a spike tensor, its exact k x rescale, a sum pool of spikes) sends n unary spikes, so it costs n
  ops per synapse; in "bit-plane" mode it sends the set bits of n, popcount(n) ops per synapse;
  other tensors (the image, membrane streams) stay graded.
- Neuron updates: every neuron is updated once per timestep: one step in "graded" mode, D steps in
  "rate-burst" mode, ceil(log2(D + 1)) in "bit-plane" mode (D: the largest spike_D of the graph).
- Energy = synops x E_synop + updates x E_update. No Loihi 2 per-operation figures were found, so
  both are Loihi 1 figures (Davies et al. 2018) used as proxies: read the result as an order of
  magnitude.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgesnn import limits, spikes
from edgesnn.backends.lava.arith import WIRING, matmul_shapes, product_bounds, tensor_bounds
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.resources import folder as shipped_folder

LIMITS_FILE = shipped_folder("boards") / "loihi2.yaml"
MODES = ("graded", "rate-burst", "bit-plane")
BIAS_BITS = 32
MULTIPLIER_BITS = 64  # int32 multiplier + int32 shift per channel, as the IR stores them
FIGURES_USED = ("neuro_cores_per_chip", "neurons_per_core", "memory_per_core_bytes", "neuron_state_bits",
                "energy_per_synop_pj", "energy_per_neuron_update_pj", "max_fan_in_axons_per_core")
BATCH = 256  # calibration samples per interpreter run: bounds the memory keep_all needs ...
BATCH_BYTES = 512 * 2**20  # ... as does this many bytes of every tensor of a run (224 x 224 inputs)


def load_limits(path: str | Path | None = None) -> dict:
    """The figures of a Loihi limits file (default: the shipped board loihi2): name -> {value, source, ...}."""
    path = Path(path) if path is not None else LIMITS_FILE
    raw = limits.read_yaml(path, "Loihi limits file")  # bounded: no aliases, limited depth and size
    figures = raw.get("figures") if isinstance(raw, dict) else None
    missing = [k for k in FIGURES_USED if not isinstance((figures or {}).get(k), dict)
               or not {"value", "source"} <= set(figures[k])]
    if missing:
        raise EdgesnnError(f"{path}: figures {missing} need a value and a source")
    bad = [k for k in FIGURES_USED if not _positive(figures[k]["value"])]
    if bad:
        raise EdgesnnError(f"{path}: figures {bad} need a positive finite number as their value")
    return figures


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def loihi2_report(graph: g.Graph, x_calibration_nhwc: np.ndarray, limits_path: str | Path | None = None,
                  mode: str = "graded") -> dict:
    """Resources and per-inference activity of the graph on Loihi 2 (see the module docstring)."""
    if mode not in MODES:
        raise EdgesnnError(f"unknown spike mode {mode!r}; choose one of {', '.join(MODES)}")
    figures = load_limits(limits_path)
    x = np.asarray(x_calibration_nhwc, dtype=np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise EdgesnnError("the Loihi report needs at least one calibration sample")
    timesteps = _timesteps(graph, mode)
    rows = [_static_row(graph, op, figures) for op in graph.ops]
    synops = _measured_synops(graph, x, mode)
    for row in rows:
        row["synops"] = synops[row["name"]]
        row["neuron_updates"] = row["neurons"] * timesteps
    totals = {key: sum(r[key] for r in rows) for key in
              ("neurons", "synapses", "synaptic_connections", "synaptic_memory_bits", "neuron_state_bits",
               "cores", "cores_unshared", "synops", "neuron_updates")}
    e_syn, e_upd = (float(figures[k]["value"]) for k in ("energy_per_synop_pj", "energy_per_neuron_update_pj"))
    energy_pj = totals["synops"] * e_syn + totals["neuron_updates"] * e_upd
    cores_per_chip = int(figures["neuro_cores_per_chip"]["value"])
    return {
        "chip": "loihi2", "mode": mode, "timesteps": timesteps, "samples": int(len(x)),
        "neurons": totals["neurons"], "synapses": totals["synapses"],
        "synaptic_connections": totals["synaptic_connections"],
        "synaptic_memory_bits": totals["synaptic_memory_bits"], "neuron_state_bits": totals["neuron_state_bits"],
        "cores": totals["cores"], "cores_unshared": totals["cores_unshared"],
        "chips": math.ceil(totals["cores"] / cores_per_chip),
        "max_fan_in": max((r["fan_in"] for r in rows), default=0),
        "synops_per_inference": totals["synops"], "neuron_updates_per_inference": totals["neuron_updates"],
        "energy_pj_per_inference": energy_pj, "energy_uj_per_inference": energy_pj * 1e-6,
        "energy_formula": "synops_per_inference * energy_per_synop_pj + neuron_updates_per_inference * "
                          "energy_per_neuron_update_pj",
        "figures": {k: figures[k] for k in FIGURES_USED}, "layers": rows,
        "model": _MODEL,
    }


_MODEL = [
    "neurons: one per output element of every op except reshape and transpose (wiring: the consumer's axon "
    "order); requantize/add/mul/pools included",
    "batch_matmul (a [B,M,K] x b [B,K,N]): no native Loihi 2 synapse (weights are stored, not another layer's "
    "activity); counted as B*M*K*N product compartments (a and b on two inputs, multiplied in the neuron program: "
    "assumed, unverified on hardware; an AND when both are binary spikes) + B*M*N sum neurons (K unit synapses, "
    "requantize); the row's 'product' entry has the counts and the not-native alternative (b as weights)",
    "synapses: stored weights; synaptic_connections: (input, neuron) pairs incl. conv reuse, pools, add/mul, "
    "the product's operand and sum wiring",
    "synaptic_memory_bits: weights at their bit width + 32-bit bias + 64-bit multiplier/shift per channel",
    "cores: per layer max(ceil(neurons/neurons_per_core), ceil((memory + 24-bit state)/memory_per_core)), summed",
    "synops: measured; one op per nonzero input per synapse (rate-burst: n ops for an input carrying n spikes; "
    "bit-plane: popcount(n) ops)",
    "neuron updates: neurons x timesteps (1 graded, max spike_D rate-burst, ceil(log2(max spike_D + 1)) bit-plane)",
    "energy figures are Loihi 1 proxies (Davies et al. 2018): an order-of-magnitude estimate",
]


def _timesteps(graph: g.Graph, mode: str) -> int:
    """Rate-burst runs every layer for D steps so a level up to D can be sent as unary spikes;
    bit-plane for ceil(log2(D + 1)) steps, one per bit."""
    if mode == "graded":
        return 1
    return spikes.num_steps(max([t.spike_D for t in graph.tensors.values() if t.spike_D], default=1), mode)


def _static_row(graph: g.Graph, op: g.Op, figures: dict) -> dict:
    """Counts that do not depend on data: neurons, weights, connections, memory and cores of one op."""
    neurons = 0 if op.kind in WIRING else int(np.prod(graph.tensors[op.output].shape))
    weight = getattr(op, "weight", None)
    stored = 0 if weight is None else int(weight.size)
    bits = getattr(op, "weight_bits", 0)
    fan_outs = _fan_outs(graph, op)
    connections = int(sum(f.sum() for f in fan_outs))
    state_bits = neurons * int(figures["neuron_state_bits"]["value"])
    memory = stored * bits + _channel_state_bits(op)
    unshared = connections * bits + _channel_state_bits(op) if weight is not None else memory
    product = None
    if op.kind == "batch_matmul":
        product = _product(graph, op, figures)
        neurons = product["product_compartments"] + product["sum_neurons"]
        connections += product["sum_synapses"]
        state_bits = product["state_bits"]
    row = {
        "name": op.name, "op": op.kind, "neurons": neurons, "synapses": stored,
        "synaptic_connections": connections, "fan_in": _fan_in(graph, op),
        "synaptic_memory_bits": memory, "neuron_state_bits": state_bits,
        "cores": _cores(neurons, memory + state_bits, figures),
        "cores_unshared": _cores(neurons, unshared + state_bits, figures),
    }
    return row if product is None else {**row, "product": product}


def _product(graph: g.Graph, op: g.BatchMatMul, figures: dict) -> dict:
    """How a batch_matmul maps onto Loihi 2 (the module docstring): product compartments and sum
    neurons, counted; b held as synaptic weights, the alternative that is not native."""
    batch, m, k, n = matmul_shapes(graph, op)
    terms, outs = batch * m * k * n, batch * m * n
    state = int(figures["neuron_state_bits"]["value"])
    bounds = tensor_bounds(graph)
    term_max, sum_max = product_bounds(graph, op, bounds)
    binary = all(bounds[name][0] >= 0 and bounds[name][1] <= 1 and graph.tensors[name].zero_point == 0
                 for name in op.inputs)
    b_lo, b_hi = bounds[op.inputs[1]]
    b_bits = max(int(b_lo).bit_length(), int(b_hi).bit_length()) + (1 if b_lo < 0 else 0)  # b as a weight
    alt_memory = batch * k * n * b_bits + outs * state + _channel_state_bits(op)
    return {
        "mapping": "product compartments + sum neurons (counted in this row)",
        "batch": batch, "m": m, "k": k, "n": n,
        "product_compartments": terms, "sum_neurons": outs,
        "operand_synapses": 2 * terms, "sum_synapses": terms,
        "fan_in": {"product_compartment": 2, "sum_neuron": k},
        "fan_out": {"a": n, "b": m},
        "state_bits": (2 * terms + outs) * state,  # two operand inputs per compartment, one state per sum neuron
        "max_state": {"product_compartment": term_max, "sum_neuron": sum_max},
        "products": "AND of binary spikes: additions only" if binary else "integer multiplies (one MAC per term)",
        "native": False,
        "note": "Loihi 2 synapses only scale spikes by stored weights: the multiply runs in the product "
                "compartment's neuron program (assumed possible, unverified on hardware)",
        "alternative": {
            "mapping": "b as synaptic weights (a's spikes read them)", "neurons": outs, "synapses": batch * k * n,
            "synaptic_connections": terms, "weight_bits": b_bits,
            "cores": _cores(outs, alt_memory, figures), "native": False,
            "note": "the synapse is native, but b's values must be written into synaptic memory every sample "
                    "(by the host or the embedded cores), which no layer does at spike rate",
        },
    }


def _channel_state_bits(op: g.Op) -> int:
    bias = getattr(op, "bias", None)
    multiplier = getattr(op, "multiplier", None)
    return ((0 if bias is None else bias.size * BIAS_BITS)
            + (0 if multiplier is None else multiplier.size * MULTIPLIER_BITS))


def _cores(neurons: int, memory_bits: int, figures: dict) -> int:
    """A core hosts one layer: enough cores for its neurons and for its memory, whichever needs more."""
    if neurons == 0:
        return 0
    per_core_bits = int(figures["memory_per_core_bytes"]["value"]) * 8
    per_core_neurons = int(figures["neurons_per_core"]["value"])
    return max(1, math.ceil(neurons / per_core_neurons), math.ceil(memory_bits / per_core_bits))


def _fan_outs(graph: g.Graph, op: g.Op) -> list[np.ndarray]:
    """Per input tensor, how many synapses each of its elements (one sample) drives in this op."""
    shapes = [tuple(graph.tensors[name].shape) for name in op.inputs]
    out = tuple(graph.tensors[op.output].shape)
    if op.kind in WIRING:
        return []
    if op.kind == "batch_matmul":  # each a[m, k] feeds its N product compartments, each b[k, n] its M
        _, m, _, n = matmul_shapes(graph, op)
        return [np.full(shapes[0], n, dtype=np.int64), np.full(shapes[1], m, dtype=np.int64)]
    if op.kind == "dense":
        return [np.full(shapes[0], len(op.weight), dtype=np.int64)]
    if op.kind == "conv2d":
        t, _, l, _ = op.padding
        return [_window_fan_out(shapes[0], out, op.weight.shape[1:3], op.stride, (t, l), len(op.weight) // op.groups)]
    if op.kind in ("sum_pool2d", "max_pool2d"):
        return [_window_fan_out(shapes[0], out, op.kernel, op.stride, (0, 0), 1)]
    if op.kind == "reduce_sum":
        return [np.ones(shapes[0], dtype=np.int64)]
    size = int(np.prod(out))  # requantize / add / mul: elementwise, a broadcast input feeds several outputs
    return [np.full(s, size // int(np.prod(s)), dtype=np.int64) for s in shapes]


def _window_fan_out(in_shape, out_shape, kernel, stride, pad, per_window: int) -> np.ndarray:
    """Fan-out of each NHWC input element under a sliding window: windows covering its row x windows
    covering its column x output channels per window (``per_window``); padded positions have none."""
    rows = _cover(in_shape[0], out_shape[0], kernel[0], stride[0], pad[0])
    cols = _cover(in_shape[1], out_shape[1], kernel[1], stride[1], pad[1])
    return np.broadcast_to((rows[:, None] * cols[None, :])[:, :, None] * per_window, in_shape).astype(np.int64)


def _cover(n_in: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    count = np.zeros(n_in, dtype=np.int64)
    for o in range(n_out):
        start = o * stride - pad
        count[max(start, 0):max(min(start + k, n_in), 0)] += 1
    return count


def _fan_in(graph: g.Graph, op: g.Op) -> int:
    """Inputs of one neuron: the synapses it sums (for the per-core axon limit, informational)."""
    if op.kind in WIRING:
        return 0
    if op.kind == "batch_matmul":  # a sum neuron's K products (a product compartment has 2 inputs)
        return matmul_shapes(graph, op)[2]
    if op.kind in ("dense", "conv2d"):
        return int(np.prod(op.weight.shape[1:]))
    if op.kind in ("sum_pool2d", "max_pool2d"):
        return int(np.prod(op.kernel))
    if op.kind == "reduce_sum":
        h, w = graph.tensors[op.inputs[0]].shape[:2]
        return int(h * w)
    return len(op.inputs)


def _measured_synops(graph: g.Graph, x: np.ndarray, mode: str) -> dict[str, float]:
    """Mean synaptic operations per inference, per op, from the golden interpreter's tensors."""
    fan_outs = {op.name: _fan_outs(graph, op) for op in graph.ops}
    units = _spike_units(graph) if mode != "graded" else {}
    totals = dict.fromkeys(fan_outs, 0.0)
    per_sample = sum(math.prod(t.shape) * np.dtype(g.DTYPES[t.dtype]).itemsize for t in graph.tensors.values())
    batch = max(1, min(BATCH, BATCH_BYTES // max(per_sample, 1)))
    for start in range(0, len(x), batch):
        values = graph.run_integer(graph.quantize_input(x[start:start + batch]), keep_all=True)
        add_synops(graph, fan_outs, values, totals, units, mode)
    return {name: total / len(x) for name, total in totals.items()}


def add_synops(graph: g.Graph, fan_outs: dict, values: dict, totals: dict, units: dict | None = None,
               mode: str = "graded") -> None:
    """Add one batch's synaptic operations per op to ``totals``: every element an op reads sends its
    spikes (:func:`_spikes_sent`) to each synapse it fans out to; a batch_matmul's product compartments
    send their nonzero products. Static inferences and each step of a sequence count alike."""
    for op in graph.ops:
        for name, fan_out in zip(op.inputs, fan_outs[op.name]):
            sent = _spikes_sent(values[name].astype(np.int64) - graph.tensors[name].zero_point,
                                (units or {}).get(name), mode)
            totals[op.name] += float((sent * fan_out).sum())
        if op.kind == "batch_matmul":
            totals[op.name] += _nonzero_products(graph, op, values)


def _nonzero_products(graph: g.Graph, op: g.BatchMatMul, values: dict) -> float:
    """Graded spikes product compartments send their sum neurons: one per nonzero a[m, k] * b[k, n]."""
    batch, m, k, n = matmul_shapes(graph, op)
    a, b = ((values[name].astype(np.int64) != graph.tensors[name].zero_point).astype(np.float64) for name in op.inputs)
    a = a.reshape(len(a), batch, m, k)
    b = b.reshape(len(b), batch, n, k).swapaxes(-1, -2) if op.adj_y else b.reshape(len(b), batch, k, n)
    return float((a @ b).sum())  # counts: exact in float64


def _spike_units(graph: g.Graph) -> dict[str, int]:
    """Tensors that carry spike counts, and the integer value of one spike in them: spike tensors (1),
    their exact k x rescales (k), sum pools of either (a window's spikes add up) and reshapes or transposes of any."""
    from edgesnn.backends.lava.netx import spike_rescale

    units = {name: 1 for name, t in graph.tensors.items() if t.spike_D is not None and not t.signed}
    for op in graph.ops:
        source = op.inputs[0] if op.inputs else None
        if op.kind == "requantize" and units.get(source) == 1:
            k = spike_rescale(graph, op)
            if k is not None:
                units[op.output] = k
        elif op.kind in ("sum_pool2d", *WIRING) and source in units:
            units[op.output] = units[source]
    return units


def _spikes_sent(v: np.ndarray, unit: int | None, mode: str = "rate-burst") -> np.ndarray:
    """Spikes each element sends: 1 if its value is nonzero (graded), or in a spike-train mode, for
    a tensor carrying spike counts (``unit``: one spike's value), the spikes of its count |v| / unit
    in that code (the count itself, or its set bits)."""
    if unit is None:
        return (v != 0).astype(np.int64)
    return spikes.spike_ops(np.abs(v) // unit, mode)
