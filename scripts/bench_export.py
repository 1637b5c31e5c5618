#!/usr/bin/env python
"""Table 4 of scripts/bench.py: export time per target for spike-driven transformers of growing size.

Random-weight ``spikeformer`` checkpoints of three widths, each exported to every target the way
``edgesnn export`` does it (``pipeline.export_model``); the time's growth against the parameter count.

Usage: .venv/bin/python scripts/bench_export.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only export``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import Settings, Work, median  # first: threads

import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgesnn import checkpoint, models, pipeline, targets  # noqa: E402
from edgesnn.errors import EdgesnnError  # noqa: E402

KEY, NUMBER = "export", 4
TITLE = "Export cost vs model size"
# the board of a target that builds for one (mcu): 10M parameters fit no Cortex-M
EXPORT_BOARD = "raspberry-pi-4"


def export_targets() -> list[targets.Target]:
    """Every target that exports from the IR, as the registry lists them (a plugin's too)."""
    return [t for t in targets.all_targets() if t.source == "ir"]


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


def _export(ckpt: Path, target: targets.Target, out: Path) -> tuple[float, int]:
    """Seconds of one export into a fresh ``out``, and the artifact's bytes (``out`` is removed after)."""
    shutil.rmtree(out, ignore_errors=True)
    board = {"board": EXPORT_BOARD} if target.builds_for else {}
    t0 = time.perf_counter()
    pipeline.export_model(ckpt, target.name, out, **board)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return seconds, size


def measure(work: Work, s: Settings) -> dict:
    sizes = [random_transformer(work.root, w, s.export_depths) for w in s.export_widths]
    # one untimed export per target of the smallest model pays imports and first-use costs, so the table
    # measures the same whether it runs alone or after the others; a target that refuses the model (one
    # line, e.g. NIR holds no attention ops) is listed with its reason
    timed, refused = [], {}
    for t in export_targets():
        try:
            _export(sizes[0][0], t, work.root / f"export-cost-{t.name}-warm-up")
            timed.append(t)
        except EdgesnnError as e:
            refused[t.name] = str(e)
    seconds = {(t.name, i): [] for t in timed for i in range(len(sizes))}
    artifact = {}
    for _ in range(s.export_repeats):  # interleaved: every size and target once per round
        for i, (ckpt, _) in enumerate(sizes):
            for t in timed:
                secs, artifact[(t.name, i)] = _export(ckpt, t, work.root / f"export-cost-{t.name}-{i}")
                seconds[(t.name, i)].append(secs)
    rows = []
    for t in timed:
        med = [median(seconds[(t.name, i)]) for i in range(len(sizes))]
        exponent = float(np.polyfit(np.log([p for _, p in sizes]), np.log(med), 1)[0])  # t ~ params^exponent
        rows.append({"target": t.name, "work": t.help, "seconds": med,
                     "runs": [seconds[(t.name, i)] for i in range(len(sizes))],
                     "artifact_bytes": [artifact[(t.name, i)] for i in range(len(sizes))], "exponent": exponent,
                     "growth": med[-1] / med[0], "s_per_mparam_largest": med[-1] / (sizes[-1][1] / 1e6)})
    return {"params": [p for _, p in sizes], "widths": list(s.export_widths), "depths": list(s.export_depths),
            "rows": rows, "refused": refused, "repeats": s.export_repeats, "board": EXPORT_BOARD}


def table(r: dict) -> str:
    params = r["params"]
    heads = " | ".join(f"s at {p / 1e6:.2f}M params" for p in params)
    lines = [f"| target | what the export writes | {heads} | time ratio largest / smallest (params ratio "
             f"{params[-1] / params[0]:.1f}x) | b in s ~ params^b (least squares) | s per M params (largest) | "
             f"artifact bytes (largest) |", "|---|---|" + "---|" * len(params) + "---|---|---|---|"]
    for w in r["rows"]:
        cells = " | ".join(f"{v:.2f}" for v in w["seconds"])
        lines.append(f"| {w['target']} | {w['work']} | {cells} | {w['growth']:.2f}x | "
                     f"{w['exponent']:.2f} | {w['s_per_mparam_largest']:.2f} | {w['artifact_bytes'][-1]} |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    return (f"Spike-driven transformers (`spikeformer`, 8x8x1 input, 10 classes, depths {tuple(r['depths'])}, "
            f"channels (w, 2w) for w in {tuple(r['widths'])}) with random weights, saved as checkpoints; "
            f"each target timed as `pipeline.export_model(checkpoint, target)` (what `edgesnn export` runs, "
            f"without the CLI's start-up): load, trace, calibrate on 1024 digits training images, write. A target "
            f"that builds for a board (mcu) builds for `{r['board']}` (no Cortex-M board holds 10M parameters). "
            "Each target was first exported once untimed (the smallest model) to pay imports and first-use "
            "costs." + "".join(f" `{name}` refuses these models: {why}." for name, why in r["refused"].items()))


def headline(r: dict) -> list[tuple[str, str, str]]:
    p = r["params"]
    growth = ", ".join(f"{w['target']} {w['growth']:.1f}x" for w in r["rows"])
    return [(f"Export time per target: {p[-1] / 1e6:.1f}M / {p[0] / 1e6:.2f}M-parameter transformer "
             f"({p[-1] / p[0]:.0f}x the parameters)", growth,
             "below the parameter ratio: fixed costs dominate (table 4)")]


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
