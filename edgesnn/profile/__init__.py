"""Profile an artifact for a board: memory (of the IR and of the target), operations and firing
rates measured on data, energy in the SNN papers' 45 nm convention, and the fit on the board.

The artifact is what ``export`` wrote: a model.ir, a model.tflite (with its model.ir), an MCU
project folder or a Lava folder; every number starts from the IR (:mod:`.memory`, :mod:`.ops`,
:mod:`.energy`) and the target adds its own (file, arena, build sizes, Loihi cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn import artifact_data, boards, spikes
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.files import check_not_interrupted, read_artifact_json
from edgesnn.ir import load as load_ir
from edgesnn.profile import memory, ops
from edgesnn.profile.energy import energy_45nm


def profile(artifact: Path, board_spec: str, data_spec: str | None = None, measure: bool = False,
            trust_code: bool = False, spike_code: str | None = None) -> dict:
    """``measure``: also run the artifact here (see :mod:`.measure`): latency, peak memory, power.
    ``trust_code``: an MCU project's Makefile may run (profiling one builds it). ``spike_code``:
    the code whose SOPs ``sops`` and the 45 nm energy count (default: the artifact's own, an MCU
    project's or Lava folder's spike code, else rate-burst: s spikes per count s); both codes'
    SOPs and timesteps are reported per layer either way. ``data_spec``: the data whose test split is
    measured, every sample any step runs (QEMU, the Loihi 2 report) is drawn from it; None: the data
    set the artifact records (edgesnn.artifact_data)."""
    target, graph, target_memory = _artifact(Path(artifact), trust_code)
    code = spikes.code_name(spike_code or _artifact_code(target, Path(artifact)) or "rate-burst")
    board = boards.load(board_spec)
    data_spec, ds = artifact_data.load(Path(artifact), data_spec, arrays=True, graph=graph)  # numpy: no torch
    x = datasets.to_nhwc(ds.x_test)
    try:
        graph.check_input_shape(x)
    except EdgesnnError as e:
        raise EdgesnnError(f"data {data_spec}: {e}") from None
    xq = graph.quantize_input(x)
    layers = ops.layer_ops(graph, xq, code)
    result = {
        "artifact": str(artifact), "target": target, "board": board.name, "data": data_spec, "samples": int(len(xq)),
        "params": memory.params(graph), "weight_bytes": memory.weight_bytes(graph),
        "peak_activation_bytes": memory.peak_activation_bytes(graph),
        "neuron_state_bytes": memory.neuron_state_bytes(graph), "target_memory": target_memory,
        "macs": sum(r["macs"] for r in layers), "sops": sum(r["sops"] or 0.0 for r in layers), "spike_code": code,
        "sops_by_code": {k: sum((r["sops_by_code"] or {}).get(k, 0.0) for r in layers) for k in spikes.CODES},
        **energy_45nm(layers), "layers": layers,
    }
    result.update(_fit(board, result, graph, x))
    if measure:
        from edgesnn.profile.measure import measure as run_measure

        result.update(run_measure(target, Path(artifact), xq))
    result.update(_board_energy(board, target, Path(artifact), graph, x, result))
    return result


def _board_energy(board: boards.Board, target: str, artifact: Path, graph, x, r: dict) -> dict:
    """The board's own energy model: instructions x energy per cycle (MCU, instructions counted on
    QEMU, one per cycle assumed), latency x active power (CPU boards, with --measure: the latency
    is this machine's), per-operation figures (Loihi 2), each run on ``x``, the profiled test split (NHWC
    floats). ``energy_board_note`` says which, or why none."""
    e = {"energy_board_pj": None}
    if board.kind == "mcu":
        cycle = (board.energy_pj or {}).get("cycle")
        if target != "mcu" or not board.qemu_machine:
            e["energy_board_note"] = "needs an MCU project (export --target mcu) for a board QEMU emulates"
            return e
        from edgesnn.backends.mcu import read_project, verify_mcu

        if read_project(artifact)["kind"] != "mcu":  # a Linux board's project: it runs under qemu-aarch64
            e["energy_board_note"] = "needs an MCU project (export --target mcu) for a board QEMU emulates"
            return e
        arm = verify_mcu(artifact, x, qemu=True, samples=20,
                         trust_code=True)["runs"]["arm"]  # the project _artifact checked
        e["instructions_per_inference"] = arm["instructions_per_inference"]
        if cycle is None:
            e["energy_board_note"] = f"{board.name} has no energy per cycle in its board file"
        else:
            e["energy_board_pj"] = arm["instructions_per_inference"] * cycle
            e["energy_board_note"] = "QEMU instructions per inference x energy per cycle (1 instruction per cycle)"
    elif board.kind == "neuromorphic":
        from edgesnn.backends.lava.resources import loihi2_report

        mode = (_artifact_code(target, artifact) if target == "lava" else None) or "graded"  # what a Lava folder runs
        report = loihi2_report(graph, x[:256], mode=mode)
        e["energy_board_pj"] = report["energy_pj_per_inference"]
        e["energy_board_note"] = "Loihi 2 per-synaptic-op and per-neuron-update figures (see edgesnn/shipped/boards/loihi2.yaml)"
    elif "latency_ms_median" in r and board.active_power_w is not None:
        e["energy_board_pj"] = r["latency_ms_median"] * 1e-3 * board.active_power_w * 1e12
        e["energy_board_note"] = "latency measured on this machine x the board's active power"
    else:
        e["energy_board_note"] = ("run with --measure for a latency" if board.active_power_w is not None
                                  else f"{board.name} has no active power in its board file")
    return e


def _artifact_code(target: str, path: Path) -> str | None:
    """The spike code an MCU project or a Lava folder was exported with (None: integer counts)."""
    if target == "mcu":
        from edgesnn.backends.mcu import read_project

        return read_project(path).get("spike_code")
    if target == "lava":
        from edgesnn.backends.lava import NETWORK_FILE, NetworkFile

        mode = read_artifact_json(path / NETWORK_FILE, NetworkFile, "Lava network file")["mode"]
        return mode if mode in spikes.CODES else None
    return None


def _artifact(path: Path, trust_code: bool = False):
    """(target, IR graph, target-specific memory) of an exported artifact."""
    check_not_interrupted(path if path.is_dir() else path.parent)
    if path.suffix == ".ir":
        return "ir", load_ir(path), {}
    if path.suffix == ".tflite":
        from edgesnn.backends.tflite import MICRO, micro_available, run

        ir = path.with_name("model.ir")
        if not ir.is_file():
            raise EdgesnnError(f"{path}: no model.ir beside it to profile")
        graph = load_ir(ir)
        extra = {"file_bytes": path.stat().st_size}
        if micro_available():
            xq = graph.quantize_input(np.zeros((1, *graph.tensors[graph.input].shape), np.float32))  # sizes only
            extra["tflm_arena_bytes"] = run(path, xq, MICRO).arena_bytes
        return "tflite", graph, extra
    if path.is_dir() and (path / "project.json").is_file():
        from edgesnn.backends.mcu import read_project, require_trusted_project
        from edgesnn.backends.mcu.build import cortex_m_sizes

        info = read_project(path)
        require_trusted_project(path, trust_code)  # profiling builds it (sizes, instruction counts, --measure)
        extra = {"arena_bytes": info["arena_bytes"], "const_bytes": info["const_bytes"]}
        if info["kind"] == "mcu":  # every Cortex-M board builds (no QEMU machine: a link-check memory map)
            built = cortex_m_sizes(path)
            extra.update(built["image"])  # the whole verification image: harness, startup, newlib stdio
            extra.update({f"library_{k}_bytes": v for k, v in built["library"].items()})  # the model alone
        return "mcu", load_ir(path / "model.ir"), extra
    if path.is_dir() and (path / "lava.json").is_file():
        from edgesnn.backends.lava import REPORT_FILE, ReportFile

        report = read_artifact_json(path / REPORT_FILE, ReportFile, "Loihi 2 report")  # types and ranges checked
        extra = {k: report[k] for k in ("cores", "chips", "neurons", "synaptic_memory_bits", "energy_uj_per_inference")}
        return "lava", load_ir(path / "model.ir"), extra
    raise EdgesnnError(f"{path}: profile takes model.ir, model.tflite, an MCU project folder or a Lava folder")


def _fit(board: boards.Board, r: dict, graph, x) -> dict:
    """Needed vs available bytes (flash holds constants, RAM activations) and the margin left; on a
    neuromorphic chip, neuro cores (one layer per core, backends/lava/resources.py), counted on ``x``
    (the profiled test split) unless the Lava folder's report has them."""
    t = r["target_memory"]
    if board.kind == "neuromorphic":
        from edgesnn.backends.lava.resources import loihi2_report

        cores = t.get("cores") or loihi2_report(graph, x[:64])["cores"]
        have = int(board.figures["neuro_cores_per_chip"]["value"])
        return {"fits": cores <= have, "needed_cores": cores, "available_cores": have, "margin_cores": have - cores,
                "needed_bytes": {}, "available_bytes": {}, "margin_bytes": {}}
    flash = t.get("flash", t.get("file_bytes", r["weight_bytes"]))
    ram = t.get("ram", t.get("tflm_arena_bytes", t.get("arena_bytes", r["peak_activation_bytes"])))
    need = {"flash": flash, "ram": ram}
    have = {"flash": board.flash_bytes, "ram": board.ram_limit_bytes}
    margin = {k: (have[k] - need[k]) if have[k] is not None else None for k in need}
    fits = all(m is None or m >= 0 for m in margin.values())
    return {"fits": fits, "needed_bytes": need, "available_bytes": have, "margin_bytes": margin}
