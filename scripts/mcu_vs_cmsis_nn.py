#!/usr/bin/env python
"""edgesnn's MCU kernels against CMSIS-NN, side by side in one run (issue 25's goals).

For each model (the digits cnn and spikeformer, trained here) and each Cortex-M core that QEMU
emulates, three projects of the same IR, built at -O2 and at -Os and run on QEMU with
``-icount shift=0`` over the first test samples (every output compared with the IR's):

- edgesnn dense: TVM kernels, ``--event-driven none``;
- edgesnn spike-driven: TVM kernels, ``--event-driven all`` (every conv/dense reading spikes);
- CMSIS-NN: ``--kernels cmsis-nn`` from ../shared/anchors/cmsis-nn (never copied), ``--event-driven
  none`` so CMSIS-NN computes every layer it covers; the rest keep TVM's kernels.

Instructions per inference are the mean over the samples (the harness's timer under -icount).
Kernel code: the .text the linker kept (model.map, after --gc-sections) for the layers CMSIS-NN
computes: edgesnn's kernel functions of those layers, against the wrappers plus every CMSIS-NN
function linked. The firing rates are the fraction of nonzero inputs of each spike-reading layer,
measured on the same test samples through the golden interpreter.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/mcu_vs_cmsis_nn.py [--samples 50] [--epochs 10]
       [--cores M4,M7,M33,M55] [--opts O2,Os] [--models cnn,spikeformer] [--out BENCHMARKS.md]
The section between the markers mcu-vs-cmsis-nn in --out is replaced.

--fit: instead, fit the coefficients of ``--event-driven auto``'s cost model (backends/mcu/cost.py)
on QEMU (Cortex-M4 for cores with DSP, Cortex-M3 for the others, the Cortex-M55 built for Helium for
cores with MVE; ``--fit-cores helium`` fits one family) and print them with the measured
and modelled instructions of every single-layer run; the table in cost.py is this output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from markdown_section import replace_section

from edgesnn import pipeline
from edgesnn.data import load as load_data, to_nhwc
from edgesnn.ir import load as load_ir

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT.parent / "shared" / "anchors" / "cmsis-nn"
CORES = {"M4": "nucleo-f446re", "M7": "stm32f746-disco", "M33": "nrf5340", "M55": "mps3-an547"}
# make variables per core: the M55 with the hard-float ABI, without which GCC has no Helium (MVE)
MAKE_VARS = {"M55": "ARM_ABI=-mfloat-abi=hard"}
FORMS = {"dense": dict(event_driven="none"), "spike-driven": dict(event_driven="all"),
         "auto": dict(event_driven="auto"), "cmsis-nn": dict(event_driven="none", kernels="cmsis-nn")}
_INPUT_SECTION = re.compile(r"^ (\.text\S*)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$", re.MULTILINE)


def linked_text(map_file: Path) -> list[tuple[str, int, str]]:
    """(section, bytes, object) of every .text input section the linker kept (the memory map part of
    a GNU ld map file; the discarded sections listed before it are left out)."""
    text = map_file.read_text()
    kept = text[text.index("Linker script and memory map"):]
    return [(m[1], int(m[2], 16), m[3]) for m in _INPUT_SECTION.finditer(kept) if int(m[2], 16)]


def kernel_text(map_file: Path, symbols: set[str]) -> int:
    """Bytes of the kernels computing the CMSIS-NN layers: edgesnn's functions ``symbols`` (one
    section each, -ffunction-sections), or the wrappers (cmsis_layers.o) and CMSIS-NN's objects."""
    total = 0
    for section, size, obj in linked_text(map_file):
        if section.removeprefix(".text.") in symbols and "(kernels.o)" in obj:
            total += size
        elif "(cmsis_layers.o)" in obj or re.search(r"\(arm_\w+\.o\)$", obj):
            total += size
    return total


def build_and_run(project: Path, data: str, samples: int, opt: str, make_vars: str = "") -> dict:
    """verify --qemu of ``project`` rebuilt at ``opt`` (the Makefile's OPT, passed through MAKEFLAGS
    with ``make_vars``)."""
    shutil.rmtree(project / "build", ignore_errors=True)
    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"OPT=-{opt} {make_vars}".strip()
    try:
        r = pipeline.verify(project, data, qemu=True, samples=samples, trust_code=True)
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS")
        else:
            os.environ["MAKEFLAGS"] = old
    arm = r["runs"]["arm"]
    if r["mismatches"]:
        raise SystemExit(f"{project}: {r['mismatches']} samples differ from the IR at -{opt}")
    return {"instructions": arm["instructions_per_inference"], "samples": arm["samples"], "machine": arm["machine"]}


def firing_rates(ir: Path, x: np.ndarray) -> dict[str, float]:
    from edgesnn.backends.mcu import firing_rates as rates

    return rates(load_ir(ir), x)


FIT_BOARDS = {"dsp": "nucleo-f446re", "plain": "nucleo-f103rb", "helium": "mps3-an547"}  # core family -> board


