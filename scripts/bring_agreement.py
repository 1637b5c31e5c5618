#!/usr/bin/env python
"""Bring trained models in without retraining: how often the IR's argmax agrees with torch's for
models written and trained the snnTorch and SpikingJelly way (tests/tutorial_nets.py). Writes the
table into docs/bring-your-model.md (between the bring-agreement markers).

Usage: .venv/bin/python scripts/bring_agreement.py [--epochs 20] [--seeds 0,1,2] [--threads 1]

Each model is trained with its library's own loop for ``--epochs`` on digits, per seed, and its
state dict brought in with ``train --epochs 0`` (pipeline.train_model); the checkpoint is exported
at int8 and at int16 streams and verified over the whole test split. To tell apart what the
exporter computes from what rounding the float weights to 8 bits does (the weights were trained in
float; nothing here retrains them), the torch model is also run with the weights the exporter
uses: traced and rewritten as export does, each convolution's or dense layer's weights (BatchNorm
folded in) on the exporter's per-channel symmetric 8-bit levels (:func:`eight_bit_weights`). The
last columns fine-tune each brought-in checkpoint with ``quantize --method int8`` (edgesnn's 8-bit
QAT, which is retraining) and verify its IR. The `--weight-bits 16` columns export the brought-in
checkpoint with its float weights at up to 16 bits, as two int8 planes (edgesnn/export_planes.py),
which is not retraining. Numbers come from this run only.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from markdown_section import replace_section
from safetensors.torch import save_file
from torch import fx, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tutorial models' module, importable as the CLI would import it

import tutorial_nets as nets  # noqa: E402

from edgesnn import checkpoint, data, ir, pipeline, pool_order, threads  # noqa: E402
from edgesnn.export import trace  # noqa: E402
from edgesnn.quantize import Options, quantize_checkpoint  # noqa: E402

QAT_EPOCHS = 2

IF = "spikingjelly.activation_based.neuron.IFNode"
# name: (factory, kwargs, the library's train/eval settings, --neuron-map, what it is)
MODELS = {
    "snntorch": ("tutorial_nets:snntorch_net", {}, nets.SNNTORCH, {"snntorch.Leaky": "sfa", "lif3": "readout"},
                 "snnTorch: conv -> F.max_pool2d -> Leaky, output Leaky read out"),
    "spikingjelly-maxpool-first": ("tutorial_nets:spikingjelly_net", {}, nets.SPIKINGJELLY, {IF: "sfa"},
                                   "SpikingJelly: Conv2d -> BN -> MaxPool2d -> IFNode"),
    "spikingjelly-neuron-first": ("tutorial_nets:spikingjelly_neuron_first", {}, nets.SPIKINGJELLY, {IF: "sfa"},
                                  "SpikingJelly: Conv2d -> BN -> IFNode -> MaxPool2d"),
    "spikingjelly-avgpool-first": ("tutorial_nets:spikingjelly_net", {"pool": "avg"}, nets.SPIKINGJELLY, {IF: "sfa"},
                                   "SpikingJelly: Conv2d -> BN -> AvgPool2d -> IFNode"),
    "spikingjelly-neuron-avgpool": ("tutorial_nets:spikingjelly_net", {"pool": "avg", "pool_first": False},
                                    nets.SPIKINGJELLY, {IF: "sfa"}, "SpikingJelly: Conv2d -> BN -> IFNode -> AvgPool2d"),
}


def eight_bit_weights(model: nn.Module) -> fx.GraphModule:
    """``model`` in float64 as the exporter reads it (traced, pools moved or folded as export does),
    with every Conv2d / Linear weight on the exporter's post-training grid: per output channel,
    round(w / s) * s with s = max |w| / 127, where w includes a following BatchNorm's scale
    gamma / sqrt(var + eps), as the exporter folds it. Biases and activations stay float."""
    gm = pool_order.rewrite(trace(copy.deepcopy(model).eval())).double()
    for node in gm.graph.nodes:
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        users = list(node.users)
        bn = gm.get_submodule(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
        shape = (-1,) + (1,) * (m.weight.dim() - 1)
        k = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach() if isinstance(bn, nn.BatchNorm2d) \
            else torch.ones(m.weight.shape[0], dtype=torch.float64)
        with torch.no_grad():
            w = m.weight * k.view(shape)
            s = w.reshape(w.shape[0], -1).abs().amax(1) / 127
            s = torch.where(s > 0, s, torch.ones_like(s)).view(shape)
            m.weight.copy_(torch.round(w / s).clamp(-127, 127) * s / k.view(shape))
    return gm


def predictions(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def measure(name: str, seed: int, epochs: int, tmp: Path) -> dict:
    """One model, one seed: the library's accuracy, then what edgesnn makes of its weights."""
    factory, kwargs, lib, neuron_map, _ = MODELS[name]
    ds = data.digits()
    torch.manual_seed(seed)
    build = getattr(nets, factory.split(":")[1])
    net = nets.train(build(ds.in_shape, ds.num_classes, **kwargs), ds.x_train, ds.y_train, epochs, **lib)
    row = {"library": nets.accuracy(net, ds.x_test, ds.y_test, **lib)}
    weights, ck = tmp / f"{name}-{seed}.safetensors", tmp / f"{name}-{seed}"
    save_file(net.state_dict(), str(weights))
    row["brought"] = pipeline.train_model(factory, "digits", 0, ck, model_kwargs=kwargs, neuron_map=neuron_map,
                                          weights=weights)["test_accuracy"]
    for stream in ("int8", "int16"):
        path = pipeline.export_model(ck, "ir", tmp / f"{ck.name}-{stream}", stream_dtype=stream, trust_code=True)
        row[stream] = pipeline.verify(path, "digits", trust_code=True)
        row[f"{stream}_pred"] = ir.load(path).run(data.to_nhwc(ds.x_test)).argmax(1)
    for stream in ("int8", "int16"):  # the float weights at up to 16 bits (two int8 planes: export_planes.py)
        path = pipeline.export_model(ck, "ir", tmp / f"{ck.name}-{stream}-planes", stream_dtype=stream,
                                     weight_bits=16, trust_code=True)
        row[f"planes_{stream}"] = pipeline.verify(path, "digits", trust_code=True)
    model, _ = checkpoint.load(ck, trust_code=True)
    torch_pred = predictions(model, ds.x_test)
    rounded = predictions(eight_bit_weights(model), ds.x_test.double())
    row["rounding"] = int((torch_pred != rounded).sum())
    row["exporter"] = {s: int((row[f"{s}_pred"] != rounded).sum()) for s in ("int8", "int16")}
    # The remedy when the float weights' rounding costs too much: edgesnn's 8-bit QAT fine-tuning (retraining).
    quantize_checkpoint(ck, "int8", tmp / f"{ck.name}-qat", Options(epochs=QAT_EPOCHS), trust_code=True)
    path = pipeline.export_model(tmp / f"{ck.name}-qat", "ir", tmp / f"{ck.name}-qat-ir", trust_code=True)
    row["qat"] = pipeline.verify(path, "digits", trust_code=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fast on a shared machine, and the "
                    "same models on any machine)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bring-your-model.md")
    args = ap.parse_args()
    threads.use(args.threads)
    rows = ["| model | seed | library accuracy | brought in (torch) | IR accuracy (int8) | IR vs torch: int8 streams "
            "| int16 streams | torch vs torch with 8-bit weights | IR vs torch with 8-bit weights: int8 | int16 "
            "| `--weight-bits 16`: IR vs torch, int8 streams | int16 streams "
            f"| after `quantize --method int8 --epochs {QAT_EPOCHS}`: IR vs torch | its IR accuracy |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()
                r = measure(name, seed, args.epochs, Path(tmp))
                n = r["int8"]["samples"]
                cells = [f"{r['library']:.4f}", f"{r['brought']:.4f}", f"{r['int8']['accuracy']:.4f}",
                         *(f"{r[s]['mismatches']} / {n} ({r[s]['agreement']:.4f})" for s in ("int8", "int16")),
                         f"{r['rounding']} / {n}", *(f"{r['exporter'][s]} / {n}" for s in ("int8", "int16")),
                         *(f"{r[f'planes_{s}']['mismatches']} / {n} ({r[f'planes_{s}']['agreement']:.4f})"
                           for s in ("int8", "int16")),
                         f"{r['qat']['mismatches']} / {n}", f"{r['qat']['accuracy']:.4f}"]
                rows.append(f"| {name} | {seed} | " + " | ".join(cells) + " |")
                print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    legend = "\n".join(f"- `{name}`: {m[4]} (`{m[0]}`" + "".join(f", {k}={v}" for k, v in m[1].items()) + ")"
                       for name, m in MODELS.items() if name in args.models.split(","))
    body = (f"digits test split; each model trained {args.epochs} epochs with its library's own loop "
            f"(`tests/tutorial_nets.py`), brought in with `--epochs 0`, {threads.current()} torch thread(s); "
            f"regenerated by `scripts/bring_agreement.py`. A mismatch is a test sample whose argmax differs. "
            f"*Torch with 8-bit weights* is the brought-in model with each layer's weights (BatchNorm folded) "
            f"rounded as the exporter rounds them and everything else in float. `--weight-bits 16` exports the same "
            f"checkpoint with the float weights at up to 16 bits (two int8 planes; no training). The last two columns fine-tune the "
            f"brought-in checkpoint on the 8-bit grid ({QAT_EPOCHS} epochs of edgesnn training) and export it at int8 "
            f"streams.\n\n{legend}\n\n" + "\n".join(rows))
    replace_section(args.out, "bring-agreement", body)


if __name__ == "__main__":
    main()
