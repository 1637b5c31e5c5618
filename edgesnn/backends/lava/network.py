"""The IR as a Lava process graph: one process per op, a Source of input samples and a Sink on the
output. A reshape or a transpose computes nothing, so it has no process: a reshape is the same
flat vector seen in another shape, a transpose the consumer's input read in another order (on
Loihi, the order of the axons the producer's neurons are routed to). The consumer's model gathers
its input through that permutation; Lava's own TransposePort would say the same, but a chain of
virtual ports hung lava-nc 0.10's simulator here, so the gather is explicit.

:func:`describe` is the graph as JSON (what ``export --target lava`` writes); :func:`simulate`
builds the processes and runs them in Lava's CPU simulator (``Loihi2SimCfg``, tag ``fixed_pt``).
Run it through :func:`run_in_subprocess`: Lava forks one OS process per model and a failing
model blocks its neighbours, so a timeout, an error or an interrupt must be able to end the whole
simulation (edgesnn.proc runs it in a process group of its own and kills the group).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgesnn import spikes as codes  # 'spikes' names a flag below
from edgesnn.proc import run as run_child
from edgesnn.backends.lava.arith import WIRING, check_state, op_function
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir

MODES = ("graded", "rate-burst", "bit-plane")  # graded spikes, or spike trains of a code (edgesnn.spikes)


def describe(graph: g.Graph, mode: str) -> dict:
    """Processes (id: the tensor they write, op name, kind, input ids, the permutation each input is
    read through, depth, input delays, spike coding), the window and step counts."""
    if mode not in MODES:
        raise EdgesnnError(f"unknown Lava mode {mode!r}; available: {', '.join(MODES)}")
    if graph.stateful:  # a model over sequences: sequences.py (its state in the processes, reset per sequence)
        from edgesnn.backends.lava.sequences import describe as describe_sequences

        return describe_sequences(graph, mode)
    check_state(graph)
    for op in graph.ops:
        if op.kind not in WIRING:
            op_function(graph, op)  # an op with no Lava process fails here, before any file
    producer = {graph.input: graph.input}  # the Source process goes by the input tensor's name
    depth, burst, view = {graph.input: 0}, {graph.input: False}, {graph.input: []}
    nodes = []
    for op in graph.ops:
        if op.kind in WIRING:
            src = op.inputs[0]
            producer[op.output], depth[op.output], burst[op.output] = producer[src], depth[src], burst[src]
            step = [{"shape": list(graph.tensors[src].shape), "perm": list(op.perm)}] if op.kind == "transpose" else []
            view[op.output] = view[src] + step  # a row-major reshape keeps the flat order
            continue
        d = max(depth[n] for n in op.inputs) + 1
        spikes = graph.tensors[op.output].spike_D is not None
        nodes.append({"id": op.output, "name": op.name, "kind": op.kind, "inputs": [producer[n] for n in op.inputs],
                      "views": [view[n] for n in op.inputs],
                      "depth": d, "delays": [d - 1 - depth[n] for n in op.inputs],
                      "burst_in": [burst[n] for n in op.inputs], "burst_out": spikes,
                      "signed": bool(graph.tensors[op.output].signed)})
        producer[op.output], depth[op.output], burst[op.output] = op.output, d, spikes  # op names may repeat
        view[op.output] = []
    out = graph.outputs[0]
    D = max([spec.spike_D for spec in graph.tensors.values() if spec.spike_D] or [1])
    window = 1 if mode == "graded" else codes.num_steps(D, mode)
    return {"mode": mode, "window": window, "processes": nodes, "output": producer[out], "output_depth": depth[out],
            "output_burst": burst[out], "output_view": view[out], "timesteps_per_sample": window}


def gather_index(size: int, steps: list[dict]) -> np.ndarray | None:
    """The flat indices a consumer reads a producer's vector through (None: in order): each step
    is a transpose, ``x.reshape(shape).transpose(perm)`` flattened row-major."""
    if not steps:
        return None
    index = np.arange(size)
    for step in steps:
        index = index.reshape(step["shape"]).transpose(step["perm"]).ravel()
    return index


class _Wired:
    """An op's arithmetic behind its input wiring: each input read through its permutation."""

    def __init__(self, fn, gathers):
        self.fn, self.gathers = fn, gathers

    def __call__(self, xs):
        return self.fn([x if index is None else x[index] for x, index in zip(xs, self.gathers)])