def fit_cost_model(families: list[str], kernel_families: list[str] | None = None) -> None:
    from edgesnn import boards
    from edgesnn.backends.mcu import cost

    # Helium cores: layers of int8 with zero point 0 (the fits' layers) take the gather-dot form
    families_of = {"dsp": ("int8", "generic", "counts"), "plain": ("int8", "generic", "counts"),
                   "helium": ("gather", "lanes", "generic")}
    with tempfile.TemporaryDirectory() as tmp:
        for core in families:
            board = FIT_BOARDS[core]
            if core == "helium":  # the Helium build, as the benchmark's (hard float: GCC's MVE needs it)
                os.environ["MAKEFLAGS"] = MAKE_VARS["M55"]
            else:
                os.environ.pop("MAKEFLAGS", None)
            for family in kernel_families or families_of[core]:
                coef, rows = cost.fit(boards.load(board), family, Path(tmp))
                print(f"    ({core!r}, {family!r}): {coef!r},  # {board}", flush=True)
                for kind, rate, form, measured, modelled in rows:
                    print(f"    #   {kind:8s} rate {rate:.2f} {form:4s} measured {measured:9,d} modelled {modelled:9,d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--models", default="cnn,spikeformer")
    ap.add_argument("--cores", default=",".join(CORES))
    ap.add_argument("--opts", default="O2,Os")
    ap.add_argument("--cmsis-nn", type=Path, default=ANCHOR)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--fit", action="store_true", help="fit and print the event-driven cost model instead")
    ap.add_argument("--fit-cores", default=",".join(FIT_BOARDS), help="core families to fit (dsp, plain, helium)")
    ap.add_argument("--fit-kernels", default=None, help="kernel families to fit (int8, generic, counts, gather, lanes; "
                                                        "default: every family the core has)")
    args = ap.parse_args()
    if args.fit:
        return fit_cost_model(args.fit_cores.split(","), args.fit_kernels.split(",") if args.fit_kernels else None)
    cores, opts = args.cores.split(","), args.opts.split(",")
    ds = load_data(args.data, arrays=True)
    x_test = to_nhwc(ds.x_test)[:args.samples]
    rows = ["| model | core | opt | edgesnn dense | edgesnn spike-driven | edgesnn auto | CMSIS-NN | dense / CMSIS-NN "
            "| spike-driven / CMSIS-NN | auto / CMSIS-NN | kernel .text dense / spike-driven / CMSIS-NN (bytes) "
            "| code dense / CMSIS-NN | code spike-driven / CMSIS-NN |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models.split(","):
            ckpt = tmp / model
            pipeline.train_model(model, args.data, args.epochs, ckpt)
            for core in cores:
                projects = {}
                for form, opts_form in FORMS.items():
                    extra = {"cmsis_nn": args.cmsis_nn} if form == "cmsis-nn" else {}
                    projects[form] = pipeline.export_model(ckpt, "mcu", tmp / f"{model}-{core}-{form}",
                                                           board=CORES[core], **opts_form, **extra)
                info = {f: json.loads((p / "project.json").read_text()) for f, p in projects.items()}
                covered = {k["op"] for k in info["cmsis-nn"]["kernels"] if k["source"].startswith("cmsis-nn:")}
                if core == cores[0]:
                    rates = firing_rates(projects["dense"] / "model.ir", x_test)
                    spiking = [k["op"] for k in info["spike-driven"]["kernels"] if k["event_driven"]]
                    notes.append(f"{model}: {len(covered)} layers computed by CMSIS-NN ({', '.join(sorted(covered))}); "
                                 f"spike-driven layers and their firing rates on the test samples: "
                                 + ", ".join(f"{op} {rates[op]:.2f}" for op in spiking))
                auto = sorted(k["op"] for k in info["auto"]["kernels"] if k["event_driven"])
                notes.append(f"{model} on {core}: auto made {len(auto)} of {len(spiking)} spike-reading layers "
                             f"event-driven ({', '.join(auto) or 'none'})")
                for opt in opts:
                    got, text = {}, {}
                    for form, project in projects.items():
                        got[form] = build_and_run(project, args.data, args.samples, opt, MAKE_VARS.get(core, ""))
                        symbols = {k["symbol"] for k in info[form]["kernels"] if k["op"] in covered}
                        text[form] = kernel_text(project / "build" / "arm" / "model.map", symbols)
                    ins = {f: got[f]["instructions"] for f in FORMS}
                    rows.append(f"| {model} | {core} ({got['dense']['machine']}) | -{opt} | {ins['dense']:,} | "
                                f"{ins['spike-driven']:,} | {ins['auto']:,} | {ins['cmsis-nn']:,} | "
                                f"{ins['dense'] / ins['cmsis-nn']:.2f} | {ins['spike-driven'] / ins['cmsis-nn']:.2f} | "
                                f"{ins['auto'] / ins['cmsis-nn']:.2f} | "
                                f"{text['dense']:,} / {text['spike-driven']:,} / {text['cmsis-nn']:,} | "
                                f"{text['dense'] / text['cmsis-nn']:.2f} | {text['spike-driven'] / text['cmsis-nn']:.2f} |")
                    print(rows[-1], flush=True)
    body = (f"QEMU with `-icount shift=0`, instructions per inference (mean over the first {args.samples} "
            f"{args.data} test samples, every output equal to the IR's), models trained {args.epochs} epochs "
            f"(seed 0). edgesnn dense: `--event-driven none`; spike-driven: `--event-driven all`; CMSIS-NN: "
            f"`--kernels cmsis-nn --event-driven none` built from {args.cmsis_nn.name} "
            f"(../shared/anchors), the other layers keeping TVM's kernels; auto: `--event-driven auto` (the "
            f"cost model's choice per layer, backends/mcu/cost.py). M55: built with `-mfloat-abi=hard` (Helium "
            f"for CMSIS-NN). Kernel .text: what the linker "
            f"kept (model.map) of the kernels of the layers CMSIS-NN computes. Boards: "
            + ", ".join(f"{c} {CORES[c]}" for c in cores) + ". Goals (issue 25): dense <= 1.1, spike-driven "
            f"<= 0.7 and code <= 1.2 of CMSIS-NN's. Regenerated by `scripts/mcu_vs_cmsis_nn.py`.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes))
    replace_section(args.out, "mcu-vs-cmsis-nn", body, header="\n## MCU: edgesnn kernels vs CMSIS-NN (QEMU)\n\n")


if __name__ == "__main__":
    main()
