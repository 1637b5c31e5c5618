#!/usr/bin/env python
"""Compress trained models with every method over several seeds, export to the IR, verify; write the
table into docs/compress.md (between the compression-results markers) and the numbers to a JSON file.

Usage: .venv/bin/python scripts/compression_results.py [--data mnist5k-14] [--seeds 3] [--epochs 30]
       [--finetune 40] [--out docs/compress.md] [--json R.json]
Quick check: .venv/bin/python scripts/compression_results.py --data digits --seeds 1 --epochs 1 --finetune 1 --out /tmp/C.md

Each seed trains its own float models and compresses them with the same seed; every compression is
measured against its own float model (the drop), and the table gives mean ± std over seeds (sample
std) and the agreement's min..max. Torch runs on one thread, so the same seeds give the same table on
any machine. The baselines line (logistic regression, 3-NN on the same split) says what the task demands.

Weight bytes are the IR's packed weight tensors at their real bit widths (every Conv2d and
Linear, first and last layers included), against 4 bytes per weight of the float checkpoint.
Biases (int32) and requantization constants are listed in `edgesnn inspect`, not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from markdown_section import replace_section
from seed_runs import baseline_line, compress, single_thread, span, spread

from edgesnn import data as datasets
from edgesnn import pipeline
from edgesnn.quantize import Options

ROOT = Path(__file__).resolve().parent.parent
AGREEMENT = 0.995  # IR/torch argmax agreement every seed must reach
# (method, model, model kwargs, options, setting, required: max mean accuracy drop in points, min compression)
# The transformer is widened to (20, 40) channels: at the default (16, 32) its two 8-bit classifier
# heads and 8-bit stem leave the 1-bit model at 1/24.99 of float32 (on digits).
RUNS = [
    ("qpsnn", "cnn", {}, dict(weight_bits=4, prune=0.5), "4-bit, 50 % channels pruned (SVS)", 1.5, 12),
    ("qsnn", "cnn", {}, dict(weight_bits=2, membrane_bits=8), "2-bit weights, 8-bit membrane", 2.0, 14),
    ("bestformer", "spikeformer", {"channels": [20, 40]}, dict(), "1-bit, spike-driven transformer (20, 40)",
     4.0, 25),
    ("ternary", "cnn", {}, dict(), "ternary spikes, 8-bit weights", None, None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist5k-14", help="data set (digits for a quick check)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--epochs", type=int, default=30, help="float training epochs")
    ap.add_argument("--finetune", type=int, default=40, help="quantization-aware fine-tuning epochs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "compress.md")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    single_thread()
    ds = datasets.load(args.data)
    scores, baselines = baseline_line(ds)
    runs: dict[str, list[dict]] = {r[0]: [] for r in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.seeds):
            for model, kwargs in sorted({(r[1], json.dumps(r[2])) for r in RUNS}):
                pipeline.train_model(model, args.data, args.epochs, tmp / f"{model}-{seed}", seed=seed,
                                     model_kwargs=json.loads(kwargs))
            for method, model, _, opts, *_ in RUNS:
                r = compress(tmp / f"{model}-{seed}", method, tmp / f"{model}-{method}-{seed}",
                             Options(epochs=args.finetune, seed=seed, **opts), args.data)
                runs[method].append({"seed": seed, **r})
                print(f"seed {seed} {method}: float {r['float_accuracy']:.4f} IR {r['ir_accuracy']:.4f} "
                      f"agreement {r['agreement']:.4f} ({r['mismatches']}/{r['samples']})", flush=True)
    rows = ["| method | model | setting | float acc | compressed acc (IR) | drop (points) | IR/torch argmax agreement "
            "| weight bytes (IR) | float32 weight bytes | ratio | required |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    results = []
    for method, model, _, _, setting, max_drop, min_ratio in RUNS:
        seeds = runs[method]
        col = lambda key: [s[key] for s in seeds]  # noqa: E731
        drop, ratio = statistics.fmean(col("drop_points")), min(col("ratio"))
        holds = min(col("agreement")) >= AGREEMENT and (max_drop is None or (drop <= max_drop and ratio >= min_ratio))
        required = f"agreement >= {AGREEMENT}" + ("" if max_drop is None else f", mean drop <= {max_drop}, "
                                                                               f"ratio >= 1/{min_ratio}")
        required += f": {'yes' if holds else 'NO'}"
        bytes_ = sorted(set(col("weight_bytes")))
        rows.append(f"| {method} | {model} | {setting} | {spread(col('float_accuracy'))} | {spread(col('ir_accuracy'))} "
                    f"| {spread(col('drop_points'), 2)} | {span(col('agreement'))} (at most {max(col('mismatches'))}/"
                    f"{seeds[0]['samples']}) | {'..'.join(map(str, bytes_))} | {seeds[0]['float32_weight_bytes']} "
                    f"| 1/{ratio:.1f} | {required} |")
        results.append(dict(method=method, model=model, setting=setting, holds=holds, seeds=seeds))
    body = (f"{args.data} test split ({len(ds.x_test)} samples); float models trained {args.epochs} epochs, compressed "
            f"with {args.finetune} epochs of quantization-aware fine-tuning; seeds 0..{args.seeds - 1} (mean ± std "
            f"over seeds; each drop against that seed's float model), one thread. {baselines} Regenerated by "
            f"`scripts/compression_results.py --data {args.data} --seeds {args.seeds}`.\n\n" + "\n".join(rows))
    print("\n".join(rows))
    replace_section(args.out, "compression-results", body)
    if args.json:
        args.json.write_text(json.dumps({"data": args.data, "baselines": scores, "epochs": args.epochs,
                                         "finetune": args.finetune, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
