#!/usr/bin/env python
"""Benchmarks against what users would pick instead, measured side by side in one run.

Usage: .venv/bin/python scripts/bench.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]

Six comparisons, each written as a table into the ``bench`` section of ``--out`` (other marked
sections of the file are kept; a new path is created):

1. Host inference: the SFA integer network (golden interpreter, compiled C) vs the same CNN as a
   multi-timestep LIF network in snnTorch at T = D, both trained on digits.
2. MCU: the generated C (dense and spike-driven kernels) vs TFLite Micro running the same .tflite.
3. LiteRT (reference and XNNPACK kernels) on the .tflite vs onnxruntime on the ONNX export.
4. Export cost per target for spike-driven transformers of growing size (random weights).
5. Lava: simulated samples per second, graded and rate-burst modes.
6. Compression: weight bytes of each quantization recipe vs sum(bits x weights) / 8 and float32, and
   the IR's accuracy, each trained and tested on the recipe's own data (mnist5k-14; the demo digits).

Every number comes from this run. Times are medians of repeated passes, interleaved between the
contenders of a table (A B C, A B C, ...) so a change of load on a shared machine hits all of them;
the ratios are the headline. Everything runs single-threaded (OMP_NUM_THREADS=1, torch, LiteRT and
onnxruntime at one thread). ``--quick`` (CI) trains for a few epochs, times fewer samples and
repeats, and uses smaller transformers; its output says so.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy / torch load
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_section import replace_section  # noqa: E402
from snntorch_baseline import LifCNN  # noqa: E402

from edgesnn import checkpoint, models, pipeline, recipes, train  # noqa: E402
from edgesnn import data as datasets  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402
from edgesnn.profile import memory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench"
MCU_BOARD = "nucleo-f446re"  # Cortex-M4, QEMU mps2-an386
EXPORT_BOARD = "raspberry-pi-4"  # the mcu target's board for export cost: 10M parameters fit no Cortex-M
TARGETS = ("ir", "tflite", "onnx", "mcu", "lava")
TARGET_WORK = {
    "ir": "model.ir (safetensors + JSON graph)",
    "tflite": "IR, then model.tflite from the IR (flatbuffer) + model.ir",
    "onnx": "integer ONNX written from the IR, loaded once by onnxruntime",
    "mcu": "IR, then TVM-generated C kernels, weights.c, arena plan (C project, not compiled)",
    "lava": "IR, then the Lava process graph, 24-bit checks and the Loihi 2 report (256 samples)",
}
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
    quantize_epochs: int | None  # None: each recipe's own training and fine-tuning epochs


QUICK = Settings("quick", epochs=3, repeats=3, time_samples=100, qemu_samples=20, lava_samples=(10, 100),
                 lava_repeats=2, export_widths=(32, 64, 128), export_depths=(1, 1), export_repeats=1,
                 models=("cnn",), quantize_epochs=1)
FULL = Settings("full", epochs=30, repeats=7, time_samples=450, qemu_samples=100, lava_samples=(20, 450),
                lava_repeats=3, export_widths=(64, 144, 208), export_depths=(2, 4), export_repeats=3,
                models=("cnn", "spikeformer"), quantize_epochs=None)


# ---- shared work: trained checkpoints and exports, made once per run ---------------------------------

class Work:
    def __init__(self, root: Path):
        self.root = root
        self._ckpts: dict[str, Path] = {}
        self._exports: dict[str, Path] = {}
        self.train_seconds: dict[str, float] = {}

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
    then ``repeats`` rounds of one pass per contender in turn."""
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


# ---- 1. host inference: SFA integer network vs snnTorch LIF at T = D ------------------------------------

