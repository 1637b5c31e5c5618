#!/usr/bin/env python
"""A temporal model against snnTorch at the same T and accuracy (issue 24), side by side in one run.

edgesnn's ``temporal-dense`` (flatten -> Linear -> LIF -> Linear -> LI, mean readout; integer state, int8
weights) is trained by edgesnn's BPTT trainer on ``digits-events`` (T = 10) and exported to the IR, the
.tflite and the MCU project; the same layers in snnTorch (scripts/snntorch_temporal.py: ``snntorch.Leaky``
with the same beta and threshold, reset by subtraction, a non-resetting Leaky as the readout, float32) are
trained with snnTorch's BPTT loop at the same T, epochs, optimizer, schedule and batch size. Both test
accuracies are reported, with their gap.

Host throughput, sequences per second, one thread everywhere, contenders interleaved (A B C, A B C, ...),
median of the passes:

- snnTorch: torch eager under no_grad, at batch 1 and batch 64;
- the golden IR interpreter (``Graph.run_sequence``: numpy, float frames quantized inside), batch 1 and 64;
- the .tflite in LiteRT's reference kernels (the bit-exact path): one invoke per step, the state fed back
  (``backends/tflite/state.run_sequences``, one interpreter per pass); the file's batch is 1, so batch 64
  is 64 sequences one after another in one call;
- the MCU project's C built for this machine (``make host``, cc -O2), dense and spike-driven kernels: its
  harness times each ``edgesnn_step`` (no I/O); sequences per second = 1 / (T x the mean step time).

MCU: the same projects built for the Cortex-M4 (nucleo-f446re) and run on QEMU mps2-an386 with
``-icount shift=0``: instructions per timestep (mean over every step of the first sequences), every step's
output compared with the IR. snnTorch has no MCU path, so that column is edgesnn's alone.

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_temporal.py [--quick] [--out BENCHMARKS.md]
       [--json R.json] [--work DIR]
The section between the markers ``bench-temporal`` in --out is replaced (appended when absent).
"""

from __future__ import annotations

from bench_common import ROOT, batched, interleaved, machine, median, per_sample, plain, versions  # first: threads

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import snntorch_temporal  # noqa: E402
import torch  # noqa: E402
from markdown_section import replace_section  # noqa: E402

from edgesnn import data as datasets  # noqa: E402
from edgesnn import pipeline  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402
from edgesnn.ir import state as st  # noqa: E402

SECTION = "bench-temporal"
HEADING = "\n## Temporal: edgesnn vs snnTorch at the same T\n\n"
DATA = "digits-events"
BOARD = "nucleo-f446re"  # Cortex-M4, QEMU mps2-an386
BATCH = 64


@dataclass(frozen=True)
class Settings:
    mode: str
    epochs: int  # both trainers
    hidden: int
    beta: float  # hidden LIF and readout alike
    lr: float
    repeats: int  # timed passes per contender
    time_samples: int  # test sequences per timed pass at batch 1 (the LiteRT and C rows too)
    qemu_samples: int  # test sequences on QEMU's Cortex-M4


QUICK = Settings("quick", epochs=3, hidden=64, beta=0.9, lr=5e-3, repeats=2, time_samples=16, qemu_samples=2)
FULL = Settings("full", epochs=30, hidden=64, beta=0.9, lr=5e-3, repeats=7, time_samples=200, qemu_samples=50)


