#!/usr/bin/env python
"""How often the IR's argmax agrees with torch's: every zoo model, every compression method, both
stream dtypes. Writes the table into BENCHMARKS.md (between the export-agreement markers).

Usage: .venv/bin/python scripts/export_agreement.py [--data mnist5k-14] [--epochs 15] [--finetune 10]
       [--models M,...] [--methods M,...] [--threads 1]

Each model is trained once; each method fine-tunes it twice, with int8 and with int16 streams
(``quantize --stream-dtype``: the streams and logits train on the grid they deploy with), and
each checkpoint is exported at its streams and verified over the whole test split. ``none`` is
the float checkpoint exported at both stream dtypes with its weights rounded to 8 bits after
training (post-training quantization); ``int8`` is the same model fine-tuned on those 8-bit
weights. A method a model does not support is listed with the reason. Numbers come from this
run only. A run of some models or methods rewrites their rows and keeps the table's other rows when
they were measured with the same settings (the line above the table); otherwise the table is
replaced. Training runs with edgesnn's default thread count (one) unless ``--threads`` says
otherwise, as the CLI does: the same seed then trains the same model on any machine.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from markdown_section import replace_section

from edgesnn import pipeline, threads
from edgesnn.errors import EdgesnnError
from edgesnn.quantize import Options, quantize_checkpoint

MODELS = ("mlp", "cnn", "resnet", "spikeformer")
METHODS = {  # method: the options of its row (docs/compress.md's table has the methods' settings)
    "none": None,
    "int8": {},
    "qsnn": dict(weight_bits=2),
    "qpsnn": dict(weight_bits=4, prune=0.5),
    "bestformer": {},
    "ternary": {},
}
REQUIRED = 0.995
HEADER = ["| model | method | default stream | int8 streams: mismatches | int16 streams: mismatches | torch accuracy "
          "| IR accuracy (default) | >= 99.5 % at default |",
          "|---|---|---|---|---|---|---|---|"]


def _merged(out: Path, settings: str, new: list[str]) -> list[str]:
    """This run's rows plus the committed table's other rows, if those were measured with the same
    settings; in the order of MODELS and METHODS."""
    text = out.read_text() if out.exists() else ""
    m = re.search(r"<!-- export-agreement:begin -->\n(.*?)<!-- export-agreement:end -->", text, re.S)
    old = m.group(1).splitlines() if m and m.group(1).startswith(settings + ";") else []
    key = lambda row: tuple(c.strip() for c in row.split("|")[1:3])  # noqa: E731
    rows = {key(r): r for r in old if r.startswith("| ") and r not in HEADER}
    rows.update({key(r): r for r in new})
    order = {(mo, me): i for i, (mo, me) in enumerate((mo, me) for mo in MODELS for me in METHODS)}
    return sorted(rows.values(), key=lambda r: order.get(key(r), len(order)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="mnist5k-14")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=threads.DEFAULT)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    args = ap.parse_args()
    threads.use(args.threads)
    settings = (f"{args.data} test split, T = 1, D = 4; models trained {args.epochs} epochs, methods fine-tuned "
                f"{args.finetune} epochs, seed 0, {args.threads} torch thread(s)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models.split(","):
            t0 = time.perf_counter()
            pipeline.train_model(model, args.data, args.epochs, tmp / model)
            print(f"# {model} trained in {time.perf_counter() - t0:.0f} s", flush=True)
            for method in args.methods.split(","):
                results = {}
                try:
                    for stream in ("int8", "int16"):
                        ckpt = tmp / (model if method == "none" else f"{model}-{method}-{stream}")
                        if method != "none":
                            opts = Options(epochs=args.finetune, stream_dtype=stream, **METHODS[method])
                            quantize_checkpoint(tmp / model, method, ckpt, opts, data_spec=args.data)
                        ir = pipeline.export_model(ckpt, "ir", tmp / f"{ckpt.name}.ir-{stream}", stream_dtype=stream)
                        results[stream] = pipeline.verify(ir, args.data)
                except EdgesnnError as e:
                    rows.append(f"| {model} | {method} | - | refused: {e} | | | | |")
                    print(rows[-1], flush=True)
                    continue
                default = "int8"  # what quantize and export use without --stream-dtype
                r = results[default]
                cells = [f"{results[s]['mismatches']} / {results[s]['samples']} ({results[s]['agreement']:.4f})"
                         for s in ("int8", "int16")]
                rows.append(f"| {model} | {method} | {default} | {cells[0]} | {cells[1]} | {r['torch_accuracy']:.4f} | "
                            f"{r['accuracy']:.4f} | {'yes' if r['agreement'] >= REQUIRED else 'no'} |")
                print(rows[-1], flush=True)
    rows = _merged(args.out, settings, rows)
    body = (f"{settings}; regenerated by `scripts/export_agreement.py`. A mismatch is a test sample whose IR argmax differs from torch's. "
            f"`none` exports the float weights rounded to 8 bits after training; `int8` fine-tunes on them. "
            f"Each method is fine-tuned once per stream dtype (`quantize --stream-dtype`) and exported with it; "
            f"the default (int8) is what `quantize` and `export` use without it.\n\n" + "\n".join(HEADER + rows))
    replace_section(args.out, "export-agreement", body, header="# Benchmarks\n\n## SFA export: IR vs torch\n\n")


if __name__ == "__main__":
    main()
