"""Temporal graphs (edgesnn/ir/state.py) in ONNX: the state as graph inputs and outputs, one run per step.

The file's inputs are the frame, then one int64 tensor per IR state (``state:<name>``, in the order of
``graph.states``, batch first like the frame); its outputs are the IR's outputs at this step, then each
state after the step (``state:<name>:next``, same order). :func:`run_sequences` zeroes the states at the
start of every sequence and feeds each ``:next`` output back; the readout over T is the caller's, with the
IR's rule (:func:`edgesnn.ir.state.readout`), and every step's output is compared too.

The stateful ops are int64 arithmetic (every intermediate of the IR's is below 2**56: an int32 input shifted
left by at most 24; so int64 holds it with no bound to check, unlike TFLite's int32). onnxruntime's int64
Div truncates toward zero (measured, 1.32: -4097 / 4096 = -1), as does ONNX's reference evaluator in
onnx 1.23, but that one floored until onnx/onnx#7585 (issue #7570) made truncation the spec's, so the
decay divides a magnitude, as the IR does:
``Sign(p) * (Abs(p) / 4096)`` with ``p = v * (4096 - d)``, the same in every runtime. The hold is Clip with
the state's bounds (an ``overflow: error`` state saturates: where it would overflow the IR gives no result
to compare); the spike Greater, cast to the int8 spike tensor; the reset ``v - threshold * s`` or
``v - v * s``. ``recurrent``'s product is an int64 MatMul of the previous step's source (its state) minus
its zero point, requantized by requant.py as every other op.
"""

from __future__ import annotations

import json
import math

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st

STATE_PREFIX = "state:"


def input_name(state: str) -> str:
    return f"{STATE_PREFIX}{state}"


def next_name(state: str) -> str:
    return f"{STATE_PREFIX}{state}:next"