def host_inference(work: Work, s: Settings) -> dict:
    from edgesnn.backends.mcu.build import run as run_c

    ds = datasets.digits()
    ckpt = work.checkpoint("cnn", s.epochs)
    model, config = checkpoint.load(ckpt)
    D = int(config["D"])
    graph = load_ir(work.export(ckpt, "ir"))
    x, y = ds.x_test, ds.y_test.numpy()
    x_nhwc = datasets.to_nhwc(x)
    xq = graph.quantize_input(x_nhwc)
    out_spec = graph.tensors[graph.outputs[0]]
    size = int(np.prod(out_spec.shape))

    torch.manual_seed(0)
    lif = LifCNN.like(config["kwargs"], T=D)
    t0 = time.perf_counter()
    train.train(lif, ds, s.epochs, lr=3e-3, seed=0)
    lif_train_s = time.perf_counter() - t0
    lif.eval()
    model.eval()

    acc = {"snntorch": train.evaluate(lif, x, ds.y_test), "sfa_torch": train.evaluate(model, x, ds.y_test),
           "golden": float((graph.run(x_nhwc).argmax(1) == y).mean())}
    projects = {mode: work.mcu(ckpt, mode) for mode in ("none", "all")}
    for mode, project in projects.items():
        got, _ = run_c(project, "host", xq, out_spec.dtype, size)
        acc[f"c_{mode}"] = float((got.argmax(1) == y).mean())

    n = s.time_samples
    singles_t = [x[i:i + 1] for i in range(n)]
    singles_ir = [x_nhwc[i:i + 1] for i in range(n)]
    with torch.no_grad():
        runs = interleaved({
            "snntorch_b1": per_sample(lif, singles_t), "snntorch_batch": batched(lif, x, len(x)),
            "sfa_torch_b1": per_sample(model, singles_t), "sfa_torch_batch": batched(model, x, len(x)),
            "golden_b1": per_sample(graph.run, singles_ir), "golden_batch": batched(graph.run, x_nhwc, len(x)),
            "c_none": c_host_pass(projects["none"], xq[:n], out_spec.dtype, size),
            "c_all": c_host_pass(projects["all"], xq[:n], out_spec.dtype, size),
        }, s.repeats)
    sps = {k: 1.0 / median(v) for k, v in runs.items()}
    rows = []

    def row(key, impl, how, T, accuracy, batch, base):
        rows.append({"key": key, "implementation": impl, "how": how, "T": T, "accuracy": accuracy, "batch": batch,
                     "samples_per_s": sps[key], "vs_snntorch": sps[key] / sps[base], "runs_s_per_sample": runs[key]})

    lif_how = (f"snntorch {metadata.version('snntorch')} Leaky (beta 0.9, threshold 1, subtract reset, ATan "
               f"surrogate), trained {s.epochs} epochs with BPTT over T = {D}; torch no_grad, 1 thread")
    sfa_how = f"the edgesnn float/fake-quant torch model the IR was exported from (MultiSpike, one timestep)"
    gold_how = "edgesnn.ir Graph.run: numpy integer-only, float input quantized inside"
    for batch, suffix, count in (("1", "b1", n), (str(len(x)), "batch", len(x))):
        base = f"snntorch_{suffix}"
        row(base, "snnTorch LIF CNN (the alternative)", lif_how, D, acc["snntorch"], batch, base)
        row(f"sfa_torch_{suffix}", "edgesnn SFA CNN in torch (reference)", sfa_how, 1, acc["sfa_torch"], batch, base)
        row(f"golden_{suffix}", "SFA integer network, golden interpreter", gold_how, 1, acc["golden"], batch, base)
    for mode, label in (("none", "dense kernels"), ("all", "spike-driven kernels")):
        row(f"c_{mode}", f"SFA integer network, compiled C ({label})",
            f"generated C project, `make host` (cc -O2), harness timer around each edgesnn_infer call", 1,
            acc[f"c_{mode}"], "1", "snntorch_b1")
    train_s = {"snntorch": lif_train_s, "sfa": work.train_seconds[ckpt.name]}
    for w in rows:
        w["train_s"] = train_s["snntorch" if w["key"].startswith("snntorch") else "sfa"]
    return {"rows": rows, "D": D, "time_samples": n, "test_samples": int(len(x)), "repeats": s.repeats,
            "train_s": train_s, "epochs": s.epochs}


def host_table(r: dict) -> str:
    lines = ["| implementation | how it runs | timesteps | training s (one run) | accuracy (digits test, 450) | batch "
             "| samples/s (median) | vs snnTorch, same batch |", "|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        lines.append(f"| {w['implementation']} | {w['how']} | {w['T']} | {w['train_s']:.1f} | {w['accuracy']:.4f} | "
                     f"{w['batch']} | {w['samples_per_s']:.0f} | {w['vs_snntorch']:.2f}x |")
    return "\n".join(lines)


# ---- 2. MCU: generated C vs TFLite Micro -----------------------------------------------------------------

def micro_pass(path: Path, xq: np.ndarray) -> Callable[[], float]:
    """TFLite Micro's interpreter (the tflite-micro wheel, reference kernels built for x86_64): the
    time of each invoke() alone, as the C harness times edgesnn_infer alone."""
    from tflite_micro.python.tflite_micro import runtime as micro

    raw = Path(path).read_bytes()
    interp = micro.Interpreter.from_bytes(raw, arena_size=max(64 * 1024, 16 * len(raw)))

    def one() -> float:
        total = 0.0
        for sample in xq:
            interp.set_input(sample[None], 0)
            t0 = time.perf_counter()
            interp.invoke()
            total += time.perf_counter() - t0
            interp.get_output(0)
        return total / len(xq)
    return one


