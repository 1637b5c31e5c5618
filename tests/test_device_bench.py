"""``edgesnn bench`` (edgesnn/bench.py): latency at batch 1 and throughput at batch 64 of a .tflite file, an
integer model.onnx and an MCU project for the Pi 4, in each runtime that runs it here; and what a board
says, in one line, when it cannot: a TFLite runtime that cannot run the file (tflite-runtime 2.14 and an
int16 stream), a power sensor that is there but unreadable (a fake INA3221 sysfs tree, a fake vcgencmd).
Timings are not asserted, only that they are real: positive, one per pass, over the samples asked for."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from typer.testing import CliRunner

from edgesnn import pipeline
from edgesnn.bench import BATCH, bench
from edgesnn.cli import app
from edgesnn.device import refusal
from edgesnn.backends.tflite.runtime import read_model
from edgesnn.backends.tflite.runtime214 import CANNOT_RUN
from edgesnn.errors import EdgesnnError
from edgesnn.profile import measure
from test_device_torch_free import HEAVY, edgesnn as blocked_edgesnn


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """An MLP trained briefly on digits: .tflite (int8 and int16 streams), integer .onnx, C project for the Pi 4."""
    root = tmp_path_factory.mktemp("bench")
    pipeline.train_model("mlp", "digits", 1, root / "ckpt")
    return {"tflite": pipeline.export_model(root / "ckpt", "tflite", root / "tflite"),
            "tflite16": pipeline.export_model(root / "ckpt", "tflite", root / "tflite16", stream_dtype="int16"),
            "onnx": pipeline.export_model(root / "ckpt", "onnx", root / "onnx"),
            "mcu": pipeline.export_model(root / "ckpt", "mcu", root / "mcu", board="raspberry-pi-4")}


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _check_rows(r: dict, runtimes: set, repeats: int, calls: int) -> None:
    assert set(r["runtimes"]) == runtimes and r["batch"] == BATCH == 64
    for row in r["runtimes"].values():
        assert len(row["latency_ms_runs"]) == len(row["throughput_ms_runs"]) == repeats
        assert all(v > 0 for v in row["latency_ms_runs"] + row["throughput_ms_runs"])
        assert min(row["latency_ms_runs"]) <= row["latency_ms_median"] <= max(row["latency_ms_runs"])
        assert row["throughput_per_s"] > 0 and row["calls_per_batch"] == calls


@pytest.mark.parametrize("kind, runtimes, calls", [("tflite", {"litert-reference", "litert-default"}, 64),
                                                   ("onnx", {"onnxruntime"}, 1), ("mcu", {"c-host"}, 64)])
def test_bench_times_each_runtime_that_runs_the_artifact(artifacts, kind, runtimes, calls):
    r = bench(artifacts[kind], samples=5, repeats=3, trust_code=True)
    assert (r["kind"], r["data"], r["samples"], r["repeats"]) == (kind, "digits", 5, 3)  # the data it records
    _check_rows(r, runtimes, 3, calls)
    names = [row["runtime"] for row in r["runtimes"].values()]
    want = {"tflite": ["reference kernels", "default kernels (XNNPACK delegate)"],
            "onnx": ["(CPU execution provider)"], "mcu": ["host build"]}[kind]
    assert all(w in n for w, n in zip(want, names))


def test_the_command_prints_a_row_per_runtime_and_writes_its_json(artifacts, tmp_path):
    out = tmp_path / "b.json"
    r = cli("bench", artifacts["tflite"], "--samples", 3, "--repeats", 2, "--data", "digits", "--json", out)
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    _check_rows(got, {"litert-reference", "litert-default"}, 2, 64)
    for row in got["runtimes"].values():
        assert row["runtime"] in r.output
    fastest = min(got["runtimes"].values(), key=lambda row: row["latency_ms_median"])
    assert r.output.splitlines()[-1] == f"fastest at batch 1: {fastest['runtime']}, {fastest['latency_ms_median']:.4f} ms"


@pytest.mark.parametrize("args, line", [
    (["{mcu}"], "{mcu}: this would run the folder's Makefile (make builds and runs the project); pass --trust-code "
                "if you trust it (Python: trust_code=True)"),
    (["{tflite}", "--samples", "0"], "--samples must be at least 1, got 0"),
    (["{tflite}", "--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["{root}/none.tflite"], "{root}/none.tflite: no such file or folder"),
    (["{root}/ckpt"], "{root}/ckpt: bench times a .tflite file, an integer model.onnx or an MCU project folder"),
])
def test_bad_input_is_one_line_and_exit_1(artifacts, args, line):
    names = {**{k: str(v) for k, v in artifacts.items()}, "root": str(artifacts["mcu"].parent)}
    r = cli("bench", *[a.format(**names) for a in args])
    assert r.exit_code == 1 and r.output.splitlines() == [f"error: {line.format(**names)}"]


def test_a_file_tflite_runtime_214_cannot_run_is_named_before_any_run(artifacts):
    why = CANNOT_RUN[("QUANTIZE", "int8", "int16")]
    line = refusal(read_model(artifacts["tflite16"]), "tflite-runtime 2.14.0")
    assert line.startswith("tflite-runtime 2.14.0 cannot run its QUANTIZE int8 -> int16 (operator ")
    assert line.endswith(f"): {why}; install ai-edge-litert (pip install ai-edge-litert), which runs it, or export it "
                         "with --stream-dtype int8 --runtime tflite-runtime")
    assert refusal(read_model(artifacts["tflite"]), "tflite-runtime 2.14.0") is None  # int8 streams run there
    assert refusal(read_model(artifacts["tflite16"]), "ai-edge-litert 2.3.0") is None


def test_on_a_board_with_only_tflite_runtime_bench_verify_and_measure_refuse_an_int16_file(artifacts, tmp_path,
                                                                                             monkeypatch):
    """ai_edge_litert blocked, and a tflite_runtime 2.14.0 importable: the refusal comes before the runtime runs
    (this one has no Interpreter, so running it would fail otherwise)."""
    fake = tmp_path / "site" / "tflite_runtime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "2.14.0"\n')
    (fake / "interpreter.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "site"),
                                                                   os.environ.get("PYTHONPATH")])))
    for command in (["bench"], ["verify"], ["profile", "--board", "raspberry-pi-4", "--measure"]):
        status, stdout, stderr, imports = blocked_edgesnn(tmp_path, command[0], artifacts["tflite16"], *command[1:],
                                                          blocked=HEAVY + ("ai_edge_litert",))
        assert status == 1 and stdout == "", stderr
        [line] = stderr.splitlines()
        assert line.startswith(f"error: {artifacts['tflite16']}: tflite-runtime 2.14.0 cannot run its QUANTIZE "
                               "int8 -> int16 (operator ") and "pip install ai-edge-litert" in line
        assert not {m for m in imports if m.partition(".")[0] == "torch"}


def _ina3221(root, volts="5080", amps="1200", label="VDD_IN"):
    """A Jetson's INA3221 hwmon folder under a fake sysfs root (EDGESNN_SYSFS)."""
    hwmon = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hwmon.mkdir(parents=True)
    (hwmon / "in1_label").write_text(label + "\n")
    for name, value in (("in1_input", volts), ("curr1_input", amps)):
        if value is None:
            (hwmon / name).mkdir()  # a file that cannot be read, even by root
        else:
            (hwmon / name).write_text(value + "\n")
    return hwmon


