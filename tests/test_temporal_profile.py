"""profile of temporal artifacts (issue 24): state memory, SOPs and MACs per step and per sequence, energy
per step and per sequence, counted independently here from the graph and from run_sequence's spikes."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import data as datasets
from edgesnn.cli import app
from edgesnn.ir import load
from edgesnn.ir import state as st
from edgesnn.profile import profile
from conftest import temporal_dense_copy

runner = CliRunner()


def _cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def exported(tmp_path_factory, temporal_dense):
    tmp = tmp_path_factory.mktemp("tprof")
    temporal_dense_copy(temporal_dense, tmp)
    _cli("export", tmp / "ck", "--target", "ir", "--out", tmp / "ir")
    _cli("export", tmp / "ck", "--target", "tflite", "--out", tmp / "tfl")
    return tmp


def _spikes_per_step(graph, xq):
    """Every spiking neuron op's output at every step, from run_sequence on a copy of the graph that also
    outputs them (count readout): {neuron output: (N, T, ...)}."""
    g2 = copy.deepcopy(graph)
    spiking = [op.output for op in g2.ops if op.kind in ("lif", "cuba_lif")]
    g2.outputs = list(g2.outputs) + spiking
    g2.sequence.readout.update({name: "count" for name in spiking})
    out = st.run_sequence(g2, xq, keep_steps=True)
    return {name: out[f"{name}@steps"] for name in spiking}


def test_temporal_ir_profile(exported, tmp_path):
    ir = exported / "ir" / "model.ir"
    graph = load(ir)
    r = profile(ir, "nucleo-f446re")
    steps = graph.sequence.steps
    assert r["steps"] == steps == 10

    # state memory: every state's elements x its dtype's bytes, added to the RAM the board needs
    want_state = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in graph.states.values())
    assert r["state_bytes"] == want_state == sum(s["bytes"] for s in r["states"]) > 0
    assert r["needed_bytes"]["ram"] == r["peak_activation_bytes"] + want_state

    # SOPs: spikes x fan-out of every dense reading spikes, counted from run_sequence's spikes
    ds = datasets.load("digits-events", True, temporal=True)
    xq = st.quantize_sequence(graph, datasets.to_nhwc(np.asarray(ds.x_test, np.float32)))
    fired = _spikes_per_step(graph, xq)
    n = len(xq)
    total = 0
    for op in graph.ops:
        if op.kind == "dense" and op.inputs[0] in fired:
            total += int(fired[op.inputs[0]].astype(np.int64).sum()) * op.weight.shape[0]
    assert total > 0
    per_step_mean = total / (n * steps)
    assert r["sops_per_sequence"] == pytest.approx(total / n, rel=1e-12)
    assert r["sops_per_sequence"] == pytest.approx(steps * per_step_mean, rel=1e-12)
    assert r["sops_per_step"] == pytest.approx(per_step_mean, rel=1e-12)

    # MACs: the dense layers' weights per step (the first reads events, not spikes: it multiplies)
    dense = [op for op in graph.ops if op.kind == "dense"]
    assert r["macs_per_step"] == sum(op.weight.size for op in dense)
    assert r["macs_per_sequence"] == steps * r["macs_per_step"]
    mac_layers = sum(op.weight.size for op in dense if op.inputs[0] not in fired)

    # energy: 45 nm, per step from those counts; per sequence T x per step
    assert r["energy_45nm_pj_per_step"] == pytest.approx(mac_layers * 4.6 + per_step_mean * 0.9, rel=1e-12)
    assert r["energy_45nm_pj_per_sequence"] == pytest.approx(steps * r["energy_45nm_pj_per_step"], rel=1e-12)

    # firing rate: the hidden LIF's spikes per neuron per step
    (spk,) = fired.values()
    row = next(row for row in r["layers"] if row["firing_rate"] is not None)
    assert row["firing_rate"] == pytest.approx(float(spk.mean()), rel=1e-12)


def test_temporal_cli_json_report_and_measure(exported, tmp_path):
    ir = exported / "ir" / "model.ir"
    res = _cli("profile", ir, "--board", "raspberry-pi-5", "--measure", "--json", tmp_path / "p.json",
               "--report", tmp_path / "rep")
    assert "per step: MACs" in res.output and "per sequence (T=10)" in res.output and "ms per step" in res.output
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["latency_ms_per_sequence"] == pytest.approx(10 * r["latency_ms_per_step"], rel=1e-12)
    assert r["energy_board_pj_per_sequence"] == pytest.approx(10 * r["energy_board_pj_per_step"], rel=1e-12)
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "per timestep" in html and "per sequence" in html and "State" in html


def test_temporal_tflite_profile(exported):
    tfl = exported / "tfl" / "model.tflite"
    graph = load(tfl.with_name("model.ir"))
    res = _cli("profile", tfl, "--board", "nucleo-f446re")
    assert "per sequence (T=10)" in res.output
    r = profile(tfl, "nucleo-f446re")
    # the .tflite file keeps each state as an int32 input tensor
    assert r["target_state_bytes"] == 4 * sum(math.prod(s.shape) for s in graph.states.values())
    assert r["sops_per_sequence"] == pytest.approx(10 * r["sops_per_step"], rel=1e-12)


def test_recurrent_sops_read_the_previous_steps_spikes(tmp_path):
    """An RLIF's recurrent weight reads the spikes of the step before (zero at the first): its SOPs per
    sequence are those spikes x its output channels, counted here from run_sequence's spikes."""
    from edgesnn.temporal.export import export
    from edgesnn.temporal.model import dense_model
    from edgesnn.temporal.train import train

    ds = datasets.load("digits-events", temporal=True)
    model = dense_model(ds.frame_shape, ds.num_classes, hidden=16, neuron="rlif")
    train(model, ds.x_train[:64], ds.y_train[:64], epochs=1)
    graph = export(model, ds.steps)
    graph.save(tmp_path / "model.ir")
    r = profile(tmp_path / "model.ir", "host", data_spec="digits-events")
    graph = load(tmp_path / "model.ir")
    xq = st.quantize_sequence(graph, datasets.to_nhwc(np.asarray(ds.x_test, np.float32)))
    fired = _spikes_per_step(graph, xq)
    (rec,) = [op for op in graph.ops if op.kind == "recurrent"]
    prev = fired[rec.source][:, :-1].astype(np.int64).sum()  # steps 0..T-2 feed steps 1..T-1
    row = next(row for row in r["layers"] if row["kind"] == "recurrent")
    assert row["counted_as"] == "additions" and row["macs"] == rec.weight.size
    assert prev > 0
    assert row["sops_per_sequence"] == pytest.approx(prev * rec.weight.shape[0] / len(xq), rel=1e-12)
    assert r["state_bytes"] == sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in graph.states.values())
    assert any(s["name"] == rec.state for s in r["states"])


