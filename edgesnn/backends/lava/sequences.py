"""A temporal graph (docs/temporal.md) as a Lava process graph: one Lava timestep per IR step, sequence
after sequence (sample n's step t at Lava step n * T + t + 1), every state zeroed at each sequence's
first step. Graded mode only (a step's spikes are 0/1, or MultiSpike counts 0..D, its currents graded payloads).

Each stateful op runs in Lava's own bit-accurate LIF where its arithmetic is the IR's, else in
edgesnn's ProcessModel (state_processes.py); :func:`loihi_lif` says which and why:

- Lava's ``LIFReset`` with ``PyLifResetModelBitAcc`` (``reset_interval`` T, ``reset_offset`` 1: u and v
  zeroed at each sequence's first step, before it integrates) computes ``u = wrap(decay(u, du + 1) +
  (a << 6))``, ``v = clip(decay(v, dv) + u + bias, +-(2**23 - 1))``, ``s = v > vth << 6``, ``v = 0``
  where s. That is the IR's ``cuba_lif`` (``decay_i`` = du + 1, ``decay_v`` = dv, one value each) with
  ``reset: zero``, ``input_shift`` 6, a 24-bit membrane, a 24-bit current of ``overflow: error`` (Lava
  wraps u, the IR stops where it would), a threshold vth * 64 and no bias; and the IR's ``lif`` with
  du = 4095 (the current decays fully: u = a << 6 each step, which an int8/int16 input cannot wrap).
- Anything else (reset by subtraction, another input shift or width, per-channel decays...) and ``li``
  and ``recurrent``: edgesnn's Neuron and Recurrent processes.

A recurrent op's source (a layer's spikes, computed after it in the same step) reaches it on a second
port, received after the op has sent its output: it is the previous step's value at the next step.

Import no Lava here: :func:`simulate` imports it, in the child process network.py runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgesnn.backends.lava.arith import STATE_BITS, WIRING, check_state, op_function
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.ir import state as st
from edgesnn.ir.fixedpoint import INT32_MAX
from edgesnn.ir.packing import widen
from edgesnn.progress import step

LAVA_LIF = "lava LIFReset (PyLifResetModelBitAcc)"
EDGESNN = {"lif": "edgesnn Neuron", "cuba_lif": "edgesnn Neuron", "li": "edgesnn Neuron", "recurrent": "edgesnn Recurrent"}
RUNTIME = "lava-nc Loihi2SimCfg (fixed_pt, CPU)"


def _one(arr: np.ndarray) -> int | None:
    """The single value of a per-channel array, or None when channels differ."""
    return int(arr[0]) if (arr == arr[0]).all() else None


def loihi_lif(graph: g.Graph, op, view: list) -> tuple[dict | None, str]:
    """(LIFReset's parameters, why) when Lava's bit-accurate LIF computes ``op`` exactly; (None, why not)."""
    if op.kind not in ("lif", "cuba_lif"):
        return None, "no spike (Lava's LIF spikes)" if op.kind == "li" else "a recurrent weight (no LIF)"
    v = graph.states[op.v_state]
    dv, theta = _one(op.decay_v), _one(op.threshold)
    di = _one(op.decay_i) if op.kind == "cuba_lif" else 4096
    reasons = [
        (op.reset != "zero", "reset by subtraction (Lava's LIF resets to zero)"),
        (op.max_spike != 1, f"up to {op.max_spike} spikes per step, MultiSpike (Lava's LIF spikes 0/1)"),
        (op.input_shift != 6, f"input shift {op.input_shift} (Lava's LIF shifts its input by 6)"),
        (v.bits != STATE_BITS, f"a {v.bits}-bit membrane (Lava's is 24 bits)"),
        (op.kind == "cuba_lif" and (graph.states[op.i_state].bits != STATE_BITS
                                    or graph.states[op.i_state].overflow != "error"),
         "a current that saturates or is not 24 bits (Lava's wraps at 24 bits)"),
        (dv is None or di is None or theta is None, "per-channel decays or thresholds (Lava's LIF has one each)"),
        (dv == 4096, "decay_v 4096 (Lava's dv has 12 bits)"),
        (di == 0, "decay_i 0 (Lava's current decay is du + 1)"),
        (theta is not None and (theta % 64 or theta >> 6 >= 2**17),
         "a threshold that is not vth * 64 with a 17-bit vth"),
        (graph.tensors[op.inputs[0]].dtype not in ("int8", "int16"), "an input wider than int16 (Lava's a_in)"),
        (bool(view), "an input read through a transpose"),
    ]
    why = [reason for bad, reason in reasons if bad]
    if why:
        return None, "; ".join(why)
    return {"du": di - 1, "dv": dv, "vth": theta >> 6}, "the IR's arithmetic exactly"


def describe(graph: g.Graph, mode: str) -> dict:
    """The process graph of a temporal graph as JSON (lava.json): each process, the model that runs it
    and why; refuses what Lava cannot run exactly, by name."""
    if mode != "graded":
        raise EdgesnnError(f"lava: a model over sequences runs graded spikes only (one IR step per Lava step, its "
                           f"spikes 0/1), not {mode}")
    for name, spec in graph.states.items():
        if spec.bits > STATE_BITS:
            raise EdgesnnError(f"lava: state {name!r} has {spec.bits} bits; Loihi's neuron state has {STATE_BITS}")
    check_state(graph)
    producer, view, nodes = {graph.input: graph.input}, {graph.input: []}, []
    for op in graph.ops:
        if op.kind in WIRING:
            src = op.inputs[0]
            producer[op.output] = producer[src]
            extra = [{"shape": list(graph.tensors[src].shape), "perm": list(op.perm)}] if op.kind == "transpose" else []
            view[op.output] = view[src] + extra
            continue
        node = {"id": op.output, "name": op.name, "kind": op.kind, "inputs": [producer[n] for n in op.inputs],
                "views": [view[n] for n in op.inputs]}
        if op.kind in st.OP_TYPES:
            params, why = loihi_lif(graph, op, view[op.inputs[0]])
            node.update(model=LAVA_LIF if params else EDGESNN[op.kind], why=why, lif=params)
            if op.kind == "recurrent":
                _check_recurrent(graph, op)
                node.update(source=op.source)
        else:
            op_function(graph, op)  # an op with no Lava process fails here, before any file
            node["model"] = "edgesnn graded op"
        nodes.append(node)
        producer[op.output], view[op.output] = op.output, []
    for node in nodes:  # a recurrent source is known once every op is
        if node["kind"] == "recurrent":
            node["source_view"], node["source"] = view[node["source"]], producer[node["source"]]
    return {"mode": mode, "window": 1, "processes": nodes, "steps": graph.sequence.steps,
            "readout": graph.sequence.readout,
            "outputs": [{"tensor": o, "producer": producer[o], "view": view[o]} for o in graph.outputs],
            "output": producer[graph.outputs[0]], "timesteps_per_sample": graph.sequence.steps,
            "reset": "every state is zeroed at the first step of each sequence (Lava steps 1, T + 1, 2T + 1, ...)"}


def _check_recurrent(graph: g.Graph, op) -> None:
    src = graph.tensors[op.source]
    if len(src.shape) != 1:
        raise EdgesnnError(f"lava: recurrent op {op.name}: its source {op.source!r} has shape {src.shape}; "
                           f"Lava's recurrent process takes a vector")
    lo, hi = g.dtype_range(src.dtype)
    reach = max(abs(lo - src.zero_point), abs(hi - src.zero_point), abs(src.zero_point))
    worst = int(np.abs(widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)).sum(1).max(initial=0)) * reach
    if worst > INT32_MAX:
        raise EdgesnnError(f"lava: recurrent op {op.name}: its accumulator can reach {worst}, beyond int32")


def _flat(arr: np.ndarray, size: int) -> np.ndarray:
    """A per-channel (last axis) parameter as one value per element of the flat NHWC vector."""
    arr = np.asarray(arr, np.int64)
    return np.tile(arr, size // len(arr)) if len(arr) > 1 else np.full(size, int(arr[0]), np.int64)


def simulate(graph: g.Graph, xq: np.ndarray, workdir: Path) -> dict[str, np.ndarray]:
    """Every output at every step, {output: (N, T, *shape)}, of the Lava simulation of integer sequences
    ``xq`` (N, T, *frame)."""
    from edgesnn.backends.lava.compat import ensure_lava_importable

    ensure_lava_importable()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.lif.models import PyLifResetModelBitAcc
    from lava.proc.lif.process import LIFReset

    from edgesnn.backends.lava import processes as P
    from edgesnn.backends.lava import state_processes as S
    from edgesnn.backends.lava.network import _Wired, gather_index

    net = describe(graph, "graded")
    n, steps = xq.shape[:2]
    total = n * steps
    ops = {op.output: op for op in graph.ops}
    size = {name: int(np.prod(spec.shape)) for name, spec in graph.tensors.items()}
    source = P.Source(data=xq.reshape(total, -1).astype(np.int32), window=1)
    procs, models, outs = {graph.input: source}, {source: P.SourceModel}, {graph.input: source.out}
    loops = []
    for node in net["processes"]:
        op = ops[node["id"]]
        gathers = [gather_index(size[name], v) for name, v in zip(op.inputs, node["views"])]
        if node["model"] == LAVA_LIF:
            lif = node["lif"]
            proc = LIFReset(shape=(size[op.output],), du=lif["du"], dv=lif["dv"], vth=lif["vth"], bias_mant=0,
                            bias_exp=0, reset_interval=steps, reset_offset=1, name=op.name)
            model, port_in, port_out = PyLifResetModelBitAcc, [proc.a_in], proc.s_out
        elif op.kind == "recurrent":
            src_spec = graph.tensors[op.source]
            proc = S.Recurrent(size_in=size[op.inputs[0]], size_source=size[op.source], size=size[op.output],
                               steps=steps, weight=widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64),
                               zero_point=int(src_spec.zero_point), multiplier=np.asarray(op.multiplier, np.int64),
                               shift=np.asarray(op.shift, np.int64), clamp=tuple(int(c) for c in op.clamp),
                               gathers=(gathers[0], gather_index(size[op.source], node["source_view"])), name=op.name)
            model, port_in, port_out = S.RecurrentModel, [proc.in0], proc.out
            loops.append((node["source"], proc.source))
        elif op.kind in st.OP_TYPES:
            c = size[op.output]
            v = graph.states[op.v_state]
            i_name = getattr(op, "i_state", None)
            proc = S.Neuron(size_in=size[op.inputs[0]], size=c, steps=steps, decay_v=_flat(op.decay_v, c),
                            decay_i=_flat(op.decay_i, c) if i_name else None,
                            threshold=_flat(op.threshold, c) if op.kind != "li" else None,
                            reset=getattr(op, "reset", "zero"), input_shift=int(op.input_shift), bounds_v=v.bounds(),
                            bounds_i=graph.states[i_name].bounds() if i_name else None, gather=gathers[0],
                            name=op.name, max_spike=getattr(op, "max_spike", 1))
            model, port_in, port_out = S.NeuronModel, [proc.in0], proc.out
        else:
            fn = op_function(graph, op)
            fn = _Wired(fn, gathers) if any(index is not None for index in gathers) else fn
            common = dict(size_out=size[op.output], fn=fn, name=op.name, signed=bool(graph.tensors[op.output].signed))
            if len(op.inputs) == 1:
                proc = P.Op1(size_in=size[op.inputs[0]], **common)
                port_in = [proc.in0]
            else:
                proc = P.Op2(size_in=(size[op.inputs[0]], size[op.inputs[1]]), **common)
                port_in = [proc.in0, proc.in1]
            model, port_out = P.MODELS[("graded", len(op.inputs))], proc.out
        for port, src in zip(port_in, node["inputs"]):
            outs[src].connect(port)
        procs[op.output], outs[op.output], models[proc] = proc, port_out, model
    for src, port in loops:
        outs[src].connect(port)
    sinks = []
    for k, o in enumerate(net["outputs"]):
        sink = P.Sink(size=size[o["tensor"]], steps=total, path=str(Path(workdir) / f"sink{k}.npy"))
        outs[o["producer"]].connect(sink.in0)
        models[sink] = P.SinkModel
        sinks.append(sink)
    # Models keyed by instance: Lava then never scans folders for models (it would import them).
    sinks[0].run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt",
                                                                           exception_proc_model_map=models))
    sinks[0].stop()
    result = {}
    for k, o in enumerate(net["outputs"]):
        rows = np.load(Path(workdir) / f"sink{k}.npy")
        index = gather_index(size[o["tensor"]], o["view"])
        rows = rows if index is None else rows[:, index]
        spec = graph.tensors[o["tensor"]]
        result[o["tensor"]] = rows.reshape(n, steps, *spec.shape).astype(g.DTYPES[spec.dtype])
    return result


def compare(graph: g.Graph, xq: np.ndarray, got: dict[str, np.ndarray]) -> dict:
    """Every step's output integers and the readout of Lava's run against the golden interpreter's."""
    golden = st.run_sequence(graph, xq, keep_steps=True)
    n = len(xq)
    differs, elements, step_elements = np.zeros(n, bool), 0, 0
    for o in graph.outputs:
        bad_steps = (got[o] != golden[f"{o}@steps"]).reshape(n, -1)
        bad_readout = (st.readout(graph, o, got[o]) != golden[o]).reshape(n, -1)
        differs |= bad_steps.any(1) | bad_readout.any(1)
        step_elements += int(bad_steps.sum())
        elements += int(bad_steps.sum() + bad_readout.sum())
    return {"mismatches": int(differs.sum()), "mismatched_elements": elements,
            "mismatched_step_elements": step_elements, "golden": golden}


def verify(folder: Path, data_spec: str | None, samples: int | None, timeout: float) -> dict:
    """``edgesnn verify`` of a Lava folder of a temporal graph: the first ``samples`` test sequences of
    ``data_spec`` (None: the set its model.ir records) in Lava's simulation, vs the IR."""
    from edgesnn import artifact_data
    from edgesnn.backends.lava.network import run_in_subprocess

    folder = Path(folder)
    graph = load_ir(folder / "model.ir")
    spec, xq, y = artifact_data.test_sequences(folder, data_spec, graph, samples)
    net = describe(graph, "graded")
    t0 = time.perf_counter()
    with step(f"lava: {len(xq)} sequences of {graph.sequence.steps} steps in Lava's Loihi 2 simulation"):
        got = run_in_subprocess(folder / "model.ir", xq, "graded", timeout)
    seconds = time.perf_counter() - t0
    r = compare(graph, xq, got)
    golden = r.pop("golden")
    out = graph.outputs[0]
    result = {"artifact": str(folder), "data": spec, "runtime": RUNTIME, "mode": "graded", "samples": int(len(xq)),
              "steps": graph.sequence.steps, "readout": graph.sequence.readout[out],
              "compares": "every step's output integers and the readout over the steps", **r,
              "models": {p["name"]: p["model"] for p in net["processes"] if p["kind"] in st.OP_TYPES},
              "timesteps_per_sample": graph.sequence.steps, "seconds": seconds,
              "seconds_per_sample": seconds / len(xq)}
    if r["mismatches"] == 0 and golden[out].ndim == 2:  # bit-exact: the IR's accuracy
        result["accuracy"] = float((golden[out].argmax(1) == y).mean())
    return result
