"""TFLite backend: a fully integer .tflite written from the IR, run in LiteRT and TFLite Micro.

:mod:`.lower` maps IR ops to TFLite builtins (checking each is bit-exact), :mod:`.flatbuffer`
writes the file, :mod:`.runtime` runs it; :func:`compare` is what ``edgesnn verify`` reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.backends.tflite.lower import lower
from edgesnn.backends.tflite.runtime import LITERT_DEFAULT, LITERT_REFERENCE, MICRO, RUNTIMES, Result, micro_available, run
from edgesnn.files import write_bytes
from edgesnn.ir import graph as g

# The runtimes whose kernels the IR's arithmetic is defined by; XNNPACK is measured, not claimed.
EXACT_RUNTIMES = (LITERT_REFERENCE, MICRO)

__all__ = ["export_tflite", "compare", "lower", "run", "Result", "RUNTIMES", "LITERT_REFERENCE", "LITERT_DEFAULT", "MICRO"]


def export_tflite(graph: g.Graph, path: Path) -> Path:
    """Lower, then write ``path`` atomically: an op TFLite cannot express raises before any file exists."""
    return write_bytes(path, lower(graph).serialize())


def compare(path: Path, graph: g.Graph, x: np.ndarray, runtimes=None) -> dict:
    """Run the .tflite over float inputs ``x`` (NHWC) in each runtime; compare every output with the IR.

    ``mismatches`` counts samples with any output element different from the golden interpreter
    under LiteRT's reference kernels (the bit-exact claim); each runtime's own counts, its
    argmax disagreements and (TFLite Micro) the arena size are under ``runtimes``.
    """
    if runtimes is None:
        runtimes = [LITERT_REFERENCE, LITERT_DEFAULT] + ([MICRO] if micro_available() else [])
    xq = graph.quantize_input(x)
    golden = graph.run_integer(xq)
    expected = [golden[name] for name in graph.outputs]
    rows = {}
    for name in runtimes:
        r = run(path, xq, name)
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
    reference = rows.get(LITERT_REFERENCE) or next(iter(rows.values()))
    not_exact = [rows[n]["runtime"] for n in EXACT_RUNTIMES if n in rows and rows[n]["mismatches"]]
    return {"samples": int(len(xq)), "runtime": reference["runtime"], "mismatches": reference["mismatches"],
            "bit_exact": not not_exact, "not_bit_exact_in": not_exact,
            "mismatched_elements": reference["mismatched_elements"], "runtimes": rows,
            "arena_bytes": rows.get(MICRO, {}).get("arena_bytes"), "file_bytes": Path(path).stat().st_size}
