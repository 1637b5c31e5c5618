"""What a verify result shows, and whether it passes ``--min-agreement``.

An integer backend (a .tflite in the runtimes whose kernels define the IR's arithmetic, an MCU
build, Lava's simulation, a NIR file's program) is compared with the IR output integer by output
integer: it is "bit-exact" only when no sample differs, and by default passes only then
(:data:`MIN_INTEGER`). The IR and an ONNX file compute in integers or float where torch computes
in float, so they are compared with torch by argmax and pass by default at the agreement the
docs/export.md defends, 99.5 % (:data:`MIN_TORCH`). What edgesnn claims nothing for (LiteRT's default
kernels, XNNPACK, which a Raspberry Pi or Jetson runs; a NIR file's nodes read by other tools) is
reported with its difference and never fails a verify.
"""

from __future__ import annotations

from edgesnn.errors import EdgesnnError

INTEGERS, ARGMAX = "every output integer", "argmax"  # what a row compares
MIN_INTEGER = 1.0  # integer backends vs the IR: no sample may differ
MIN_TORCH = 0.995  # the IR or ONNX vs torch: docs/export.md and docs/compress.md, ">= 99.5 %"
# The TFLite runtimes each kind of board runs a .tflite in (board files list tflite among their targets): an
# MCU TFLite Micro; a Linux board LiteRT's default kernels, or tflite-runtime's on old images that only have it.
TFLITE_RUNTIMES_BY_KIND = {"mcu": ("tflite-micro",), "linux-aarch64": ("litert-default", "tflite-runtime-default"),
                           "host": ("litert-default",)}


def judge(r: dict, min_agreement: float | None = None) -> dict:
    """``r`` (what :func:`edgesnn.pipeline.verify` returns) with ``checks``, one row per runtime
    compared, and ``passed``: every gated row at or above its required agreement (``min_agreement``,
    default per row: MIN_INTEGER or MIN_TORCH)."""
    check_min_agreement(min_agreement)
    rows = _rows(r)
    for row in rows:
        if row["gated"]:
            row["min_agreement"] = min_agreement if min_agreement is not None else (
                MIN_INTEGER if row["compares"] == INTEGERS else MIN_TORCH)
            row["passed"] = row["agreement"] >= row["min_agreement"]
        else:
            row["min_agreement"] = row["passed"] = None
        row["result"] = _result(row)
    return {**r, "checks": rows, "passed": all(row["passed"] is not False for row in rows)}


def check_min_agreement(min_agreement: float | None) -> None:
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:  # also NaN
        raise EdgesnnError(f"--min-agreement must be between 0 and 1, got {min_agreement}")


def failure(r: dict) -> str | None:
    """The one-line error for the first row of a judged result that fails, or None."""
    row = next((row for row in r["checks"] if row["passed"] is False), None)
    if row is None:
        return None
    artifact = r.get("artifact") or r.get("project")
    counts = (f"{row['differing']} of {row['samples']} samples differ; agreement {row['agreement']:.4f} "
              f"< --min-agreement {row['min_agreement']:g}")
    if row["compares"] != INTEGERS:
        return f"{artifact}: its argmax differs from {row['against']}'s in too many samples ({counts})"
    if row["name"] == "nir program":
        return f"{artifact}: its program is not bit-exact with the IR ({counts})"
    return f"{artifact}: not bit-exact with the IR in {row['name']} ({counts})"


def summary(r: dict) -> str:
    """The result in one line: what is bit-exact (only that is called so), what agrees, what differs."""
    rows = r["checks"]
    exact = [row["name"] for row in rows if row["compares"] == INTEGERS and row["differing"] == 0
             and row["against"] == "the IR"]
    parts = [f"bit-exact with the IR in {', '.join(exact)} ({rows[0]['samples']} samples)"] if exact else []
    for row in rows:
        if row["compares"] == INTEGERS and row["differing"] == 0:
            continue
        differ = (f"{row['name']}: {row['differing']} of {row['samples']} samples differ from {row['against']}"
                  if row["compares"] == INTEGERS else
                  f"{row['name']}: argmax agrees with {row['against']} on {row['samples'] - row['differing']} of "
                  f"{row['samples']} samples")
        argmax = f", {row['argmax']} in argmax" if row["compares"] == INTEGERS and row["argmax"] is not None else ""
        gate = ("not judged" if row["passed"] is None else
                f"{row['agreement']:.4f} {'>=' if row['passed'] else '<'} {row['min_agreement']:g} required")
        parts.append(f"{differ} ({gate}{argmax})")
    accuracy = r.get("accuracy", r.get("ir_accuracy"))
    tail = "" if accuracy is None else f"; accuracy {accuracy:.4f}"
    return f"{r.get('artifact') or r.get('project')}: " + "; ".join(parts) + tail