def measure(s: Settings, work: Path) -> dict:
    from edgesnn.backends.mcu.build import run as run_c
    from edgesnn.backends.mcu.sequences import verify_sequences
    from edgesnn.backends.tflite import state as tfl_state
    from edgesnn.backends.tflite.runtime import LITERT_REFERENCE

    torch.set_num_threads(1)
    ds = datasets.load(DATA, temporal=True)
    T = int(ds.steps)
    x, y = torch.as_tensor(ds.x_test, dtype=torch.float32), ds.y_test.numpy()
    x_nhwc = datasets.to_nhwc(ds.x_test.numpy().astype(np.float32))

    # edgesnn: its trainer (the CLI's train), then its exports
    ckpt = work / "ckpt"
    t0 = time.perf_counter()
    metrics = pipeline.train_model("temporal-dense", DATA, s.epochs, ckpt, lr=s.lr, seed=0,
                                   model_kwargs={"hidden": s.hidden, "beta": s.beta, "readout_beta": s.beta})
    edgesnn_train_s = time.perf_counter() - t0
    ir_path = pipeline.export_model(ckpt, "ir", work / "ir")
    tflite_path = pipeline.export_model(ckpt, "tflite", work / "tflite")
    projects = {mode: pipeline.export_model(ckpt, "mcu", work / f"mcu-{mode}", board=BOARD, event_driven=mode)
                for mode in ("none", "all")}
    graph = load_ir(ir_path)
    xq = st.quantize_sequence(graph, x_nhwc)
    out = graph.outputs[0]
    golden = st.run_sequence(graph, xq)[out]

    # snnTorch: the same layers, its BPTT loop, the same T and epochs
    net = snntorch_temporal.LeakyDense(ds.frame_shape, ds.num_classes, hidden=s.hidden, beta=s.beta,
                                       readout_beta=s.beta, seed=0)
    t0 = time.perf_counter()
    snntorch_temporal.train(net, ds.x_train, ds.y_train, s.epochs, lr=s.lr, seed=0)
    snntorch_train_s = time.perf_counter() - t0

    acc = {"snntorch": snntorch_temporal.accuracy(net, x, y), "edgesnn_torch": metrics["test_accuracy"],
           "golden": float((golden.argmax(1) == y).mean())}
    steps, _ = tfl_state.run_sequences(tflite_path, graph, xq, LITERT_REFERENCE)
    litert = tfl_state.readout(graph, steps)[0]
    exact = {"litert": int((litert != golden).reshape(len(xq), -1).any(1).sum())}
    acc["litert"] = float((litert.argmax(1) == y).mean())
    mcu = {}
    for mode, project in projects.items():
        host = verify_sequences(project, None, xq=xq, trust_code=True, y=y)  # the whole test split, every step
        exact[f"c_{mode}"] = host["mismatches"]
        acc[f"c_{mode}"] = host.get("accuracy")
        arm = verify_sequences(project, None, xq=xq, qemu=True, samples=s.qemu_samples, trust_code=True)
        r = arm["runs"]["arm"]
        mcu[mode] = {"instructions_per_step": r["instructions_per_step"], "steps": r["stats"]["samples"],
                     "mismatches": r["mismatches"], "machine": r["machine"], "library": r["library_sizes"],
                     "state_bytes": arm["state_bytes"], "arena_bytes": arm["arena_bytes"],
                     "const_bytes": arm["const_bytes"]}

    # host throughput, interleaved
    n = s.time_samples
    singles_t = [x[i:i + 1] for i in range(n)]
    singles_ir = [x_nhwc[i:i + 1] for i in range(n)]
    batch_t, batch_ir, batch_q = x[:BATCH], x_nhwc[:BATCH], xq[:BATCH]
    out_spec = graph.tensors[out]
    size = int(np.prod(out_spec.shape))
    frames = xq[:n].reshape(n * T, -1)

    litert_step = litert_stepper(tflite_path, graph)
    for i in range(min(n, 4)):  # the timed loop computes what was compared above
        got = np.stack([step[0].reshape(steps[0].shape[2:]) for step in litert_step(xq[i])])
        if not np.array_equal(got, steps[0][i]):
            raise SystemExit(f"the timed LiteRT loop differs from run_sequences on test sequence {i}")

    def c_pass(project):
        def one() -> float:
            _, stats = run_c(project, "host", frames, out_spec.dtype, size)
            if not stats["unit"].startswith("ns"):
                raise SystemExit(f"{project}: the host harness counts {stats['unit']}, not ns")
            return stats["total"] / stats["samples"] * T / 1e9  # ns per edgesnn_step -> s per sequence
        return one

    load_before = os.getloadavg()
    with torch.no_grad():
        runs = interleaved({
            "snntorch_b1": per_sample(net, singles_t), "snntorch_b64": batched(net, batch_t, len(batch_t)),
            "golden_b1": per_sample(graph.run_sequence, singles_ir),
            "golden_b64": batched(graph.run_sequence, batch_ir, len(batch_ir)),
            "litert_b1": per_sample(litert_step, xq[:n]), "litert_b64": per_sample(litert_step, batch_q),
            "c_none": c_pass(projects["none"]), "c_all": c_pass(projects["all"]),
        }, s.repeats)
    load_after = os.getloadavg()
    sps = {k: 1.0 / median(v) for k, v in runs.items()}
    macs = sum(int(np.prod(op.weight.shape)) for op in graph.ops if op.kind == "dense")
    return {"T": T, "accuracy": acc, "mismatches": exact, "sps": sps, "runs_s_per_sequence": runs, "mcu": mcu,
            "train_s": {"edgesnn": edgesnn_train_s, "snntorch": snntorch_train_s}, "macs_per_step": macs,
            "frame_shape": list(ds.frame_shape), "classes": int(ds.num_classes), "test_samples": int(len(y)),
            "train_samples": int(len(ds.y_train)), "time_samples": n,
            "load_timing": [load_before, load_after]}


