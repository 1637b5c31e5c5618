"""``edgesnn bench``: latency at batch 1 and throughput at batch 64 of an exported artifact, in each runtime
that runs it here, without torch (edgesnn[device]: what a Raspberry Pi or Jetson has).

- a .tflite file: LiteRT's reference kernels and its default ones (XNNPACK), or tflite-runtime's where
  only that is installed; the file has batch 1, so batch 64 is 64 invocations, as on a board;
- an integer model.onnx: onnxruntime (CPU), batch 64 in one call;
- an MCU project for an application CPU (raspberry-pi-*, jetson-*): its host build, timed by its own
  harness (each inference, the timer's own cost subtracted).

Each runtime runs in a child process (edgesnn.measure_child, the harness), warmed up, then timed
``repeats`` times; the latency is the median of the passes' per-inference means. The inputs are the
data the artifact records, quantized as its IR quantizes them, repeated when the test split is shorter.
Under qemu-user (edgesnn.device.emulator) LiteRT's default kernels crash the emulator: they are left out,
in ``not_run``, and ``emulated`` says the times are the emulator's.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgesnn import artifact_data
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.files import check_not_interrupted
from edgesnn.ir import load as load_ir
from edgesnn.measure_child import REPEATS

BATCH = 64  # the throughput's batch
SAMPLES = 50  # inferences per timed pass at batch 1
PROJECT_FILE, IR_FILE = "project.json", "model.ir"


def bench(artifact: Path, data_spec: str | None = None, samples: int = SAMPLES, repeats: int = REPEATS,
          ir: Path | None = None, trust_code: bool = False) -> dict:
    """Per runtime: ``latency_ms_median`` (batch 1) with its passes, and ``throughput_per_s`` (batch 64).
    ``ir``: the IR a .tflite or integer .onnx file was written from (default model.ir beside it);
    ``trust_code``: an MCU project's Makefile may run (bench builds it)."""
    artifact = Path(artifact)
    for name, value in (("--samples", samples), ("--repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise EdgesnnError(f"{name} must be at least 1, got {value}")
    if not artifact.exists():
        raise EdgesnnError(f"{artifact}: no such file or folder")
    check_not_interrupted(artifact if artifact.is_dir() else artifact.parent)
    kind, graph, ir_path = _artifact(artifact, ir, trust_code)
    spec, ds = artifact_data.load(artifact, data_spec, arrays=True, graph=graph)
    x = datasets.to_nhwc(ds.x_test)
    graph.check_input_shape(x)
    xq = graph.quantize_input(x)
    one, batch = _cycled(xq, samples), _cycled(xq, BATCH)
    from edgesnn.device import emulator, not_run_here

    skipped = not_run_here() if kind == "tflite" else {}
    if kind == "mcu":
        runtimes = _bench_c(artifact, one, batch, repeats)
    else:
        runtimes = _bench_python(kind, artifact, one, batch, repeats, skip=skipped)
    return {"artifact": str(artifact), "kind": kind, "ir": str(ir_path), "data": spec, "samples": samples,
            "batch": BATCH, "repeats": repeats, "runtimes": runtimes, "not_run": skipped,
            "timed_on": f"{platform.node()} ({platform.machine()})", "emulated": emulator()}


def _artifact(artifact: Path, ir: Path | None, trust_code: bool):
    """(kind, IR graph, IR path); refuses what bench does not time, and a file the runtime cannot run."""
    if artifact.is_dir() and (artifact / PROJECT_FILE).is_file():
        from edgesnn.backends.mcu import read_project, require_trusted_project

        info = read_project(artifact)
        if info["kind"] == "mcu":
            raise EdgesnnError(f"{artifact}: a Cortex-M project ({info['board']}); bench times a project for an "
                               "application CPU (export --target mcu --board raspberry-pi-4, raspberry-pi-5, "
                               "jetson-orin-nano, jetson-nano); a Cortex-M build's cycles: verify --qemu")
        require_trusted_project(artifact, trust_code)
        from edgesnn.device import check_build_tools

        check_build_tools(artifact)
        return "mcu", load_ir(artifact / IR_FILE), artifact / IR_FILE
    from edgesnn.device import beside_ir, check_runnable

    if artifact.suffix == ".tflite":
        graph, ir_path = beside_ir(artifact, ir)
        check_runnable(artifact)  # no runtime, or one that cannot run the file: one line naming what to install
        return "tflite", graph, ir_path
    if artifact.suffix == ".onnx":
        try:
            import onnxruntime  # noqa: F401

            from edgesnn.backends.onnx import INTEGER, file_format
        except ImportError as e:
            raise EdgesnnError(f"{artifact}: running .onnx files needs onnx and onnxruntime (pip install onnx "
                               f"onnxruntime): {e}") from None
        if file_format(artifact) != INTEGER:
            raise EdgesnnError(f"{artifact}: not an integer ONNX file (export --target onnx); bench times the integer "
                               "file, whose every output integer verify checks against its IR")
        graph, ir_path = beside_ir(artifact, ir)
        return "onnx", graph, ir_path
    raise EdgesnnError(f"{artifact}: bench times a .tflite file, an integer model.onnx or an MCU project folder")


def _cycled(xq: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` inputs, the test split repeated if it is shorter."""
    return np.ascontiguousarray(xq[np.arange(n) % len(xq)])


def _bench_python(kind: str, artifact: Path, one: np.ndarray, batch: np.ndarray, repeats: int,
                  skip: dict | None = None) -> dict:
    from edgesnn.profile.measure import _run_child

    if kind == "tflite":
        from edgesnn.backends.tflite.runtime import LITERT_DEFAULT, LITERT_REFERENCE, _interpreter_module

        _, name = _interpreter_module()
        targets = {LITERT_REFERENCE: ("tflite-reference", f"{name}, reference kernels", 1),
                   LITERT_DEFAULT: ("tflite", f"{name}, default kernels (XNNPACK delegate)", 1)}
    else:
        import onnxruntime

        targets = {"onnxruntime": ("onnx", f"onnxruntime {onnxruntime.__version__} (CPU execution provider)", BATCH)}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgesnn-bench-") as tmp:
        for key, (target, name, per_call) in targets.items():
            if key in (skip or {}):
                continue
            passes = {}
            for what, xs, size in (("latency", one, 1), ("throughput", batch, per_call)):
                path = Path(tmp) / f"{what}.npy"
                np.save(path, xs)
                stdout, _ = _run_child([sys.executable, "-m", "edgesnn.measure_child", target, str(artifact.resolve()),
                                        str(path), str(size), str(repeats)])
                passes[what] = json.loads(stdout.strip().splitlines()[-1])["latencies_ms"]
            rows[key] = _row(name, passes["latency"], passes["throughput"], per_call)
    return rows


def _bench_c(project: Path, one: np.ndarray, batch: np.ndarray, repeats: int) -> dict:
    """The host build's harness: its own per-inference timing (``mean``, ``total``, in ns)."""
    from edgesnn.backends.mcu.build import build
    from edgesnn.profile.measure import _run_child

    binary = build(project, "host").resolve()
    work = project / "build" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    passes = {}
    for what, xs in (("latency", one), ("throughput", batch)):
        np.ascontiguousarray(xs.reshape(len(xs), -1), dtype=np.int16 if xs.dtype == np.int16 else np.int8).tofile(
            work / "inputs.bin")  # the project's input type (edgesnn_input_t)
        _run_child([str(binary)], work)  # warm up
        runs = []
        for _ in range(repeats):
            _run_child([str(binary)], work)
            stats = dict(re.findall(r"(\w+)=(\S+)", (work / "stats.txt").read_text()))
            if int(stats["samples"]) != len(xs) or stats["unit"] != "ns(real)":
                raise EdgesnnError(f"{project}: the harness timed {stats['samples']} samples in {stats['unit']}, "
                                   f"not {len(xs)} in ns(real)")
            runs.append(int(stats["total"]) / 1e6 / len(xs))
        passes[what] = runs
    from edgesnn.device import emulator

    # under qemu-user the host's cc builds a native program, which runs outside the emulator
    where = platform.machine() if emulator() is None else "native, outside the emulator"
    return {"c-host": _row(f"edgesnn C, host build ({where})", passes["latency"], passes["throughput"], 1)}


def _row(name: str, latency: list[float], throughput: list[float], per_call: int) -> dict:
    """Times in ms per inference, one per pass; throughput from the median pass of the batch of 64."""
    return {"runtime": name, "latency_ms_median": float(np.median(latency)), "latency_ms_runs": [float(v) for v in latency],
            "throughput_per_s": float(1000 / np.median(throughput)), "throughput_ms_runs": [float(v) for v in throughput],
            "calls_per_batch": BATCH // per_call}
