"""Temporal graphs (edgesnn/ir/state.py) in TFLite: the state as graph inputs and outputs.

One invoke is one timestep. The file's inputs are the frame, then one int32 tensor per IR state (named
``state:<name>``, in the order of ``graph.states``); its outputs are the IR's outputs, then each state's
value after the step (``state:<name>:next``, same order). The caller feeds the outputs back as the next
step's inputs, zeros at the start of every sequence (:func:`run_sequences`). Resource variables
(VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE) were measured and not used: LiteRT 2.3 refuses to read a
variable nothing assigned yet (read_variable.cc: ``variable != nullptr``; it needs a CALL_ONCE init
subgraph) and its Python API cannot zero them between sequences; TFLite Micro runs them (docs/temporal.md).

Each stateful op is plain int32 arithmetic in builtin ops that LiteRT's reference kernels and TFLite Micro
both run (measured: CAST, ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, GREATER; not ABS, SIGN, SELECT, FLOOR_DIV
or RIGHT_SHIFT, which TFLite Micro lacks for int32). int32 DIV truncates toward zero in both, which is the
IR's decay ``sign(p) * (|p| >> 12)``: ``DIV(v * (4096 - d), 4096)``. Where ``v * 4096`` could leave int32
(a state wider than 20 bits) v is split as ``q = DIV(v, 4096)``, ``r = v - 4096 q`` (r has v's sign), and
the decay is ``q k + DIV(r k, 4096)`` with k = 4096 - d: both terms have v's sign, so truncating their sum
is truncating ``r k / 4096`` alone. The sum of a decayed state and its input must fit int32, which is
checked from the tensors' bounds; the hold is MAXIMUM / MINIMUM with the state's bounds (an ``overflow:
error`` state saturates too: where it would overflow the IR gives no result to compare).
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.tflite import flatbuffer as fb
from edgesnn.backends.tflite.int32 import LIMIT, Int32Program
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from edgesnn.ir.fixedpoint import INT32_MAX
from edgesnn.ir.packing import widen

STATE_PREFIX = "state:"


def state_shape(shape) -> list[int]:
    """A state's tensor in the file: its IR shape with the batch axis, a vector as [1, 1, 1, n] like activations."""
    return [1, 1, 1, *shape] if len(shape) == 1 else [1, *shape]


