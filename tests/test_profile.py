"""Profiling: the numbers of a 2-layer network are known exactly; the command runs on real artifacts."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import pipeline
from edgesnn.cli import app
from edgesnn.ir import graph as g
from edgesnn.profile import memory, ops
from edgesnn.profile.energy import energy_45nm

ONE = (np.array([1 << 30], np.int32), np.array([1], np.int32))  # the identity multiplier


def two_layers(bits_a: int = 8) -> g.Graph:
    """x (4 int8) -> dense A (4 -> 3, neuron [0, 2]) -> dense B (3 -> 2), identity requantization."""
    tensors = {"x": g.TensorSpec([1, 1, 4], "int8", 1.0), "a": g.TensorSpec([3], "int8", 1.0, spike_D=2),
               "b": g.TensorSpec([2], "int8", 1.0), "xf": g.TensorSpec([4], "int8", 1.0)}
    wa = np.eye(3, 4, dtype=np.int8)
    a = g.Dense("A", ["xf"], "a", weight=wa, bias=np.zeros(3, np.int32), weight_scale=np.ones(3, np.float32),
                multiplier=np.repeat(ONE[0], 3), shift=np.repeat(ONE[1], 3), clamp=[0, 2], weight_bits=bits_a)
    b = g.Dense("B", ["a"], "b", weight=np.ones((2, 3), np.int8), bias=np.zeros(2, np.int32),
                weight_scale=np.ones(2, np.float32), multiplier=np.repeat(ONE[0], 2), shift=np.repeat(ONE[1], 2))
    return g.Graph(tensors, [g.Reshape("flat", ["x"], "xf"), a, b], "x", ["b"])


def test_two_layer_numbers_by_hand():
    graph = two_layers()
    xq = np.array([[[[1, 0, 2, 0]]]], np.int8)  # A's spike counts: 1, 0, 2
    rows = ops.layer_ops(graph, xq)
    assert [(r["name"], r["macs"], r["sops"], r["firing_rate"]) for r in rows] == [
        ("A", 12, None, 1.0),  # reads the input: multiplies; its 3 neurons fire 1 + 0 + 2 spikes
        ("B", 6, 6.0, None)]  # 3 spikes x fan-out 2
    e = energy_45nm(rows)
    assert e["energy_45nm_pj"] == pytest.approx(12 * 4.6 + 6 * 0.9)
    assert e["energy_ann_45nm_pj"] == pytest.approx(18 * 4.6)
    assert memory.params(graph) == 12 + 3 + 6 + 2
    assert memory.weight_bytes(graph) == 18
    assert memory.peak_activation_bytes(graph) == 4 + 3  # the input and A's spikes live together
    assert memory.neuron_state_bytes(graph) == 3 * 4


def test_each_spike_code_counts_its_own_timesteps_and_sops():
    """Counts 7, 4, 3, 0, 1, 6 (D = 7) reach B's 2 outputs: rate-burst sends 21 spikes in 7 steps,
    bit-plane their 3 + 1 + 2 + 0 + 1 + 2 set bits in 3 steps; a 2 x 1 sum pool doubles the count range."""
    tensors = {"x": g.TensorSpec([1, 1, 6], "int8", 1.0), "xf": g.TensorSpec([6], "int8", 1.0),
               "a": g.TensorSpec([6], "int8", 1.0, spike_D=7), "b": g.TensorSpec([2], "int8", 1.0),
               "a2": g.TensorSpec([3, 2, 1], "int8", 1.0), "p": g.TensorSpec([1, 2, 1], "int8", 1.0),
               "pf": g.TensorSpec([2], "int8", 1.0), "c": g.TensorSpec([1], "int8", 1.0)}
    ident = dict(weight_scale=np.ones(6, np.float32), multiplier=np.repeat(ONE[0], 6), shift=np.repeat(ONE[1], 6))
    a = g.Dense("A", ["xf"], "a", weight=np.eye(6, dtype=np.int8), bias=np.zeros(6, np.int32), clamp=[0, 7], **ident)
    b = g.Dense("B", ["a"], "b", weight=np.ones((2, 6), np.int8), bias=np.zeros(2, np.int32),
                weight_scale=np.ones(2, np.float32), multiplier=np.repeat(ONE[0], 2), shift=np.repeat(ONE[1], 2))
    c = g.Dense("C", ["pf"], "c", weight=np.ones((1, 2), np.int8), bias=np.zeros(1, np.int32),
                weight_scale=np.ones(1, np.float32), multiplier=ONE[0], shift=ONE[1])
    chain = [g.Reshape("flat", ["x"], "xf"), a, b, g.Reshape("r", ["a"], "a2"),
           g.SumPool2D("pool", ["a2"], "p", kernel=[2, 1], stride=[2, 1]), g.Reshape("pflat", ["p"], "pf"), c]
    graph = g.Graph(tensors, chain, "x", ["b", "c"])
    xq = np.array([[[[7, 4, 3, 0, 1, 6]]]], np.int8)  # pooled (rows 0-1 of 3 x 2): 7 + 3, 4 + 0
    rows = {r["name"]: r for r in ops.layer_ops(graph, xq, "bit-plane")}
    assert rows["B"]["timesteps"] == {"rate-burst": 7, "bit-plane": 3}
    assert rows["B"]["sops_by_code"] == {"rate-burst": 21 * 2, "bit-plane": 9 * 2} and rows["B"]["sops"] == 18
    assert rows["C"]["timesteps"] == {"rate-burst": 14, "bit-plane": 4}  # pooled counts up to 2 x 7
    assert rows["C"]["sops_by_code"] == {"rate-burst": 10 + 4, "bit-plane": 2 + 1}  # 10 = 1010, 4 = 100
    assert rows["A"]["sops"] is None and rows["A"]["timesteps"] is None  # reads the input: multiplies
    e = energy_45nm(list(rows.values()))
    assert e["energy_45nm_pj"] == pytest.approx(36 * 4.6 + (18 + 3) * 0.9)
    assert e["energy_45nm_pj_by_code"] == pytest.approx({"rate-burst": 36 * 4.6 + 56 * 0.9,
                                                         "bit-plane": 36 * 4.6 + 21 * 0.9})
    assert [r["sops"] for r in ops.layer_ops(graph, xq)] == [None, 42.0, 14.0]  # rate-burst: the default


def test_sub_byte_weights_count_at_their_width():
    assert memory.weight_bytes(two_layers(bits_a=2)) == 12 * 2 // 8 + 6


def test_conv_fan_out_counts_each_input_pixel_once_per_window():
    spec = {"x": g.TensorSpec([3, 3, 1], "int8", 1.0, spike_D=1), "y": g.TensorSpec([3, 3, 2], "int8", 1.0)}
    conv = g.Conv2D("c", ["x"], "y", weight=np.ones((2, 3, 3, 1), np.int8), bias=np.zeros(2, np.int32),
                    weight_scale=np.ones(2, np.float32), multiplier=np.repeat(ONE[0], 2), shift=np.repeat(ONE[1], 2),
                    padding=[1, 1, 1, 1])
    graph = g.Graph(spec, [conv], "x", ["y"])
    fan = ops.fan_out(graph, conv).reshape(3, 3)
    assert fan[1, 1] == 9 * 2 and fan[0, 0] == 4 * 2 and fan[0, 1] == 6 * 2  # windows covering the pixel x outputs
    assert ops.macs(graph, conv) == 3 * 3 * 2 * 9


@pytest.mark.slow
def test_profile_command_on_an_ir_and_a_tflite_file(tmp_path):
    pipeline.train_model("cnn", "digits", 2, tmp_path / "cnn")
    pipeline.export_model(tmp_path / "cnn", "tflite", tmp_path / "tfl")
    for artifact in (tmp_path / "tfl" / "model.ir", tmp_path / "tfl" / "model.tflite"):
        r = CliRunner().invoke(app, ["profile", str(artifact), "--board", "nucleo-f446re", "--json", str(tmp_path / "r.json")])
        assert r.exit_code == 0, r.output
        res = json.loads((tmp_path / "r.json").read_text())
        for key in ("board", "target", "fits", "weight_bytes", "peak_activation_bytes", "macs", "sops", "energy_45nm_pj",
                    "energy_ann_45nm_pj", "layers"):
            assert key in res, key
        assert res["fits"] and res["energy_45nm_pj"] < res["energy_ann_45nm_pj"]
        assert all({"name", "macs", "sops", "firing_rate"} <= set(row) for row in res["layers"])
    assert res["target"] == "tflite" and res["target_memory"]["tflm_arena_bytes"] > 0
    r = CliRunner().invoke(app, ["profile", str(artifact), "--board", "nucleo-l011k4", "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0 and "does not fit" in r.output
    assert (tmp_path / "rep" / "index.html").is_file() and "nucleo-l011k4" in (tmp_path / "rep" / "index.html").read_text()


def _fake_ina3221(root, volts_mv=5000, amps_ma=1200):
    hw = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hw.mkdir(parents=True)
    for n, (label, mv, ma) in enumerate([("VDD_GPU_SOC", 1000, 100), ("VDD_IN", volts_mv, amps_ma)], start=1):
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")


def test_jetson_ina3221_input_rail_is_read_from_sysfs(tmp_path, monkeypatch):
    from edgesnn.profile.measure import power_sensor

    _fake_ina3221(tmp_path)
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path))
    sensor = power_sensor()
    assert sensor.name == "jetson-ina3221" and sensor.read_watts() == pytest.approx(5.0 * 1.2)  # VDD_IN, not the GPU rail


def test_raspberry_pi_5_pmic_is_read_from_vcgencmd(tmp_path, monkeypatch):
    from edgesnn.profile.measure import power_sensor

    fake = tmp_path / "bin" / "vcgencmd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 1\n"
                    "echo '   3V7_WL_SW_A current(0)=0.10000000A'\necho '     VDD_CORE_A current(7)=2.00000000A'\n"
                    "echo '   3V7_WL_SW_V volt(8)=3.70000000V'\necho '     VDD_CORE_V volt(15)=0.80000000V'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path / "no-sys"))
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    sensor = power_sensor()
    assert sensor.name == "raspberry-pi-5-pmic" and sensor.read_watts() == pytest.approx(0.1 * 3.7 + 2.0 * 0.8)


def test_no_sensor_is_said_plainly(tmp_path, monkeypatch):
    from edgesnn.profile.measure import power_sensor

    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert power_sensor().name == "none"


@pytest.mark.slow
def test_measure_runs_the_artifact_and_reads_the_power_rail(tmp_path, monkeypatch):
    _fake_ina3221(tmp_path / "sys")
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path / "sys"))
    pipeline.train_model("mlp", "digits", 2, tmp_path / "mlp")
    out = pipeline.export_model(tmp_path / "mlp", "tflite", tmp_path / "tfl")
    r = CliRunner().invoke(app, ["profile", str(out), "--board", "jetson-orin-nano", "--measure", "--json",
                                 str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["latency_ms_median"] > 0 and 10e6 < res["peak_rss_bytes"] < 500e6
    assert res["power_sensor"] == "jetson-ina3221" and res["power_w_mean"] == pytest.approx(6.0)
    assert res["energy_mj_per_inference_measured"] == pytest.approx(6.0 * res["latency_ms_median"])


@pytest.mark.slow
def test_board_energy_models(tmp_path):
    """MCU: QEMU instructions x energy per cycle; Loihi 2: per-op figures; CPU boards need a latency."""
    from edgesnn.profile import profile

    pipeline.train_model("mlp", "digits", 2, tmp_path / "mlp")
    ir = pipeline.export_model(tmp_path / "mlp", "ir", tmp_path / "ir")
    loihi = profile(ir, "loihi2", "digits")
    assert loihi["energy_board_pj"] > 0 and "Loihi 2" in loihi["energy_board_note"]
    assert loihi["fits"] and 0 < loihi["needed_cores"] <= loihi["available_cores"] == 128
    pi = profile(ir, "raspberry-pi-4", "digits")
    assert pi["energy_board_pj"] is None and "--measure" in pi["energy_board_note"]
    mcu = pipeline.export_model(tmp_path / "mlp", "mcu", tmp_path / "mcu", board="nrf52840")
    r = profile(mcu, "nrf52840", "digits", trust_code=True)
    assert r["instructions_per_inference"] > 1000
    from edgesnn import boards

    cycle = (boards.load("nrf52840").energy_pj or {}).get("cycle")
    if cycle is not None:
        assert r["energy_board_pj"] == pytest.approx(r["instructions_per_inference"] * cycle)
    assert r["target_memory"]["text"] > 0 and r["fits"]


@pytest.mark.slow
def test_profile_counts_the_spike_code_an_artifact_was_exported_with(trained, tmp_path):
    """A Lava folder or MCU project exported with --spike-code is profiled in its code (its SOPs are
    the energy's), an IR in rate-burst unless --spike-code says otherwise; both codes are reported."""
    from edgesnn.profile import profile

    lava = pipeline.export_model(trained["cnn"], "lava", tmp_path / "lava", spike_code="bit-plane")
    r = profile(lava, "loihi2", "digits")
    assert r["spike_code"] == "bit-plane" and r["sops"] == pytest.approx(r["sops_by_code"]["bit-plane"])
    assert r["energy_45nm_pj"] == pytest.approx(r["energy_45nm_pj_by_code"]["bit-plane"])
    assert r["sops_by_code"]["bit-plane"] < r["sops_by_code"]["rate-burst"]  # at most one spike per set bit
    report = json.loads((lava / "loihi2.json").read_text())  # the board energy is the bit-plane folder's
    assert r["energy_board_pj"] == pytest.approx(report["energy_pj_per_inference"], rel=0.2)
    steps = {row["name"]: row["timesteps"] for row in r["layers"] if row["timesteps"]}
    assert steps["features.6"] == {"rate-burst": 16, "bit-plane": 5} and steps["output"] == {"rate-burst": 4, "bit-plane": 3}
    mcu = pipeline.export_model(trained["cnn"], "mcu", tmp_path / "mcu", board="raspberry-pi-4", spike_code="rate-burst")
    assert profile(mcu, "raspberry-pi-4", "digits", trust_code=True)["spike_code"] == "rate-burst"
    ir = pipeline.export_model(trained["cnn"], "ir", tmp_path / "ir")
    res = CliRunner().invoke(app, ["profile", str(ir), "--board", "nucleo-f446re", "--spike-code", "bit-plane",
                                   "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "spike codes: rate-burst" in res.output and "(counted above: bit-plane)" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["sops"] == pytest.approx(r["sops"])  # same graph, same code
    assert profile(ir, "nucleo-f446re", "digits")["spike_code"] == "rate-burst"
