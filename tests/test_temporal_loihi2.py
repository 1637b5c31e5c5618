"""The Loihi 2 report of a temporal graph (backends/lava/resources_state.py): loihi2.json written at export and
`profile --board loihi2` of the folder, its numbers recounted here from the graph and from the golden
interpreter's outputs at every step: neurons, state slots, synaptic ops per step and per sequence, energy from
the board file's constants, and which layers are Loihi's CUBA neuron and which are estimates."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from edgesnn import data, limits, targets
from edgesnn.backends.lava import resources_state as rs
from edgesnn.ir import load
from edgesnn.ir import state as st
from edgesnn.resources import folder
from conftest import temporal_dense_copy
from test_cli import edgesnn
from test_ir_state import currents, full_graph, neuron_graph

SLOT = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory, temporal_dense):
    """train (1 epoch) and export --target lava from the command line, as a user runs them."""
    d = tmp_path_factory.mktemp("temporal_loihi2")
    temporal_dense_copy(temporal_dense, d)
    r = edgesnn("export", d / "ck", "--target", "lava", "--out", d / "lava")
    assert r.returncode == 0, r.stderr
    assert "Loihi 2: 168 neurons" in r.stdout and "estimates for l0, l1" in r.stdout
    return d


def _constants() -> tuple[float, float]:
    """E_synop and E_update from the shipped board file, read here with the YAML reader, not the report's code."""
    figures = limits.read_yaml(folder("boards") / "loihi2.yaml", "board")["figures"]
    return figures["energy_per_synop_pj"]["value"], figures["energy_per_neuron_update_pj"]["value"]


def _every_step(graph, xq) -> dict[str, np.ndarray]:
    """Every op's output at every step (N, T, ...), from run_sequence on a copy of the graph that outputs them."""
    g2 = copy.deepcopy(graph)
    names = [op.output for op in g2.ops if op.output not in g2.outputs]
    g2.outputs = list(g2.outputs) + names
    g2.sequence.readout.update({name: "last" for name in names})
    out = st.run_sequence(g2, xq, keep_steps=True)
    return {name: out[f"{name}@steps"] for name in g2.outputs}


def _synops(graph, xq) -> dict[str, int]:
    """Synaptic ops per op over all sequences and steps: each nonzero input element (minus its zero point) x the
    synapses it reaches (a dense's output channels, a neuron's one), a recurrent op's previous-step source too."""
    steps = _every_step(graph, xq)
    steps[graph.input] = xq
    total = {}
    for op in graph.ops:
        if op.kind == "reshape":
            steps[op.output] = steps[op.inputs[0]].reshape(*xq.shape[:2], -1)
            continue
        src = op.inputs[0]
        fan = op.weight.shape[0] if op.kind == "dense" else 1
        nonzero = int((steps[src].astype(np.int64) != graph.tensors[src].zero_point).sum())
        total[op.name] = nonzero * fan
        if op.kind == "recurrent":  # steps 0..T-2 of the source feed steps 1..T-1
            prev = steps[op.source][:, :-1].astype(np.int64) != graph.tensors[op.source].zero_point
            total[op.name] += int(prev.sum()) * op.weight.shape[0]
    return total


def test_loihi2_json_of_a_trained_temporal_model(exported):
    d = exported
    r = json.loads((d / "lava" / "loihi2.json").read_text())
    graph = load(d / "lava" / "model.ir")
    steps = graph.sequence.steps
    assert r["steps"] == steps == 10 and r["mode"] == "graded" and r["data"] == "digits-events"

    # resources: one neuron per output element of every op but the reshape, one 24-bit slot per state element
    sizes = {op.name: math.prod(graph.tensors[op.output].shape) for op in graph.ops if op.kind != "reshape"}
    assert r["neurons"] == sum(sizes.values()) == 168
    assert {row["name"]: row["neurons"] for row in r["layers"] if row["op"] != "reshape"} == sizes
    assert r["synapses"] == sum(op.weight.size for op in graph.ops if op.kind == "dense")
    assert [(s["name"], s["slots"], s["bits"]) for s in r["states"]] == [
        (name, math.prod(s.shape), s.bits) for name, s in graph.states.items()]
    assert r["ir_state_slots"] == sum(math.prod(s.shape) for s in graph.states.values())
    assert r["neuron_state_bits"] == SLOT * r["neurons"] == SLOT * r["state_slots"]  # no current, no recurrent
    assert r["cores"] == sum(row["cores"] for row in r["layers"]) == 4  # one layer per core

    # synaptic ops over the first 256 test sequences, counted from every step's tensors
    ds = data.load("digits-events", temporal=True)
    xq = st.quantize_sequence(graph, data.to_nhwc(np.asarray(ds.x_test[:256], np.float32)))
    assert r["samples"] == len(xq) == 256
    total = _synops(graph, xq)
    n = len(xq)
    by_name = {row["name"]: row for row in r["layers"]}
    for name, ops in total.items():
        assert by_name[name]["synops_per_sequence"] == pytest.approx(ops / n, rel=1e-12)
    assert total["l1.dense"] == int(_every_step(graph, xq)["l0.spikes"].astype(np.int64).sum()) * 20  # spikes x fan-out
    assert r["synops_per_sequence"] == pytest.approx(sum(total.values()) / n, rel=1e-12)
    assert r["synops_per_step"] == pytest.approx(sum(total.values()) / (n * steps), rel=1e-12)
    assert r["neuron_updates_per_sequence"] == steps * r["neurons"]

    # energy: ops x the board file's constants, per step and per sequence (= T x per step)
    e_syn, e_upd = _constants()
    assert r["energy_pj_per_step"] == pytest.approx(r["synops_per_step"] * e_syn + r["neurons"] * e_upd, rel=1e-12)
    assert r["energy_pj_per_sequence"] == pytest.approx(steps * r["energy_pj_per_step"], rel=1e-12)
    assert r["energy_uj_per_sequence"] == pytest.approx(r["energy_pj_per_sequence"] * 1e-6, rel=1e-12)

    # which neuron: the trained model's LIF and LI run in edgesnn's models, so their figures are estimates
    assert r["estimated_layers"] == ["l0", "l1"] and r["loihi_cuba_layers"] == []
    assert by_name["l0"]["why"].startswith("reset by subtraction (Lava's LIF resets to zero)")
    assert by_name["l0"]["counted"].startswith("estimate:") and by_name["l0.dense"]["mapping"] == "static"
    spikes = _every_step(graph, xq)["l0.spikes"]
    assert by_name["l0"]["firing_rate"] == pytest.approx(float(spikes.mean()), rel=1e-12)