def mcu_vs_micro(work: Work, s: Settings) -> dict:
    from edgesnn.backends.mcu import verify_mcu
    from edgesnn.backends.tflite import MICRO, compare

    ds = datasets.digits()
    x = datasets.to_nhwc(ds.x_test)
    out = []
    for name in s.models:
        ckpt = work.checkpoint(name, s.epochs)
        tfl = work.export(ckpt, "tflite")
        graph = load_ir(tfl.with_name("model.ir"))
        xq = graph.quantize_input(x)
        out_spec = graph.tensors[graph.outputs[0]]
        size = int(np.prod(out_spec.shape))
        micro = compare(tfl, graph, x, runtimes=[MICRO])
        c = {}
        for mode in ("none", "all"):
            project = work.mcu(ckpt, mode)
            host = verify_mcu(project, x, trust_code=True)  # whole test split on the host build (our own project)
            arm = verify_mcu(project, x, qemu=True, samples=s.qemu_samples, trust_code=True)["runs"]["arm"]
            info = json.loads((project / "project.json").read_text())
            c[mode] = {"host_mismatches": host["runs"]["host"]["mismatches"], "host_samples": host["samples"],
                       "qemu_mismatches": arm["mismatches"], "qemu_samples": arm["samples"],
                       "instructions": arm["instructions_per_inference"], "sizes": arm["sizes"],
                       "arena_bytes": host["arena_bytes"], "const_bytes": host["const_bytes"],
                       "event_driven_layers": len(host["event_driven_layers"]),
                       "candidates": sum(k["input_nonzero_rate"] is not None for k in info["kernels"]),
                       "machine": arm["machine"]}
        n = s.time_samples
        runs = interleaved({"c_none": c_host_pass(work.mcu(ckpt, "none"), xq[:n], out_spec.dtype, size),
                            "c_all": c_host_pass(work.mcu(ckpt, "all"), xq[:n], out_spec.dtype, size),
                            "tflm": micro_pass(tfl, xq[:n])}, s.repeats)
        lat = {k: median(v) * 1e6 for k, v in runs.items()}  # microseconds
        m = micro["runtimes"][MICRO]
        tflm = {"mismatches": m["mismatches"], "samples": micro["samples"], "arena_bytes": m["arena_bytes"],
                "file_bytes": micro["file_bytes"], "runtime": m["runtime"], "latency_us": lat["tflm"],
                "runs_s": runs["tflm"]}
        for mode in c:
            c[mode]["latency_us"] = lat[f"c_{mode}"]
            c[mode]["runs_s"] = runs[f"c_{mode}"]
            c[mode]["vs_tflm_latency"] = lat["tflm"] / lat[f"c_{mode}"]
            c[mode]["model_plus_arena"] = c[mode]["const_bytes"] + c[mode]["arena_bytes"]
            c[mode]["vs_tflm_memory"] = c[mode]["model_plus_arena"] / (tflm["file_bytes"] + tflm["arena_bytes"])
            c[mode]["vs_dense_instructions"] = c["none"]["instructions"] / c[mode]["instructions"]
        out.append({"model": name, "c": c, "tflm": tflm})
    return {"models": out, "board": MCU_BOARD, "repeats": s.repeats, "time_samples": s.time_samples,
            "qemu_samples": s.qemu_samples}


