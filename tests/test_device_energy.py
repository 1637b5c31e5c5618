"""A CPU board's latency and energy are its own only from a run on that board (edgesnn.profile.energy.cpu_board):
profile --measure records the machine it ran on (the board its device tree names, an emulator), and a figure
from anywhere else is an estimate labelled with its method and that machine. A fake /sys (EDGESNN_SYSFS) gives
this machine a Jetson's or a Pi's device tree and power sensor."""

from __future__ import annotations

import json
import platform

import pytest
from typer.testing import CliRunner

from edgesnn import boards, pipeline
from edgesnn.cli import app
from edgesnn.device import emulator, machine_model
from edgesnn.profile.energy import METHODS, cpu_board, on_board

JETSON, PI4 = "NVIDIA Jetson Orin Nano Developer Kit", "Raspberry Pi 4 Model B Rev 1.4"
HERE = f"{platform.node()} ({platform.machine()})"


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy")
    pipeline.train_model("mlp", "digits", 1, root / "ckpt")
    return pipeline.export_model(root / "ckpt", "tflite", root / "tflite")


def _sysfs(root, model: str | None, sensor: bool):
    if model is not None:
        (root / "firmware/devicetree/base").mkdir(parents=True)
        (root / "firmware/devicetree/base/model").write_bytes(model.encode() + b"\0")  # NUL-terminated, as in /sys
    if sensor:
        hwmon = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
        hwmon.mkdir(parents=True)
        for name, value in (("in1_label", "VDD_IN"), ("in1_input", "5000"), ("curr1_input", "1200")):
            (hwmon / name).write_text(value + "\n")
    return root


def _profile(tflite, board, tmp_path, monkeypatch, model=None, sensor=False) -> dict:
    monkeypatch.setenv("EDGESNN_SYSFS", str(_sysfs(tmp_path / "sys", model, sensor)))
    out = tmp_path / "p.json"
    r = CliRunner().invoke(app, ["profile", str(tflite), "--board", board, "--measure", "--json", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_the_machine_is_read_from_its_device_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESNN_SYSFS", str(_sysfs(tmp_path, JETSON, False)))
    assert machine_model() == JETSON
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path / "none"))
    assert machine_model() is None
    assert emulator() is None  # this x86-64 machine runs its own interpreter


def test_on_the_jetson_with_its_sensor_latency_and_energy_are_measured(tflite, tmp_path, monkeypatch):
    r = _profile(tflite, "jetson-orin-nano", tmp_path, monkeypatch, JETSON, sensor=True)
    assert (r["machine_model"], r["emulated"], r["measured_on"], r["power_w_mean"]) == (JETSON, None, HERE, 6.0)
    e = cpu_board(boards.load("jetson-orin-nano"), r)
    lat = r["latency_ms_median"]
    assert (e["energy_board_method"], e["energy_board_estimate"], e["latency_board_ms"]) == ("power-sensor", False, lat)
    assert e["energy_board_pj"] == pytest.approx(6.0 * lat * 1e9)
    assert e["energy_board_pj"] == pytest.approx(r["energy_mj_per_inference_measured"] * 1e9)
    assert e["energy_board_note"] == (f"measured on jetson-orin-nano ({HERE}): power sensor jetson-ina3221, mean 6 W x "
                                      f"latency {lat:.4g} ms")
    assert e["latency_board_note"] == f"measured on jetson-orin-nano ({JETSON})"
    # the same run, profiled for a Pi 4: a Jetson is not a Pi, so it is an estimate naming the machine
    pi = cpu_board(boards.load("raspberry-pi-4"), r)
    assert (pi["energy_board_method"], pi["energy_board_estimate"], pi["latency_board_ms"]) == (
        "host-latency x board-power", True, None)
    assert pi["energy_board_pj"] == pytest.approx(lat * 1e-3 * 3.06 * 1e12)
    assert pi["energy_board_note"] == (f"estimate (host-latency x board-power): latency {lat:.4g} ms measured on "
                                       f"{HERE}, not on raspberry-pi-4, x raspberry-pi-4's active power 3.06 W from its "
                                       "board file")
    assert pi["latency_board_note"].startswith(f"not measured on raspberry-pi-4: the latency was measured on {HERE}; ")