def test_profile_board_loihi2_of_the_folder(exported, tmp_path):
    d = exported
    r = edgesnn("profile", d / "lava", "--board", "loihi2", "--json", tmp_path / "p.json", "--report", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "loihi2: fits (4 of 128 neuro cores)" in r.stdout
    assert "Loihi 2 l0 (lif): estimate: edgesnn Neuron, not Loihi's CUBA neuron (reset by subtraction" in r.stdout
    p = json.loads((tmp_path / "p.json").read_text())
    report = json.loads((d / "lava" / "loihi2.json").read_text())
    assert p["needed_cores"] == report["cores"] and p["fits"]
    # profile counts the same first 256 test sequences as export: the same energy
    assert p["energy_board_pj_per_step"] == pytest.approx(report["energy_pj_per_step"], rel=1e-12)
    assert p["energy_board_pj_per_sequence"] == pytest.approx(10 * p["energy_board_pj_per_step"], rel=1e-12)
    assert p["target_state_bytes"] == 3 * report["ir_state_slots"]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Loihi 2 energy per timestep" in html and "not Loihi&#x27;s CUBA neuron" in html
    # the IR of the same model, profiled for Loihi 2: the same model, counted by profile
    r = edgesnn("profile", d / "lava" / "model.ir", "--board", "loihi2", "--json", tmp_path / "q.json")
    assert r.returncode == 0, r.stderr
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["needed_cores"] == report["cores"]
    assert q["energy_board_pj_per_step"] == pytest.approx(report["energy_pj_per_step"], rel=1e-12)


def test_lavas_lif_maps_to_loihis_cuba_neuron_and_a_current_takes_a_slot():
    """A cuba_lif with reset to zero, input shift 6, 24 bits and one decay and threshold: Lava's LIF runs it, so
    its row is Loihi's CUBA neuron, not an estimate; its current i takes one more 24-bit slot per neuron."""
    graph = neuron_graph("cuba_lif", reset="zero", shift=6, overflow="error")
    op = graph.ops[0]
    op.decay_v, op.decay_i, op.threshold = (np.array([v], np.int32) for v in (300, 700, 64 * 300))
    xq = currents(np.random.default_rng(2), 4, 7, 5, -600, 900)
    r = rs.sequence_report(graph, xq)
    (row,) = r["layers"]
    assert row["mapping"] == "loihi-cuba" and r["loihi_cuba_layers"] == ["n"] and r["estimated_layers"] == []
    assert row["state_slots"] == 5 + 5 and r["neuron_state_bits"] == SLOT * 10
    assert row["synaptic_memory_bits"] == 3 * 32  # one decay_v, decay_i and threshold, int32 as the IR stores them
    nonzero = int((xq != 0).sum())
    assert r["synops_per_sequence"] == pytest.approx(nonzero / 4, rel=1e-12)
    spikes = st.run_sequence(graph, xq, keep_steps=True)["s@steps"]
    assert row["firing_rate"] == pytest.approx(float(spikes.mean()), rel=1e-12)
    op.reset = "subtract"
    assert rs.sequence_report(graph, xq)["layers"][0]["mapping"] == "estimate"


def test_a_recurrent_weight_reads_the_previous_steps_spikes():
    graph = full_graph()
    xq = currents(np.random.default_rng(6), 3, 7, 5, -200, 400)
    r = rs.sequence_report(graph, xq)
    total = _synops(graph, xq)
    by_name = {row["name"]: row for row in r["layers"]}
    assert {name: by_name[name]["synops_per_sequence"] * 3 for name in total} == pytest.approx(total, rel=1e-12)
    rec = by_name["rec"]
    assert rec["mapping"] == "estimate" and rec["synapses"] == 25 and rec["fan_in"] == 1 + 5
    assert rec["state_slots"] == 5 + 5  # its neurons and the source's previous spikes
    assert by_name["n"]["state_slots"] == 5 + 5  # v and the current i
    assert r["ir_state_slots"] == 4 * 5 and r["state_slots"] == 5 * (2 + 2 + 1)


def test_a_graph_with_no_data_set_gets_resources_without_activity(tmp_path):
    graph = neuron_graph("lif", bits=16)
    graph.save(tmp_path / "model.ir")
    targets.export_ir("lava", tmp_path / "model.ir", tmp_path / "out")
    r = json.loads((tmp_path / "out" / "loihi2.json").read_text())
    assert r["neurons"] == 5 and r["ir_state_slots"] == 5 and r["samples"] == 0
    assert r["synops_per_step"] is None and r["energy_pj_per_sequence"] is None
    assert r["activity_note"] == ("activity not counted: the graph records no data set (profile FOLDER --board loihi2 "
                                  "--data SPEC counts it)")
