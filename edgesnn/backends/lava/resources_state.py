"""Loihi 2 resource and energy report of a temporal graph (state over T timesteps, docs/temporal.md): the
static graph's resource model (:mod:`.resources`) per layer, the states on Loihi's 24-bit neuron state, and
the activity per timestep and per sequence measured with the golden interpreter, step by step.

- Resources: every layer is counted as in a static graph's report (neurons: one per output element;
  stored weights; connections; synaptic memory; cores, one layer per core). A stateful op adds its
  parameters (``decay_v``, ``decay_i``, ``threshold``: 32 bits per entry, as the IR stores them) and a
  ``recurrent`` op its weight, read by the previous step's source (fan-out: its output channels).
- State: Loihi's neuron state is 24 bits, so a state of any width up to 24 bits takes one slot per element
  (wider ones are refused at export: sequences.describe). A neuron's own slot holds its membrane ``v``;
  a current ``i`` and a recurrent op's ``prev`` (the source's last value) add one slot per element.
- Activity, graded mode (one Lava step per IR step): at every step, every input element whose value minus
  its zero point is nonzero costs one synaptic op per synapse it fans out to (a spike tensor's 0/1 spikes,
  a current's nonzero values); a recurrent op's previous-step source too. Every neuron is updated once per
  step. Per step is the mean over sequences and steps, per sequence the mean over sequences of the sum over
  T steps (= T x per step).
- Energy = synops x E_synop + neuron updates x E_update with the figures the static report reads
  (:func:`.resources.load_limits`, the shipped board file loihi2.yaml: Loihi 1 proxies).
- Which neuron: a stateful op whose arithmetic is Lava's bit-accurate LIF (``sequences.loihi_lif``) maps to
  Loihi's CUBA neuron (``mapping: loihi-cuba``); one that runs in edgesnn's own ProcessModel does not map
  to Loihi's neuron microcode as-is (it would need a custom neuron program), so its figures, counted as one
  neuron update per neuron per step, are labelled ``mapping: estimate``. Static ops (dense, conv...) are
  counted as in a static graph's report (``mapping: static``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgesnn.backends.lava import resources as R
from edgesnn.backends.lava.arith import STATE_BITS, WIRING
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st

SAMPLES = 256  # sequences counted at export and by profile (as the static report's calibration samples)
PARAM_BITS = 32  # a stateful op's decay and threshold entries, int32 as the IR stores them
STATEFUL = ("lif", "cuba_lif", "li", "recurrent")
_Count = Annotated[int, Field(ge=0)]
_Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SequenceReportFile(BaseModel):
    """What profile reads from a temporal graph's loihi2.json (checked by files.read_artifact_json)."""

    model_config = ConfigDict(extra="allow", strict=True)
    steps: Annotated[int, Field(ge=1)]
    cores: _Count
    chips: _Count
    neurons: _Count
    synapses: _Count
    synaptic_memory_bits: _Count
    neuron_state_bits: _Count
    state_slots: _Count
    ir_state_slots: _Count
    synops_per_step: _Amount | None
    synops_per_sequence: _Amount | None
    energy_pj_per_step: _Amount | None
    energy_pj_per_sequence: _Amount | None
    energy_uj_per_step: _Amount | None
    energy_uj_per_sequence: _Amount | None