def _vcgencmd(folder, script: str):
    folder.mkdir(exist_ok=True)
    exe = folder / "vcgencmd"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("volts, amps, bad, why", [(None, "1200", "in1_input", "Is a directory"),
                                                   ("5080", "n/a", "curr1_input", "not an integer")])
def test_an_unreadable_ina3221_is_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch, volts, amps, bad, why):
    hwmon = _ina3221(tmp_path, volts, amps)
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path))
    sensor = measure.power_sensor()
    assert sensor.name == "none" and sensor.read_watts() is None
    assert sensor.problem == (f"Jetson INA3221 power sensor unreadable: {hwmon / bad}: {why}; run as root or make its "
                              f"hwmon files readable (sudo chmod a+r {hwmon}/in*_input {hwmon}/curr*_input)")


@pytest.mark.parametrize("script, problem", [  # a readable one: tests/test_profile.py
    ("echo 'VCHI initialization failed' >&2; exit 255\n",
     "Raspberry Pi 5 PMIC power sensor unreadable: vcgencmd pmic_read_adc failed (VCHI initialization failed); add "
     "the user to the video group (sudo usermod -aG video $USER) or run as root"),
    ("echo 'error=2 error_msg=\"Command not registered\"'\n",
     "Raspberry Pi 5 PMIC power sensor unreadable: vcgencmd pmic_read_adc gave no rail readings (error=2 "
     "error_msg=\"Command not registered\"); only a Raspberry Pi 5's firmware has them (on a Pi 5: sudo apt "
     "full-upgrade)"),
])
def test_an_unreadable_vcgencmd_is_one_line_saying_why(tmp_path, monkeypatch, script, problem):
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path / "no-sysfs"))
    monkeypatch.setenv("PATH", f"{_vcgencmd(tmp_path / 'bin', script)}{os.pathsep}{os.environ['PATH']}")
    sensor = measure.power_sensor()
    assert sensor.name == "none" and sensor.problem == problem


