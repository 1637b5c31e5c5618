#!/usr/bin/env python
"""Does QP-SNN's SVS criterion choose better channels than chance? SVS against the controls random and
inverted-SVS, over several seeds; the table goes into BENCHMARKS.md (method-comparison markers) and
the numbers to a JSON file.

Usage: .venv/bin/python scripts/method_comparison.py [--data mnist5k-14] [--seeds 3] [--ratios 0.5,0.75]
       [--epochs 30] [--finetune 40] [--out BENCHMARKS.md] [--json R.json]
Quick check: .venv/bin/python scripts/method_comparison.py --data digits --seeds 1 --ratios 0.5 --epochs 1 --finetune 1 --out /tmp/M.md

Per seed, one float CNN; each criterion prunes the same model with the same ratio, then 4-bit QP-SNN
fine-tunes it (same seed) and the IR is verified. Columns: the accuracy right after pruning (float
weights, no fine-tuning: where the criterion alone shows), the compressed IR's accuracy and its drop
from that seed's float model, and the paired difference from SVS on the same float model (mean ± std
over seeds; each seed compares like with like). One thread: the same seeds give the same table anywhere.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from markdown_section import replace_section
from seed_runs import baseline_line, compress, single_thread, span, spread

from edgesnn import checkpoint, pipeline
from edgesnn import data as datasets
from edgesnn.quantize import Options
from edgesnn.quantize.pruning import CRITERIA, prune
from edgesnn.quantize.qpsnn import CALIBRATION_SAMPLES
from edgesnn.train import evaluate

ROOT = Path(__file__).resolve().parent.parent
MODEL, WEIGHT_BITS = "cnn", 4


def pruned_accuracy(float_ckpt: Path, ds, ratio: float, criterion: str, seed: int) -> float:
    """Test accuracy of the float model with the channels removed, before any fine-tuning."""
    model, _ = checkpoint.load(float_ckpt)
    prune(model, ratio, ds.x_train[:CALIBRATION_SAMPLES], criterion, seed)
    return evaluate(model, ds.x_test, ds.y_test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist5k-14", help="data set (digits for a quick check)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--ratios", default="0.5,0.75", help="fractions of channels pruned, comma-separated")
    ap.add_argument("--epochs", type=int, default=30, help="float training epochs")
    ap.add_argument("--finetune", type=int, default=40, help="quantization-aware fine-tuning epochs")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    single_thread()
    ds = datasets.load(args.data)
    scores, baselines = baseline_line(ds)
    runs: dict[tuple[float, str], list[dict]] = {(r, c): [] for r in ratios for c in CRITERIA}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.seeds):
            float_ckpt = tmp / f"float-{seed}"
            pipeline.train_model(MODEL, args.data, args.epochs, float_ckpt, seed=seed)
            for ratio in ratios:
                for c in CRITERIA:
                    r = compress(float_ckpt, "qpsnn", tmp / f"q-{seed}-{ratio}-{c}",
                                 Options(weight_bits=WEIGHT_BITS, prune=ratio, prune_criterion=c, epochs=args.finetune,
                                         seed=seed), args.data)
                    r["pruned_accuracy"] = pruned_accuracy(float_ckpt, ds, ratio, c, seed)
                    runs[ratio, c].append({"seed": seed, **r})
                    print(f"seed {seed} prune {ratio} {c}: pruned {r['pruned_accuracy']:.4f} IR {r['ir_accuracy']:.4f} "
                          f"agreement {r['agreement']:.4f}", flush=True)
    rows = ["| prune | criterion | float acc | acc after pruning, before fine-tuning | compressed acc (IR) "
            "| drop (points) | vs SVS (points, paired) | IR/torch agreement |",
            "|---|---|---|---|---|---|---|---|"]
    for ratio in ratios:
        svs = runs[ratio, "svs"]
        for c in CRITERIA:
            seeds = runs[ratio, c]
            col = lambda key: [s[key] for s in seeds]  # noqa: E731
            paired = [100 * (s["ir_accuracy"] - v["ir_accuracy"]) for s, v in zip(seeds, svs)]
            rows.append(f"| {ratio:g} | {c} | {spread(col('float_accuracy'))} | {spread(col('pruned_accuracy'))} "
                        f"| {spread(col('ir_accuracy'))} | {spread(col('drop_points'), 2)} "
                        f"| {'-' if c == 'svs' else spread(paired, 2)} | {span(col('agreement'))} |")
    body = (f"QP-SNN on the {MODEL}, {WEIGHT_BITS}-bit weights, {args.data} test split ({len(ds.x_test)} samples): "
            f"float models trained {args.epochs} epochs, {args.finetune} epochs of fine-tuning after pruning; seeds "
            f"0..{args.seeds - 1} (mean ± std over seeds), one thread. {baselines} Regenerated by "
            f"`scripts/method_comparison.py --data {args.data} --seeds {args.seeds} --ratios {args.ratios}`.\n\n"
            + "\n".join(rows))
    print("\n".join(rows))
    replace_section(args.out, "method-comparison", body, header="\n## Pruning criterion: SVS vs random and inverted-SVS\n\n")
    if args.json:
        args.json.write_text(json.dumps({"data": args.data, "baselines": scores, "epochs": args.epochs,
                                         "finetune": args.finetune, "model": MODEL, "weight_bits": WEIGHT_BITS,
                                         "results": [{"prune": r, "criterion": c, "seeds": runs[r, c]}
                                                     for r in ratios for c in CRITERIA]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