def sequence_report(graph: g.Graph, xq: np.ndarray | None, data: str | None = None,
                    limits_path: str | Path | None = None, note: str | None = None) -> dict:
    """Resources, states and (with integer sequences ``xq`` (N, T, ...) of ``data``) the activity and energy
    per step and per sequence of ``graph`` on Loihi 2 (see the module docstring). None: no data, no activity
    (``note``: why)."""
    from edgesnn.backends.lava.sequences import describe

    figures = R.load_limits(limits_path)
    steps = graph.sequence.steps
    models = {p["name"]: p for p in describe(graph, "graded")["processes"]}  # refuses what Lava cannot run
    for name, params in _netx_neurons(graph).items():  # a dense's power of two folded into Lava's input shift
        if models[name]["lif"] is None:
            models[name] = {**models[name], "lif": params, "why": "Lava's LIF in netx's Dense block (model.net): "
                                                                  "the dense's power of two folds into its input shift"}
    rows = [_row(graph, op, figures, models.get(op.name)) for op in graph.ops]
    keys = ("neurons", "synapses", "synaptic_connections", "synaptic_memory_bits", "neuron_state_bits", "state_slots",
            "cores", "cores_unshared")
    totals = {k: sum(r[k] for r in rows) for k in keys}
    cores_per_chip = int(figures["neuro_cores_per_chip"]["value"])
    report = {
        "chip": "loihi2", "mode": "graded", "steps": steps, "lava_steps_per_step": 1, **totals,
        "chips": math.ceil(totals["cores"] / cores_per_chip), "max_fan_in": max((r["fan_in"] for r in rows), default=0),
        "states": states(graph), "ir_state_slots": sum(s["slots"] for s in states(graph)),
        "estimated_layers": [r["name"] for r in rows if r["mapping"] == "estimate"],
        "loihi_cuba_layers": [r["name"] for r in rows if r["mapping"] == "loihi-cuba"],
        "figures": {k: figures[k] for k in R.FIGURES_USED}, "layers": rows, "model": MODEL,
    }
    report.update(activity(graph, xq, rows, figures, data, note))
    return report


def _netx_neurons(graph: g.Graph) -> dict[str, dict]:
    """The neurons netx runs as Lava's LIF when the graph is in the class netx_state.py writes, else none."""
    from edgesnn.backends.lava import netx_state

    try:
        return {neuron.name: params for _, neuron, _, params in netx_state.plan(graph)}
    except EdgesnnError:
        return {}


def states(graph: g.Graph) -> list[dict]:
    """Every IR state on Loihi's 24-bit neuron state: one slot per element whatever its width (<= 24)."""
    owner = {name: op.name for op in graph.ops for name in _owned(op)}
    return [{"name": name, "op": owner.get(name), "shape": list(s.shape), "dtype": s.dtype, "bits": s.bits,
             "elements": math.prod(s.shape), "slots": math.prod(s.shape), "slot_bits": STATE_BITS,
             "loihi_bits": math.prod(s.shape) * STATE_BITS, "ir_bits": math.prod(s.shape) * s.bits}
            for name, s in graph.states.items()]


def _owned(op) -> list[str]:
    if op.kind == "recurrent":
        return [op.state]
    if op.kind in STATEFUL:
        return [op.v_state] + ([op.i_state] if getattr(op, "i_state", None) else [])
    return []


def _row(graph: g.Graph, op: g.Op, figures: dict, process: dict | None) -> dict:
    """The static report's row of ``op`` with the state slots, a stateful op's parameters and a recurrent
    op's source synapses added, and which neuron model it maps to."""
    row = R._static_row(graph, op, figures)
    slot = int(figures["neuron_state_bits"]["value"])
    extra = [name for name in _owned(op) if name != getattr(op, "v_state", None)]  # v is the neuron's own slot
    slots = row["neurons"] + sum(math.prod(graph.states[name].shape) for name in extra)
    params = sum(np.asarray(getattr(op, k)).size for k in ("decay_v", "decay_i", "threshold")
                 if getattr(op, k, None) is not None) * PARAM_BITS
    memory, connections = row["synaptic_memory_bits"] + params, row["synaptic_connections"]
    weight_bits = getattr(op, "weight_bits", 0)
    unshared = connections * weight_bits + R._channel_state_bits(op) + params if op.kind in ("conv2d",) else memory
    if op.kind == "recurrent":  # each source element reaches every output channel through the stored weight
        connections += math.prod(graph.tensors[op.source].shape) * int(op.weight.shape[0])
        row["fan_in"] = len(op.inputs) + int(op.weight.shape[1])
    row.update(synaptic_connections=connections, synaptic_memory_bits=memory, neuron_state_bits=slots * slot,
               state_slots=slots, states=_owned(op), cores=R._cores(row["neurons"], memory + slots * slot, figures),
               cores_unshared=R._cores(row["neurons"], unshared + slots * slot, figures))
    if op.kind in WIRING:
        row.update(mapping="wiring", neuron_model=None, why="the consumer's axon order (no neurons)")
    elif op.kind in STATEFUL:
        exact = process is not None and process.get("lif") is not None
        row.update(mapping="loihi-cuba" if exact else "estimate", neuron_model=process["model"] if process else None,
                   why=process["why"] if process else None,
                   counted=("Loihi's CUBA neuron (Lava's bit-accurate LIF): one update per neuron per step"
                            if exact else "estimate: runs in edgesnn's own ProcessModel, which Loihi's neuron microcode does not run "
                            "as-is (a custom neuron program); counted as one neuron update per neuron per step"))
    else:
        row.update(mapping="static", neuron_model="edgesnn graded op", why=None,
                   counted="as a static graph's report counts it (graded neurons that requantize)")
    return row


