"""MCU backend: the IR as a self-contained C project (TVM-generated kernels, static arena, const
weights), built and checked bit for bit on the host, on QEMU's Cortex-M machines and under
qemu-aarch64.

:mod:`.kernels` (one TE definition per IR op) and :mod:`.tvm_pipeline` make the C; :mod:`.arena`
plans RAM; :mod:`.project` writes the files; :mod:`.build` compiles and runs them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgesnn import spikes
from edgesnn.boards import Board
from edgesnn.errors import EdgesnnError
from edgesnn.backends.mcu.project import PROJECT_FILE, ProjectFile
from edgesnn.files import read_artifact_json
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.progress import step

def read_project(project: Path) -> dict:
    """The project.json of an MCU project folder (a damaged one is a one-line error)."""
    return read_artifact_json(Path(project) / PROJECT_FILE, ProjectFile, "MCU project file")


def event_candidates(graph: g.Graph) -> list[str]:
    """conv2d / dense layers reading spikes (int8, zero point 0): mostly zeros, so events pay."""
    out = []
    for op in graph.ops:
        spec = graph.tensors[op.inputs[0]]
        if op.kind in ("conv2d", "dense") and spec.dtype == "int8" and spec.zero_point == 0:
            out.append(op.name)
    return out


RATE_CHUNK_BYTES = 256 * 2**20  # every tensor of this many bytes of samples at a time, counted then dropped
RATE_BUDGET_BYTES = 2**30  # activations counted at most: the first samples of x up to this many bytes


def firing_rates(graph: g.Graph, x: np.ndarray) -> dict[str, float]:
    """Fraction of nonzero inputs of each event-driven candidate, measured on ``x`` (NHWC floats).

    Counted over chunks of samples, so memory holds one chunk's tensors, not the whole batch's.
    On the first samples of ``x`` whose activations (every tensor) add up to RATE_BUDGET_BYTES:
    all of a small model's calibration batch; for a 224x224 E-SpikeFormer (~30 MB a sample) some
    35 samples, 10^5 values or more per layer, whose golden run takes seconds, not minutes."""
    from edgesnn.ir.interpreter import tensor_bytes

    ops = {op.name: op for op in graph.ops}
    inputs = {name: ops[name].inputs[0] for name in event_candidates(graph)}
    if graph.stateful:
        return _sequence_rates(graph, x, inputs)
    nonzero = dict.fromkeys(inputs, 0)
    per_sample = max(1, sum(map(tensor_bytes, graph.tensors.values())))
    xq = graph.quantize_input(x[:max(1, RATE_BUDGET_BYTES // per_sample)])
    chunk = max(1, RATE_CHUNK_BYTES // per_sample)
    for start in range(0, len(xq), chunk):
        values = graph.run_integer(xq[start:start + chunk], keep_all=True)
        for name, tensor in inputs.items():
            nonzero[name] += int(np.count_nonzero(values[tensor]))
    total = {name: len(xq) * math.prod(graph.tensors[tensor].shape) for name, tensor in inputs.items()}
    return {name: nonzero[name] / total[name] if total[name] else float("nan") for name in inputs}


def _sequence_rates(graph: g.Graph, x: np.ndarray | None, inputs: dict[str, str]) -> dict[str, float]:
    """Firing rates of a temporal graph over calibration sequences (N, T, *frame) NHWC, every step
    counted; ``x`` None: no rate is known (auto keeps those layers dense)."""
    from edgesnn.ir import state

    if x is None or not len(x):
        return dict.fromkeys(inputs, float("nan"))
    xq = state.quantize_sequence(graph, x[:64])
    stepper = state.Stepper(graph)
    stepper.reset(len(xq))
    nonzero = dict.fromkeys(inputs, 0)
    for t in range(xq.shape[1]):
        values = stepper.step(xq[:, t], keep_all=True)
        for name, tensor in inputs.items():
            nonzero[name] += int(np.count_nonzero(values[tensor]))
    return {name: nonzero[name] / (xq.shape[0] * xq.shape[1] * math.prod(graph.tensors[tensor].shape))
            for name, tensor in inputs.items()}


def recorded_sequences(graph: g.Graph) -> np.ndarray | None:
    """The first 64 training sequences (NHWC floats) of the data set a temporal graph records, for its
    firing rates; None when it records none or it cannot be read here."""
    from edgesnn import data as datasets

    spec = (graph.meta.get("source") or {}).get("data")
    if not isinstance(spec, str) or not spec:
        return None
    try:
        ds = datasets.load(spec, True, temporal=True)
    except EdgesnnError:
        return None
    if ds.steps != graph.sequence.steps:
        return None
    return datasets.to_nhwc(np.asarray(ds.x_train[:64], np.float32))


def choose_event_driven(graph: g.Graph, choice: str, x: np.ndarray,
                        cpu: str | None = None) -> tuple[set[str], dict[str, float]]:
    """``choice``: auto (per layer, the form the cost model of backends/mcu/cost.py gives fewer
    instructions on ``cpu`` at the measured firing rate), none, all, or comma-separated layer names."""
    from edgesnn.backends.mcu import cost

    candidates = event_candidates(graph)
    rates = firing_rates(graph, x) if candidates else {}
    if choice == "auto":
        return cost.choose(graph, rates, cpu), rates
    if choice == "none":
        return set(), rates
    if choice == "all":
        return set(candidates), rates
    names = {n.strip() for n in choice.split(",") if n.strip()}
    unknown = names - set(candidates)
    if unknown:
        raise EdgesnnError(f"--event-driven: {', '.join(sorted(unknown))} is not a conv2d/dense layer reading spikes; "
                           f"candidates: {', '.join(candidates) or 'none'}")
    return names, rates


def export_mcu(graph: g.Graph, board: Board, out: Path, event_driven: str, calibration: np.ndarray,
               spike_code: str | None = None, kernels: str = "tvm", cmsis_nn: Path | None = None) -> dict:
    """``spike_code`` (rate-burst, bit-plane): the event-driven layers that read spike counts run
    them as spike trains of that code (additions only); None (default): they read the integer counts.
    ``kernels``: tvm (every kernel generated by TVM) or cmsis-nn (the layers CMSIS-NN covers call it,
    compiled from the folder ``cmsis_nn``; see backends/mcu/cmsis_nn.py)."""
    from edgesnn.backends.mcu import kernels_cpu
    from edgesnn.backends.mcu.cmsis_nn import check_kernels
    from edgesnn.backends.mcu.kernels import train_layers
    from edgesnn.backends.mcu.project import write_project
    from edgesnn.boards import BUILD_KINDS

    if board.kind not in BUILD_KINDS:  # before anything is computed or written (the CLI checks this too)
        raise EdgesnnError(f"board {board.name} ({board.kind}) cannot run --target mcu; it builds for "
                           f"{' or '.join(BUILD_KINDS)} boards")
    cmsis_root = check_kernels(kernels, cmsis_nn)  # a bad kernel source or CMSIS-NN folder: before any work
    if graph.stateful and calibration is None:  # a temporal checkpoint exports without data: its recorded set
        calibration = recorded_sequences(graph)
    # An application CPU's dense form is the vector GEMM of kernels_cpu (64 MACs an instruction, the sums
    # in registers); the event-driven forms are scalar loops no firing rate makes cheaper (digits cnn on
    # this x86 host: 2.9 us dense, 48.8 us event-driven), so auto keeps every layer dense there, unless
    # --spike-code asks for spike trains, which only event-driven layers run (the cost model chooses them).
    cpu_dense = event_driven == "auto" and board.kind in kernels_cpu.BOARD_KINDS and spike_code is None
    auto = "none" if cpu_dense else event_driven
    with step(f"mcu: firing rates of {0 if calibration is None else len(calibration)} calibration samples"):
        chosen, rates = choose_event_driven(graph, auto, calibration, board.cpu)
    if spike_code is not None:
        spike_code = spikes.code_name(spike_code)
        if not train_layers(graph, chosen, spike_code):
            raise EdgesnnError(f"--spike-code {spike_code}: no event-driven layer reads spike counts "
                               f"(--event-driven {event_driven}; layers reading spikes: "
                               f"{', '.join(event_candidates(graph)) or 'none'})")
    target = {"kind": "c", "mcpu": board.cpu} if board.kind == "mcu" else {"kind": "c"}
    with step("mcu: compile the kernels (TVM) and write the project"):
        info = write_project(graph, board, out, chosen, target, rates, spike_code, cmsis_root)
    return info


def require_trusted_project(project: Path, trust_code: bool) -> None:
    """Building a project runs its Makefile (and the program it compiles): code from the folder,
    which a downloaded project's author wrote. It runs only when the user asked for it."""
    if trust_code is not True:
        raise EdgesnnError(f"{project}: this would run the folder's Makefile (make builds and runs the project); "
                           f"pass --trust-code if you trust it (Python: trust_code=True)")


