"""Verify an MCU project of a temporal graph: the harness resets the state before each sequence and
writes every step's output; here every step's output integers and the readout over the T steps
(count, last or mean, as :func:`edgesnn.ir.state.run_sequence` defines it) are compared with the
golden interpreter's, on the host build and, with ``qemu``, on the board's emulated core."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.ir import state
from edgesnn.progress import step


def readout(graph: g.Graph, per_step: np.ndarray) -> np.ndarray:
    """The readout of the one output from its steps (N, T, ...), as the IR's."""
    return state.readout(graph, graph.outputs[0], per_step)


def verify_sequences(project: Path, x: np.ndarray | None, qemu: bool = False, samples: int | None = None,
                     trust_code: bool = False, y: np.ndarray | None = None, xq: np.ndarray | None = None) -> dict:
    """``x``: float sequences (N, T, *frame) NHWC (or ``xq``: their input integers). Host build over all
    of them (or the first ``samples``); with ``qemu`` also the board's build in emulation. ``y``: labels,
    for the accuracy of the readout."""
    from edgesnn.backends.mcu import read_project, require_trusted_project
    from edgesnn.backends.mcu.build import MACHINES, no_machine, run, sizes

    project = Path(project)
    info = read_project(project)
    graph = load_ir(project / "model.ir")
    if not graph.stateful:
        raise EdgesnnError(f"{project}: its model.ir is a static graph; the project runs one sample at a time")
    if xq is None:
        xq = state.quantize_sequence(graph, x if samples is None else x[:samples])  # another T or frame: one line
    else:
        xq = np.asarray(xq, g.DTYPES[graph.tensors[graph.input].dtype])[:samples]
    golden = state.run_sequence(graph, xq, keep_steps=True)
    out = graph.outputs[0]
    want_steps, want = golden[f"{out}@steps"], golden[out]
    n, steps = xq.shape[:2]
    out_spec = graph.tensors[out]
    size = int(np.prod(out_spec.shape))
    targets = ["host"] + (["arm" if info["kind"] == "mcu" else "aarch64"] if qemu else [])
    require_trusted_project(project, trust_code)
    if "arm" in targets and info["qemu_machine"] not in MACHINES:
        raise EdgesnnError(no_machine(info["board"], info.get("cpu"), info["qemu_machine"]))
    frames = xq.reshape(n * steps, -1)
    runs = {}
    for target in targets:
        where = {"host": "this machine", "arm": f"QEMU {info['qemu_machine']}", "aarch64": "qemu-aarch64"}[target]
        with step(f"mcu: build and run {n} sequences of {steps} steps, {target} ({where})"):
            got, stats = run(project, target, frames, out_spec.dtype, size, machine=info["qemu_machine"])
        got_steps = got.reshape(n, steps, *out_spec.shape)
        got_readout = readout(graph, got_steps)
        differ_steps = (got_steps != want_steps).reshape(n, -1)
        differ_readout = (got_readout != want).reshape(n, -1)
        row = {"mismatches": int((differ_steps.any(1) | differ_readout.any(1)).sum()),
               "mismatched_elements": int(differ_steps.sum() + differ_readout.sum()),
               "mismatched_step_elements": int(differ_steps.sum()), "samples": n, "steps": steps, "stats": stats}
        if target == "arm":
            row["instructions_per_step"] = stats["mean"]
            row["machine"] = info["qemu_machine"]
            row["sizes"] = sizes(project / "build" / "arm" / "model.elf")
            row["library_sizes"] = sizes(project / "build" / "arm" / "libedgesnn_model.a")
        runs[target] = row
    result = {"project": str(project), "board": info["board"], "samples": n, "steps": steps,
              "readout": graph.sequence.readout[out],
              "compares": "every step's output integers and the readout over the steps",
              "mismatches": max(r["mismatches"] for r in runs.values()), "runs": runs,
              "arena_bytes": info["arena_bytes"], "state_bytes": info.get("state_bytes", 0),
              "const_bytes": info["const_bytes"],
              "event_driven_layers": [k["op"] for k in info["kernels"] if k["event_driven"]],
              "spike_code": info.get("spike_code"), "spike_train_layers": []}
    if y is not None and result["mismatches"] == 0 and want.ndim == 2:  # bit-exact: the IR's accuracy
        result["accuracy"] = float((want.argmax(1) == np.asarray(y)[:n]).mean())
    return result


def verify(artifact: Path, data_spec: str | None, qemu: bool, samples: int | None, trust_code) -> dict:
    """``edgesnn verify`` of a temporal MCU project: the test sequences of ``data_spec`` (None: the set
    its model.ir records)."""
    from edgesnn import artifact_data
    from edgesnn import data as datasets
    from edgesnn.device import check_build_tools

    artifact = Path(artifact)
    graph = load_ir(artifact / "model.ir")
    check_build_tools(artifact)
    spec = artifact_data.resolve(artifact, data_spec, graph=graph)
    ds = datasets.load(spec, True, temporal=True)
    if ds.steps is None:
        raise EdgesnnError(f"{artifact}: a model over sequences (N, T, ...), but data set {spec!r} has static samples "
                           f"{tuple(ds.in_shape)}")
    x = datasets.to_nhwc(np.asarray(ds.x_test, np.float32))
    r = verify_sequences(artifact, x, qemu=qemu, samples=samples, trust_code=trust_code is True, y=ds.y_test)
    return {"data": spec, **r}


def is_temporal(project: Path) -> bool:
    """Whether an MCU project steps a temporal graph (project.json records its steps)."""
    from edgesnn.backends.mcu import read_project

    return "steps" in read_project(project)