def litert_stepper(path: Path, graph):
    """One sequence through one LiteRT interpreter (reference kernels) made once, as an application runs it:
    zero states, then per step set the frame and the states, invoke, read the outputs and feed the states
    back (what ``tflite/state.run_sequences`` does, without loading the file on every call)."""
    from edgesnn.backends.tflite import runtime as rt
    from edgesnn.backends.tflite.state import state_shape

    interp = rt.interpreter_for(path, reference=True)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    frame_shape = state_shape(graph.tensors[graph.input].shape)
    zeros = [np.zeros(d["shape"], d["dtype"]) for d in ins[1:]]
    n_out = len(graph.outputs)

    def run(sequence: np.ndarray) -> list[np.ndarray]:
        states, got = zeros, []
        for frame in sequence:
            interp.set_tensor(ins[0]["index"], frame.reshape(frame_shape))
            for d, v in zip(ins[1:], states):
                interp.set_tensor(d["index"], v)
            interp.invoke()
            step = [interp.get_tensor(d["index"]) for d in outs]
            got.append(step[:n_out])
            states = step[n_out:]
        return got
    return run


ROWS = (  # key, implementation, batch, the snnTorch row it is compared with
    ("snntorch_b1", "snnTorch (the alternative)", "1", "snntorch_b1"),
    ("golden_b1", "edgesnn IR, golden interpreter", "1", "snntorch_b1"),
    ("litert_b1", "edgesnn .tflite, LiteRT reference kernels", "1", "snntorch_b1"),
    ("c_none", "edgesnn C, dense kernels (host build)", "1", "snntorch_b1"),
    ("c_all", "edgesnn C, spike-driven kernels (host build)", "1", "snntorch_b1"),
    ("snntorch_b64", "snnTorch (the alternative)", str(BATCH), "snntorch_b64"),
    ("golden_b64", "edgesnn IR, golden interpreter", str(BATCH), "snntorch_b64"),
    ("litert_b64", "edgesnn .tflite, LiteRT reference kernels", f"{BATCH}, one by one (the file's batch is 1)",
     "snntorch_b64"),
)


def how(key: str) -> str:
    return {
        "snntorch": f"snntorch {metadata.version('snntorch')} Leaky, float32, torch {torch.__version__} eager, "
                    "no_grad, 1 thread",
        "golden": "`Graph.run_sequence`: numpy integers, float frames quantized inside",
        "litert": "ai-edge-litert reference kernels, one interpreter, one invoke per step, the state fed back "
                  "from Python",
        "c": "`make host` (cc -O2); the harness's timer around each `edgesnn_step`, x T",
    }[key.split("_")[0]]


def accuracy_of(key: str, r: dict) -> str:
    a = r["accuracy"][{"snntorch": "snntorch", "golden": "golden", "litert": "litert"}.get(key.split("_")[0], key)]
    return "- (differs from the IR)" if a is None else f"{a:.4f}"


def exact_of(key: str, r: dict) -> str:
    name = key.split("_")[0]
    if name == "snntorch":
        return "- (float)"
    if name == "golden":
        return "the reference"
    k = "litert" if name == "litert" else key
    return f"{r['mismatches'][k]} of {r['test_samples']}"


def table(r: dict) -> str:
    lines = ["| implementation | how it runs | batch | test accuracy | sequences differing from the IR | "
             "sequences/s (median) | vs snnTorch, same batch |", "|---|---|---|---|---|---|---|"]
    for key, impl, batch, base in ROWS:
        lines.append(f"| {impl} | {how(key)} | {batch} | {accuracy_of(key, r)} | {exact_of(key, r)} | "
                     f"{r['sps'][key]:,.0f} | {r['sps'][key] / r['sps'][base]:.2f}x |")
    return "\n".join(lines)


def mcu_table(r: dict) -> str:
    lines = ["| kernels | sequences on QEMU (steps) | sequences differing from the IR (every step) | "
             "Cortex-M4 instructions per step | per sequence (x T) | instructions per MAC of the dense form | "
             "model .text+.data / .bss (library) | "
             "state bytes | snnTorch |", "|---|---|---|---|---|---|---|---|---|"]
    for mode, label in (("none", "dense"), ("all", "spike-driven")):
        m = r["mcu"][mode]
        lib = m["library"]
        lines.append(f"| {label} | {m['steps'] // r['T']} ({m['steps']}) | {m['mismatches']} | "
                     f"{m['instructions_per_step']:,} | {m['instructions_per_step'] * r['T']:,} | "
                     f"{m['instructions_per_step'] / r['macs_per_step']:.2f} | {lib['flash']:,} / {lib['bss']:,} | "
                     f"{m['state_bytes']} | no MCU path |")
    return "\n".join(lines)


