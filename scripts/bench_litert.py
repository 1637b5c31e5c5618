#!/usr/bin/env python
"""Table 3 of scripts/bench.py: LiteRT against onnxruntime, each on a file written from the same IR.

The .tflite in ai-edge-litert (reference kernels, and the default XNNPACK kernels) against onnxruntime
on the integer ONNX file (``export --target onnx``, edgesnn/backends/onnx: ConvInteger / MatMulInteger
and integer requantization): latency at batch 1, and every output integer against the IR.

Usage: .venv/bin/python scripts/bench_litert.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only litert``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import Settings, Work, interleaved, median, per_sample  # first: threads

from edgesnn import checkpoint, train  # noqa: E402
from edgesnn import data as datasets  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402

KEY, NUMBER = "litert", 3
TITLE = "LiteRT vs onnxruntime"
WHAT = {"litert_reference": "model.tflite (int8, from the IR), reference op resolver; int8 input in, int8 out",
        "litert_default": "model.tflite, default kernels (XNNPACK delegate), as a Pi or Jetson runs it",
        "onnxruntime": "model.onnx (integer ONNX from the IR: ConvInteger/MatMulInteger and integer "
                       "requantization); int8 input in, int8 out"}


def measure(work: Work, s: Settings) -> dict:
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
        onnx_path = work.export(ckpt, "onnx")  # the integer ONNX file, written from the IR
        graph = load_ir(tfl.with_name("model.ir"))
        xq = graph.quantize_input(x)
        ir_pred = graph.run(x).argmax(1)
        torch_pred = train.predict(model, x_t).numpy()
        cmp = compare(tfl, graph, x, runtimes=[LITERT_REFERENCE, LITERT_DEFAULT])
        preds = {key: run_tflite(tfl, xq, key).outputs[0].reshape(len(xq), -1).argmax(1)
                 for key in (LITERT_REFERENCE, LITERT_DEFAULT)}
        onnx_graph = load_ir(onnx_path.with_name("model.ir"))  # the IR written beside the integer ONNX file
        onnx_out = run_onnx(onnx_path, onnx_graph, xq)[0].reshape(len(xq), -1)
        onnx_wrong = onnx_out != onnx_graph.run(x).reshape(len(xq), -1)
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
                     "mismatches": int(onnx_wrong.any(axis=1).sum()), "mismatched_elements": int(onnx_wrong.sum()),
                     "argmax_vs_ir": int((onnx_pred != ir_pred).sum()),
                     "argmax_vs_torch": int((onnx_pred != torch_pred).sum()),
                     "accuracy": float((onnx_pred == y).mean())})
        out.append({"model": name, "samples": int(len(x)), "rows": rows,
                    "ir_accuracy": float((ir_pred == y).mean()), "torch_accuracy": float((torch_pred == y).mean())})
    return {"models": out, "repeats": s.repeats, "time_samples": s.time_samples}


def table(r: dict) -> str:
    lines = ["| model | runtime | what runs | latency us per inference, batch 1 (median) | onnxruntime latency / "
             "this | samples differing from the IR (every output integer) | argmax differing from the IR | "
             "argmax differing from torch | accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for w in m["rows"]:
            differ = f"{w['mismatches']} of {m['samples']} ({w['mismatched_elements']} integers)"
            lines.append(f"| {m['model']} | {w['runtime']} | {WHAT[w['key']]} | {w['latency_us']:.1f} | "
                         f"{w['vs_onnxruntime']:.2f}x | {differ} | {w['argmax_vs_ir']} of {m['samples']} | "
                         f"{w['argmax_vs_torch']} of {m['samples']} | {w['accuracy']:.4f} |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    return ("The .tflite written from the IR, in ai-edge-litert with its reference kernels (the kernels the IR's "
            "arithmetic is defined by) and its default kernels (XNNPACK), against onnxruntime on the integer ONNX "
            "file written from the same IR (`edgesnn export --target onnx`: ConvInteger/MatMulInteger and integer "
            "requantization; not the Brevitas QCDQ export of the torch model). Latency: one sample per call "
            "from Python (set input, invoke, read output; onnxruntime's `run`), over the first "
            f"{r['time_samples']} test samples. Mismatches: every output integer of each file against the golden "
            "interpreter over the whole test split; argmax also against the torch model.")


def headline(r: dict) -> list[tuple[str, str, str]]:
    out = []
    for m in r["models"]:
        rows = {w["key"]: w for w in m["rows"]}
        ref, xnn, onnx = rows["litert_reference"], rows["litert_default"], rows["onnxruntime"]
        out.append((f"Latency ({m['model']}): onnxruntime on the integer ONNX file / LiteRT, reference and XNNPACK "
                    f"kernels", f"{ref['vs_onnxruntime']:.2f}x, {xnn['vs_onnxruntime']:.2f}x",
                    f"above 1: LiteRT faster; samples differing from the IR: LiteRT reference kernels "
                    f"{ref['mismatches']} of {m['samples']}, XNNPACK {xnn['mismatches']}, onnxruntime "
                    f"{onnx['mismatches']} (table 3)"))
    return out


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