class StateLowering:
    """The stateful ops of one lowering (``lw``: lower._Lowering): they read the state inputs and write
    the ``:next`` outputs."""

    def __init__(self, lw):
        self.lw, self.b, self.graph = lw, lw.b, lw.g
        for name in self.graph.states:  # the file's own names: nothing else may take them
            for taken in (input_name(name), next_name(name)):
                if self.b.name(taken) != taken:
                    raise EdgesnnError(f"onnx: state {name!r}: the IR already has a tensor named {taken!r}")
        self.sources: list[st.Recurrent] = []

    def value_infos(self):
        """(the state inputs, the next-state outputs) as ONNX value infos, int64 with the batch axis."""
        from onnx import TensorProto, helper

        from edgesnn.backends.onnx.lower import BATCH

        def info(name, spec):
            return helper.make_tensor_value_info(name, TensorProto.INT64, [BATCH, *spec.shape])

        states = self.graph.states.items()
        return [info(input_name(n), s) for n, s in states], [info(next_name(n), s) for n, s in states]

    def finish(self) -> None:
        """At the end of the step each recurrent state takes its source's value."""
        for op in self.sources:
            self.b.cast(op.source, "int64", f"{op.name}.source", out=next_name(op.state))

    # -- pieces -------------------------------------------------------------------------------

    def decay(self, op, v: str, d, hint: str) -> str | None:
        """The IR's decay ``sign(p) * (|p| >> 12)``, ``p = v * (4096 - d)``; None when nothing is kept (d 4096)."""
        d = np.asarray(d, np.int64)
        if not d.any():
            return v
        if (d == st.DECAY_UNITY).all():
            return None
        b = self.b
        p = b.node("Mul", [v, b.i64(st.DECAY_UNITY - d, f"{op.name}.keep")], f"{hint}.p")
        magnitude = b.node("Div", [b.node("Abs", [p], f"{hint}.abs"), b.i64(st.DECAY_UNITY, "decay_unit")],
                           f"{hint}.kept")
        return b.node("Mul", [b.node("Sign", [p], f"{hint}.sign"), magnitude], f"{hint}.decayed")

    def update(self, op, name: str, d, drive: str, final: bool) -> str:
        """hold(decay(state, d) + drive); ``final``: it is the state's next value."""
        lo, hi = self.graph.states[name].bounds()
        hint = f"{op.name}.{name}"
        decayed = self.decay(op, input_name(name), d, hint)
        total = drive if decayed is None else self.b.node("Add", [decayed, drive], f"{hint}.sum")
        return self.b.node("Clip", [total, self.b.i64(lo, "state_low"), self.b.i64(hi, "state_high")], f"{hint}.held",
                           next_name(name) if final else None)

    def membrane(self, op, final: bool) -> str:
        """The membrane after this step's input: the current first where the op has one."""
        drive = self.lw.wide(op.inputs[0])  # raw integers: the IR's currents have zero point 0
        if op.input_shift:
            drive = self.b.node("Mul", [drive, self.b.i64(1 << op.input_shift, "input_shift")], f"{op.name}.drive")
        if getattr(op, "i_state", None):
            drive = self.update(op, op.i_state, op.decay_i, drive, final=True)
        return self.update(op, op.v_state, op.decay_v, drive, final)

    # -- the ops ------------------------------------------------------------------------------

    def lif(self, op: st.LIF) -> None:
        """Spike ``v > threshold``; MultiSpike (max_spike D > 1) ``Clip(Div(v - 1, threshold), 0, D)``: Div
        truncates or floors (runtimes differ, see above), which agree where v - 1 >= 0 and both end at 0 after
        the Clip elsewhere. The zero reset's flag is ``v > threshold`` (s > 0)."""
        b = self.b
        v = self.membrane(op, final=False)
        theta = b.i64(op.threshold, f"{op.name}.threshold")
        if op.max_spike == 1:
            fired = b.node("Greater", [v, theta], f"{op.name}.fired")
            b.cast(fired, self.graph.tensors[op.output].dtype, op.name, out=op.output)
            s = flag = b.cast(fired, "int64", f"{op.name}.s")
        else:
            count = b.node("Div", [b.node("Sub", [v, b.i64(1, "one")], f"{op.name}.above"), theta], f"{op.name}.count")
            top = b.i64(op.max_spike, f"{op.name}.max_spike")
            s = b.node("Clip", [count, b.i64(0, "zero"), top], f"{op.name}.spikes")
            b.cast(s, self.graph.tensors[op.output].dtype, op.name, out=op.output)
            if op.reset == "zero":
                flag = b.cast(b.node("Greater", [v, theta], f"{op.name}.fired"), "int64", f"{op.name}.flag")
        drop = b.node("Mul", [s, theta] if op.reset == "subtract" else [flag, v], f"{op.name}.reset")
        b.node("Sub", [v, drop], f"{op.name}.next", next_name(op.v_state))

    def li(self, op: st.LI) -> None:
        v = self.membrane(op, final=True)
        self.b.cast(v, self.graph.tensors[op.output].dtype, op.name, out=op.output)

    def recurrent(self, op: st.Recurrent) -> None:
        """``clamp(x + MBQM(W (prev - zp)))``, prev the state: MatMul in int64 (exact: the IR stops where
        the accumulator leaves int32), requant.py's double rounding, the clamp and cast of requant.py."""
        from edgesnn.backends.onnx import requant
        from edgesnn.ir.packing import widen

        b = self.b
        zp = self.graph.tensors[op.source].zero_point
        prev = input_name(op.state)
        if zp:
            prev = b.node("Sub", [prev, b.i64(zp, "zero_point")], f"{op.name}.prev_centered")
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
        acc = b.node("MatMul", [prev, b.i64(w.T, f"{op.name}.weight")], f"{op.name}.acc")
        feedback = requant.double_rounding(b, acc, op.multiplier, op.shift, op.name)
        y = b.node("Add", [self.lw.wide(op.inputs[0]), feedback], f"{op.name}.sum")
        requant.clamp_cast(b, y, 0, op.clamp, self.graph.tensors[op.output].dtype, op.output, op.name)
        self.sources.append(op)


def metadata(graph: g.Graph) -> dict[str, str]:
    """What a temporal file adds to its metadata: the states (IR spec, and the file's names) and the sequence."""
    if not graph.stateful:
        return {}
    states = [{"name": n, "input": input_name(n), "output": next_name(n), "dtype_in_file": "int64", **vars(s)}
              for n, s in graph.states.items()]
    return {"edgesnn.states": json.dumps(states),
            "edgesnn.sequence": json.dumps({"steps": graph.sequence.steps, "readout": graph.sequence.readout})}


# ---------------------------------------------------------------- running sequences

