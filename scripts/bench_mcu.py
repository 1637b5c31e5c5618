#!/usr/bin/env python
"""Table 2 of scripts/bench.py: the generated C project against TFLite Micro on the same IR.

The C project (dense and spike-driven kernels) and TFLite Micro running the .tflite of the same IR:
samples differing from the IR, host latency of the inference call alone, Cortex-M4 instructions per
inference on QEMU, and model + arena bytes.

Usage: .venv/bin/python scripts/bench_mcu.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only mcu``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import MCU_BOARD, Settings, Work, c_host_pass, interleaved, median  # first: threads

import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edgesnn import data as datasets  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402

KEY, NUMBER = "mcu", 2
TITLE = "MCU: generated C vs TFLite Micro"


def micro_pass(path: Path, xq: np.ndarray) -> Callable[[], float]:
    """TFLite Micro's interpreter (the tflite-micro wheel, reference kernels built for x86_64): the
    time of each invoke() alone, as the C harness times edgesnn_infer alone."""
    from tflite_micro.python.tflite_micro import runtime as micro

    raw = Path(path).read_bytes()
    interp = micro.Interpreter.from_bytes(raw, arena_size=max(64 * 1024, 16 * len(raw)))

    def one() -> float:
        total = 0.0
        for sample in xq:
            interp.set_input(sample[None], 0)
            t0 = time.perf_counter()
            interp.invoke()
            total += time.perf_counter() - t0
            interp.get_output(0)
        return total / len(xq)
    return one


def measure(work: Work, s: Settings) -> dict:
    from edgesnn.backends.mcu import verify_mcu
    from edgesnn.backends.tflite import MICRO, compare

    ds = datasets.digits()
    x = datasets.to_nhwc(ds.x_test)
    out = []
    for name in s.models:
        ckpt = work.checkpoint(name, s.epochs)
        tfl = work.export(ckpt, "tflite")
        graph = load_ir(tfl.with_name("model.ir"))
        xq = graph.quantize_input(x)
        out_spec = graph.tensors[graph.outputs[0]]
        size = int(np.prod(out_spec.shape))
        micro = compare(tfl, graph, x, runtimes=[MICRO])
        c = {}
        for mode in ("none", "all"):
            project = work.mcu(ckpt, mode)
            host = verify_mcu(project, x, trust_code=True)  # whole test split on the host build (our own project)
            arm = verify_mcu(project, x, qemu=True, samples=s.qemu_samples, trust_code=True)["runs"]["arm"]
            info = json.loads((project / "project.json").read_text())
            c[mode] = {"host_mismatches": host["runs"]["host"]["mismatches"], "host_samples": host["samples"],
                       "qemu_mismatches": arm["mismatches"], "qemu_samples": arm["samples"],
                       "instructions": arm["instructions_per_inference"], "sizes": arm["sizes"],
                       "arena_bytes": host["arena_bytes"], "const_bytes": host["const_bytes"],
                       "event_driven_layers": len(host["event_driven_layers"]),
                       "candidates": sum(k["input_nonzero_rate"] is not None for k in info["kernels"]),
                       "machine": arm["machine"]}
        n = s.time_samples
        runs = interleaved({"c_none": c_host_pass(work.mcu(ckpt, "none"), xq[:n], out_spec.dtype, size),
                            "c_all": c_host_pass(work.mcu(ckpt, "all"), xq[:n], out_spec.dtype, size),
                            "tflm": micro_pass(tfl, xq[:n])}, s.repeats)
        lat = {k: median(v) * 1e6 for k, v in runs.items()}  # microseconds
        m = micro["runtimes"][MICRO]
        tflm = {"mismatches": m["mismatches"], "samples": micro["samples"], "arena_bytes": m["arena_bytes"],
                "file_bytes": micro["file_bytes"], "runtime": m["runtime"], "latency_us": lat["tflm"],
                "runs_s": runs["tflm"]}
        for mode in c:
            c[mode]["latency_us"] = lat[f"c_{mode}"]
            c[mode]["runs_s"] = runs[f"c_{mode}"]
            c[mode]["vs_tflm_latency"] = lat["tflm"] / lat[f"c_{mode}"]
            c[mode]["model_plus_arena"] = c[mode]["const_bytes"] + c[mode]["arena_bytes"]
            c[mode]["vs_tflm_memory"] = c[mode]["model_plus_arena"] / (tflm["file_bytes"] + tflm["arena_bytes"])
            c[mode]["vs_dense_instructions"] = c["none"]["instructions"] / c[mode]["instructions"]
        out.append({"model": name, "c": c, "tflm": tflm})
    return {"models": out, "board": MCU_BOARD, "repeats": s.repeats, "time_samples": s.time_samples,
            "qemu_samples": s.qemu_samples}


def table(r: dict) -> str:
    lines = ["| model | runtime (what runs) | samples differing from the IR (host / QEMU) | host latency us per "
             "inference (median) | TFLM latency / this | Cortex-M4 instructions per inference (QEMU) | dense C "
             "instructions / this | model bytes in flash | RAM arena bytes | model + arena | this / TFLM's | whole "
             "Cortex-M4 image .text+.data / .bss |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in r["models"]:
        for mode, label in (("none", "dense kernels"), ("all", "spike-driven kernels")):
            c = m["c"][mode]
            sz = c["sizes"]
            lines.append(
                f"| {m['model']} | edgesnn C, {label} ({c['event_driven_layers']} of {c['candidates']} layers "
                f"event-driven): host `make host` -O2, QEMU `make arm` | {c['host_mismatches']} of "
                f"{c['host_samples']} / {c['qemu_mismatches']} of {c['qemu_samples']} | {c['latency_us']:.1f} | "
                f"{c['vs_tflm_latency']:.2f}x | {c['instructions']} | {c['vs_dense_instructions']:.2f}x | "
                f"{c['const_bytes']} (const arrays) | {c['arena_bytes']} (static) | {c['model_plus_arena']} | "
                f"{c['vs_tflm_memory']:.2f}x | {sz['text'] + sz['data']} / {sz['bss']} |")
        t = m["tflm"]
        lines.append(
            f"| {m['model']} | TFLite Micro on the same model's .tflite ({t['runtime']}, Python wheel, x86_64 "
            f"reference kernels; invoke() timed) | {t['mismatches']} of {t['samples']} / not run | "
            f"{t['latency_us']:.1f} | 1.00x | not measured (TFLM not built for Cortex-M here) | - | "
            f"{t['file_bytes']} (.tflite) | {t['arena_bytes']} (recording allocator) | "
            f"{t['file_bytes'] + t['arena_bytes']} | 1.00x | not measured |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    return (f"The C project (`edgesnn export --target mcu --board {r['board']}`, dense and spike-driven kernels) "
            f"against TFLite Micro running the .tflite of the same IR. Host latency: the C harness built with the host "
            f"compiler, and TFLite Micro's Python wheel (x86_64 build of its reference kernels), each timing the "
            f"inference call alone over the first {r['time_samples']} test samples. Instructions: the C "
            f"built for the Cortex-M4 with arm-none-eabi-gcc and run on QEMU {r['models'][0]['c']['none']['machine']} "
            f"with `-icount shift=0` over the first {r['qemu_samples']} test samples (mean). Memory: the model's "
            f"bytes in flash (C: its const arrays; TFLM: the .tflite) plus the RAM arena (C: the static arena in "
            f".bss; TFLM: its recording allocator's total). Neither side's runtime code is in that sum; the last "
            f"column is the whole C firmware image (harness, newlib stdio over semihosting and weights included).")


def headline(r: dict) -> list[tuple[str, str, str]]:
    out = []
    for m in r["models"]:
        c = m["c"]
        out.append((f"Cortex-M4 instructions per inference ({m['model']}): dense C / spike-driven C",
                    f"{c['all']['vs_dense_instructions']:.2f}x",
                    "above 1: spike-driven needs fewer; QEMU -icount (table 2)"))
        out.append((f"Host latency ({m['model']}): TFLite Micro / generated C, dense and spike-driven",
                    f"{c['none']['vs_tflm_latency']:.2f}x, {c['all']['vs_tflm_latency']:.2f}x",
                    "above 1: the C is faster; same IR, its .tflite (table 2)"))
        out.append((f"Model + arena bytes ({m['model']}): C (const arrays + static arena) / TFLite Micro (.tflite + "
                    f"arena), dense and spike-driven",
                    f"{c['none']['vs_tflm_memory']:.2f}x, {c['all']['vs_tflm_memory']:.2f}x",
                    "below 1: the C needs less (table 2)"))
    return out


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