class StateLowering(Int32Program):
    """The stateful ops of one lowering (``lw``: lower._Lowering): their state inputs and next-state outputs."""

    def __init__(self, lw):
        super().__init__(lw)
        self.graph = lw.g
        self.inputs = {name: lw.model.add_tensor(fb.Tensor(f"{STATE_PREFIX}{name}", state_shape(s.shape), "int32"))
                       for name, s in self.graph.states.items()}
        self.next: dict[str, int] = {}
        self.sources: list[st.Recurrent] = []  # recurrent ops: their source becomes their state's next value
        self.plain: dict[str, int] = {}  # an IR tensor -> the plain int32 tensor it was copied from (a recurrent sum)

    def outputs(self) -> list[int]:
        """The next states, once every op is written: a recurrent state is its source, cast to int32."""
        for op in self.sources:
            self.cast(op, self.lw.activation(op.source), state_shape(self.graph.states[op.state].shape), "source",
                      out=self.next_tensor(op.state))
        return [self.next[name] for name in self.graph.states]

    # -- pieces -------------------------------------------------------------------------------

    def decay(self, op, v: int, d: np.ndarray, top: int, shape) -> int | None:
        """The IR's decay of state tensor ``v`` (|v| <= top); None when it is zero (d 4096 everywhere)."""
        d = np.asarray(d, np.int64)
        if not d.any():
            return v
        if (d == st.DECAY_UNITY).all():
            return None
        k = self.const(op, "keep", st.DECAY_UNITY - d)
        unit = self.const(op, "unit", [st.DECAY_UNITY])
        if top * st.DECAY_UNITY <= INT32_MAX:
            p = self.binary(op, "MUL", v, k, shape, "decay.p")
            return self.binary(op, "DIV", p, unit, shape, "decay")
        q = self.binary(op, "DIV", v, unit, shape, "decay.q")
        r = self.binary(op, "SUB", v, self.binary(op, "MUL", q, unit, shape, "decay.q4096"), shape, "decay.r")
        rk = self.binary(op, "DIV", self.binary(op, "MUL", r, k, shape, "decay.rk"), unit, shape, "decay.rk4096")
        return self.binary(op, "ADD", self.binary(op, "MUL", q, k, shape, "decay.qk"), rk, shape, "decay")

    def update(self, op, name: str, d: np.ndarray, drive: int, reach: int, shape, final: bool) -> int:
        """hold(decay(state, d) + drive), |drive| <= reach; ``final``: it is the state's next value."""
        spec = self.graph.states[name]
        lo, hi = spec.bounds()
        if hi + reach > INT32_MAX:
            raise _refuse(op, f"adds an input of up to {reach:,} to state {name!r} of up to {hi:,}, beyond int32, "
                              "where TFLite's int32 ADD wraps")
        decayed = self.decay(op, self.inputs[name], d, hi, shape)
        total = drive if decayed is None else self.binary(op, "ADD", decayed, drive, shape, f"{name}.sum")
        low = self.binary(op, "MAXIMUM", total, self.const(op, "low", [lo]), shape, f"{name}.low")
        out = self.next_tensor(name) if final else None
        return self.binary(op, "MINIMUM", low, self.const(op, "high", [hi]), shape, f"{name}.held", out)

    def next_tensor(self, name: str) -> int:
        self.next[name] = self.lw.model.add_tensor(
            fb.Tensor(f"{STATE_PREFIX}{name}:next", state_shape(self.graph.states[name].shape), "int32"))
        return self.next[name]

    def membrane(self, op, final: bool) -> tuple[int, list[int]]:
        """(the membrane after this step's input, its shape): the current first where the op has one."""
        lw, x = self.lw, op.inputs[0]
        spec = lw.spec(x)
        shape = lw.shape_of(x)
        if x in self.plain:
            drive = self.plain[x]
        elif spec.dtype in ("int8", "int16"):
            drive = self.cast(op, lw.activation(x), shape, "x")
        else:
            raise _refuse(op, f"reads {spec.dtype} {x!r}; the lowering takes int8 or int16 currents, or a recurrent sum")
        lo, hi = lw.bounds[x]
        reach = max(abs(lo), abs(hi)) << op.input_shift
        if reach > INT32_MAX:
            raise _refuse(op, f"shifts its input left by {op.input_shift} beyond int32")
        if op.input_shift:
            drive = self.binary(op, "MUL", drive, self.const(op, "shift", [1 << op.input_shift]), shape, "drive")
        if getattr(op, "i_state", None):
            drive = self.update(op, op.i_state, op.decay_i, drive, reach, shape, final=True)
            reach = self.graph.states[op.i_state].bounds()[1]
        return self.update(op, op.v_state, op.decay_v, drive, reach, shape, final=final), shape

    # -- the ops ------------------------------------------------------------------------------

    def lif(self, op: st.LIF) -> None:
        """Spike ``v > threshold`` (GREATER, CAST to the int8 spike tensor); reset: v - threshold * s, or v - v * s.
        MultiSpike (max_spike D > 1): s = MINIMUM(MAXIMUM(DIV(v - 1, threshold), 0), D), DIV's truncation being
        the IR's floor where v - 1 >= 0 and 0 after the MAXIMUM elsewhere; the zero reset's flag is v > threshold."""
        lw = self.lw
        v, shape = self.membrane(op, final=False)
        theta = self.const(op, "threshold", op.threshold)
        lw.bounds[op.output] = (0, op.max_spike)
        flag = None
        if op.max_spike == 1 or op.reset == "zero":
            fired = self.tensor(op, "fired", shape, "bool")
            lw.emit("GREATER", [v, theta], [fired], last=False)
        if op.max_spike == 1:
            lw.emit("CAST", [fired], [lw.activation(op.output)], last=False)
            s = flag = self.cast(op, fired, shape, "s")
        else:
            above = self.binary(op, "SUB", v, self.const(op, "one", [1]), shape, "above")
            count = self.binary(op, "DIV", above, theta, shape, "count")
            low = self.binary(op, "MAXIMUM", count, self.const(op, "zero", [0]), shape, "count.low")
            s = self.binary(op, "MINIMUM", low, self.const(op, "max_spike", [op.max_spike]), shape, "spikes")
            self.cast(op, s, shape, "out", "int8", lw.activation(op.output))
            if op.reset == "zero":
                flag = self.cast(op, fired, shape, "flag")
        drop = self.binary(op, "MUL", s, theta, shape, "reset") if op.reset == "subtract" else \
            self.binary(op, "MUL", flag, v, shape, "reset")
        self.binary(op, "SUB", v, drop, shape, "next", self.next_tensor(op.v_state))

    def cuba_lif(self, op: st.CubaLIF) -> None:
        self.lif(op)

    def li(self, op: st.LI) -> None:
        """The output is the membrane in its own dtype: a CAST (int8 / int16) or a RESHAPE copy (int32)."""
        lw = self.lw
        v, shape = self.membrane(op, final=True)
        out = lw.spec(op.output)
        lw.bounds[op.output] = self.graph.states[op.v_state].bounds()
        if out.dtype == "int32":
            lw.emit("RESHAPE", [v, lw.shape_const(op.name, shape)], [lw.activation(op.output)], "ReshapeOptions",
                    last=False, NewShape=shape)
        else:
            lw.emit("CAST", [v], [lw.activation(op.output)], last=False)

    def recurrent(self, op: st.Recurrent) -> None:
        """``clamp(x + MBQM(W (prev - zp)))``: prev is its state (the source at the previous step, as int32),
        the product and requantization int32.py's program; the source is copied into the state's output at
        the end of the step (:meth:`outputs`)."""
        lw = self.lw
        src, x_spec, out = self.graph.tensors[op.source], lw.spec(op.inputs[0]), lw.spec(op.output)
        if len(src.shape) != 1 or x_spec.dtype not in ("int8", "int16"):
            raise _refuse(op, f"feeds back {op.source!r} of shape {src.shape} into a {x_spec.dtype} input; the lowering "
                              "takes a vector source and an int8 or int16 input")
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
        rows = w.shape[0]
        lo, hi = g.dtype_range(src.dtype)
        reach = max(abs(lo - src.zero_point), abs(hi - src.zero_point))
        left = np.maximum(np.broadcast_to(np.asarray(op.shift, np.int64), (rows,)), 0)
        worst = (np.abs(w).sum(1) * reach) << left
        if worst.max(initial=0) >= LIMIT:
            raise _refuse(op, f"can reach a feedback accumulator of {int(worst.max()):,} (shifted), beyond the 2**30 "
                              "its exact int32 program takes")
        shape = [1, 1, 1, rows]
        acc = self.linear(op, self.inputs[op.state], src.zero_point, w)
        m = np.broadcast_to(np.asarray(op.multiplier, np.int64), (rows,))
        feedback = self.mbqm(op, acc, m, np.broadcast_to(np.asarray(op.shift, np.int64), (rows,)), shape)
        x = self.cast(op, lw.activation(op.inputs[0]), shape, "x")
        y = self.binary(op, "ADD", x, feedback, shape, "sum")
        low, high = max(op.clamp[0], g.dtype_range(out.dtype)[0]), min(op.clamp[1], g.dtype_range(out.dtype)[1])
        y = self.binary(op, "MAXIMUM", y, self.const(op, "low", [low]), shape, "low")
        y = self.binary(op, "MINIMUM", y, self.const(op, "high", [high]), shape, "high")
        if out.dtype == "int32":
            lw.emit("RESHAPE", [y, lw.shape_const(op.name, shape)], [lw.activation(op.output)], "ReshapeOptions",
                    last=False, NewShape=shape)
        else:
            self.cast(op, y, shape, "out", out.dtype, lw.activation(op.output))
        lw.bounds[op.output] = (low, high)
        self.plain[op.output] = y
        self.sources.append(op)