def section(r: dict, s: Settings, m: dict, v: dict, seconds: float, stamp: str) -> str:
    acc = r["accuracy"]
    gap = acc["golden"] - acc["snntorch"]
    sps = r["sps"]
    cpu_load = ", ".join(f"{a:.2f}" for a in m["load_average_start"])
    timing_load = " / ".join(", ".join(f"{a:.2f}" for a in la) for la in r["load_timing"])
    tools = ("torch", "numpy", "snntorch", "ai-edge-litert", "cc", "arm-none-eabi-gcc", "qemu-system-arm")
    vers = ", ".join(v[k] for k in tools if v.get(k))
    quick = " (`--quick`: a tiny run, not a result)" if s.mode == "quick" else ""
    return "\n".join([
        f"Regenerated by `scripts/bench_temporal.py{' --quick' if s.mode == 'quick' else ''}` on {stamp} in "
        f"{seconds:.0f} s. **Mode: {s.mode}**{quick}.",
        "",
        f"- Model: `temporal-dense` on `{DATA}` (T = {r['T']}, frames {'x'.join(map(str, r['frame_shape']))}, "
        f"{r['classes']} classes; {r['train_samples']} train / {r['test_samples']} test sequences): flatten - Linear "
        f"{s.hidden} - LIF (beta {s.beta}, threshold 1, reset by subtraction) - Linear {r['classes']} - LI readout "
        f"(beta {s.beta}), logits = the readout membrane's mean over T. "
        f"edgesnn: 12-bit membrane, int8 weights, trained with `edgesnn.temporal.train` (the CLI's `train`); "
        f"snnTorch: the same layers in float32 (`scripts/snntorch_temporal.py`: `snntorch.Leaky`, fast-sigmoid "
        f"surrogate of edgesnn's slope, a non-resetting Leaky as the readout), trained with its BPTT loop. Both: "
        f"{s.epochs} epochs, Adam lr {s.lr}, cosine schedule, batch 64, seed 0.",
        f"- Accuracy (whole test split): edgesnn {acc['golden']:.4f} (IR = torch's integer forward "
        f"{acc['edgesnn_torch']:.4f}), snnTorch {acc['snntorch']:.4f}: edgesnn {gap:+.4f}. Training: edgesnn "
        f"{r['train_s']['edgesnn']:.1f} s, snnTorch {r['train_s']['snntorch']:.1f} s (one run each).",
        f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, shared with other work: load average "
        f"(1, 5, 15 min) {cpu_load} at the start, {timing_load} before / after the timed passes. Threads: one "
        f"everywhere (OMP_NUM_THREADS={m['threads']['OMP_NUM_THREADS']}, torch {m['torch_threads']}, LiteRT "
        f"num_threads=1).",
        f"- Versions: Python {m['python']}, {vers}.",
        f"- Timing: {s.repeats} passes per contender after one untimed warm-up, interleaved; median. Batch 1: the "
        f"first {r['time_samples']} test sequences one at a time; batch {BATCH}: the first {BATCH} in one call. The C "
        f"rows time only the step calls in a C loop; the Python rows include the Python call per sequence. "
        f"Sequences differing: every readout integer over the whole test split (the C: every step's output too).",
        "",
        table(r),
        "",
        f"**MCU (Cortex-M4, QEMU mps2-an386, `-icount shift=0`):** the same projects built with arm-none-eabi-gcc "
        f"(`make arm`), the first {r['mcu']['none']['steps'] // r['T']} test sequences, each step's output compared "
        f"with the IR. MACs per step of the dense form: {r['macs_per_step']:,}.",
        "",
        mcu_table(r),
        "",
        f"Headline: host batch 1, sequences/s, edgesnn C (spike-driven) / snnTorch: "
        f"{sps['c_all'] / sps['snntorch_b1']:.2f}x, and / snnTorch at batch {BATCH}: "
        f"{sps['c_all'] / sps['snntorch_b64']:.2f}x; golden interpreter / snnTorch at batch 1: "
        f"{sps['golden_b1'] / sps['snntorch_b1']:.2f}x; on the Cortex-M4, "
        f"{r['mcu']['all']['instructions_per_step']:,} instructions per step (spike-driven), "
        f"{r['mcu']['none']['instructions_per_step']:,} (dense).",
    ])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny run (3 epochs, few sequences): for tests")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    ap.add_argument("--work", type=Path, help="keep checkpoints and exports here (default: a temporary folder)")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    m, v = machine(), versions()
    t0 = time.perf_counter()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        r = measure(s, args.work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(s, Path(tmp))
    seconds = time.perf_counter() - t0
    m["load_average_end"] = os.getloadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    replace_section(args.out, SECTION, section(r, s, m, v, seconds, stamp), header=HEADING)
    result = {"settings": asdict(s), "machine": m, "versions": v, "seconds": seconds, **r}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=plain))
    print(f"wrote the {SECTION} section of {args.out} ({s.mode}, {seconds:.0f} s)")
    return result


if __name__ == "__main__":
    main()
