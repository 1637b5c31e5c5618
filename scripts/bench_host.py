#!/usr/bin/env python
"""Table 1 of scripts/bench.py: host inference, the SFA integer network against snnTorch's LIF network.

edgesnn's spiking CNN, trained with SFA in one timestep and exported to the integer IR, runs as the
torch model, the golden interpreter and the compiled C project (dense and spike-driven kernels); the
same layers as an snnTorch network of Leaky neurons (scripts/snntorch_baseline.py) are trained for
T = D steps with BPTT. Accuracy over the digits test split, samples per second at batch 1 and batched.

Usage: .venv/bin/python scripts/bench_host.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only host``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import Work, Settings, batched, c_host_pass, interleaved, median, per_sample  # first: threads

import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from snntorch_baseline import LifCNN  # noqa: E402

from edgesnn import checkpoint, train  # noqa: E402
from edgesnn import data as datasets  # noqa: E402
from edgesnn.ir import load as load_ir  # noqa: E402

KEY, NUMBER = "host", 1
TITLE = "Host inference: SFA integer network vs snnTorch LIF (T = D)"


def measure(work: Work, s: Settings) -> dict:
    from edgesnn.backends.mcu.build import run as run_c

    ds = datasets.digits()
    ckpt = work.checkpoint("cnn", s.epochs)
    model, config = checkpoint.load(ckpt)
    D = int(config["D"])
    graph = load_ir(work.export(ckpt, "ir"))
    x, y = ds.x_test, ds.y_test.numpy()
    x_nhwc = datasets.to_nhwc(x)
    xq = graph.quantize_input(x_nhwc)
    out_spec = graph.tensors[graph.outputs[0]]
    size = int(np.prod(out_spec.shape))

    torch.manual_seed(0)
    lif = LifCNN.like(config["kwargs"], T=D)
    t0 = time.perf_counter()
    train.train(lif, ds, s.epochs, lr=3e-3, seed=0)
    lif_train_s = time.perf_counter() - t0
    lif.eval()
    model.eval()

    acc = {"snntorch": train.evaluate(lif, x, ds.y_test), "sfa_torch": train.evaluate(model, x, ds.y_test),
           "golden": float((graph.run(x_nhwc).argmax(1) == y).mean())}
    projects = {mode: work.mcu(ckpt, mode) for mode in ("none", "all")}
    for mode, project in projects.items():
        got, _ = run_c(project, "host", xq, out_spec.dtype, size)
        acc[f"c_{mode}"] = float((got.argmax(1) == y).mean())

    n = s.time_samples
    singles_t = [x[i:i + 1] for i in range(n)]
    singles_ir = [x_nhwc[i:i + 1] for i in range(n)]
    with torch.no_grad():
        runs = interleaved({
            "snntorch_b1": per_sample(lif, singles_t), "snntorch_batch": batched(lif, x, len(x)),
            "sfa_torch_b1": per_sample(model, singles_t), "sfa_torch_batch": batched(model, x, len(x)),
            "golden_b1": per_sample(graph.run, singles_ir), "golden_batch": batched(graph.run, x_nhwc, len(x)),
            "c_none": c_host_pass(projects["none"], xq[:n], out_spec.dtype, size),
            "c_all": c_host_pass(projects["all"], xq[:n], out_spec.dtype, size),
        }, s.repeats)
    sps = {k: 1.0 / median(v) for k, v in runs.items()}
    rows = []

    def row(key, impl, how, T, accuracy, batch, base):
        rows.append({"key": key, "implementation": impl, "how": how, "T": T, "accuracy": accuracy, "batch": batch,
                     "samples_per_s": sps[key], "vs_snntorch": sps[key] / sps[base], "runs_s_per_sample": runs[key]})

    lif_how = (f"snntorch {metadata.version('snntorch')} Leaky (beta 0.9, threshold 1, subtract reset, ATan "
               f"surrogate), trained {s.epochs} epochs with BPTT over T = {D}; torch no_grad, 1 thread")
    sfa_how = "the edgesnn float/fake-quant torch model the IR was exported from (MultiSpike, one timestep)"
    gold_how = "edgesnn.ir Graph.run: numpy integer-only, float input quantized inside"
    for batch, suffix in (("1", "b1"), (str(len(x)), "batch")):
        base = f"snntorch_{suffix}"
        row(base, "snnTorch LIF CNN (the alternative)", lif_how, D, acc["snntorch"], batch, base)
        row(f"sfa_torch_{suffix}", "edgesnn SFA CNN in torch (reference)", sfa_how, 1, acc["sfa_torch"], batch, base)
        row(f"golden_{suffix}", "SFA integer network, golden interpreter", gold_how, 1, acc["golden"], batch, base)
    for mode, label in (("none", "dense kernels"), ("all", "spike-driven kernels")):
        row(f"c_{mode}", f"SFA integer network, compiled C ({label})",
            "generated C project, `make host` (cc -O2), harness timer around each edgesnn_infer call", 1,
            acc[f"c_{mode}"], "1", "snntorch_b1")
    train_s = {"snntorch": lif_train_s, "sfa": work.train_seconds[ckpt.name]}
    for w in rows:
        w["train_s"] = train_s["snntorch" if w["key"].startswith("snntorch") else "sfa"]
    return {"rows": rows, "D": D, "time_samples": n, "test_samples": int(len(x)), "repeats": s.repeats,
            "train_s": train_s, "epochs": s.epochs}


def table(r: dict) -> str:
    lines = ["| implementation | how it runs | timesteps | training s (one run) | accuracy (digits test, 450) | batch "
             "| samples/s (median) | vs snnTorch, same batch |", "|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        lines.append(f"| {w['implementation']} | {w['how']} | {w['T']} | {w['train_s']:.1f} | {w['accuracy']:.4f} | "
                     f"{w['batch']} | {w['samples_per_s']:.0f} | {w['vs_snntorch']:.2f}x |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    return (f"The spiking CNN (edgesnn's `cnn`: conv 32 - conv 64 - dense 128 - dense 10, D = {r['D']}) "
            f"trained with SFA in one timestep and exported to the integer IR, against the same layers as an snnTorch "
            f"network of Leaky neurons trained for T = D = {r['D']} steps with surrogate gradients (same "
            f"optimizer, schedule, batch size and epochs; `scripts/snntorch_baseline.py`; direct input, its "
            f"static first conv computed once). Accuracy over the whole test split; throughput over the first "
            f"{r['time_samples']} test samples at batch 1, or the whole split in one call. The C rows time "
            f"only the inference call in a C loop; the Python rows include the Python call per sample.")


def headline(r: dict) -> list[tuple[str, str, str]]:
    h = {w["key"]: w for w in r["rows"]}
    D = r["D"]
    return [
        (f"Host, batch 1, samples/s: SFA compiled C (spike-driven kernels) / snnTorch LIF CNN at T = {D}",
         f"{h['c_all']['vs_snntorch']:.2f}x", f"above 1: edgesnn faster; accuracy {h['c_all']['accuracy']:.4f} "
         f"vs {h['snntorch_b1']['accuracy']:.4f} (table 1)"),
        ("Host, batch 1, samples/s: SFA compiled C (dense kernels) / snnTorch",
         f"{h['c_none']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"),
        ("Host, batch 1, samples/s: SFA golden interpreter (numpy) / snnTorch",
         f"{h['golden_b1']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"),
        (f"Host, batch {h['golden_batch']['batch']}, samples/s: SFA golden interpreter / snnTorch",
         f"{h['golden_batch']['vs_snntorch']:.2f}x", "above 1: edgesnn faster (table 1)"),
        (f"Training time: snnTorch BPTT over T = {D} / SFA one timestep, same epochs",
         f"{r['train_s']['snntorch'] / r['train_s']['sfa']:.2f}x", "above 1: SFA trains faster; one run each (table 1)"),
    ]


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