def test_on_a_pi_without_a_sensor_the_latency_is_the_boards_and_the_energy_an_estimate(tflite, tmp_path, monkeypatch):
    r = _profile(tflite, "raspberry-pi-4", tmp_path, monkeypatch, PI4)
    assert r["machine_model"] == PI4 and "power_w_mean" not in r
    e = cpu_board(boards.load("raspberry-pi-4"), r)
    lat = r["latency_ms_median"]
    assert (e["energy_board_method"], e["energy_board_estimate"], e["latency_board_ms"]) == (
        "board-latency x board-power", True, lat)
    assert e["energy_board_pj"] == pytest.approx(lat * 1e-3 * 3.06 * 1e12)
    assert e["energy_board_note"] == (f"estimate (board-latency x board-power): latency {lat:.4g} ms measured on "
                                      f"raspberry-pi-4 ({HERE}), which has no power sensor here, x raspberry-pi-4's "
                                      "active power 3.06 W from its board file")


def test_elsewhere_it_is_an_estimate_naming_the_host_and_without_measure_there_is_none(tflite, tmp_path, monkeypatch):
    r = _profile(tflite, "raspberry-pi-5", tmp_path, monkeypatch)  # this PC: no device tree
    assert r["machine_model"] is None and r["emulated"] is None
    e = cpu_board(boards.load("raspberry-pi-5"), r)
    assert (e["energy_board_method"], e["energy_board_estimate"], e["energy_board_host"], e["latency_board_ms"]) == (
        "host-latency x board-power", True, HERE, None)
    assert f"measured on {HERE}, not on raspberry-pi-5" in e["energy_board_note"]
    assert set(METHODS) == {"power-sensor", "board-latency x board-power", "host-latency x board-power"}
    none = cpu_board(boards.load("raspberry-pi-5"), {})
    assert (none["energy_board_pj"], none["energy_board_method"], none["latency_board_ms"]) == (None, None, None)
    assert "--measure" in none["energy_board_note"]


@pytest.mark.parametrize("board, model, emulated, want", [
    ("raspberry-pi-4", "Raspberry Pi 4 Model B Rev 1.5", None, True),
    ("raspberry-pi-4", "Raspberry Pi 400 Rev 1.0", None, True),
    ("raspberry-pi-4", "Raspberry Pi 5 Model B Rev 1.0", None, False),
    ("raspberry-pi-5", "Raspberry Pi 5 Model B Rev 1.0", None, True),
    ("jetson-nano", JETSON, None, False),  # an Orin Nano is not a Jetson Nano
    ("jetson-orin-nano", JETSON, "qemu-user (aarch64 emulated on an x86-64 host)", False),
    ("host", None, None, True),
])
def test_which_machine_is_the_board(board, model, emulated, want):
    assert on_board(boards.load(board), {"machine_model": model, "emulated": emulated}) is want


def test_profile_reports_the_boards_own_energy_only_from_the_board(tflite, tmp_path, monkeypatch):
    """profile's JSON, its printed line and its HTML report (edgesnn.profile._board_energy -> energy.cpu_board)."""
    monkeypatch.setenv("EDGESNN_SYSFS", str(_sysfs(tmp_path / "sys", JETSON, True)))
    for board, method, heading in (("jetson-orin-nano", "power-sensor", "measured on the board"),
                                   ("raspberry-pi-4", "host-latency x board-power", "the board model, an estimate")):
        out, report = tmp_path / f"{board}.json", tmp_path / board
        r = CliRunner().invoke(app, ["profile", str(tflite), "--board", board, "--measure", "--json", str(out),
                                     "--report", str(report)])
        assert r.exit_code == 0, r.output
        got = json.loads(out.read_text())
        assert got["energy_board_method"] == method and got == {**got, **cpu_board(boards.load(board), got)}
        assert f"energy on {board}: {got['energy_board_pj'] / 1e6:.3f} uJ ({got['energy_board_note']})" in \
            r.output.replace("\n", "")
        page = (report / "index.html").read_text()
        assert f"Energy on {board}: {heading}</h2>" in page
