"""An emulated Raspberry Pi: the device install (the aarch64 wheels of edgesnn[device] and Debian's arm64 Python
3.11, set up by scripts/setup_aarch64.sh, which scripts/setup.sh runs) under qemu-aarch64. The artifacts are made
here with the normal environment; the aarch64 interpreter, with this checkout's edgesnn first on its path,
verifies them bit-exact with the IR (a .tflite file in LiteRT's reference kernels, the C project's static aarch64
build) and profile --measure writes its JSON, labelled as the emulated run it is. The data is the digits test split
as an .npz file: importing scikit-learn takes most of a minute under the emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgesnn import boards, data, pipeline
from edgesnn.profile.energy import cpu_board

DIR = Path(os.environ.get("EDGESNN_AARCH64_DIR", Path.home() / ".cache" / "edgesnn" / "aarch64-py311"))
PYTHON = DIR / "bin" / "python"
REPO = Path(__file__).resolve().parents[1]
JETSON = "NVIDIA Jetson Orin Nano Developer Kit"


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    """The artifacts (an MLP trained briefly on digits: .tflite with model.ir, C project for the Pi 4) and the data."""
    needed = (PYTHON, DIR / "root/usr/bin/python3.11", DIR / "site/numpy", DIR / "site/ai_edge_litert")
    missing = [str(p) for p in needed if not p.exists()] + ["qemu-aarch64 (Debian's qemu-user)"] * (shutil.which("qemu-aarch64") is None)
    if missing:
        pytest.fail(f"the emulated Raspberry Pi is not set up (missing {', '.join(missing)}): run scripts/setup.sh")
    root = tmp_path_factory.mktemp("pi")
    pipeline.train_model("mlp", "digits", 1, root / "ckpt")
    d = data.load("digits", arrays=True)
    np.savez(root / "digits.npz", x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    return {"tflite": pipeline.export_model(root / "ckpt", "tflite", root / "tflite"),
            "mcu": pipeline.export_model(root / "ckpt", "mcu", root / "mcu", board="raspberry-pi-4"),
            "data": root / "digits.npz", "root": root}


def emulated(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The aarch64 interpreter under qemu-aarch64 (its wrapper adds the wheels to this PYTHONPATH)."""
    return subprocess.run([str(PYTHON), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def edgesnn(pi, *args, env=None) -> tuple[dict, list[str]]:
    out = pi["root"] / f"{args[0]}-{len(list(pi['root'].glob('*.json')))}.json"
    r = emulated(pi["root"], "-m", "edgesnn", *args, "--data", pi["data"], "--json", out, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r.stdout.strip().splitlines()


def test_the_interpreter_is_an_emulated_aarch64_with_the_wheels_and_no_torch(pi):
    code = ("import importlib.util, platform, numpy, ai_edge_litert; from edgesnn.device import emulator; "
            "print(platform.machine(), importlib.util.find_spec('torch'), numpy.__file__, ai_edge_litert.__file__); "
            "print(emulator())")
    r = emulated(pi["root"], "-c", code)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    machine, torch, numpy_file, litert_file = first.split()
    assert (machine, torch) == ("aarch64", "None")
    assert Path(numpy_file).is_relative_to(DIR / "site") and Path(litert_file).is_relative_to(DIR / "site")
    assert second == "qemu-user (aarch64 emulated on an x86-64 host)"


def test_verify_of_a_tflite_file_is_bit_exact_in_litert_reference_kernels(pi):
    r, lines = edgesnn(pi, "verify", pi["tflite"])
    assert r["passed"] is True and r["mismatches"] == 0 and r["mismatched_elements"] == 0 and r["samples"] == 450
    assert list(r["runtimes"]) == ["litert-reference"]
    assert r["runtimes"]["litert-reference"]["runtime"] == "ai-edge-litert 2.3.0, reference kernels"
    why = ("under qemu-user (aarch64 emulated on an x86-64 host) its default kernels (XNNPACK) crash the emulator, so "
           "only the reference kernels ran; on the board both run")
    assert r["cannot_run"] == {"litert-default": why} and f"litert-default cannot run it: {why}" in lines
    host = pipeline.verify(pi["tflite"], str(pi["data"]))  # the same file and data in this machine's LiteRT
    assert host["runtimes"]["litert-reference"]["mismatches"] == 0 and r["ir_accuracy"] == host["ir_accuracy"]
    assert lines[-1].startswith(f"{pi['tflite']}: bit-exact with the IR in litert-reference (450 samples)")


def test_verify_of_the_c_projects_static_aarch64_build_is_bit_exact(pi):
    r, lines = edgesnn(pi, "verify", pi["mcu"], "--trust-code", "--qemu")
    aarch64 = r["runs"]["aarch64"]
    assert (aarch64["mismatches"], aarch64["mismatched_elements"], aarch64["samples"]) == (0, 0, 450)
    assert r["passed"] is True and r["mismatches"] == 0 and r["board"] == "raspberry-pi-4"
    assert (pi["mcu"] / "build/aarch64/model").read_bytes()[:20:18] == b"\x7f\xb7"  # ELF, e_machine EM_AARCH64 (183)
    assert "bit-exact with the IR in host build, aarch64 build (450 samples)" in lines[-1]


def test_profile_measure_writes_its_json_and_an_emulated_run_is_no_boards_figure(pi, tmp_path):
    """A Jetson's device tree and INA3221 rail (a fake /sys): the sensor reader runs in the device install, and an
    emulated run is still an estimate labelled with where it ran, not the Jetson's latency or energy."""
    (tmp_path / "firmware/devicetree/base").mkdir(parents=True)
    (tmp_path / "firmware/devicetree/base/model").write_bytes(JETSON.encode() + b"\0")
    hwmon = tmp_path / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hwmon.mkdir(parents=True)
    for name, value in (("in1_label", "VDD_IN"), ("in1_input", "5000"), ("curr1_input", "1200")):
        (hwmon / name).write_text(value + "\n")
    r, lines = edgesnn(pi, "profile", pi["tflite"], "--board", "jetson-orin-nano", "--measure",
                       env={"EDGESNN_SYSFS": str(tmp_path)})
    assert r["latency_ms_median"] > 0 and len(r["latency_ms_runs"]) == 7 and r["peak_rss_bytes"] > 0
    assert r["measured_on"].endswith(" (aarch64)") and r["machine_model"] == JETSON
    assert r["emulated"] == "qemu-user (aarch64 emulated on an x86-64 host)"
    assert (r["power_sensor"], r["power_w_mean"]) == ("jetson-ina3221", 6.0)
    assert r["energy_mj_per_inference_measured"] == pytest.approx(6.0 * r["latency_ms_median"])
    assert r["macs"] > 0 and r["fits"] is True and lines[-1].startswith("jetson-orin-nano: fits")
    e = cpu_board(boards.load("jetson-orin-nano"), r)
    assert (e["energy_board_method"], e["energy_board_estimate"], e["latency_board_ms"]) == (
        "host-latency x board-power", True, None)
    assert e["energy_board_host"] == f"{r['measured_on']}, under {r['emulated']}"
    assert e["energy_board_note"].startswith(f"estimate (host-latency x board-power): latency "
                                             f"{r['latency_ms_median']:.4g} ms measured on {e['energy_board_host']}, "
                                             "not on jetson-orin-nano, x jetson-orin-nano's active power")