def _refuse(op, message: str) -> EdgesnnError:
    return EdgesnnError(f"tflite: IR op '{op.name}' ({op.kind}) {message}")


# ---------------------------------------------------------------- running sequences

def _state_zeros(graph: g.Graph) -> list[np.ndarray]:
    return [np.zeros(state_shape(s.shape), np.int32) for s in graph.states.values()]


def run_sequences(path, graph: g.Graph, xq: np.ndarray, runtime: str) -> tuple[list[np.ndarray], str]:
    """Integer sequences (N, T, ...) -> (each IR output at every step (N, T, ...), the runtime's name): one
    invoke per step, each step's state outputs fed back as the next step's inputs, zeros for every sequence."""
    from edgesnn.backends.tflite import runtime as rt

    st.check_sequence_shape(graph, xq)
    n_out, zeros = len(graph.outputs), _state_zeros(graph)
    frame_dtype = g.DTYPES[graph.tensors[graph.input].dtype]
    frame_shape = state_shape(graph.tensors[graph.input].shape)  # the file's input: batch 1, a vector as [1, 1, 1, n]
    if runtime == rt.MICRO:
        from importlib.metadata import version

        from tflite_micro.python.tflite_micro import runtime as micro

        data = rt.read_model(path)
        interp = micro.Interpreter.from_bytes(data, arena_size=max(64 * 1024, 16 * len(data)))
        name = f"tflite-micro {version('tflite-micro')}"

        def step(frame, states):
            interp.set_input(frame, 0)
            for k, s in enumerate(states):
                interp.set_input(s, k + 1)
            interp.invoke()
            return [np.array(interp.get_output(k)) for k in range(n_out + len(states))]
    elif runtime in (rt.LITERT_REFERENCE, rt.LITERT_DEFAULT):
        _, name = rt._interpreter_module()
        name += ", reference kernels" if runtime == rt.LITERT_REFERENCE else ", default kernels (XNNPACK delegate)"
        interp = rt.interpreter_for(path, runtime == rt.LITERT_REFERENCE)
        ins, outs = interp.get_input_details(), interp.get_output_details()
        want = [f"{STATE_PREFIX}{s}" for s in graph.states]
        if len(ins) != 1 + len(want) or [d["name"] for d in ins[1:]] != want or len(outs) != n_out + len(want):
            raise EdgesnnError(f"{path}: not the stateful .tflite of its IR (inputs {[d['name'] for d in ins]})")

        def step(frame, states):
            interp.set_tensor(ins[0]["index"], frame)
            for d, s in zip(ins[1:], states):
                interp.set_tensor(d["index"], s)
            interp.invoke()
            return [interp.get_tensor(d["index"]).copy() for d in outs]
    else:
        raise EdgesnnError(f"{path}: a stateful .tflite runs in {rt.LITERT_REFERENCE}, {rt.LITERT_DEFAULT} or {rt.MICRO}, "
                           f"not {runtime}")
    results = [np.zeros((len(xq), graph.sequence.steps, *graph.tensors[o].shape), g.DTYPES[graph.tensors[o].dtype])
               for o in graph.outputs]
    try:
        for i, sequence in enumerate(xq):
            states = [z.copy() for z in zeros]
            for t, frame in enumerate(sequence):
                got = step(frame.reshape(frame_shape).astype(frame_dtype), states)
                for r, o in zip(results, got[:n_out]):
                    r[i, t] = o.reshape(r.shape[2:])
                states = got[n_out:]
    except rt._RUNTIME_ERRORS as e:
        raise EdgesnnError(f"{path}: {runtime} cannot run it: {rt._first_line(e)}") from None
    return results, name