def test_temporal_profile_refuses_static_data(exported):
    r = runner.invoke(app, ["profile", str(exported / "ir" / "model.ir"), "--board", "host", "--data", "digits"])
    assert r.exit_code == 1
    assert "data digits: this model runs over sequences (N, T=10, ...), and the data set has static samples" in r.output
    assert "Traceback" not in r.output


def test_temporal_mcu_project_profile(exported, tmp_path):
    """The MCU project: its own state figure (project.json, in the build's RAM), the host build's latency
    per edgesnn_step, and QEMU's instructions per step x the board file's energy per cycle."""
    from edgesnn import boards
    from edgesnn.backends.mcu import read_project

    _cli("export", exported / "ck", "--target", "mcu", "--board", "nucleo-f446re", "--out", tmp_path / "mcu")
    text = (boards.BOARDS_DIR / "nucleo-f446re.yaml").read_text().replace("energy_pj: {}", "energy_pj: {cycle: 0.25}")
    (tmp_path / "m4.yaml").write_text(text.replace("name: nucleo-f446re", "name: m4-with-energy"))
    res = _cli("profile", tmp_path / "mcu", "--board", tmp_path / "m4.yaml", "--trust-code", "--measure",
               "--json", tmp_path / "p.json")
    assert "ms per step" in res.output and "uJ per sequence" in res.output
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["target_state_bytes"] == read_project(tmp_path / "mcu")["state_bytes"] >= r["state_bytes"]
    assert r["needed_bytes"]["ram"] == r["target_memory"]["ram"]  # the static state array is in .bss already
    assert r["instructions_per_step"] > 0
    assert r["energy_board_pj_per_step"] == r["instructions_per_step"] * 0.25
    assert r["energy_board_pj_per_sequence"] == pytest.approx(10 * r["energy_board_pj_per_step"], rel=1e-12)
    assert r["latency_ms_per_step"] > 0
