#!/usr/bin/env python
"""edgesnn's application-CPU kernels against LiteRT's XNNPACK, side by side in one run (issue 26).

For the digits cnn and spikeformer (trained here), each from the same IR:

- edgesnn: the C project for a Raspberry Pi 5 (``export --target mcu --board raspberry-pi-5``, whose
  ``--event-driven auto`` keeps every layer dense: the GEMM kernels of backends/mcu/kernels_cpu.py), built for this machine
  (``make host-so``: -O3 -march=native) and called through ctypes on the shared library: batch 1 copies the
  sample into the input buffer, calls ``edgesnn_infer`` and copies the output out (the per-call cost of
  LiteRT's set input, invoke, read output); "C loop" is one ctypes call running ``edgesnn_infer`` over
  every sample (no Python per sample); batch 64 is one such call over 64 samples.
- LiteRT (ai-edge-litert) on the .tflite of the IR: its default kernels (XNNPACK delegate) and its
  reference kernels; batch 64 resizes the input to 64 samples and invokes once where the file allows it,
  else 64 invocations (the row says which).
- onnxruntime (CPU provider, one thread) on the integer ONNX file; batch 64: one ``run`` of 64 samples
  where the file's batch axis allows it, else 64 runs.

Every timed pass is interleaved with the others (A B C ..., repeated; bench_common.interleaved) and the
median is reported; one thread each. Samples differing from the IR: every output integer of the whole test
split against the golden interpreter.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_cpu.py [--quick] [--epochs 10] [--repeats 7]
       [--samples 450] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
The section between the markers cpu-vs-xnnpack in --out is replaced.
"""

from __future__ import annotations

from bench_common import interleaved, machine, median, per_sample, versions  # first: threads

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from markdown_section import replace_section  # noqa: E402

from edgesnn import data as datasets  # noqa: E402
from edgesnn import pipeline  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402

SECTION = "cpu-vs-xnnpack"
BOARD = "raspberry-pi-5"
BATCH = 64
# A driver of the project's library: n inferences in one call (the C loop, and batch 64).
DRIVER = r"""#include <stdint.h>
#include "model.h"
int edgesnn_bench_run(const edgesnn_input_t *in, edgesnn_output_t *out, int n) {
  for (int i = 0; i < n; ++i)
    if (edgesnn_infer(in + (long)i * EDGESNN_INPUT_SIZE, out + (long)i * EDGESNN_OUTPUT_SIZE)) return 1;
  return 0;
}
"""


