"""What the comparisons of scripts/bench.py share: settings, trained checkpoints and exports made once per
run, interleaved timing, and the machine and tool versions a run records.

Importing this module pins every numeric library to one thread, so it must come before numpy or torch
(each ``scripts/bench_*.py`` imports it first).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch load
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/: snntorch_baseline, markdown_section

from edgesnn import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MCU_BOARD = "nucleo-f446re"  # Cortex-M4, QEMU mps2-an386
TOOL_PACKAGES = ("torch", "numpy", "snntorch", "onnxruntime", "onnx", "brevitas", "ai-edge-litert", "tflite-micro",
                 "apache-tvm", "lava-nc", "scikit-learn")
TOOL_COMMANDS = (("cc", "cc"), ("arm-none-eabi-gcc", "arm-none-eabi-gcc"), ("qemu-system-arm", "qemu-system-arm"))


@dataclass(frozen=True)
class Settings:
    mode: str
    epochs: int  # float training, edgesnn and snnTorch alike
    repeats: int  # timed passes per contender (host, MCU host, LiteRT tables)
    time_samples: int  # test samples per timed pass (batch 1)
    qemu_samples: int  # samples run on QEMU's Cortex-M4
    lava_samples: tuple[int, int]  # two run lengths: their difference gives the steady-state rate
    lava_repeats: int
    export_widths: tuple[int, ...]  # first-stage channels of the transformers (second stage: twice)
    export_depths: tuple[int, int]  # blocks in the CNN stage and in the transformer stage
    export_repeats: int
    models: tuple[str, ...]  # the MCU, LiteRT and Lava tables
    quantize_epochs: int | None  # table 6's training and fine-tuning epochs (byte counts do not depend on them);
    # None: each recipe's own
    accuracy_samples: int | None = None  # first test samples of table 6's IR accuracy; None: the whole split


QUICK = Settings("quick", epochs=3, repeats=2, time_samples=50, qemu_samples=20, lava_samples=(5, 40),
                 lava_repeats=1, export_widths=(16, 32, 64), export_depths=(1, 1), export_repeats=1,
                 models=("cnn",), quantize_epochs=1, accuracy_samples=250)
FULL = Settings("full", epochs=30, repeats=7, time_samples=450, qemu_samples=100, lava_samples=(20, 450),
                lava_repeats=3, export_widths=(64, 144, 208), export_depths=(2, 4), export_repeats=3,
                models=("cnn", "spikeformer"), quantize_epochs=None)


class Work:
    """Trained checkpoints and exports, each made once per run and shared by the comparisons that use it."""

    def __init__(self, root: Path):
        self.root = root
        self._ckpts: dict[str, Path] = {}
        self._exports: dict[str, Path] = {}
        self.train_seconds: dict[str, float] = {}
        self.ran: list[str] = []  # comparisons already measured in this process (their imports are paid)

    def checkpoint(self, model: str, epochs: int, kwargs: dict | None = None, D: int = 4, lr: float = 3e-3,
                   seed: int = 0, data: str = "digits") -> Path:
        key = json.dumps([model, kwargs or {}, D, epochs, lr, seed, data], sort_keys=True)
        if key not in self._ckpts:
            out = self.root / f"ckpt{len(self._ckpts)}-{model}"
            t0 = time.perf_counter()
            pipeline.train_model(model, data, epochs, out, D=D, lr=lr, seed=seed, model_kwargs=kwargs)
            self.train_seconds[out.name] = time.perf_counter() - t0
            self._ckpts[key] = out
        return self._ckpts[key]

    def export(self, ckpt: Path, target: str, **options) -> Path:
        key = json.dumps([str(ckpt), target, options], sort_keys=True)
        if key not in self._exports:
            name = "-".join([ckpt.name, target, *(str(v) for v in options.values())])
            self._exports[key] = pipeline.export_model(ckpt, target, self.root / name, **options)
        return self._exports[key]

    def mcu(self, ckpt: Path, event_driven: str) -> Path:
        return self.export(ckpt, "mcu", board=MCU_BOARD, event_driven=event_driven)


# ---- timing --------------------------------------------------------------------------------------------

def interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each callable runs one timed pass and returns seconds per sample. One untimed warm-up pass each,
    then ``repeats`` rounds of one pass per contender in turn (A B C, A B C, ...), so a change of load
    on a shared machine hits all of them."""
    for fn in contenders.values():
        fn()
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(fn())
    return runs


def median(values) -> float:
    return float(statistics.median(values))


def per_sample(fn: Callable[[object], object], samples) -> Callable[[], float]:
    """A pass calling ``fn`` on every sample (batch 1), timed as a whole."""
    def run() -> float:
        t0 = time.perf_counter()
        for s in samples:
            fn(s)
        return (time.perf_counter() - t0) / len(samples)
    return run


def batched(fn: Callable[[object], object], batch, n: int) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn(batch)
        return (time.perf_counter() - t0) / n
    return run


def c_host_pass(project: Path, xq: np.ndarray, out_dtype: str, size: int) -> Callable[[], float]:
    """The C project's host build over ``xq``: its harness times each edgesnn_infer call (no I/O)."""
    from edgesnn.backends.mcu.build import run

    def one() -> float:
        _, stats = run(project, "host", xq, out_dtype, size)
        return stats["mean"] / 1e9
    return one


# ---- what a run records --------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                       if ln.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_bytes": mem, "os": platform.platform(), "python": platform.python_version(),
            "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "torch_threads": torch.get_num_threads(), "load_average_start": os.getloadavg()}


def versions() -> dict:
    """Package versions, and the first line of each compiler's and emulator's --version."""
    found = {}
    for p in TOOL_PACKAGES:
        try:
            found[p] = f"{p} {metadata.version(p)}"
        except metadata.PackageNotFoundError:
            found[p] = None
    for name, cmd in TOOL_COMMANDS:
        try:
            found[name] = subprocess.run([cmd, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            found[name] = None
    return found


def plain(v):
    """JSON for what json.dumps does not know: numpy scalars, tuples."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return str(v)
