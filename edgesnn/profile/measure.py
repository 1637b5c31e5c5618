"""``profile --measure``: run the artifact here for real and time it, in a child process so that its
peak resident memory is the artifact's runtime alone (getrusage of the children), and read a power
sensor if the machine has one (a Jetson's INA3221 rails, a Raspberry Pi 5's PMIC).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.files import read_artifact_json
from edgesnn.progress import step
from edgesnn.proc import popen, resident_peak
from edgesnn.proc import run as run_child
from edgesnn.measure_child import REPEATS  # timed passes; the median of their per-inference times is reported

SAMPLES = 50
NO_SENSOR = "no power sensor found (Jetson INA3221 sysfs or Raspberry Pi 5 vcgencmd pmic_read_adc)"


def measure(target, artifact: Path, xq: np.ndarray) -> dict:
    """Median latency per inference (ms), peak RSS of the runtime's process, power if sensed. ``target``
    (edgesnn.targets.Target) runs the artifact: its ``measure`` (the helpers below: the C harness, a Python
    runtime in a child interpreter, Lava's simulation)."""
    sensor = power_sensor()
    with step(f"profile: measure {target.name} latency here"), sensor.sampling() as samples:
        latencies, rss = target.measure(artifact, xq[:SAMPLES])
    out = {"latency_ms_median": float(np.median(latencies)), "latency_ms_runs": [float(v) for v in latencies],
           "peak_rss_bytes": int(rss), "power_sensor": sensor.name,
           "measure_samples": int(min(len(xq), SAMPLES)),  # not "samples": the profile's own count stays
           "measured_on": f"{platform.node()} ({platform.machine()})",  # a board's figure only when it is the board
           **machine()}
    if samples:
        watts = float(np.mean(samples))
        out.update({"power_w_mean": watts, "energy_mj_per_inference_measured": watts * out["latency_ms_median"]})
    else:
        out["power_note"] = sensor.problem or NO_SENSOR
    return out


def _measure_c(project: Path, xq: np.ndarray) -> tuple[list[float], int]:
    """The host build's harness over the samples, REPEATS times (it times each inference itself)."""
    from edgesnn.backends.mcu.build import build
    from edgesnn.device import check_build_tools

    check_build_tools(project)
    binary = build(project, "host").resolve()
    work = project / "build" / "measure"
    work.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(xq.reshape(len(xq), -1), dtype=np.int16 if xq.dtype == np.int16 else np.int8).tofile(
        work / "inputs.bin")  # the project's input type (edgesnn_input_t)
    latencies, peak = [], 0
    for _ in range(REPEATS):
        _, rss = _run_child([str(binary)], work)
        stats = dict(re.findall(r"(\w+)=(\S+)", (work / "stats.txt").read_text()))
        latencies.append(int(stats["mean"]) / 1e6)
        peak = max(peak, rss)
    return latencies, peak


def machine() -> dict:
    """What ran the measurement, for edgesnn.profile.energy.cpu_board to tell a board's own figures from an
    estimate: ``machine_model``, the board its device tree names (None: not a board, a PC), and ``emulated``,
    qemu-user or None (edgesnn.device)."""
    from edgesnn.device import emulator, machine_model

    return {"machine_model": machine_model(), "emulated": emulator()}


def _measure_python(target: str, artifact: Path, xq: np.ndarray) -> tuple[list[float], int]:
    """The runtime alone in a fresh interpreter (edgesnn.measure_child imports no torch). A .tflite file the
    installed runtime cannot run, or no runtime, is one line first (edgesnn.device.check_runnable); under
    qemu-user its reference kernels are timed, the default ones crash the emulator (device.not_run_here)."""
    if target == "tflite":
        from edgesnn.device import check_runnable, not_run_here

        check_runnable(artifact)
        if not_run_here():
            target = "tflite-reference"
    with tempfile.TemporaryDirectory(prefix="edgesnn-measure-") as tmp:
        np.save(Path(tmp) / "inputs.npy", xq)
        stdout, rss = _run_child([sys.executable, "-m", "edgesnn.measure_child", target, str(Path(artifact).resolve()),
                                  str(Path(tmp) / "inputs.npy")])
    return json.loads(stdout.strip().splitlines()[-1])["latencies_ms"], rss


def _measure_lava(folder: Path, xq: np.ndarray) -> tuple[list[float], int]:
    """Lava's simulation of the folder's graph (its exported mode), start-up included, per sample;
    the memory is the simulation's main process (each ProcessModel runs in a forked process of its own)."""
    from edgesnn.backends.lava import NETWORK_FILE, NetworkFile

    mode = read_artifact_json(folder / NETWORK_FILE, NetworkFile, "Lava network file")["mode"]
    latencies, peak = [], 0
    with tempfile.TemporaryDirectory(prefix="edgesnn-measure-") as tmp:
        np.save(Path(tmp) / "inputs.npy", xq)
        for _ in range(3):  # a Lava run takes seconds: fewer passes
            t0 = time.perf_counter()
            _, rss = _run_child([sys.executable, "-m", "edgesnn.backends.lava.network", str(folder / "model.ir"), tmp, mode])
            latencies.append((time.perf_counter() - t0) * 1000 / len(xq))
            peak = max(peak, rss)
    return latencies, peak


def _run_child(cmd: list[str], cwd: Path | None = None) -> tuple[str, int]:
    """stdout and peak resident bytes of this one child: its VmHWM, polled until it exits (the
    rusage of a child would count the parent's pages it was forked with)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err) as proc:  # killed as a group on any exit
        peak = 0
        while proc.poll() is None:
            peak = max(peak, resident_peak(proc.pid))
            time.sleep(0.001)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            lines = err.read().strip().splitlines() or ["no output"]
            raise EdgesnnError(f"measuring with {Path(cmd[0]).name} failed: {lines[-1][:300]}")
        return out.read(), peak


# ---- power sensors -------------------------------------------------------------------------------

class _Sensor:
    name = "none"
    problem: str | None = None  # a sensor that is there but cannot be read: why, and what to do (one line)

    def read_watts(self) -> float | None:
        return None

    def sampling(self, period: float = 0.01):
        return _Sampler(self, period)


class _Sampler:
    """Samples the sensor in a thread while the block runs; yields the list of readings (W)."""

    def __init__(self, sensor: _Sensor, period: float):
        self.sensor, self.period, self.values, self._stop = sensor, period, [], threading.Event()

    def __enter__(self) -> list[float]:
        if self.sensor.name != "none":
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self.values

    def _loop(self) -> None:
        while not self._stop.is_set():
            w = self.sensor.read_watts()
            if w is not None:
                self.values.append(w)
            self._stop.wait(self.period)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.sensor.name != "none":
            self._thread.join()
            w = self.sensor.read_watts()  # at least one reading, even for a run shorter than the period
            if w is not None and not self.values:
                self.values.append(w)


class Ina3221(_Sensor):
    """Jetson: the INA3221 hwmon driver's rails (inN_label, inN_input mV, currN_input mA); the input rail."""

    name = "jetson-ina3221"

    def __init__(self, channel: Path):
        self.volts, self.amps = channel.with_name(channel.name.replace("_label", "_input")), None
        n = re.search(r"in(\d+)_label", channel.name).group(1)
        self.amps = channel.with_name(f"curr{n}_input")

    def read_watts(self) -> float | None:
        try:
            return int(self.volts.read_text()) * int(self.amps.read_text()) / 1e6
        except (OSError, ValueError):
            return None

    def why_unreadable(self) -> str | None:
        """None when both files read as integers; else the file and the reason, and the fix."""
        for f in (self.volts, self.amps):
            try:
                int(f.read_text())
            except OSError as e:
                why = e.strerror or type(e).__name__
            except ValueError:
                why = "not an integer"
            else:
                continue
            return (f"Jetson INA3221 power sensor unreadable: {f}: {why}; run as root or make its hwmon files readable "
                    f"(sudo chmod a+r {f.parent}/in*_input {f.parent}/curr*_input)")
        return None


class Pi5Pmic(_Sensor):
    """Raspberry Pi 5: ``vcgencmd pmic_read_adc`` lists each rail's current (A) and voltage (V)."""

    name = "raspberry-pi-5-pmic"

    def read_watts(self) -> float | None:
        return self.reading()[0]

    def reading(self) -> tuple[float | None, str | None]:
        """(watts, None), or (None, why it cannot be read and what to do)."""
        fail = "Raspberry Pi 5 PMIC power sensor unreadable: vcgencmd pmic_read_adc "
        try:
            r = run_child(["vcgencmd", "pmic_read_adc"], timeout=5)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, fail + f"did not run ({getattr(e, 'strerror', None) or type(e).__name__})"
        if r.returncode != 0:
            last = ((r.stderr + r.stdout).strip().splitlines() or [f"exit status {r.returncode}"])[-1][:200]
            return None, fail + (f"failed ({last}); add the user to the video group (sudo usermod -aG video $USER) "
                                 "or run as root")
        watts = self._watts(r.stdout)
        if watts is None:
            first = (r.stdout.strip().splitlines() or ["no output"])[0][:200]
            return None, fail + (f"gave no rail readings ({first}); only a Raspberry Pi 5's firmware has them "
                                 "(on a Pi 5: sudo apt full-upgrade)")
        return watts, None

    @staticmethod
    def _watts(text: str) -> float | None:
        amps = dict(re.findall(r"(\S+)_A current\(\d+\)=([\d.]+)A", text))
        volts = dict(re.findall(r"(\S+)_V volt\(\d+\)=([\d.]+)V", text))
        rails = set(amps) & set(volts)
        return sum(float(amps[r]) * float(volts[r]) for r in rails) if rails else None


def power_sensor() -> _Sensor:
    """The first sensor found; ``EDGESNN_SYSFS`` relocates /sys (tests use a fake tree)."""
    sysfs = Path(os.environ.get("EDGESNN_SYSFS", "/sys"))
    labels = sorted(sysfs.glob("bus/i2c/drivers/ina3221*/*/hwmon/hwmon*/in*_label"))
    if labels:
        rail = next((label for label in labels if _read(label) in ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")), labels[0])
        sensor = Ina3221(rail)
        problem = sensor.why_unreadable()
        return sensor if problem is None else _unreadable(problem)
    if shutil.which("vcgencmd"):  # EDGESNN_SYSFS and PATH (a vcgencmd of one's own) let tests fake both sensors
        watts, problem = Pi5Pmic().reading()
        if watts is not None:
            return Pi5Pmic()
        return _unreadable(problem)
    return _Sensor()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _unreadable(problem: str) -> _Sensor:
    sensor = _Sensor()
    sensor.problem = problem
    return sensor