def run_sequences(path, graph: g.Graph, xq: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Integer sequences (N, T, ...) -> (each IR output at every step (N, T, ...), the runtime's name): one
    run per step over a batch of sequences, each step's ``:next`` outputs fed back, zeros for every sequence."""
    import onnxruntime as ort

    from edgesnn import limits
    from edgesnn.backends.onnx.runtime import _check_signature, one_line, session

    xq = np.asarray(xq)
    st.check_sequence_shape(graph, xq)
    sess = session(path)
    ins, outs = [a.name for a in sess.get_inputs()], [a.name for a in sess.get_outputs()]
    names = list(graph.states)
    if ins[1:] != [input_name(n) for n in names] or outs[len(graph.outputs):] != [next_name(n) for n in names]:
        raise EdgesnnError(f"{path}: not the stateful ONNX file of its IR (inputs {ins}, outputs {outs})")
    _check_signature(path, _Plain(sess, 1, len(graph.outputs)), graph)
    n, steps = len(xq), graph.sequence.steps
    results = [np.zeros((n, steps, *graph.tensors[o].shape), g.DTYPES[graph.tensors[o].dtype]) for o in graph.outputs]
    sizes = [math.prod(s.shape) for s in graph.tensors.values()] + [math.prod(s.shape) for s in graph.states.values()]
    per_sample = 8 * (sum(sizes) + 16 * max(sizes, default=0))
    chunk = max(1, min(n, limits.memory_budget() // max(per_sample, 1), 1024))
    n_out = len(graph.outputs)
    try:
        for first in range(0, n, chunk):
            part = xq[first:first + chunk]
            states = [np.zeros((len(part), *s.shape), np.int64) for s in graph.states.values()]
            for t in range(steps):
                feed = {ins[0]: np.ascontiguousarray(part[:, t]), **dict(zip(ins[1:], states))}
                got = sess.run(None, feed)
                for r, o in zip(results, got[:n_out]):
                    r[first:first + len(part), t] = o
                states = got[n_out:]
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EdgesnnError(f"{path}: onnxruntime cannot run it: {one_line(e)}") from None
    return results, f"onnxruntime {ort.__version__} (CPU execution provider)"


class _Plain:
    """A session's signature without the state inputs and outputs: what runtime._check_signature compares."""

    def __init__(self, sess, n_in: int, n_out: int):
        self._ins, self._outs = sess.get_inputs()[:n_in], sess.get_outputs()[:n_out]

    def get_inputs(self):
        return self._ins

    def get_outputs(self):
        return self._outs


def compare_sequences(path, graph: g.Graph, xq: np.ndarray, golden: dict | None = None) -> dict:
    """Every readout integer and every step's output of the file in onnxruntime vs the golden interpreter's
    ``run_sequence`` (``golden``: its result with ``keep_steps``, if the caller has it): a sequence differs
    when any of them does."""
    from pathlib import Path

    from edgesnn.backends.onnx.runtime import RUNTIME

    steps, name = run_sequences(path, graph, xq)
    golden = golden or st.run_sequence(graph, xq, keep_steps=True)
    got = [st.readout(graph, o, s) for o, s in zip(graph.outputs, steps)]
    differs, elements, step_elements = np.zeros(len(xq), bool), 0, 0
    for a, sa, o in zip(got, steps, graph.outputs):
        bad, bad_steps = a != golden[o], sa != golden[f"{o}@steps"]
        differs |= bad.reshape(len(xq), -1).any(1) | bad_steps.reshape(len(xq), -1).any(1)
        elements += int(bad.sum())
        step_elements += int(bad_steps.sum())
    first, want = got[0], golden[graph.outputs[0]]
    row = {"runtime": name, "mismatches": int(differs.sum()), "mismatched_elements": elements,
           "mismatched_step_elements": step_elements,
           "argmax_mismatches": int((first.argmax(1) != want.argmax(1)).sum()) if want.ndim == 2 else None}
    return {"samples": int(len(xq)), "steps": graph.sequence.steps, "runtime": name, "mismatches": row["mismatches"],
            "bit_exact": row["mismatches"] == 0, "not_bit_exact_in": [name] if row["mismatches"] else [],
            "mismatched_elements": elements, "mismatched_step_elements": step_elements, "runtimes": {RUNTIME: row},
            "file_bytes": Path(path).stat().st_size}


def verify(artifact, graph: g.Graph, ir, data_spec: str | None, samples: int | None) -> dict:
    """verify of a temporal ONNX file: the test sequences of the data set the IR records (or ``data_spec``)."""
    from edgesnn import artifact_data

    spec, xq, y = artifact_data.test_sequences(artifact, data_spec, graph, samples)
    golden = st.run_sequence(graph, xq, keep_steps=True)
    r = compare_sequences(artifact, graph, xq, golden)
    result = {"artifact": str(artifact), "ir": str(ir), "data": spec, **r}
    golden = golden[graph.outputs[0]]
    if golden.ndim == 2:
        result["ir_accuracy"] = float((golden.argmax(1) == y).mean())
    return result