def mcu_table(r: dict) -> str:
    lines = ["| model | runtime (what runs) | samples differing from the IR (host / QEMU) | host latency us per "
             "inference (median) | TFLM latency / this | Cortex-M4 instructions per inference (QEMU) | dense C "
             "instructions / this | model bytes in flash | RAM arena bytes | model + arena | this / TFLM's | whole "
             "Cortex-M4 image .text+.data / .bss |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for mode, label in (("none", "dense kernels"), ("all", "spike-driven kernels")):
            c = m["c"][mode]
            sz = c["sizes"]
            lines.append(
                f"| {m['model']} | edgesnn C, {label} ({c['event_driven_layers']} of {c['candidates']} layers "
                f"event-driven): host `make host` -O2, QEMU `make arm` | {c['host_mismatches']} of "
                f"{c['host_samples']} / {c['qemu_mismatches']} of {c['qemu_samples']} | {c['latency_us']:.1f} | "
                f"{c['vs_tflm_latency']:.2f}x | {c['instructions']} | {c['vs_dense_instructions']:.2f}x | "
                f"{c['const_bytes']} (const arrays) | {c['arena_bytes']} (static) | {c['model_plus_arena']} | "
                f"{c['vs_tflm_memory']:.2f}x | {sz['text'] + sz['data']} / {sz['bss']} |")
        t = m["tflm"]
        lines.append(
            f"| {m['model']} | TFLite Micro on the same model's .tflite ({t['runtime']}, Python wheel, x86_64 "
            f"reference kernels; invoke() timed) | {t['mismatches']} of {t['samples']} / not run | "
            f"{t['latency_us']:.1f} | 1.00x | not measured (TFLM not built for Cortex-M here) | - | "
            f"{t['file_bytes']} (.tflite) | {t['arena_bytes']} (recording allocator) | "
            f"{t['file_bytes'] + t['arena_bytes']} | 1.00x | not measured |")
    return "\n".join(lines)


# ---- 3. LiteRT vs onnxruntime -----------------------------------------------------------------------------

def litert_vs_ort(work: Work, s: Settings) -> dict:
    import onnxruntime as ort

    from edgesnn.backends.onnx import run as run_onnx
    from edgesnn.backends.tflite import LITERT_DEFAULT, LITERT_REFERENCE, compare
    from edgesnn.backends.tflite import run as run_tflite
    from edgesnn.backends.tflite.runtime import interpreter_for

    ds = datasets.digits()
    x_t, y = ds.x_test, ds.y_test.numpy()
    x = datasets.to_nhwc(x_t)
    out = []
    for name in s.models:
        ckpt = work.checkpoint(name, s.epochs)
        model, _ = checkpoint.load(ckpt)
        tfl = work.export(ckpt, "tflite")
        onnx_path = work.export(ckpt, "onnx")
        graph = load_ir(tfl.with_name("model.ir"))
        xq = graph.quantize_input(x)
        ir_pred = graph.run(x).argmax(1)
        torch_pred = train.predict(model, x_t).numpy()
        cmp = compare(tfl, graph, x, runtimes=[LITERT_REFERENCE, LITERT_DEFAULT])
        preds = {key: run_tflite(tfl, xq, key).outputs[0].reshape(len(xq), -1).argmax(1)
                 for key in (LITERT_REFERENCE, LITERT_DEFAULT)}
        onnx_graph = load_ir(onnx_path.with_name("model.ir"))  # the IR written beside the integer ONNX file
        onnx_out = run_onnx(onnx_path, onnx_graph, xq)[0].reshape(len(xq), -1)
        onnx_differ = int((onnx_out != onnx_graph.run(x).reshape(len(xq), -1)).any(axis=1).sum())
        onnx_pred = onnx_out.argmax(1)

        def litert(reference: bool):
            interp = interpreter_for(tfl, reference)
            i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

            def infer(sample):
                interp.set_tensor(i, sample[None])
                interp.invoke()
                return interp.get_tensor(o)
            return infer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        n = s.time_samples
        runs = interleaved({
            "litert_reference": per_sample(litert(True), xq[:n]),
            "litert_default": per_sample(litert(False), xq[:n]),
            "onnxruntime": per_sample(lambda v: sess.run(None, {in_name: v[None]}), xq[:n]),
        }, s.repeats)
        lat = {k: median(v) * 1e6 for k, v in runs.items()}
        rows = []
        for key in (LITERT_REFERENCE, LITERT_DEFAULT):
            rr = cmp["runtimes"][key]
            k = key.replace("-", "_")
            rows.append({"runtime": rr["runtime"], "key": k, "latency_us": lat[k], "runs_s": runs[k],
                         "vs_onnxruntime": lat["onnxruntime"] / lat[k], "mismatches": rr["mismatches"],
                         "mismatched_elements": rr["mismatched_elements"], "argmax_vs_ir": rr["argmax_mismatches"],
                         "argmax_vs_torch": int((preds[key] != torch_pred).sum()),
                         "accuracy": float((preds[key] == y).mean())})
        rows.append({"runtime": f"onnxruntime {ort.__version__} (CPU execution provider)", "key": "onnxruntime",
                     "latency_us": lat["onnxruntime"], "runs_s": runs["onnxruntime"], "vs_onnxruntime": 1.0,
                     "mismatches": onnx_differ, "mismatched_elements": None,
                     "argmax_vs_ir": int((onnx_pred != ir_pred).sum()),
                     "argmax_vs_torch": int((onnx_pred != torch_pred).sum()),
                     "accuracy": float((onnx_pred == y).mean())})
        out.append({"model": name, "samples": int(len(x)), "rows": rows,
                    "ir_accuracy": float((ir_pred == y).mean()), "torch_accuracy": float((torch_pred == y).mean())})
    return {"models": out, "repeats": s.repeats, "time_samples": s.time_samples}


def litert_table(r: dict) -> str:
    lines = ["| model | runtime | what runs | latency us per inference, batch 1 (median) | onnxruntime latency / "
             "this | samples differing from the IR (every output integer) | argmax differing from the IR | "
             "argmax differing from torch | accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    what = {"litert_reference": "model.tflite (int8, from the IR), reference op resolver; int8 input in, int8 out",
            "litert_default": "model.tflite, default kernels (XNNPACK delegate), as a Pi or Jetson runs it",
            "onnxruntime": "model.onnx (integer ONNX from the IR: ConvInteger/MatMulInteger and integer "
                           "requantization); int8 input in, int8 out"}
    for m in r["models"]:
        for w in m["rows"]:
            differ = (f"{w['mismatches']} of {m['samples']} ({w['mismatched_elements']} integers)"
                      if w["mismatches"] is not None else "n/a (float logits)")
            vs_torch = "-" if w["argmax_vs_torch"] is None else f"{w['argmax_vs_torch']} of {m['samples']}"
            acc = "-" if w["accuracy"] is None else f"{w['accuracy']:.4f}"
            lines.append(f"| {m['model']} | {w['runtime']} | {what[w['key']]} | {w['latency_us']:.1f} | "
                         f"{w['vs_onnxruntime']:.2f}x | {differ} | {w['argmax_vs_ir']} of {m['samples']} | "
                         f"{vs_torch} | {acc} |")
    return "\n".join(lines)


# ---- 4. export cost vs transformer size -------------------------------------------------------------------

def random_transformer(root: Path, width: int, depths: tuple[int, int]) -> tuple[Path, int]:
    """A spike-driven transformer for digits' 8x8 images with random weights, saved as a checkpoint."""
    ds_shape, classes, D = (1, 8, 8), 10, 4
    kwargs = models.resolved_kwargs("spikeformer", {**models.default_kwargs("spikeformer", ds_shape, classes, D),
                                                    "channels": [width, 2 * width], "depths": list(depths)})
    torch.manual_seed(0)
    model = models.build("spikeformer", kwargs)
    params = sum(p.numel() for p in model.parameters())
    config = {"model": "spikeformer", "kwargs": kwargs, "D": D, "neuron": "multispike", "normalize": True,
              "input_shape": list(ds_shape), "num_classes": classes, "data": "digits", "timesteps": 1}
    path = root / f"random-spikeformer-{width}"
    checkpoint.save(model, config, path)
    return path, params


def export_cost(work: Work, s: Settings) -> dict:
    sizes = [random_transformer(work.root, w, s.export_depths) for w in s.export_widths]
    options = {"mcu": {"board": EXPORT_BOARD}, "lava": {"lava_mode": "graded"}}
    seconds = {(t, i): [] for t in TARGETS for i in range(len(sizes))}
    artifact = {}
    for _ in range(s.export_repeats):  # interleaved: every size and target once per round
        for i, (ckpt, _) in enumerate(sizes):
            for t in TARGETS:
                out = work.root / f"export-cost-{t}-{i}"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                pipeline.export_model(ckpt, t, out, **options.get(t, {}))
                seconds[(t, i)].append(time.perf_counter() - t0)
                artifact[(t, i)] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                shutil.rmtree(out, ignore_errors=True)
    rows = []
    for t in TARGETS:
        med = [median(seconds[(t, i)]) for i in range(len(sizes))]
        exponent = float(np.polyfit(np.log([p for _, p in sizes]), np.log(med), 1)[0])  # t ~ params^exponent
        rows.append({"target": t, "seconds": med, "runs": [seconds[(t, i)] for i in range(len(sizes))],
                     "artifact_bytes": [artifact[(t, i)] for i in range(len(sizes))], "exponent": exponent,
                     "growth": med[-1] / med[0], "s_per_mparam_largest": med[-1] / (sizes[-1][1] / 1e6)})
    return {"params": [p for _, p in sizes], "widths": list(s.export_widths), "depths": list(s.export_depths),
            "rows": rows, "repeats": s.export_repeats, "board": EXPORT_BOARD}


def export_table(r: dict) -> str:
    params = r["params"]
    heads = " | ".join(f"s at {p / 1e6:.2f}M params" for p in params)
    lines = [f"| target | what the export does | {heads} | time ratio largest / smallest (params ratio "
             f"{params[-1] / params[0]:.1f}x) | b in s ~ params^b (least squares) | s per M params (largest) | "
             f"artifact bytes (largest) |", "|---|---|" + "---|" * len(params) + "---|---|---|---|"]
    for w in r["rows"]:
        cells = " | ".join(f"{v:.2f}" for v in w["seconds"])
        lines.append(f"| {w['target']} | {TARGET_WORK[w['target']]} | {cells} | {w['growth']:.2f}x | "
                     f"{w['exponent']:.2f} | {w['s_per_mparam_largest']:.2f} | {w['artifact_bytes'][-1]} |")
    return "\n".join(lines)


# ---- 5. Lava ----------------------------------------------------------------------------------------------

def lava_throughput(work: Work, s: Settings) -> dict:
    from edgesnn.backends.lava import verify_lava
    from edgesnn.backends.lava.network import MODES

    x = datasets.to_nhwc(datasets.digits().x_test)
    n1, n2 = s.lava_samples
    out = []
    for name in s.models:
        ckpt = work.checkpoint(name, s.epochs)
        folders = {mode: work.export(ckpt, "lava", lava_mode=mode) for mode in MODES}
        runs = {mode: {n1: [], n2: []} for mode in MODES}
        verdict = {}
        for _ in range(s.lava_repeats):
            for mode in MODES:
                for n in (n1, n2):
                    r = verify_lava(folders[mode], x, n, mode)
                    runs[mode][n].append(r["seconds"])
                    if n == n2:
                        verdict[mode] = r
        rows = []
        for mode in MODES:
            t1, t2 = median(runs[mode][n1]), median(runs[mode][n2])
            # None when start-up jitter exceeded the extra samples' time (possible on a loaded machine)
            steady = (n2 - n1) / (t2 - t1) if t2 > t1 else None
            rows.append({"mode": mode, "timesteps": verdict[mode]["timesteps_per_sample"],
                         "mismatches": verdict[mode]["mismatches"], "samples": verdict[mode]["samples"],
                         "steady_samples_per_s": steady, "total_samples_per_s": n2 / t2,
                         "startup_s": None if steady is None else t2 - n2 / steady, "runs": runs[mode]})
        base = rows[0]["steady_samples_per_s"]
        for w in rows:
            steady = w["steady_samples_per_s"]
            w["vs_graded"] = None if base is None or steady is None else steady / base
        out.append({"model": name, "rows": rows})
    return {"models": out, "samples": [n1, n2], "repeats": s.lava_repeats}


def lava_table(r: dict) -> str:
    n1, n2 = r["samples"]
    lines = [f"| model | mode | timesteps per sample | samples differing from the IR | samples/s, steady state "
             f"(({n2} - {n1}) / (t{n2} - t{n1}), medians) | samples/s over {n2} samples incl. start-up | start-up s "
             f"(estimated) | this / graded |", "|---|---|---|---|---|---|---|---|"]
    noise = "n/a (start-up jitter exceeded the difference)"
    for m in r["models"]:
        for w in m["rows"]:
            steady = noise if w["steady_samples_per_s"] is None else f"{w['steady_samples_per_s']:.1f}"
            startup = "n/a" if w["startup_s"] is None else f"{w['startup_s']:.2f}"
            ratio = "n/a" if w["vs_graded"] is None else f"{w['vs_graded']:.2f}x"
            lines.append(f"| {m['model']} | {w['mode']} | {w['timesteps']} | {w['mismatches']} of {w['samples']} | "
                         f"{steady} | {w['total_samples_per_s']:.1f} | {startup} | {ratio} |")
    return "\n".join(lines)


# ---- 6. compression ---------------------------------------------------------------------------------------

def compression(work: Work, s: Settings) -> dict:
    from edgesnn.quantize import Options, quantize_checkpoint

    jobs = []
    for path in sorted(recipes.RECIPES_DIR.glob("*.yaml")):
        rc = recipes.load(path)
        q = rc.quantize
        jobs.append({"label": f"recipe `{rc.name}`", "data": rc.data, "model": rc.model.name, "kwargs": rc.model.kwargs,
                     "D": rc.model.D,
                     "train": rc.train, "method": q.method if q else None,
                     "options": None if q is None else dict(weight_bits=q.weight_bits, membrane_bits=q.membrane_bits,
                                                             prune=q.prune, lr=q.lr, seed=rc.train.seed),
                     "q_epochs": None if q is None else q.epochs})
    base = recipes.Train()
    jobs.append({"label": "`edgesnn quantize --method ternary` (no shipped recipe)", "data": "mnist5k-14", "model": "cnn",
                 "kwargs": {},
                 "D": 4, "train": base, "method": "ternary", "options": dict(seed=base.seed), "q_epochs": 20})
    rows = []
    for j in jobs:
        epochs = s.epochs if s.quantize_epochs is not None else j["train"].epochs
        ckpt = work.checkpoint(j["model"], epochs, j["kwargs"] or None, j["D"], j["train"].lr, j["train"].seed, j["data"])
        source, q_epochs = ckpt, None
        if j["method"]:
            q_epochs = s.quantize_epochs or j["q_epochs"]
            source = work.root / f"{ckpt.name}-{j['method']}-{len(rows)}"
            quantize_checkpoint(ckpt, j["method"], source, Options(epochs=q_epochs, **j["options"]))
        ir_path = work.export(source, "ir")
        graph = load_ir(ir_path)
        ops = graph.weight_ops()
        weights = sum(int(op.weight.size) for op in ops)
        bound = sum(int(op.weight.size) * int(op.weight_bits) for op in ops) / 8
        actual = memory.weight_bytes(graph)
        bits = Counter(int(op.weight_bits) for op in ops)
        info = pipeline.inspect(ir_path)
        accuracy = pipeline.verify(ir_path, j["data"])["accuracy"]
        rows.append({"label": j["label"], "data": j["data"], "model": j["model"], "method": j["method"] or "none (8-bit post-training)",
                     "layers": len(ops), "weights": weights, "bits": dict(sorted(bits.items(), reverse=True)),
                     "weight_bytes": actual, "bound_bytes": bound, "vs_bound": actual / bound,
                     "float32_bytes": 4 * weights, "vs_float32": 4 * weights / actual,
                     "float_model_bytes": pipeline.inspect(ckpt)["float32_weight_bytes"],
                     "all_param_bytes": info["bytes"], "accuracy": accuracy, "train_epochs": epochs,
                     "quantize_epochs": q_epochs})
        rows[-1]["vs_float_model"] = rows[-1]["float_model_bytes"] / actual
    return {"rows": rows}


def compression_table(r: dict) -> str:
    lines = ["| what | data | model | compression | weight layers (bits x count) | weights | IR weight bytes (packed) | "
             "bound sum(bits x weights) / 8 | IR / bound | float32 bytes of these weights | float32 / IR | float32 "
             "bytes of the float model | float model / IR | IR bytes with int32 biases and requantization constants "
             "| IR accuracy (test split) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        bits = ", ".join(f"{b}-bit x {n}" for b, n in w["bits"].items())
        lines.append(f"| {w['label']} | {w['data']} | {w['model']} | {w['method']} | {w['layers']}: {bits} | {w['weights']} | "
                     f"{w['weight_bytes']} | {w['bound_bytes']:.1f} | {w['vs_bound']:.4f} | {w['float32_bytes']} | "
                     f"{w['vs_float32']:.2f}x | {w['float_model_bytes']} | {w['vs_float_model']:.2f}x | "
                     f"{w['all_param_bytes']} | {w['accuracy']:.4f} |")
    return "\n".join(lines)


# ---- machine, versions, headline, document -----------------------------------------------------------------

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


def headline(res: dict) -> list[tuple[str, str, str]]:
    """(what is compared, ratio, how to read it) rows for the top of the section."""
    out = []
    h = {w["key"]: w for w in res["host"]["rows"]}
    D = res["host"]["D"]
    out.append((f"Host, batch 1, samples/s: SFA compiled C (spike-driven kernels) / snnTorch LIF CNN at T = {D}",
                f"{h['c_all']['vs_snntorch']:.2f}x", f"above 1: edgesnn faster; accuracy {h['c_all']['accuracy']:.4f} "
                f"vs {h['snntorch_b1']['accuracy']:.4f} (table 1)"))
    out.append(("Host, batch 1, samples/s: SFA compiled C (dense kernels) / snnTorch",
                f"{h['c_none']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"))
    out.append(("Host, batch 1, samples/s: SFA golden interpreter (numpy) / snnTorch",
                f"{h['golden_b1']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"))
    out.append((f"Host, batch {h['golden_batch']['batch']}, samples/s: SFA golden interpreter / snnTorch",
                f"{h['golden_batch']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"))
    out.append((f"Training time: snnTorch BPTT over T = {D} / SFA one timestep, same epochs",
                f"{res['host']['train_s']['snntorch'] / res['host']['train_s']['sfa']:.2f}x",
                "above 1: SFA trains faster; one run each (table 1)"))
    for m in res["mcu"]["models"]:
        c = m["c"]
        out.append((f"Cortex-M4 instructions per inference ({m['model']}): dense C / spike-driven C",
                    f"{c['all']['vs_dense_instructions']:.2f}x",
                    "above 1: spike-driven needs fewer; QEMU -icount (table 2)"))
        out.append((f"Host latency ({m['model']}): TFLite Micro / generated C, dense and spike-driven",
                    f"{c['none']['vs_tflm_latency']:.2f}x, {c['all']['vs_tflm_latency']:.2f}x",
                    "above 1: the C is faster; same IR, its .tflite (table 2)"))
        out.append((f"Model + arena bytes ({m['model']}): C (const arrays + static arena) / TFLite Micro (.tflite + "
                    f"arena), dense and spike-driven",
                    f"{c['none']['vs_tflm_memory']:.2f}x, {c['all']['vs_tflm_memory']:.2f}x",
                    "below 1: the C needs less (table 2)"))
    for m in res["litert"]["models"]:
        rows = {w["key"]: w for w in m["rows"]}
        ref = rows["litert_reference"]
        out.append((f"Latency ({m['model']}): onnxruntime / LiteRT, reference and XNNPACK kernels",
                    f"{ref['vs_onnxruntime']:.2f}x, {rows['litert_default']['vs_onnxruntime']:.2f}x",
                    f"above 1: LiteRT faster; LiteRT reference kernels differ from the IR in {ref['mismatches']} of "
                    f"{m['samples']} samples, XNNPACK in {rows['litert_default']['mismatches']} (table 3)"))
    e = res["export"]
    growth = ", ".join(f"{w['target']} {w['growth']:.1f}x" for w in e["rows"])
    out.append((f"Export time per target: {e['params'][-1] / 1e6:.1f}M / {e['params'][0] / 1e6:.2f}M-parameter "
                f"transformer ({e['params'][-1] / e['params'][0]:.0f}x the parameters)", growth,
                "below the parameter ratio: fixed costs dominate (table 4)"))
    for m in res["lava"]["models"]:
        graded, rb = m["rows"][0], m["rows"][1]
        # on a loaded machine start-up jitter can hide the steady state: then the rate over the whole run
        ratio = (f"{rb['vs_graded']:.2f}x" if rb["vs_graded"] is not None else
                 f"{rb['total_samples_per_s'] / graded['total_samples_per_s']:.2f}x (incl. start-up)")
        out.append((f"Lava simulation ({m['model']}), steady-state samples/s: rate-burst / graded", ratio,
                    f"rate-burst takes {rb['timesteps']} timesteps per sample, graded 1 (table 5)"))
    c = res["compression"]["rows"]
    out.append(("Weight bytes: float32 / IR, per row of table 6", ", ".join(f"{w['vs_float32']:.1f}x" for w in c),
                f"IR bytes / (sum(bits x weights) / 8): at most {max(w['vs_bound'] for w in c):.4f} (table 6)"))
    return out


def document(res: dict, s: Settings) -> str:
    mach, ver = res["machine"], res["versions"]
    mem = f"{mach['memory_bytes'] / 2**30:.1f} GiB" if mach["memory_bytes"] else "unknown"
    lines = [
        f"Regenerated by `scripts/bench.py{' --quick' if s.mode == 'quick' else ''}` on {res['date']} in "
        f"{res['seconds']:.0f} s. **Mode: {s.mode}**"
        + (" (CI smoke run: few training epochs, fewer samples and repeats, smaller transformers; the numbers are "
           "real but not the published ones)" if s.mode == "quick" else "") + ".",
        "",
        f"- Machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs ({mach['usable_cpus']} usable), {mem}, "
        f"{mach['os']}; shared with other work (load average {mach['load_average_start'][0]:.2f} at the start, "
        f"{res['load_average_end'][0]:.2f} at the end), so times are medians and ratios are the headline.",
        f"- Threads: one everywhere (OMP_NUM_THREADS={mach['threads']['OMP_NUM_THREADS']}, torch "
        f"{mach['torch_threads']}, LiteRT num_threads=1, onnxruntime intra/inter-op 1).",
        "- Versions: Python " + mach["python"] + ", " + ", ".join(v for v in ver.values() if v) + ".",
        f"- Repeats: tables 1-3 time {s.time_samples} test samples per pass (batch 1; batched rows: the whole test "
        f"split in one call), one untimed warm-up pass, then {s.repeats} passes per contender interleaved "
        f"(A B C, A B C, ...); median. Table 4: {s.export_repeats} export(s) per size and target, interleaved, "
        f"median. Table 5: {s.lava_repeats} run(s) per run length. Training: {s.epochs} epochs (edgesnn and "
        f"snnTorch alike), seed 0, digits (sklearn, 1347 train / 450 test).",
        "",
        "**Headline ratios**",
        "",
        "| compared | ratio | how to read it |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in headline(res)],
        "",
        "### 1. Host inference: SFA integer network vs snnTorch LIF (T = D)",
        "",
        f"The spiking CNN (edgesnn's `cnn`: conv 32 - conv 64 - dense 128 - dense 10, D = {res['host']['D']}) "
        f"trained with SFA in one timestep and exported to the integer IR, against the same layers as an snnTorch "
        f"network of Leaky neurons trained for T = D = {res['host']['D']} steps with surrogate gradients (same "
        f"optimizer, schedule, batch size and epochs; `scripts/snntorch_baseline.py`; direct input, its "
        f"static first conv computed once). Accuracy over the whole test split; throughput over the first "
        f"{res['host']['time_samples']} test samples at batch 1, or the whole split in one call. The C rows time "
        f"only the inference call in a C loop; the Python rows include the Python call per sample.",
        "",
        host_table(res["host"]),
        "",
        "### 2. MCU: generated C vs TFLite Micro",
        "",
        f"The C project (`edgesnn export --target mcu --board {MCU_BOARD}`, dense and spike-driven kernels) "
        f"against TFLite Micro running the .tflite of the same IR. Host latency: the C harness built with the host "
        f"compiler, and TFLite Micro's Python wheel (x86_64 build of its reference kernels), each timing the "
        f"inference call alone over the first {res['mcu']['time_samples']} test samples. Instructions: the C "
        f"built for the Cortex-M4 with arm-none-eabi-gcc and run on QEMU {_qemu_machine(res)} with "
        f"`-icount shift=0` over the first {res['mcu']['qemu_samples']} test samples (mean). Memory: the model's "
        f"bytes in flash (C: its const arrays; TFLM: the .tflite) plus the RAM arena (C: the static arena in "
        f".bss; TFLM: its recording allocator's total). Neither side's runtime code is in that sum; the last "
        f"column is the whole C firmware image (harness, newlib stdio over semihosting and weights included).",
        "",
        mcu_table(res["mcu"]),
        "",
        "### 3. LiteRT vs onnxruntime",
        "",
        "The .tflite written from the IR, in ai-edge-litert with its reference kernels (the kernels the IR's "
        "arithmetic is defined by) and its default kernels (XNNPACK), against onnxruntime on the ONNX export of "
        "the same checkpoint. Latency: one sample per call from Python (set input, invoke, read output; "
        f"onnxruntime's `run`), over the first {res['litert']['time_samples']} test samples. Mismatches: every "
        "output integer against the golden interpreter over the whole test split; the ONNX file computes in float, "
        "so only its argmax is compared (with the IR and with torch).",
        "",
        litert_table(res["litert"]),
        "",
        "### 4. Export cost vs model size",
        "",
        f"Spike-driven transformers (`spikeformer`, 8x8x1 input, 10 classes, depths {tuple(res['export']['depths'])}, "
        f"channels (w, 2w) for w in {tuple(res['export']['widths'])}) with random weights, saved as checkpoints; "
        f"each target timed as `pipeline.export_model(checkpoint, target)` (what `edgesnn export` runs, "
        f"without the CLI's start-up): load, trace, calibrate on 1024 digits training images, write. The mcu "
        f"target is exported for `{res['export']['board']}` (none of the Cortex-M boards holds 10M parameters). "
        f"This section runs after the others, so imports and first-use costs are already paid.",
        "",
        export_table(res["export"]),
        "",
        "### 5. Lava: simulated throughput",
        "",
        f"The IR as edgesnn's Lava processes in Lava's CPU simulator (`Loihi2SimCfg`, fixed_pt), in a fresh "
        f"subprocess per run (`edgesnn verify LAVA_FOLDER`), graded spikes vs rate-burst spike trains. Each run "
        f"length ({res['lava']['samples'][0]} and {res['lava']['samples'][1]} test samples) is timed end to end; "
        f"the steady-state rate is their difference, which removes Lava's start-up (process creation, compilation).",
        "",
        lava_table(res["lava"]),
        "",
        "### 6. Compression: weight bytes vs the bound and float32",
        "",
        "Every shipped recipe (`edgesnn/shipped/recipes/*.yaml`: its model, training and compression settings) and the ternary "
        "method, exported to the IR. Weight bytes are the IR's packed weight tensors (every conv/dense, first and "
        "last layers included) at their real bit widths; the bound is sum over layers of bits x weights / 8; "
        "float32 is 4 bytes per weight of the same layers, and of the float model before compression (pruning "
        "makes the two differ). Epochs: "
        + (f"{s.epochs} training, {s.quantize_epochs} fine-tuning (quick mode: accuracies are not meaningful; "
           "byte counts do not depend on training)." if s.quantize_epochs is not None
           else "each recipe's own (ternary: 30 training, 20 fine-tuning)."),
        "",
        compression_table(res["compression"]),
    ]
    return "\n".join(lines)


def _qemu_machine(res: dict) -> str:
    return res["mcu"]["models"][0]["c"]["none"]["machine"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI mode: a few minutes on 2 cores")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="Markdown file to write the section into")
    ap.add_argument("--json", type=Path, default=None, help="also write every number (and every timed pass) here")
    ap.add_argument("--work", type=Path, default=None, help="keep checkpoints and artifacts in this folder")
    args = ap.parse_args()
    s = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    res = {"settings": asdict(s), "machine": machine(), "versions": versions(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="edgesnn-bench-") as tmp:
        root = Path(args.work) if args.work else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        work = Work(root)
        steps = (("host", host_inference, host_table), ("mcu", mcu_vs_micro, mcu_table),
                 ("litert", litert_vs_ort, litert_table), ("lava", lava_throughput, lava_table),
                 ("compression", compression, compression_table), ("export", export_cost, export_table))
        res["section_seconds"] = {}
        for key, fn, table in steps:
            t0 = time.perf_counter()
            res[key] = fn(work, s)
            res["section_seconds"][key] = time.perf_counter() - t0
            print(f"\n[{key}: {res['section_seconds'][key]:.0f} s]\n{table(res[key])}", flush=True)
        res["train_seconds"] = work.train_seconds
    res["seconds"] = time.perf_counter() - t_start
    res["load_average_end"] = os.getloadavg()
    header = "" if args.out.exists() else "# Benchmarks\n"
    replace_section(args.out, SECTION, document(res, s),
                    header=header + "\n## Side by side: edgesnn vs what users would pick instead\n\n")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=_plain) + "\n")
    print(f"\nwrote {args.out} ({s.mode} mode, {res['seconds']:.0f} s)")


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


if __name__ == "__main__":
    main()
