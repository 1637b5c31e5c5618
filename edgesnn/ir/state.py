"""State over real time: neurons whose membrane carries from one timestep to the next, and the golden
interpreter of such graphs over whole sequences (N, T, ...). docs/temporal.md spells out the arithmetic.

A temporal graph is an ordinary graph run once per timestep (every op, static ones too, sees one frame),
plus ``states`` (integer tensors with an explicit width, zero at the start of every sequence) and a
``sequence`` (the number of steps T it takes and how each output is read out over them). Its stateful
ops follow Loihi's fixed-point neuron (Lava's bit-accurate CUBA LIF): a 12-bit decay applied as
``v * (4096 - decay)`` shifted right by 12 with the sign kept (rounding toward zero), the input added in
the state's own units, a state held to a symmetric width (Loihi's 24 bits: +-(2**23 - 1)), a spike when
``v > threshold``, then a reset by subtraction or to zero.

- ``lif``: IF (decay 0) and LIF. ``cuba_lif``: a synaptic current with its own decay feeds the membrane.
  Either emits 0/1 spikes, or with ``max_spike`` D > 1 an integer count in 0..D per step (SFA's
  MultiSpike, Q-SNN's integer spikes): the thresholds its membrane passes.
- ``li``: a leaky integrator with no spike (the usual readout layer); its output is the membrane.
- ``recurrent``: adds a learned weight times the previous step's value of a tensor (a layer's own spikes).

A state that leaves its width saturates (``overflow: saturate``, what Loihi does to its membrane) or is
one clear error (``overflow: error``; Loihi wraps its synaptic current instead, which no other target
can reproduce, so an exporter chooses ``error`` there and the interpreter proves no wrap occurs on the data).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from edgesnn import limits
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier
from edgesnn.ir.interpreter import KERNELS, plan
from edgesnn.ir.packing import widen

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT  # decay 4096: nothing is kept from one step to the next
MAX_INPUT_SHIFT = 24
MAX_STEPS = 1_000_000
MAX_SPIKE = 127  # the largest spike count per step: the spike tensor is int8
OVERFLOW = ("saturate", "error")
RESETS = ("subtract", "zero")
READOUTS = ("count", "last", "mean")


@dataclass
class StateSpec:
    """An integer state per sample: values in [-(2**(bits-1) - 1), 2**(bits-1) - 1], stored in ``dtype``;
    real = scale * q. Zero at the start of every sequence."""

    shape: list[int]
    dtype: str
    bits: int
    scale: float
    overflow: str = "saturate"

    def bounds(self) -> tuple[int, int]:
        top = (1 << (self.bits - 1)) - 1
        return -top, top


@dataclass
class Sequence:
    """The steps T a graph takes and each output's readout over them: ``count`` (the sum of a spike
    tensor over T, int32), ``last`` (its value at the last step) or ``mean`` (the sum over T, int32,
    whose real value is scale * sum / T: the division is left to the reader, so no rounding enters)."""

    steps: int
    readout: dict[str, str] = field(default_factory=dict)


@dataclass
class LIF(g.Op):
    """IF (``decay_v`` 0) or LIF: ``v = decay(v, decay_v) + (x << input_shift)``, held to its width;
    spike ``s = v > threshold`` (int8 0/1); reset ``v -= threshold * s`` (subtract) or ``v = 0`` where
    s (zero). ``decay_v`` and ``threshold``: int32, one entry or one per channel (last axis).

    ``max_spike`` D > 1 (SFA's MultiSpike per step): s is the number of thresholds k * threshold,
    k = 1..D, that v exceeds, ``s = clip(floor((v - 1) / threshold), 0, D)`` (threshold >= 1), which for
    D = 1 is ``v > threshold``; the same resets, ``v -= threshold * s`` or ``v = 0`` where s > 0. The
    output is int8 with spike_D D. D = 1 is not written to the file (files from before it load as D 1)."""

    v_state: str = ""
    decay_v: np.ndarray = None
    threshold: np.ndarray = None
    reset: str = "subtract"
    input_shift: int = 0
    max_spike: int = 1
    kind = "lif"

    def attrs(self) -> dict:
        a = super().attrs()
        if a.get("max_spike") == 1:
            del a["max_spike"]
        return a


@dataclass
class CubaLIF(LIF):
    """Current-based LIF (Loihi's CUBA): ``i = decay(i, decay_i) + (x << input_shift)``, held to its
    width; then ``v = decay(v, decay_v) + i`` and the spike and reset of ``lif``."""

    i_state: str = ""
    decay_i: np.ndarray = None
    kind = "cuba_lif"


@dataclass
class LI(g.Op):
    """Leaky integrator, no spike: ``v = decay(v, decay_v) + (x << input_shift)`` (with ``i_state``,
    through a current first, as ``cuba_lif``); the output is v, in the state's dtype and scale."""

    v_state: str = ""
    decay_v: np.ndarray = None
    input_shift: int = 0
    i_state: str | None = None
    decay_i: np.ndarray | None = None
    kind = "li"


@dataclass
class Recurrent(g.Requantized):
    """``y = clamp(x + MultiplyByQuantizedMultiplier(W . (prev - zero_point), multiplier, shift))`` per
    output channel, where ``prev`` is the state ``state``: the tensor ``source`` as it was at the
    previous step (zero at the first), copied there at the end of each step. W [out, in] like dense's;
    the accumulator must fit int32, as every linear op's."""

    state: str = ""
    source: str = ""
    weight: np.ndarray = None
    weight_scale: np.ndarray = None
    weight_bits: int = 8
    weight_code: str = "signed"
    kind = "recurrent"


OP_TYPES = {cls.kind: cls for cls in (LIF, CubaLIF, LI, Recurrent)}


# ---------------------------------------------------------------- arithmetic

def decay(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Loihi's decay: ``sign(p) * (|p| >> 12)`` with ``p = v * (4096 - d)``: |v| shrinks by d/4096,
    rounded toward zero (int64 throughout: |p| < 2**44)."""
    p = v * (DECAY_UNITY - d)
    return np.sign(p) * (np.abs(p) >> DECAY_SHIFT)


class StateOverflow(EdgesnnError):
    pass


def _hold(v: np.ndarray, spec: StateSpec, name: str, op: g.Op, step: int, first: int) -> np.ndarray:
    """Saturate ``v`` to the state's width, or refuse it (naming the op, state, step and sample)."""
    lo, hi = spec.bounds()
    if spec.overflow == "saturate":
        return np.clip(v, lo, hi)
    bad = (v < lo) | (v > hi)
    if bad.any():
        sample = int(np.argmax(bad.reshape(len(v), -1).any(axis=1)))
        value = int(v[sample][bad[sample]].flat[0])
        raise StateOverflow(f"op {op.name}: state {name!r} would overflow its {spec.bits} bits ({lo}..{hi}) at step "
                            f"{step} of sample {first + sample}: {value}")
    return v


def _channels(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.int64)  # one entry broadcasts; C entries run along the last axis


def _integrate(op, x, states, specs, step, first) -> np.ndarray:
    """The membrane after this step's input (before spike and reset): the current first if there is one."""
    drive = x.astype(np.int64) << op.input_shift
    i_name = getattr(op, "i_state", None)
    if i_name:
        i = decay(states[i_name], _channels(op.decay_i)) + drive
        states[i_name] = _hold(i, specs[i_name], i_name, op, step, first)
        drive = states[i_name]
    v = decay(states[op.v_state], _channels(op.decay_v)) + drive
    return _hold(v, specs[op.v_state], op.v_state, op, step, first)


def spike_count(v: np.ndarray, theta: np.ndarray, max_spike: int) -> np.ndarray:
    """The spikes of membrane v (int64): ``v > theta`` (D 1), else how many of theta, 2 theta, ..., D theta
    v exceeds, ``clip(floor((v - 1) / theta), 0, D)`` (theta >= 1)."""
    if max_spike == 1:
        return (v > theta).astype(np.int64)
    return np.clip(np.floor_divide(v - 1, theta), 0, max_spike)


def lif_step(op: LIF, x: np.ndarray, states: dict, specs: dict, step: int, first: int) -> np.ndarray:
    v = _integrate(op, x, states, specs, step, first)
    theta = _channels(op.threshold)
    spike = spike_count(v, theta, op.max_spike)
    if op.reset == "subtract":
        v = v - spike * theta
    else:
        v = np.where(spike > 0, 0, v)
    states[op.v_state] = v
    return spike.astype(np.int8)


def li_step(op: LI, x: np.ndarray, states: dict, specs: dict, step: int, first: int) -> np.ndarray:
    v = _integrate(op, x, states, specs, step, first)
    states[op.v_state] = v
    return v.astype(g.DTYPES[specs[op.v_state].dtype])


def recurrent_step(op: Recurrent, x: np.ndarray, prev: np.ndarray, spec_x, spec_prev, spec_out) -> np.ndarray:
    w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
    acc = (prev.astype(np.int64) - spec_prev.zero_point) @ w.T  # exact: |acc| <= 2**7 * 2**31 * in
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"op {op.name}: int32 accumulator overflow")
    y = x.astype(np.int64) + multiply_by_quantized_multiplier(acc, op.multiplier, op.shift)
    return np.clip(y, op.clamp[0], op.clamp[1]).astype(g.DTYPES[spec_out.dtype])


# ---------------------------------------------------------------- running sequences

class Stepper:
    """One timestep at a time, as a device runs it: ``reset(n)`` zeroes every state for n sequences,
    ``step(frame)`` runs the graph once and updates them (what ``edgesnn_reset`` / ``edgesnn_step`` do)."""

    def __init__(self, graph: g.Graph):
        if graph.sequence is None:
            raise EdgesnnError("this graph has no state over time (no 'sequence'): run it one sample at a time")
        self.graph = graph
        self.states: dict[str, np.ndarray] = {}
        self.t = 0
        self.first = 0  # the index of this batch's first sample, for messages

    def reset(self, n: int, first: int = 0) -> None:
        self.states = {name: np.zeros((n, *spec.shape), np.int64) for name, spec in self.graph.states.items()}
        self.t, self.first = 0, first

    def step(self, frame: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
        graph, specs = self.graph, self.graph.states
        frame = np.asarray(frame)
        n = len(next(iter(self.states.values()))) if self.states else len(frame)
        want = (n, *graph.tensors[graph.input].shape)
        if not self.states and graph.states:
            raise EdgesnnError("reset(n) the states before the first step")
        if frame.shape != want:
            raise EdgesnnError(f"a frame batch has shape {frame.shape}; after reset({n}) this model takes {want} per step")
        values = {graph.input: frame.astype(g.DTYPES[graph.tensors[graph.input].dtype])}
        for op in graph.ops:
            args = [values[name] for name in op.inputs]
            tensor_specs = [graph.tensors[name] for name in op.inputs]
            out = graph.tensors[op.output]
            if op.kind in ("lif", "cuba_lif"):
                values[op.output] = lif_step(op, args[0], self.states, specs, self.t, self.first)
            elif op.kind == "li":
                values[op.output] = li_step(op, args[0], self.states, specs, self.t, self.first)
            elif op.kind == "recurrent":  # the previous step's source carries the source's zero point
                values[op.output] = recurrent_step(op, args[0], self.states[op.state], tensor_specs[0],
                                                   graph.tensors[op.source], out)
            else:
                values[op.output] = KERNELS[op.kind](op, *args, *tensor_specs, out)
        for op in graph.ops:  # the end of the step: each recurrent state takes its source's value
            if op.kind == "recurrent":
                self.states[op.state] = values[op.source].astype(np.int64)
        self.t += 1
        return values if keep_all else {name: values[name] for name in graph.outputs}


def check_sequence_shape(graph: g.Graph, x: np.ndarray) -> None:
    want = (graph.sequence.steps, *graph.tensors[graph.input].shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        got = f"(batch, T={x.shape[1]}, {', '.join(map(str, x.shape[2:]))})" if x.ndim >= 2 else str(tuple(x.shape))
        raise EdgesnnError(f"input sequences have shape {tuple(x.shape)} {got}; this model takes (batch, "
                           f"T={want[0]}, {', '.join(map(str, want[1:]))}) in {g.LAYOUT}: {want[0]} steps of one frame each")


def quantize_sequence(graph: g.Graph, x: np.ndarray) -> np.ndarray:
    """float sequences (N, T, ...) -> input integers, each frame as ``Graph.quantize_input``."""
    x = np.asarray(x, dtype=np.float32)
    _require_temporal(graph)
    check_sequence_shape(graph, x)
    frames = x.reshape(-1, *x.shape[2:])
    return graph.quantize_input(frames).reshape(x.shape)


def run_sequence(graph: g.Graph, xq: np.ndarray, keep_steps: bool = False) -> dict[str, np.ndarray]:
    """Integer sequences (N, T, ...) -> each output's readout (N, ...), states reset for every sequence.
    ``keep_steps``: also every output at every step, as ``<output>@steps`` (N, T, ...)."""
    _require_temporal(graph)
    xq = np.asarray(xq)
    check_sequence_shape(graph, xq)
    n, steps = len(xq), graph.sequence.steps
    state_bytes = sum(8 * math.prod(s.shape) for s in graph.states.values())
    kept = sum(8 * math.prod(graph.tensors[o].shape) * (1 + (steps if keep_steps else 0)) for o in graph.outputs)
    limits.check_memory(n * (state_bytes + kept), f"{graph.path or 'the IR'}: the state and readouts of {n:,} sequences")
    chunk = plan(graph, n)
    parts = [_run(graph, xq[s:s + chunk], keep_steps, s) for s in range(0, n, chunk)] if n else [_run(graph, xq, keep_steps, 0)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _run(graph: g.Graph, xq: np.ndarray, keep_steps: bool, first: int) -> dict[str, np.ndarray]:
    stepper = Stepper(graph)
    stepper.reset(len(xq), first)
    seq = graph.sequence
    sums = {o: np.zeros((len(xq), *graph.tensors[o].shape), np.int64) for o in graph.outputs}
    per_step = {o: [] for o in graph.outputs}
    last = {}
    try:
        for t in range(seq.steps):
            out = stepper.step(xq[:, t])
            for o, v in out.items():
                sums[o] += v
                last[o] = v
                if keep_steps:
                    per_step[o].append(v)
    except OverflowError as e:
        raise EdgesnnError(f"integer overflow while running the IR: {e}") from None
    result = {}
    for o in graph.outputs:
        result[o] = last[o] if seq.readout[o] == "last" else _int32_total(graph, o, sums[o])
        if keep_steps:
            result[f"{o}@steps"] = np.stack(per_step[o], axis=1)
    return result


def readout(graph: g.Graph, name: str, per_step: np.ndarray) -> np.ndarray:
    """Output ``name``'s readout from its steps (N, T, ...): the last step, or the int32 sum over T (count,
    mean). Every target's runner computes it from the steps it ran, as the interpreter does."""
    if graph.sequence.readout[name] == "last":
        return per_step[:, -1]
    return _int32_total(graph, name, per_step.astype(np.int64).sum(axis=1))


def _int32_total(graph: g.Graph, name: str, total: np.ndarray) -> np.ndarray:
    if total.size and (total.min() < INT32_MIN or total.max() > INT32_MAX):
        raise EdgesnnError(f"the {graph.sequence.readout[name]} readout of {name!r} over {graph.sequence.steps} steps "
                           "does not fit int32")
    return total.astype(np.int32)


def readout_real(graph: g.Graph, name: str, q: np.ndarray) -> np.ndarray:
    """An output's readout as real numbers: scale * (q - zero_point), and for ``mean`` divided by T."""
    spec, mode = graph.tensors[name], graph.sequence.readout[name]
    q = q.astype(np.float64)
    if mode == "last":
        return (q - spec.zero_point) * spec.scale
    if mode == "mean":
        return (q - graph.sequence.steps * spec.zero_point) * spec.scale / graph.sequence.steps
    return q  # count: spikes


def _require_temporal(graph: g.Graph) -> None:
    if graph.sequence is None:
        raise EdgesnnError("this graph has no state over time: it takes one sample (batch, ...), not sequences")


# ---------------------------------------------------------------- the file

def header_entries(graph: g.Graph) -> dict:
    """The JSON a temporal graph adds to the IR header (nothing for a static graph: its bytes are unchanged)."""
    if graph.sequence is None:
        return {}
    return {"states": {k: asdict(v) for k, v in graph.states.items()}, "sequence": asdict(graph.sequence)}


def read_header(header: dict) -> tuple[dict[str, StateSpec], Sequence | None]:
    states_json, seq_json = header.get("states", {}), header.get("sequence")
    _require(isinstance(states_json, dict), "'states' must be an object of state specs")
    _require(len(states_json) <= limits.MAX_GRAPH_NODES, f"more than {limits.MAX_GRAPH_NODES:,} states")
    if seq_json is None:
        _require(not states_json, "'states' without a 'sequence'")
        return {}, None
    states = {}
    names = {f.name for f in fields(StateSpec)}
    for name, spec in states_json.items():
        _require(isinstance(spec, dict) and not set(spec) - names and {"shape", "dtype", "bits", "scale"} <= set(spec),
                 f"state {name}: a state is an object with shape, dtype, bits, scale and overflow")
        s = StateSpec(**spec)
        _require(isinstance(s.shape, list) and all(_is_int(d) and 1 <= d <= 2**24 for d in s.shape)
                 and math.prod(s.shape) <= 2**28, f"state {name}: shape must be a list of positive integers")
        limits.elements(s.shape, f"state {name}")
        _require(isinstance(s.dtype, str) and s.dtype in g.DTYPES, f"state {name}: unknown dtype {s.dtype!r}")
        width = 8 * np.dtype(g.DTYPES[s.dtype]).itemsize
        _require(_is_int(s.bits) and 2 <= s.bits <= width, f"state {name}: bits must be an integer in 2..{width} ({s.dtype})")
        _require(isinstance(s.scale, (int, float)) and not isinstance(s.scale, bool) and math.isfinite(s.scale)
                 and 0 < s.scale < 3.4e38 and np.float32(s.scale) > 0, f"state {name}: scale must be a positive float32 number")
        _require(s.overflow in OVERFLOW, f"state {name}: overflow must be one of {', '.join(OVERFLOW)}")
        states[name] = s
    _require(isinstance(seq_json, dict) and set(seq_json) <= {"steps", "readout"} and "steps" in seq_json,
             "'sequence' must be an object with steps and readout")
    seq = Sequence(**seq_json)
    _require(_is_int(seq.steps) and 1 <= seq.steps <= MAX_STEPS, f"sequence steps must be an integer in 1..{MAX_STEPS:,}")
    _require(isinstance(seq.readout, dict) and all(isinstance(k, str) and v in READOUTS for k, v in seq.readout.items()),
             f"sequence readout must map outputs to one of {', '.join(READOUTS)}")
    return states, seq


def check_graph(graph: g.Graph) -> None:
    """What a temporal graph must hold beyond each op's own checks: stateful ops only with a sequence,
    each state owned by one op, a readout for every output that suits it."""
    stateful = [op for op in graph.ops if op.kind in OP_TYPES]
    if graph.sequence is None:
        _require(not stateful, f"op {stateful[0].name if stateful else ''} keeps state over time, but the graph has no "
                               f"'sequence' (steps and readout)")
        return
    owners: dict[str, str] = {}
    for op in stateful:
        for name in _owned(op):
            _require(name not in owners, f"state {name!r} is updated by both op {owners.get(name)} and op {op.name}")
            owners[name] = op.name
    for name in graph.states:
        _require(name in owners, f"state {name!r} is updated by no op")
    readout = graph.sequence.readout
    _require(set(readout) == set(graph.outputs), f"sequence readout must name every output once: outputs {graph.outputs}, "
                                                 f"readout {sorted(readout)}")
    for name, mode in readout.items():
        _require(mode != "count" or graph.tensors[name].spike_D is not None,
                 f"output {name!r}: a count readout sums spikes, and it is not a spike tensor")


def _owned(op) -> list[str]:
    if op.kind == "recurrent":
        return [op.state]
    return [op.v_state] + ([op.i_state] if getattr(op, "i_state", None) else [])


def check_op(graph: g.Graph, op: g.Op, ins: list[list[int]], out: list[int]) -> list[int]:
    """One stateful op's schema and shapes; returns the output shape it gives."""
    ts, states = graph.tensors, graph.states
    _require(graph.sequence is not None, f"op {op.name} keeps state over time, but the graph has no 'sequence' (steps "
                                         f"and readout)")
    x = ts[op.inputs[0]]
    _require(x.dtype in g.DTYPES and x.zero_point == 0, f"op {op.name}: its input must have zero point 0 (a current)")
    _require(len(ins[0]) >= 1, f"op {op.name}: its input must have a channel axis (the last), got shape {ins[0]}")
    if op.kind == "recurrent":
        return _check_recurrent(graph, op, ins[0], out)
    _require(_is_int(op.input_shift) and 0 <= op.input_shift <= MAX_INPUT_SHIFT,
             f"op {op.name}: input_shift must be an integer in 0..{MAX_INPUT_SHIFT}")
    channels = ins[0][-1]
    names = [("v_state", "decay_v")] + ([("i_state", "decay_i")] if op.kind == "cuba_lif" or getattr(op, "i_state", None) else [])
    for state_field, decay_field in names:
        name = getattr(op, state_field)
        _require(isinstance(name, str) and name in states, f"op {op.name}: {state_field} names no state ({name!r})")
        _require(states[name].shape == ins[0], f"op {op.name}: state {name!r} has shape {states[name].shape}, its input {ins[0]}")
        d = _int_array(op, decay_field, channels)
        _require(d.min() >= 0 and d.max() <= DECAY_UNITY, f"op {op.name}: {decay_field} must be in 0..{DECAY_UNITY}")
    v = states[op.v_state]
    if getattr(op, "i_state", None):
        i = states[op.i_state]
        _require(_same_scale(x.scale, i.scale, op.input_shift) and _same_scale(i.scale, v.scale, 0),
                 f"op {op.name}: the input's scale / 2**input_shift must be the current's, and the current's the membrane's")
    else:
        _require(_same_scale(x.scale, v.scale, op.input_shift),
                 f"op {op.name}: the input's scale / 2**input_shift must be the membrane state's ({x.scale} / "
                 f"2**{op.input_shift} vs {v.scale})")
    o = ts[op.output]
    if op.kind == "li":
        _require(o.dtype == v.dtype and o.zero_point == 0 and _same_scale(o.scale, v.scale, 0) and o.spike_D is None,
                 f"op {op.name}: its output is the membrane: dtype {v.dtype}, scale {v.scale}, zero point 0")
    else:
        lo, hi = v.bounds()
        theta = _int_array(op, "threshold", channels)
        _require(theta.min() >= 0 and theta.max() <= hi, f"op {op.name}: threshold must be in 0..{hi} (the membrane's width)")
        _require(op.reset in RESETS, f"op {op.name}: reset must be one of {', '.join(RESETS)}")
        top = op.max_spike
        _require(_is_int(top) and 1 <= top <= MAX_SPIKE, f"op {op.name}: max_spike (the most spikes per step) must be "
                                                         f"an integer in 1..{MAX_SPIKE}, got {top!r}")
        _require(top == 1 or theta.min() >= 1, f"op {op.name}: max_spike {top} counts multiples of the threshold, "
                                               f"which must then be at least 1")
        _require(o.dtype == "int8" and o.zero_point == 0 and o.spike_D == top,
                 f"op {op.name}: its output is spikes: int8, zero point 0, spike_D {top}")
    return ins[0]


def _check_recurrent(graph: g.Graph, op: Recurrent, x_shape: list[int], out: list[int]) -> list[int]:
    ts, states = graph.tensors, graph.states
    _require(isinstance(op.source, str) and op.source in ts and any(o.output == op.source for o in graph.ops),
             f"op {op.name}: source {op.source!r} is no tensor an op computes")
    _require(isinstance(op.state, str) and op.state in states, f"op {op.name}: state names no state ({op.state!r})")
    src, st = ts[op.source], states[op.state]
    _require(len(src.shape) >= 1, f"op {op.name}: source {op.source!r} must have a channel axis (the last)")
    _require(st.shape == src.shape and st.dtype == src.dtype and 8 * np.dtype(g.DTYPES[st.dtype]).itemsize == st.bits,
             f"op {op.name}: state {op.state!r} holds {op.source!r} from the previous step: shape {src.shape}, "
             f"dtype {src.dtype}, all its bits")
    _require(_is_int(op.weight_bits) and isinstance(op.weight_code, str), f"op {op.name}: bad weight format")
    w = op.weight
    _require(isinstance(w, np.ndarray) and w.dtype == np.int8 and w.ndim == 2, f"op {op.name}: weight must be a 2-d int8 array")
    _require(w.shape[1] == src.shape[-1] and w.shape[0] == x_shape[-1] and src.shape[:-1] == x_shape[:-1],
             f"op {op.name}: weight {list(w.shape)} does not take {op.source!r} {src.shape} to its input {x_shape}")
    _require(ts[op.output].zero_point == 0, f"op {op.name}: its output must have zero point 0 (a current)")
    return x_shape


def _int_array(op, name: str, channels: int) -> np.ndarray:
    arr = getattr(op, name)
    _require(isinstance(arr, np.ndarray) and arr.dtype == np.int32 and arr.ndim == 1 and arr.shape[0] in (1, channels),
             f"op {op.name}: {name} must be a 1-d int32 array of 1 or {channels} entries")
    return arr


def _same_scale(wide: float, narrow: float, shift: int) -> bool:
    """float32(wide) == float32(narrow) * 2**shift: the integers add in the narrower state's units."""
    return bool(np.float32(wide) == np.float32(np.float32(narrow) * np.float32(2.0 ** shift)))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise EdgesnnError(message)
