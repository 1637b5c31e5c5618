"""What the multi-seed result scripts share: one thread, compress + export + verify one model, and
the spread of a number over seeds."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from edgesnn import baselines, pipeline, threads
from edgesnn.quantize import Options, quantize_checkpoint

THREADS = 1  # the same models on any machine (edgesnn/threads.py)


def single_thread() -> None:
    threads.use(THREADS)


def compress(float_ckpt: Path, method: str, out: Path, opts: Options, data: str) -> dict:
    """Compress ``float_ckpt``, export the IR, verify it over the test split; the numbers of one run."""
    t0 = time.perf_counter()
    m = quantize_checkpoint(float_ckpt, method, out, opts)
    ir = pipeline.export_model(out, "ir", out / "ir")
    r = pipeline.verify(ir, data)
    weight_bytes = pipeline.inspect(ir)["weight_bytes"]
    float_bytes = pipeline.inspect(float_ckpt)["float32_weight_bytes"]
    return dict(float_accuracy=m["float_accuracy"], ir_accuracy=r["accuracy"], torch_accuracy=r["torch_accuracy"],
                drop_points=100 * (m["float_accuracy"] - r["accuracy"]), agreement=r["agreement"],
                mismatches=r["mismatches"], samples=r["samples"], weight_bytes=weight_bytes,
                float32_weight_bytes=float_bytes, ratio=float_bytes / weight_bytes, notes=m["notes"],
                seconds=time.perf_counter() - t0)


def spread(values: list[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std) over seeds; the value alone for one seed."""
    mean = statistics.fmean(values) + 0.0  # no "-0.00"
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def span(values: list[float], digits: int = 4) -> str:
    """``min..max`` over seeds; the value alone when they agree."""
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if lo == hi else f"{lo:.{digits}f}..{hi:.{digits}f}"


def baseline_line(ds) -> tuple[dict, str]:
    scores = baselines.baselines(ds)
    return scores, baselines.describe(scores, len(ds.x_test))
