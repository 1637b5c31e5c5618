"""Profile an artifact for a board: memory (of the IR and of the target), operations and firing
rates measured on data, energy in the SNN papers' 45 nm convention, and the fit on the board.

The artifact is what ``export`` wrote, of a target that profiles (edgesnn.targets: model.ir, a
model.tflite with its model.ir, an MCU project folder, a Lava folder); every number starts from the IR
(:mod:`.memory`, :mod:`.ops`, :mod:`.energy`) and the target adds its own (:meth:`Target.profile_graph`:
file, arena, build sizes, Loihi cores; :meth:`Target.measure`; :meth:`Target.board_energy`).
"""

from __future__ import annotations

from pathlib import Path

from edgesnn import artifact_data, boards, spikes, targets
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.files import check_not_interrupted
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
    code = spikes.code_name(spike_code or target.spike_code(Path(artifact)) or "rate-burst")
    board = boards.load(board_spec)
    if graph.stateful:  # state over T timesteps: every figure per step and per sequence (edgesnn.profile.temporal)
        from edgesnn.profile import temporal

        return temporal.profile(Path(artifact), target, graph, target_memory, board, code, data_spec, measure)
    data_spec, ds = artifact_data.load(Path(artifact), data_spec, arrays=True, graph=graph)  # numpy: no torch
    x = datasets.to_nhwc(ds.x_test)
    try:
        graph.check_input_shape(x)
    except EdgesnnError as e:
        raise EdgesnnError(f"data {data_spec}: {e}") from None
    xq = graph.quantize_input(x)
    layers = ops.layer_ops(graph, xq, code)
    result = {
        "artifact": str(artifact), "target": target.name, "board": board.name, "data": data_spec, "samples": int(len(xq)),
        "params": memory.params(graph), "weight_bytes": memory.weight_bytes(graph),
        "peak_activation_bytes": memory.peak_activation_bytes(graph),
        "neuron_state_bytes": memory.neuron_state_bytes(graph), "target_memory": target_memory,
        "macs": sum(r["macs"] for r in layers), "sops": sum(r["sops"] or 0.0 for r in layers), "spike_code": code,
        "sops_by_code": {k: sum((r["sops_by_code"] or {}).get(k, 0.0) for r in layers) for k in spikes.CODES},
        **energy_45nm(layers), "layers": layers,
    }
    result.update(_fit(board, target, result, graph, x))
    if measure:
        from edgesnn.profile.measure import measure as run_measure

        result.update(run_measure(target, Path(artifact), xq))
    result.update(_board_energy(board, target, Path(artifact), graph, x, result))
    return result


def _board_energy(board: boards.Board, target: targets.Target, artifact: Path, graph, x, r: dict) -> dict:
    """The board's own energy model, run on ``x``, the profiled test split (NHWC floats): the artifact's
    target's (an MCU project: instructions counted on QEMU x energy per cycle), else that of a target that
    models the board's kind from the IR alone (Loihi 2's per-operation figures), else (CPU boards, with --measure)
    the board's latency and energy from a run on it, or an estimate labelled with its method and the machine it
    ran on (:func:`.energy.cpu_board`). ``energy_board_note`` says which, or why none."""
    e = target.board_energy(board, artifact, graph, x) if board.kind in target.runs_on else None
    for other in targets.all_targets():
        if e is None and other is not target and board.kind in other.runs_on:
            e = other.board_energy(board, None, graph, x)
    if e is not None:
        return e
    from edgesnn.profile.energy import cpu_board  # the board's own figures only from a run on it, else an estimate

    return cpu_board(board, r)


def _artifact(path: Path, trust_code: bool = False):
    """(target, IR graph, target-specific memory) of an exported artifact."""
    check_not_interrupted(path if path.is_dir() else path.parent)
    target = targets.profiled(path)
    graph, extra = target.profile_graph(path, trust_code)
    return target, graph, extra


def _fit(board: boards.Board, target: targets.Target, r: dict, graph, x) -> dict:
    """Needed vs available bytes (flash holds constants, RAM activations) and the margin left; on a board
    a target counts in other units (a neuromorphic chip's neuro cores: the lava target), its own fit,
    counted on ``x`` (the profiled test split) unless the artifact says."""
    t = r["target_memory"]
    for owner in [target] + [o for o in targets.all_targets() if o is not target]:
        fit = owner.board_fit(board, t, graph, x) if board.kind in owner.runs_on else None
        if fit is not None:
            return fit
    flash = t.get("flash", t.get("file_bytes", r["weight_bytes"]))
    ram = t.get("ram", t.get("tflm_arena_bytes", t.get("arena_bytes", r["peak_activation_bytes"])))
    need = {"flash": flash, "ram": ram}
    have = {"flash": board.flash_bytes, "ram": board.ram_limit_bytes}
    margin = {k: (have[k] - need[k]) if have[k] is not None else None for k in need}
    fits = all(m is None or m >= 0 for m in margin.values())
    return {"fits": fits, "needed_bytes": need, "available_bytes": have, "margin_bytes": margin}
