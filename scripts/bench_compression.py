#!/usr/bin/env python
"""Table 6 of scripts/bench.py: weight bytes of each quantization recipe against the bound and float32.

Every shipped recipe (its model, data, training and compression) and the ternary method, exported to
the IR: packed weight bytes against sum(bits x weights) / 8 and against float32, and the IR's accuracy
on the recipe's own test split.

Usage: .venv/bin/python scripts/bench_compression.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only compression``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import Settings, Work  # first: threads

from collections import Counter  # noqa: E402

from edgesnn import pipeline, recipes  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402
from edgesnn.profile import memory  # noqa: E402

KEY, NUMBER = "compression", 6
TITLE = "Compression: weight bytes vs the bound and float32"


def jobs() -> list[dict]:
    """Every shipped recipe, then the ternary method (no shipped recipe) with the default training."""
    out = []
    for path in sorted(recipes.RECIPES_DIR.glob("*.yaml")):
        rc = recipes.load(path)
        q = rc.quantize
        out.append({"label": f"recipe `{rc.name}`", "data": rc.data, "model": rc.model.name, "kwargs": rc.model.kwargs,
                    "D": rc.model.D, "train": rc.train, "method": q.method if q else None,
                    "options": None if q is None else dict(weight_bits=q.weight_bits, membrane_bits=q.membrane_bits,
                                                            prune=q.prune, lr=q.lr, seed=rc.train.seed),
                    "q_epochs": None if q is None else q.epochs})
    base = recipes.Train()
    out.append({"label": "`edgesnn quantize --method ternary` (no shipped recipe)", "data": "mnist5k-14",
                "model": "cnn", "kwargs": {}, "D": 4, "train": base, "method": "ternary",
                "options": dict(seed=base.seed), "q_epochs": 20})
    return out


def measure(work: Work, s: Settings) -> dict:
    from edgesnn.quantize import Options, quantize_checkpoint

    rows = []
    for j in jobs():
        epochs = s.quantize_epochs or j["train"].epochs
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
        accuracy = pipeline.verify(ir_path, j["data"], samples=s.accuracy_samples)["accuracy"]
        rows.append({"label": j["label"], "data": j["data"], "model": j["model"],
                     "method": j["method"] or "none (8-bit post-training)",
                     "layers": len(ops), "weights": weights, "bits": dict(sorted(bits.items(), reverse=True)),
                     "weight_bytes": actual, "bound_bytes": bound, "vs_bound": actual / bound,
                     "float32_bytes": 4 * weights, "vs_float32": 4 * weights / actual,
                     "float_model_bytes": pipeline.inspect(ckpt)["float32_weight_bytes"],
                     "all_param_bytes": info["bytes"], "accuracy": accuracy, "train_epochs": epochs,
                     "quantize_epochs": q_epochs})
        rows[-1]["vs_float_model"] = rows[-1]["float_model_bytes"] / actual
    return {"rows": rows}


def table(r: dict) -> str:
    lines = ["| what | data | model | compression | weight layers (bits x count) | weights | IR weight bytes (packed) | "
             "bound sum(bits x weights) / 8 | IR / bound | float32 bytes of these weights | float32 / IR | float32 "
             "bytes of the float model | float model / IR | IR bytes with int32 biases and requantization constants "
             "| IR accuracy (test split) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        bits = ", ".join(f"{b}-bit x {n}" for b, n in w["bits"].items())
        lines.append(f"| {w['label']} | {w['data']} | {w['model']} | {w['method']} | {w['layers']}: {bits} | "
                     f"{w['weights']} | {w['weight_bytes']} | {w['bound_bytes']:.1f} | {w['vs_bound']:.4f} | "
                     f"{w['float32_bytes']} | {w['vs_float32']:.2f}x | {w['float_model_bytes']} | "
                     f"{w['vs_float_model']:.2f}x | {w['all_param_bytes']} | {w['accuracy']:.4f} |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    epochs = (f"{s.quantize_epochs} training, {s.quantize_epochs} fine-tuning (quick mode: accuracies, on the first "
              f"{s.accuracy_samples} test samples, are not meaningful; byte counts do not depend on training)."
              if s.quantize_epochs is not None
              else "each recipe's own (ternary: 30 training, 20 fine-tuning).")
    return ("Every shipped recipe (`edgesnn/shipped/recipes/*.yaml`: its model, training and compression settings) "
            "and the ternary method, exported to the IR. Weight bytes are the IR's packed weight tensors (every "
            "conv/dense, first and last layers included) at their real bit widths; the bound is sum over layers of "
            "bits x weights / 8; float32 is 4 bytes per weight of the same layers, and of the float model before "
            "compression (pruning makes the two differ). Epochs: " + epochs)


def headline(r: dict) -> list[tuple[str, str, str]]:
    c = r["rows"]
    return [("Weight bytes: float32 / IR, per row of table 6", ", ".join(f"{w['vs_float32']:.1f}x" for w in c),
             f"IR bytes / (sum(bits x weights) / 8): at most {max(w['vs_bound'] for w in c):.4f} (table 6)")]


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