def readout(graph: g.Graph, steps: list[np.ndarray]) -> list[np.ndarray]:
    """The IR's readout of each output's steps (N, T, ...), done here in the caller, not in the .tflite."""
    return [st.readout(graph, name, s) for name, s in zip(graph.outputs, steps)]


def compare_sequences(path, graph: g.Graph, xq: np.ndarray, runtimes) -> dict:
    """Every readout integer (and every step's output) of the .tflite in each runtime vs the golden
    interpreter's ``run_sequence``; the shape of :func:`edgesnn.backends.tflite.compare`'s result."""
    from edgesnn.backends.tflite import EXACT_RUNTIMES
    from edgesnn.backends.tflite.runtime import LITERT_REFERENCE

    golden = st.run_sequence(graph, xq, keep_steps=True)
    want = [golden[o] for o in graph.outputs]
    rows = {}
    for runtime in runtimes:
        steps, name = run_sequences(path, graph, xq, runtime)
        got = readout(graph, steps)
        differs, elements, step_elements = np.zeros(len(xq), bool), 0, 0
        for a, b, sa, o in zip(got, want, steps, graph.outputs):
            bad = a != b
            differs |= bad.reshape(len(xq), -1).any(1)
            elements += int(bad.sum())
            step_elements += int((sa != golden[f"{o}@steps"]).sum())
        first, gold = got[0], want[0]
        rows[runtime] = {"runtime": name, "mismatches": int(differs.sum()), "mismatched_elements": elements,
                         "mismatched_step_elements": step_elements,
                         "argmax_mismatches": int((first.argmax(1) != gold.argmax(1)).sum()) if gold.ndim == 2 else None}
    reference = rows.get(LITERT_REFERENCE) or next(iter(rows.values()))
    not_exact = [rows[n]["runtime"] for n in EXACT_RUNTIMES if n in rows and rows[n]["mismatches"]]
    return {"samples": int(len(xq)), "steps": graph.sequence.steps, "runtime": reference["runtime"],
            "mismatches": reference["mismatches"], "mismatched_elements": reference["mismatched_elements"],
            "bit_exact": not not_exact, "not_bit_exact_in": not_exact,
            "exact_in": [n for n, row in rows.items() if row["mismatches"] == 0], "runtimes": rows,
            "file_bytes": path.stat().st_size}


def verify(artifact, data_spec: str | None, ir, samples: int | None) -> dict:
    """verify of a stateful .tflite: the test sequences of the data set the IR records (or ``data_spec``)."""
    from pathlib import Path

    from edgesnn import artifact_data
    from edgesnn.backends.tflite.runtime import LITERT_DEFAULT, LITERT_REFERENCE, MICRO, micro_available
    from edgesnn.device import beside_ir, not_run_here

    artifact = Path(artifact)
    graph, ir = beside_ir(artifact, ir)
    if not graph.stateful:
        raise EdgesnnError(f"{artifact}: its IR {ir} has no state over time")
    spec, xq, y = artifact_data.test_sequences(artifact, data_spec, graph, samples)
    skipped = not_run_here()
    runtimes = [r for r in (LITERT_REFERENCE, LITERT_DEFAULT) + (MICRO,) * micro_available() if r not in skipped]
    r = compare_sequences(artifact, graph, xq, runtimes)
    golden = st.run_sequence(graph, xq)[graph.outputs[0]]
    result = {"artifact": str(artifact), "ir": str(ir), "data": spec, **r, "cannot_run": skipped}
    if golden.ndim == 2:
        result["ir_accuracy"] = float((golden.argmax(1) == y).mean())
    return result