def activity(graph: g.Graph, xq: np.ndarray | None, rows: list[dict], figures: dict, data: str | None,
             note: str | None = None) -> dict:
    """Synaptic ops, neuron updates and energy per step and per sequence (and per layer), measured on ``xq``."""
    steps = graph.sequence.steps
    e_syn, e_upd = (float(figures[k]["value"]) for k in ("energy_per_synop_pj", "energy_per_neuron_update_pj"))
    formula = {"energy_formula": "synops * energy_per_synop_pj + neuron_updates * energy_per_neuron_update_pj "
                                 "(per step; per sequence = the sums over the T steps)"}
    if xq is None or not len(xq):
        for r in rows:
            r.update(synops_per_step=None, synops_per_sequence=None, firing_rate=None,
                     neuron_updates_per_step=r["neurons"], neuron_updates_per_sequence=r["neurons"] * steps,
                     energy_pj_per_step=None, energy_pj_per_sequence=None)
        why = note or "no test sequences"
        return {"data": data, "samples": 0,
                "activity_note": f"activity not counted: {why} (profile FOLDER --board loihi2 --data SPEC counts it)",
                **{f"{k}_per_{p}": None for k in ("synops", "energy_pj", "energy_uj") for p in ("step", "sequence")},
                "neuron_updates_per_step": sum(r["neurons"] for r in rows),
                "neuron_updates_per_sequence": sum(r["neurons"] for r in rows) * steps, **formula}
    totals, fired = measured_synops(graph, xq)
    n = len(xq)
    for r in rows:
        syn = totals[r["name"]]
        r.update(synops_per_step=syn / (n * steps), synops_per_sequence=syn / n,
                 neuron_updates_per_step=r["neurons"], neuron_updates_per_sequence=r["neurons"] * steps,
                 firing_rate=fired.get(r["name"]))
        r["energy_pj_per_step"] = r["synops_per_step"] * e_syn + r["neuron_updates_per_step"] * e_upd
        r["energy_pj_per_sequence"] = r["synops_per_sequence"] * e_syn + r["neuron_updates_per_sequence"] * e_upd
    out = {"data": data, "samples": int(n)}
    for per in ("step", "sequence"):
        syn = sum(r[f"synops_per_{per}"] for r in rows)
        upd = sum(r[f"neuron_updates_per_{per}"] for r in rows)
        out.update({f"synops_per_{per}": syn, f"neuron_updates_per_{per}": upd,
                    f"energy_pj_per_{per}": syn * e_syn + upd * e_upd,
                    f"energy_uj_per_{per}": (syn * e_syn + upd * e_upd) * 1e-6})
    out.update({"estimate_energy_pj_per_sequence": sum(r["energy_pj_per_sequence"] for r in rows
                                                       if r["mapping"] == "estimate"), **formula})
    return out