class CLibrary:
    """The C project as a shared library (``make host-so``) plus :data:`DRIVER`, through ctypes."""

    def __init__(self, project: Path, in_size: int, out_size: int):
        r = subprocess.run(["make", "-s", "-C", str(project), "host-so"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{project}: make host-so failed: {r.stderr}")
        lib = project / "build" / "host" / "libedgesnn_model.so"
        driver = project / "build" / "host" / "libedgesnn_bench.so"
        (project / "build" / "host" / "bench_driver.c").write_text(DRIVER)
        r = subprocess.run(["cc", "-O2", "-fPIC", "-shared", f"-I{project}", "-o", str(driver),
                            str(project / "build" / "host" / "bench_driver.c"), str(lib.resolve()),
                            f"-Wl,-rpath,{lib.parent.resolve()}"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"compiling the bench driver failed: {r.stderr}")
        self.model = ctypes.CDLL(str(lib.resolve()))
        self.driver = ctypes.CDLL(str(driver.resolve()))
        self.in_size, self.out_size = in_size, out_size
        self.inbuf = np.zeros(in_size, np.int8)
        self.outbuf = np.zeros(out_size, np.int8)
        self._in, self._out = self.inbuf.ctypes.data_as(ctypes.c_void_p), self.outbuf.ctypes.data_as(ctypes.c_void_p)
        self._infer = self.model.edgesnn_infer
        self._infer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._run = self.driver.edgesnn_bench_run
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]

    def infer(self, sample: np.ndarray) -> np.ndarray:
        """Batch 1 as a Python caller does it: input in, one call, output out."""
        self.inbuf[:] = sample.reshape(-1)
        self._infer(self._in, self._out)
        return self.outbuf.copy()

    def run(self, xq: np.ndarray) -> np.ndarray:
        """All of ``xq`` in one call (the C loop)."""
        x = np.ascontiguousarray(xq, np.int8).reshape(len(xq), -1)
        out = np.zeros((len(x), self.out_size), np.int8)
        if self._run(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), len(x)):
            raise SystemExit("edgesnn_infer failed")
        return out


def _once(fn, batch, n):
    def run() -> float:
        t0 = time.perf_counter()
        fn(batch)
        return (time.perf_counter() - t0) / n
    return run


def _litert(tfl: Path, reference: bool):
    """(batch-1 infer, batch-64 infer, how batch 64 runs) of the .tflite in ai-edge-litert."""
    from edgesnn.backends.tflite.runtime import interpreter_for

    one = interpreter_for(tfl, reference)
    i, o = one.get_input_details()[0]["index"], one.get_output_details()[0]["index"]

    def infer(sample):
        one.set_tensor(i, sample[None])
        one.invoke()
        return one.get_tensor(o)

    many = interpreter_for(tfl, reference)
    mi, mo = many.get_input_details()[0]["index"], many.get_output_details()[0]["index"]
    shape = list(many.get_input_details()[0]["shape"])
    try:  # the file has batch 1; a graph whose reshapes name batch 1 cannot take 64
        many.resize_tensor_input(mi, [BATCH, *shape[1:]])
        many.allocate_tensors()
        probe = np.zeros([BATCH, *shape[1:]], np.int8)
        many.set_tensor(mi, probe)
        many.invoke()
        if many.get_tensor(mo).shape[0] != BATCH:
            raise ValueError("batch not resized")

        def batch(xs):
            many.set_tensor(mi, xs)
            many.invoke()
            return many.get_tensor(mo)
        return infer, batch, f"one invoke of {BATCH} (input resized)"
    except Exception as e:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError by op
        why = ("a RESHAPE of the file names batch 1" if "(RESHAPE)" in str(e)
               else "its delegate failed to reshape" if "delegate failed to reshape" in str(e)
               else str(e).strip().splitlines()[0][:80])

        def loop(xs):
            return [infer(s) for s in xs]
        return infer, loop, f"{BATCH} invokes (resizing the input to {BATCH} fails: {why})"


def _onnx(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def infer(sample):
        return sess.run(None, {name: sample[None]})[0]
    try:
        out = sess.run(None, {name: np.zeros([BATCH, *sess.get_inputs()[0].shape[1:]], np.int8)})[0]
        if out.shape[0] != BATCH:
            raise ValueError

        def batch(xs):
            return sess.run(None, {name: xs})[0]
        return infer, batch, f"one run of {BATCH}", ort.__version__
    except Exception:  # noqa: BLE001
        return infer, lambda xs: [infer(s) for s in xs], f"{BATCH} runs (batch axis fixed at 1)", ort.__version__


def measure(model: str, epochs: int, repeats: int, samples: int, work: Path) -> dict:
    from edgesnn.backends.onnx import run as run_onnx
    from edgesnn.backends.tflite import LITERT_DEFAULT, LITERT_REFERENCE, compare

    ckpt = work / f"ckpt-{model}"
    if not (ckpt / "model.safetensors").exists() and not ckpt.exists():
        pipeline.train_model(model, "digits", epochs, ckpt)
    tfl = pipeline.export_model(ckpt, "tflite", work / f"{model}-tflite")
    onnx_path = pipeline.export_model(ckpt, "onnx", work / f"{model}-onnx")
    project = pipeline.export_model(ckpt, "mcu", work / f"{model}-{BOARD}", board=BOARD, event_driven="auto")
    graph = load_ir(project / "model.ir")
    ds = datasets.digits()
    x = datasets.to_nhwc(ds.x_test)
    xq = graph.quantize_input(x)
    golden = graph.run_integer(xq)[graph.outputs[0]].reshape(len(xq), -1)
    c = CLibrary(project, int(np.prod(xq.shape[1:])), golden.shape[1])

    cmp = compare(tfl, load_ir(tfl.with_name("model.ir")), x, runtimes=[LITERT_REFERENCE, LITERT_DEFAULT])
    onnx_graph = load_ir(onnx_path.with_name("model.ir"))
    onnx_wrong = run_onnx(onnx_path, onnx_graph, xq)[0].reshape(len(xq), -1) != onnx_graph.run(x).reshape(len(xq), -1)
    c_wrong = c.run(xq) != golden
    c_wrong_py = np.stack([c.infer(s) for s in xq]) != golden

    xnn1, xnn64, xnn_how = _litert(tfl, reference=False)
    ref1, ref64, ref_how = _litert(tfl, reference=True)
    ort1, ort64, ort_how, ort_version = _onnx(onnx_path)
    n = min(samples, len(xq))
    timed = xq[:n]
    batch = np.ascontiguousarray(np.resize(xq, (BATCH, *xq.shape[1:])))
    runs = interleaved({
        "edgesnn": per_sample(c.infer, timed), "edgesnn_c_loop": _once(c.run, timed, n),
        "xnnpack": per_sample(xnn1, timed), "litert_reference": per_sample(ref1, timed),
        "onnxruntime": per_sample(ort1, timed),
        "edgesnn@64": _once(c.run, batch, BATCH), "xnnpack@64": _once(xnn64, batch, BATCH),
        "litert_reference@64": _once(ref64, batch, BATCH), "onnxruntime@64": _once(ort64, batch, BATCH),
    }, repeats)
    us = {k: median(v) * 1e6 for k, v in runs.items()}
    rt = cmp["runtimes"]
    rows = [
        {"key": "edgesnn", "runtime": f"edgesnn C ({BOARD} project, host build -O3 -march=native), ctypes",
         "batch64_how": f"one call of {BATCH} (edgesnn_infer in a C loop)",
         "mismatches": int((c_wrong | c_wrong_py).any(1).sum()),
         "mismatched_elements": int(max(c_wrong.sum(), c_wrong_py.sum()))},
        {"key": "edgesnn_c_loop", "runtime": "edgesnn C, C loop only (one ctypes call over all samples)",
         "batch64_how": None, "mismatches": int(c_wrong.any(1).sum()), "mismatched_elements": int(c_wrong.sum())},
        {"key": "xnnpack", "runtime": rt[LITERT_DEFAULT]["runtime"], "batch64_how": xnn_how,
         "mismatches": rt[LITERT_DEFAULT]["mismatches"],
         "mismatched_elements": rt[LITERT_DEFAULT]["mismatched_elements"]},
        {"key": "litert_reference", "runtime": rt[LITERT_REFERENCE]["runtime"], "batch64_how": ref_how,
         "mismatches": rt[LITERT_REFERENCE]["mismatches"],
         "mismatched_elements": rt[LITERT_REFERENCE]["mismatched_elements"]},
        {"key": "onnxruntime", "runtime": f"onnxruntime {ort_version} (CPU execution provider, integer ONNX)",
         "batch64_how": ort_how, "mismatches": int(onnx_wrong.any(1).sum()),
         "mismatched_elements": int(onnx_wrong.sum())},
    ]
    for r in rows:
        r["latency_us"] = us[r["key"]]
        r["vs_xnnpack"] = us[r["key"]] / us["xnnpack"]
        b = us.get(f"{r['key']}@64")
        r["batch64_us_per_sample"] = b
        r["throughput_per_s"] = 1e6 / b if b else None
        r["throughput_vs_xnnpack"] = us["xnnpack@64"] / b if b else None
        r["runs_s"] = runs[r["key"]]
    return {"model": model, "samples": int(len(xq)), "time_samples": n, "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| model | runtime | latency us, batch 1 (median) | / XNNPACK | batch 64: us per sample (median) | "
             "throughput, samples/s | throughput / XNNPACK's | how batch 64 runs | samples differing from the IR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in results:
        for r in m["rows"]:
            b = r["batch64_us_per_sample"]
            b64 = (f"{b:.1f} | {r['throughput_per_s']:.0f} | {r['throughput_vs_xnnpack']:.2f}x" if b
                   else "- | - | -")
            lines.append(f"| {m['model']} | {r['runtime']} | {r['latency_us']:.1f} | {r['vs_xnnpack']:.2f}x | {b64} | "
                         f"{r['batch64_how'] or '-'} | {r['mismatches']} of {m['samples']} "
                         f"({r['mismatched_elements']} integers) |")
    return "\n".join(lines)


def text(results: list[dict], args, facts: dict) -> str:
    return (f"### edgesnn's application-CPU kernels vs LiteRT XNNPACK\n\n"
            f"`scripts/bench_cpu.py` (epochs {args.epochs}, {args.repeats} interleaved passes, median; "
            "one thread each; "
            f"{facts['machine']['cpu']}, {facts['machine']['usable_cpus']} CPUs, load average "
            f"{facts['machine']['load_average_start'][0]:.1f} at the start: a shared machine). edgesnn: the "
            f"`{BOARD}` C project (`--event-driven auto`, every layer dense there: conv2d/dense "
            "are the int8 GEMM kernels of `backends/mcu/kernels_cpu.py`, AVX-512 VNNI on this machine) built "
            "for this machine and called through ctypes: batch 1 copies the sample in, calls `edgesnn_infer` and "
            "copies the output out (as LiteRT's set input, invoke, read output); \"C loop only\" is one ctypes call "
            "running `edgesnn_infer` over all the timed samples. Batch-1 latency over the first "
            f"{results[0]['time_samples']} test samples per pass; batch 64: 64 samples per call where the runtime "
            "can (the column says how each runs them). \"/ XNNPACK\": this latency over XNNPACK's (below 1: "
            "faster). Samples differing from the IR: every output integer over the whole test split against "
            "the golden interpreter.\n\n" + table(results))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 epochs, 3 passes, 100 samples")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--samples", type=int, default=450)
    ap.add_argument("--models", default="cnn,spikeformer")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md",
                    help="the Markdown file whose cpu-vs-xnnpack section is replaced")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--work", type=Path, help="keep checkpoints and exports here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.samples = 3, 3, 100
    facts = {"machine": machine(), "versions": versions()}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [measure(m, args.epochs, args.repeats, args.samples, work) for m in args.models.split(",")]
    for m in results:
        for r in m["rows"]:
            b = r["batch64_us_per_sample"]
            print(f"{m['model']:12s} {r['key']:18s} {r['latency_us']:8.1f} us ({r['vs_xnnpack']:.2f}x XNNPACK)  "
                  f"batch 64: {'-' if b is None else f'{b:.1f} us/sample'}  differing {r['mismatches']}/{m['samples']}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, **facts}, indent=1, default=str) + "\n")
    if args.out:
        replace_section(args.out, SECTION, text(results, args, facts),
                        header="\n## Application CPUs: edgesnn vs LiteRT XNNPACK\n\n")


if __name__ == "__main__":
    main()