def verify_mcu(project: Path, x: np.ndarray, qemu: bool = False, samples: int | None = None,
               trust_code: bool = False) -> dict:
    """Host build over all of ``x``; with ``qemu`` also the board's build in emulation.
    ``trust_code``: the project's Makefile may run (see :func:`require_trusted_project`)."""
    from edgesnn.backends.mcu.build import MACHINES, no_machine, run, sizes

    project = Path(project)
    info = read_project(project)
    graph = load_ir(project / "model.ir")
    xq = graph.quantize_input(x if samples is None else x[:samples])
    golden = graph.run_integer(xq)[graph.outputs[0]].reshape(len(xq), -1)
    out_spec = graph.tensors[graph.outputs[0]]
    size = int(np.prod(out_spec.shape))
    runs = {}
    targets = ["host"] + (["arm" if info["kind"] == "mcu" else "aarch64"] if qemu else [])
    require_trusted_project(project, trust_code)  # after every check of the folder's files, before make
    if "arm" in targets and info["qemu_machine"] not in MACHINES:  # before the host build: one line, no make
        raise EdgesnnError(no_machine(info["board"], info.get("cpu"), info["qemu_machine"]))
    for target in targets:
        where = {"host": "this machine", "arm": f"QEMU {info['qemu_machine']}", "aarch64": "qemu-aarch64"}[target]
        with step(f"mcu: build and run {len(xq)} samples, {target} ({where})"):
            got, stats = run(project, target, xq, out_spec.dtype, size, machine=info["qemu_machine"])
        row = {"mismatches": int((got != golden).any(1).sum()), "mismatched_elements": int((got != golden).sum()),
               "samples": len(xq), "stats": stats}
        if target == "arm":
            row["instructions_per_inference"] = stats["mean"]
            row["machine"] = info["qemu_machine"]
            row["sizes"] = sizes(project / "build" / "arm" / "model.elf")  # the whole verification image
            row["library_sizes"] = sizes(project / "build" / "arm" / "libedgesnn_model.a")  # the model alone
        runs[target] = row
    return {"project": str(project), "board": info["board"], "samples": len(xq),
            "mismatches": max(r["mismatches"] for r in runs.values()), "runs": runs,
            "arena_bytes": info["arena_bytes"], "const_bytes": info["const_bytes"],
            "event_driven_layers": [k["op"] for k in info["kernels"] if k["event_driven"]],
            "spike_code": info.get("spike_code"),
            "spike_train_layers": [k["op"] for k in info["kernels"] if k.get("spike_code")]}