def measured_synops(graph: g.Graph, xq: np.ndarray) -> tuple[dict[str, int], dict[str, float]]:
    """({op: synaptic ops summed over sequences and steps}, {spiking op: nonzero outputs per neuron per
    step}) of integer sequences ``xq`` in the golden interpreter, one step at a time."""
    steps, n = graph.sequence.steps, len(xq)
    fans = {op.name: R._fan_outs(graph, op) for op in graph.ops}
    totals = dict.fromkeys(fans, 0.0)
    spiking = {op.name: op.output for op in graph.ops if op.kind in ("lif", "cuba_lif")}
    fired = dict.fromkeys(spiking, 0)
    per_seq = steps * sum(math.prod(t.shape) * 8 for t in graph.tensors.values())  # int64 copies, every tensor
    batch = max(1, min(R.BATCH, R.BATCH_BYTES // max(per_seq, 1)))
    for first in range(0, n, batch):
        part = xq[first:first + batch]
        stepper = st.Stepper(graph)
        stepper.reset(len(part), first)
        for t in range(steps):
            before = dict(stepper.states)  # step() replaces each state's array: the previous step's values
            try:
                values = stepper.step(part[:, t], keep_all=True)
            except OverflowError as e:
                raise EdgesnnError(f"integer overflow while running the IR: {e}") from None
            R.add_synops(graph, fans, values, totals)  # graded: a nonzero value is one spike
            for op in graph.ops:
                if op.kind == "recurrent":  # the previous step's source, through the stored weight
                    sent = before[op.state] != graph.tensors[op.source].zero_point
                    totals[op.name] += int(sent.sum()) * int(op.weight.shape[0])
            for name, tensor in spiking.items():
                fired[name] += int((values[tensor] != 0).sum())
    rate = {name: fired[name] / (n * steps * math.prod(graph.tensors[spiking[name]].shape)) for name in spiking}
    return {name: int(total) for name, total in totals.items()}, rate  # counts: exact in float64


def cores(graph: g.Graph, limits_path: str | Path | None = None) -> int:
    """The neuro cores of a temporal graph (no data needed: one layer per core, its neurons, memory and state)."""
    figures = R.load_limits(limits_path)
    return sum(_row(graph, op, figures, None)["cores"] for op in graph.ops)


def board_energy(graph: g.Graph, xq: np.ndarray) -> dict:
    """Profile's Loihi 2 energy of a temporal graph on integer sequences (the first SAMPLES): per step (the
    unsuffixed figure), and the layers' mapping for the table and the page."""
    r = sequence_report(graph, xq[:SAMPLES])
    layers = [{k: row.get(k) for k in ("name", "op", "mapping", "neuron_model", "why", "neurons", "state_slots",
                                       "cores", "synops_per_step", "energy_pj_per_step")}
              for row in r["layers"] if row["mapping"] != "wiring"]
    note = (f"Loihi 2 per-synaptic-op and per-neuron-update figures (see edgesnn/shipped/boards/loihi2.yaml) over "
            f"{r['samples']} test sequences, one Lava step per IR step")
    if r["estimated_layers"]:
        note += (f"; layers {', '.join(r['estimated_layers'])} run in edgesnn's own ProcessModel, not Loihi's CUBA "
                 f"neuron: their figures are estimates")
    return {"energy_board_pj": r["energy_pj_per_step"], "energy_board_note": note,
            "loihi2": {k: r[k] for k in ("cores", "chips", "neurons", "synapses", "state_slots", "ir_state_slots",
                                         "neuron_state_bits", "synops_per_step", "synops_per_sequence",
                                         "neuron_updates_per_step", "energy_pj_per_step", "energy_pj_per_sequence",
                                         "estimated_layers", "loihi_cuba_layers", "samples")} | {"layers": layers}}


MODEL = [
    "each layer as in a static graph's report (neurons: one per output element of every op but reshape/transpose; "
    "synapses: stored weights; cores: one layer per core, max(neurons / neurons_per_core, (memory + 24-bit state) "
    "/ memory_per_core))",
    "state: Loihi's 24-bit neuron state; a state of any width up to 24 bits takes one slot per element; a neuron's "
    "slot holds its membrane v, a current i and a recurrent op's prev add one slot per element",
    "a stateful op's decays and thresholds: 32 bits per entry in synaptic memory; a recurrent op's weight is read by "
    "the previous step's source (fan-out: its output channels)",
    "synops: measured per step in graded mode, one per nonzero input element (value minus zero point) per synapse "
    "it fans out to; per sequence = the sum over the T steps",
    "neuron updates: every neuron once per step",
    "energy: synops x energy_per_synop_pj + neuron updates x energy_per_neuron_update_pj (Loihi 1 proxies, Davies "
    "et al. 2018: an order-of-magnitude estimate)",
    "mapping: loihi-cuba where Lava's bit-accurate LIF runs the op exactly; estimate where it runs in edgesnn's own "
    "ProcessModel (not Loihi's neuron microcode as-is); static for graded ops counted as in a static graph",
]