def _result(row: dict) -> str:
    if row["passed"] is None:
        return "reported"
    if not row["passed"]:
        return "FAILS"
    if row["compares"] == INTEGERS:
        return "bit-exact" if row["differing"] == 0 else "differs (allowed)"
    return "agrees"


def _row(name: str, runtime: str, against: str, compares: str, samples: int, differing: int, integers: int | None,
         argmax: int | None, gated: bool, boards: list[str] | None = None) -> dict:
    """``compares``: INTEGERS (every output integer) or ARGMAX; ``differing``: samples that differ;
    ``integers``, ``argmax``: output integers and argmaxes that differ (None: not counted);
    ``boards``: for a .tflite, the shipped boards that run it in this runtime."""
    return {"name": name, "runtime": runtime, "against": against, "compares": compares, "samples": samples,
            "differing": differing, "integers": integers, "argmax": argmax,
            "agreement": 1.0 - differing / samples if samples else 1.0, "gated": gated, "boards": boards}


def _rows(r: dict) -> list[dict]:
    if "runtimes" in r:  # a .tflite, or an integer ONNX file
        return _runtime_rows(r)
    if "runs" in r:  # an MCU project: every build is compared with the IR
        return [_row(f"{name} build", row.get("machine", name), "the IR", INTEGERS, row["samples"], row["mismatches"],
                     row["mismatched_elements"], None, True) for name, row in r["runs"].items()]
    if "nodes_only" in r:  # a NIR file: its program is the claim, its nodes alone are reported
        nodes = r["nodes_only"]
        return [_row("nir program", r["runtime"], "the IR", INTEGERS, r["samples"], r["mismatches"],
                     r.get("mismatched_elements"), None, True),
                _row("nir nodes alone", nodes["runtime"], "the IR", ARGMAX, r["samples"],
                     round((1.0 - nodes["argmax_agreement"]) * r["samples"]), None, None, False)]
    if str(r.get("runtime", "")).startswith("lava"):
        return [_row(f"lava {r['mode']}", r["runtime"], "the IR", INTEGERS, r["samples"], r["mismatches"],
                     r["mismatched_elements"], None, True)]
    name = "onnxruntime" if "max_abs_diff" in r else "golden interpreter"  # the ONNX file or the IR, vs torch
    return [_row(name, r["runtime"], "torch", ARGMAX, r["samples"], r["mismatches"], None, r["mismatches"], True)]


def _runtime_rows(r: dict) -> list[dict]:
    """Each runtime a .tflite (or an integer ONNX file) ran in, with the boards that run a .tflite in
    it. LiteRT's default kernels are compared with the IR and with the reference kernels (their
    difference), and not judged: edgesnn claims no exactness there, as for any TFLite runtime
    outside EXACT_RUNTIMES; another backend's runtime (onnxruntime) is judged."""
    from edgesnn.backends.tflite import EXACT_RUNTIMES, RUNTIMES

    by_runtime = _boards_by_runtime()
    rows = []
    for name, row in r["runtimes"].items():
        exact = name in EXACT_RUNTIMES or name not in RUNTIMES
        rows.append(_row(name, row["runtime"], "the IR", INTEGERS, r["samples"], row["mismatches"],
                         row["mismatched_elements"], row["argmax_mismatches"], exact, by_runtime.get(name, [])))
        if "vs_reference" in row:
            d = row["vs_reference"]
            rows.append(_row(f"{name} vs litert-reference", row["runtime"], "the reference kernels", INTEGERS,
                             d["samples"], d["mismatches"], d["mismatched_elements"], d["argmax_mismatches"], False,
                             by_runtime.get(name, [])))
    return rows


def _boards_by_runtime() -> dict[str, list[str]]:
    """Shipped boards that list tflite among their targets, by the TFLite runtime their kind runs."""
    from edgesnn import boards

    out: dict[str, list[str]] = {}
    for b in boards.load_all():
        for runtime in TFLITE_RUNTIMES_BY_KIND.get(b.kind, ()) if "tflite" in b.targets else ():
            out.setdefault(runtime, []).append(b.name)
    return out
