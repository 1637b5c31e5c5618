"""Lava backend: the IR as a graph of edgesnn's own Lava Processes with fixed-point ProcessModels
(Loihi 2 conventions), checked bit for bit in Lava's CPU simulation; plus a netx HDF5 file for the
layers lava-dl's netx can load, and a Loihi 2 resource and energy report.

:mod:`.compat` (the one lava-nc 0.10 / Python 3.11 step), :mod:`.arith` (each op in Loihi's
conventions), :mod:`.processes` (Processes and models), :mod:`.network` (IR -> process graph, run),
:mod:`.netx`, :mod:`.resources`; a temporal graph (state over sequences): :mod:`.sequences` and
:mod:`.state_processes`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesnn import spikes
from edgesnn.backends.lava.network import MODES, describe, run_in_subprocess
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_dir, check_not_interrupted, read_artifact_json
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.progress import step

NETWORK_FILE, NETX_FILE, REPORT_FILE = "lava.json", "model.net", "loihi2.json"
TIMEOUT_S = 900
_Count = Annotated[int, Field(ge=0)]
_Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class NetworkFile(_Schema):
    """What verify and profile --measure read from lava.json (checked by files.read_artifact_json)."""

    mode: Literal[MODES]


class ReportFile(_Schema):
    """What profile reads from loihi2.json: a tampered count (``cores: -5``) is refused, not reported as fitting."""

    cores: _Count
    timesteps: Annotated[int, Field(ge=1)]
    samples: _Count
    max_fan_in: _Count
    cores_unshared: _Count
    chips: _Count
    neurons: _Count
    synapses: _Count
    synaptic_connections: _Count
    synaptic_memory_bits: _Count
    neuron_state_bits: _Count
    synops_per_inference: _Amount
    neuron_updates_per_inference: _Amount
    energy_pj_per_inference: _Amount
    energy_uj_per_inference: _Amount


def resolve_mode(lava_mode: str | None, spike_code: str | None) -> str | None:
    """The Lava mode that ``--lava-mode`` and ``--spike-code`` ask for: the spike code names the
    spike-train mode (rate-burst, bit-plane), so the two may be given together only when they agree.
    None: neither was given."""
    if lava_mode is not None and lava_mode not in MODES:
        raise EdgesnnError(f"unknown Lava mode {lava_mode!r}; available: {', '.join(MODES)}")
    if spike_code is None:
        return lava_mode
    code = spikes.code_name(spike_code)
    if lava_mode is not None and lava_mode != code:
        raise EdgesnnError(f"--lava-mode {lava_mode} and --spike-code {code} disagree: the spike code is the Lava "
                           f"mode of spike trains (give one of them)")
    return code


def export_lava(graph: g.Graph, out: Path, mode: str, calibration: np.ndarray | None, data: str | None = None,
                data_note: str | None = None) -> dict:
    """Write OUT/model.ir, lava.json (the process graph), model.net (netx, when it can express the
    graph) and loihi2.json (resources and energy); checks everything before the folder appears.
    A temporal graph's ``calibration``: its test sequences as input integers (N, T, ...) of ``data``, or None
    (``data_note``: why)."""
    from edgesnn.backends.lava.netx import netx_supported, write_netx
    from edgesnn.backends.lava.resources import loihi2_report

    network = describe(graph, mode)  # refuses an op Lava cannot map, or a 24-bit overflow
    if graph.stateful:  # a model over sequences (sequences.py): the process graph, the IR, the Loihi 2 report
        return _export_sequences(graph, out, network, calibration, data, data_note)
    with step(f"lava: Loihi 2 resources and energy over {len(calibration)} calibration samples"):
        report = loihi2_report(graph, calibration, mode=mode)
    netx_ok, reason = netx_supported(graph)
    with atomic_dir(out, NETWORK_FILE) as tmp:
        graph.save(tmp / "model.ir")
        network["netx"] = NETX_FILE if netx_ok else None
        network["netx_note"], network["netx_summary"] = reason, None
        if netx_ok:  # the summary (exact or why not per layer, how to run it) goes where the user finds it
            summary = {**write_netx(graph, tmp / NETX_FILE), "path": NETX_FILE}
            network["netx_note"], network["netx_summary"] = summary["note"], summary
        (tmp / NETWORK_FILE).write_text(json.dumps(network, indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    return network


def _export_sequences(graph: g.Graph, out: Path, network: dict, xq: np.ndarray | None, data: str | None,
                      data_note: str | None) -> dict:
    """lava.json (each stateful op's process model and why), model.ir, loihi2.json (resources, states and the
    activity per step and per sequence over ``xq``: resources_state.py) and model.net where netx holds the graph
    exactly (netx_state.py)."""
    from edgesnn.backends.lava import netx_state
    from edgesnn.backends.lava.resources_state import sequence_report

    what = "no test sequences" if xq is None else f"{len(xq)} test sequences of {graph.sequence.steps} steps"
    with step(f"lava: Loihi 2 resources and energy over {what}"):
        report = sequence_report(graph, xq, data, note=data_note)
    netx_ok, why = netx_state.supported(graph)  # the narrow class netx holds exactly (netx_state.py)
    network.update(netx=NETX_FILE if netx_ok else None, netx_note=why, netx_summary=None, report=REPORT_FILE)
    with atomic_dir(out, NETWORK_FILE) as tmp:
        graph.save(tmp / "model.ir")
        if netx_ok:
            summary = {**netx_state.write(graph, tmp / NETX_FILE), "path": NETX_FILE}
            network["netx_note"], network["netx_summary"] = summary["note"], summary
        (tmp / NETWORK_FILE).write_text(json.dumps(network, indent=2) + "\n")
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    return network


def verify_lava(folder: Path, x: np.ndarray, samples: int, mode: str | None = None) -> dict:
    """Run ``samples`` inputs through Lava's Loihi2SimCfg and compare with the golden interpreter."""
    folder = Path(folder)
    check_not_interrupted(folder)
    network = read_artifact_json(folder / NETWORK_FILE, NetworkFile, "Lava network file")
    mode = mode or network["mode"]
    if mode not in MODES:
        raise EdgesnnError(f"unknown Lava mode {mode!r}; available: {', '.join(MODES)}")
    graph = load_ir(folder / "model.ir")
    xq = graph.quantize_input(x[:samples])
    golden = graph.run_integer(xq)[graph.outputs[0]].reshape(len(xq), -1)
    t0 = time.perf_counter()
    with step(f"lava: {len(xq)} samples in Lava's Loihi 2 simulation ({mode})"):
        got = run_in_subprocess(folder / "model.ir", xq, mode, TIMEOUT_S)
    seconds = time.perf_counter() - t0
    differs = (got != golden).any(1)
    return {"artifact": str(folder), "runtime": "lava-nc Loihi2SimCfg (fixed_pt, CPU)", "mode": mode,
            "samples": int(len(xq)), "mismatches": int(differs.sum()),
            "mismatched_elements": int((got != golden).sum()),
            "timesteps_per_sample": describe(graph, mode)["timesteps_per_sample"],
            "seconds": seconds, "seconds_per_sample": seconds / len(xq)}


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)