def simulate(graph: g.Graph, xq: np.ndarray, mode: str, workdir: Path) -> np.ndarray:
    """Integer outputs (samples x output size) of the Lava simulation for integer inputs ``xq``."""
    from edgesnn.backends.lava.compat import ensure_lava_importable

    ensure_lava_importable()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from edgesnn.backends.lava import processes as P

    net = describe(graph, mode)
    window, trains = net["window"], mode != "graded"
    n = len(xq)
    steps = (n + (net["output_depth"] if trains else 0)) * window
    ops = {op.output: op for op in graph.ops}
    size = {name: int(np.prod(spec.shape)) for name, spec in graph.tensors.items()}
    source = P.Source(data=xq.reshape(n, -1).astype(np.int32), window=window)
    procs, models = {graph.input: source}, {source: P.SourceModel}
    for node in net["processes"]:
        op = ops[node["id"]]
        fn = op_function(graph, op)
        gathers = [gather_index(size[name], steps) for name, steps in zip(op.inputs, node["views"])]
        fn = _Wired(fn, gathers) if any(index is not None for index in gathers) else fn
        common = dict(size_out=size[op.output], fn=fn, name=op.name, burst_out=node["burst_out"],
                      burst_in=tuple(node["burst_in"]), delays=tuple(node["delays"]), window=window,
                      signed=node["signed"], code=mode)
        if len(op.inputs) == 1:
            proc = P.Op1(size_in=size[op.inputs[0]], **common)
        else:
            proc = P.Op2(size_in=(size[op.inputs[0]], size[op.inputs[1]]), **common)
        for port, src in zip((proc.in0, getattr(proc, "in1", None)), node["inputs"]):
            procs[src].out.connect(port)
        procs[op.output] = proc
        models[proc] = P.MODELS[(mode, len(op.inputs))]
    path = str(Path(workdir) / "sink.npy")
    sink = P.Sink(size=size[graph.outputs[0]], steps=steps, path=path)
    procs[net["output"]].out.connect(sink.in0)
    models[sink] = P.SinkModel
    # Models keyed by instance: Lava then never scans folders for models (it would import them).
    sink.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt",
                                                                       exception_proc_model_map=models))
    sink.stop()
    rows = np.load(path)
    index = gather_index(size[graph.outputs[0]], net["output_view"])
    rows = rows if index is None else rows[:, index]  # the sink reads the output through its wiring too
    if not trains:
        return rows[:n]
    windows = rows.reshape(-1, window, rows.shape[1])[net["output_depth"]:net["output_depth"] + n]
    return codes.decode(windows.transpose(1, 0, 2), mode) if net["output_burst"] else windows[:, -1]


def run_in_subprocess(ir_path: Path, xq: np.ndarray, mode: str, timeout: float):
    """The outputs of :func:`simulate` (a temporal graph: of ``sequences.simulate``, {output: (N, T, ...)})."""
    with tempfile.TemporaryDirectory(prefix="edgesnn-lava-") as tmp:
        np.save(Path(tmp) / "inputs.npy", xq)
        cmd = [sys.executable, "-m", "edgesnn.backends.lava.network", str(ir_path), tmp, mode]
        try:
            r = run_child(cmd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgesnnError(f"lava: the simulation did not finish within {timeout:.0f} s") from None
        if r.returncode != 0:
            lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()] or ["no output"]
            raise EdgesnnError(f"lava: the simulation failed: {lines[-1][:300]}")
        if (Path(tmp) / "outputs.npz").is_file():
            with np.load(Path(tmp) / "outputs.npz") as steps:
                return {name: steps[name] for name in steps.files}
        return np.load(Path(tmp) / "outputs.npy")


def main(argv: list[str]) -> None:
    ir_path, workdir, mode = argv
    graph = load_ir(ir_path)
    if graph.stateful:
        from edgesnn.backends.lava.sequences import simulate as simulate_sequences

        np.savez(Path(workdir) / "outputs.npz", **simulate_sequences(graph, np.load(Path(workdir) / "inputs.npy"),
                                                                       Path(workdir)))
        return
    outputs = simulate(graph, np.load(Path(workdir) / "inputs.npy"), mode, Path(workdir))
    np.save(Path(workdir) / "outputs.npy", outputs)


if __name__ == "__main__":
    main(sys.argv[1:])
