"""TFLite backend: a fully integer .tflite written from the IR, run in LiteRT and TFLite Micro.

:mod:`.lower` maps IR ops to TFLite builtins (checking each is bit-exact), :mod:`.flatbuffer`
writes the file, :mod:`.runtime` runs it; :func:`compare` is what ``edgesnn verify`` reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.backends.tflite import runtime214
from edgesnn.backends.tflite.lower import lower
from edgesnn.backends.tflite.runtime import LITERT_DEFAULT, LITERT_REFERENCE, MICRO, RUNTIMES, Result, micro_available, run
from edgesnn.backends.tflite.runtime import available as available_runtimes
from edgesnn.errors import EdgesnnError
from edgesnn.files import write_bytes
from edgesnn.ir import graph as g
from edgesnn.progress import step

# The runtimes whose kernels the IR's arithmetic is defined by (and tflite-runtime 2.14's reference
# kernels, measured the same on every file it runs); XNNPACK is measured, not claimed.
EXACT_RUNTIMES = (LITERT_REFERENCE, MICRO, runtime214.REFERENCE)
# export --runtime: the runtime a file is written for. litert: LiteRT and TFLite Micro (every lowered op);
# tflite-runtime: 2.14 as well, refusing a graph it cannot run (runtime214.check).
EXPORT_RUNTIMES = ("litert", "tflite-runtime")

__all__ = ["export_tflite", "compare", "lower", "run", "Result", "RUNTIMES", "LITERT_REFERENCE", "LITERT_DEFAULT", "MICRO"]


def export_tflite(graph: g.Graph, path: Path, runtime: str | None = None) -> Path:
    """Lower, then write ``path`` atomically: an op TFLite (or ``runtime``, one of EXPORT_RUNTIMES)
    cannot run raises before any file exists."""
    check_runtime(runtime)
    model = lower(graph)
    if runtime == "tflite-runtime":
        runtime214.check(model)
    return write_bytes(path, model.serialize())


def check_runtime(runtime: str | None) -> None:
    """A bad ``--runtime`` fails before any work."""
    if runtime is not None and runtime not in EXPORT_RUNTIMES:
        raise EdgesnnError(f"unknown TFLite runtime {runtime!r} for --runtime; available: {', '.join(EXPORT_RUNTIMES)}")


def compare(path: Path, graph: g.Graph, x: np.ndarray, runtimes=None) -> dict:
    """Run the .tflite over float inputs ``x`` (NHWC) in each runtime; compare every output with the IR.

    ``mismatches`` counts samples with any output element different from the golden interpreter
    under LiteRT's reference kernels (the bit-exact claim); each runtime's own counts, its
    argmax disagreements and (TFLite Micro) the arena size are under ``runtimes``; LiteRT's default
    kernels (what a Raspberry Pi or Jetson runs) also have their difference from the reference
    kernels (``vs_reference``). ``exact_in``: the runtimes where no output integer differs;
    ``cannot_run``: tflite-runtime 2.14's refusal of a file it cannot run (not a failure).
    """
    if runtimes is None:
        runtimes = available_runtimes()
    xq = graph.quantize_input(x)
    golden = graph.run_integer(xq)
    expected = [golden[name] for name in graph.outputs]
    rows, outputs, cannot_run = {}, {}, {}
    for name in runtimes:
        try:
            with step(f"tflite: {len(xq)} samples in {name}"):
                r = run(path, xq, name)
        except runtime214.CannotRun as e:
            cannot_run[name] = str(e)
            continue
        outputs[name] = r.outputs
        differs = np.zeros(len(xq), bool)
        elements = 0
        for got, want in zip(r.outputs, expected):
            bad = got.reshape(want.shape) != want
            differs |= bad.reshape(len(xq), -1).any(1)
            elements += int(bad.sum())
        first = r.outputs[0].reshape(expected[0].shape)
        rows[name] = {"runtime": r.runtime, "mismatches": int(differs.sum()), "mismatched_elements": elements,
                      "argmax_mismatches": int((first.argmax(-1) != expected[0].argmax(-1)).sum()) if first.ndim == 2 else None}
        if r.arena_bytes is not None:
            rows[name]["arena_bytes"] = r.arena_bytes
    if LITERT_REFERENCE in outputs and LITERT_DEFAULT in outputs:  # what a board runs vs the kernels defining the IR
        rows[LITERT_DEFAULT]["vs_reference"] = _difference(outputs[LITERT_DEFAULT], outputs[LITERT_REFERENCE])
    if not rows:
        raise EdgesnnError(f"{path}: no runtime asked for runs it: {'; '.join(cannot_run.values())}")
    reference = rows.get(LITERT_REFERENCE) or next(iter(rows.values()))
    not_exact = [rows[n]["runtime"] for n in EXACT_RUNTIMES if n in rows and rows[n]["mismatches"]]
    return {"samples": int(len(xq)), "runtime": reference["runtime"], "mismatches": reference["mismatches"],
            "bit_exact": not not_exact, "not_bit_exact_in": not_exact,
            "exact_in": [n for n, row in rows.items() if row["mismatches"] == 0], "cannot_run": cannot_run,
            "mismatched_elements": reference["mismatched_elements"], "runtimes": rows,
            "arena_bytes": rows.get(MICRO, {}).get("arena_bytes"), "file_bytes": Path(path).stat().st_size}


def _difference(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Samples, output integers and (class scores) argmaxes where two runtimes' outputs differ."""
    n = len(a[0])
    differs, elements = np.zeros(n, bool), 0
    for x, y in zip(a, b):
        bad = x.reshape(n, -1) != y.reshape(n, -1)
        differs |= bad.any(1)
        elements += int(bad.sum())
    first, second = a[0].reshape(n, -1), b[0].reshape(n, -1)
    return {"samples": n, "mismatches": int(differs.sum()), "mismatched_elements": elements,
            "argmax_mismatches": int((first.argmax(1) != second.argmax(1)).sum())}