def test_profile_measure_prints_why_the_sensor_is_unreadable(artifacts, tmp_path, monkeypatch):
    hwmon = _ina3221(tmp_path / "sys", volts=None)
    monkeypatch.setenv("EDGESNN_SYSFS", str(tmp_path / "sys"))
    out = tmp_path / "p.json"
    r = cli("profile", artifacts["tflite"], "--board", "jetson-orin-nano", "--measure", "--json", out)
    assert r.exit_code == 0, r.output
    note = (f"Jetson INA3221 power sensor unreadable: {hwmon / 'in1_input'}: Is a directory; run as root or make its "
            f"hwmon files readable (sudo chmod a+r {hwmon}/in*_input {hwmon}/curr*_input)")
    got = json.loads(out.read_text())
    assert got["power_sensor"] == "none" and got["power_note"] == note and "power_w_mean" not in got
    assert f"; {note}" in r.output.replace("\n", "")


def test_the_library_refuses_a_qcdq_or_unknown_onnx_file(artifacts, tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(EdgesnnError, match="not a readable ONNX file"):
        bench(bogus)


@pytest.mark.parametrize("args", [["verify", "{mcu}", "--trust-code"], ["bench", "{mcu}", "--trust-code"],
                                  ["profile", "{mcu}", "--board", "raspberry-pi-4", "--measure", "--trust-code"]])
@pytest.mark.parametrize("tools, missing", [(["cc"], "make is"), ([], "make and cc are")])
def test_a_board_without_make_or_a_compiler_is_one_line_naming_what_to_install(artifacts, tmp_path, monkeypatch, args,
                                                                                tools, missing):
    (tmp_path / "bin").mkdir()
    for tool in tools:
        (tmp_path / "bin" / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    r = cli(*[a.format(**artifacts) for a in args])
    assert r.exit_code == 1 and r.output.splitlines() == [
        f"error: {artifacts['mcu']}: building the C project needs make and a C compiler (cc); {missing} not installed: "
        "sudo apt-get install build-essential (Raspberry Pi OS, Jetson Linux, Debian)"]


def test_under_an_emulator_the_default_kernels_are_left_out_and_said_so(artifacts, monkeypatch):
    """qemu-user crashes in LiteRT's default kernels (tests/test_device_aarch64.py runs the real emulator): verify
    and bench run the reference kernels alone there and name the ones left out."""
    from edgesnn import device

    emulated = "qemu-user (aarch64 emulated on an x86-64 host)"
    monkeypatch.setattr(device, "emulator", lambda: emulated)
    why = (f"under {emulated} its default kernels (XNNPACK) crash the emulator, so only the reference kernels ran; "
           "on the board both run")
    r = bench(artifacts["tflite"], samples=2, repeats=1)
    assert list(r["runtimes"]) == ["litert-reference"] and r["not_run"] == {"litert-default": why}
    assert r["emulated"] == emulated
    v = device.verify(artifacts["tflite"])
    assert "litert-default" not in v["runtimes"] and v["cannot_run"]["litert-default"] == why
    assert v["runtimes"]["litert-reference"]["mismatches"] == 0
