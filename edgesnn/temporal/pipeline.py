"""The CLI's steps (train, export, verify, inspect) for a temporal model: one place where
:mod:`edgesnn.pipeline` and the IR target hand a model over sequences to :mod:`edgesnn.temporal`.

A temporal checkpoint is an ordinary one (safetensors + config.json) whose config names a model of
:data:`edgesnn.models.TEMPORAL` and records ``temporal: {steps, frame_shape, readout}``: export needs no
data (the input scale is in the state dict), verify compares the IR with torch's integer forward over
the test sequences, every output integer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesnn import checkpoint, models, threads
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.temporal.export import export
from edgesnn.temporal.train import accuracy, train


def is_temporal(config: dict) -> bool:
    """Whether a checkpoint's config describes a model over sequences."""
    return config.get("model") in models.TEMPORAL


def load_sequences(spec: str, model_name: str) -> datasets.Dataset:
    """A data set with a time axis, or one line saying the model takes sequences."""
    ds = datasets.load(spec, temporal=True)
    if ds.steps is None:
        raise EdgesnnError(f"model {model_name!r} runs over sequences (N, T, ...), but data set {spec!r} has static "
                           f"samples {tuple(ds.in_shape)}; use digits-events, an .npz with x (N, T, ...) or an event "
                           f"recording (nmnist:DIR, dvsgesture:DIR, shd:DIR)")
    return ds


def train_checkpoint(model_name: str, data_spec: str, epochs: int, out: Path, lr: float, seed: int,
                     model_kwargs: dict | None, on_epoch=None) -> dict:
    """Train a temporal zoo model by BPTT and write its checkpoint (the caller holds the folder's writer)."""
    if epochs < 1:
        raise EdgesnnError(f"--epochs must be at least 1, got {epochs}")
    ds = load_sequences(data_spec, model_name)
    kwargs = models.resolved_kwargs(model_name, {**models.default_kwargs(model_name, ds.frame_shape, ds.num_classes, 1),
                                                 "seed": seed, **(model_kwargs or {})})
    models.check_training_size(model_name, kwargs)
    model = models.build(model_name, kwargs)
    history = train(model, ds.x_train, ds.y_train, epochs=epochs, lr=lr, seed=seed, on_epoch=on_epoch)
    metrics = {"train_accuracy": accuracy(model, ds.x_train, ds.y_train),
               "test_accuracy": accuracy(model, ds.x_test, ds.y_test), "test_samples": len(ds.x_test),
               "epochs": epochs, "loss": history.loss, "threads": threads.current()}
    config = {"model": model_name, "kwargs": kwargs, "input_shape": list(ds.in_shape), "num_classes": ds.num_classes,
              "data": datasets.recorded(data_spec),
              "temporal": {"steps": int(ds.steps), "frame_shape": list(ds.frame_shape), "readout": model.readout}}
    checkpoint.save(model, config, out, metrics)
    return metrics


def steps_of(config: dict, where) -> int:
    steps = (config.get("temporal") or {}).get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EdgesnnError(f"{where}: a temporal checkpoint records its sequence length as temporal.steps, "
                           f"got {steps!r}")
    return steps


def graph_of(model, config: dict, ckpt, meta: dict):
    """The temporal IR graph of a loaded checkpoint, naming where it came from."""
    graph = export(model, steps_of(config, Path(ckpt) / checkpoint.CONFIG))
    graph.meta.update(meta)
    return graph


def verify_ir(artifact: Path, graph, data_spec: str | None, ckpt: Path | None, samples: int | None,
              trust_code) -> dict:
    """The IR's readout vs torch's integer forward (``SpikingSequence.integers``) over the test sequences,
    every output integer; a verify result as every target's (edgesnn.verdict reads its ``runtimes``)."""
    from edgesnn import artifact_data, pipeline

    source = ckpt or pipeline.named_checkpoint(artifact, graph.meta.get("source", {}).get("checkpoint"))
    if source is None:
        raise EdgesnnError(f"{artifact}: the IR does not name its checkpoint; pass --checkpoint DIR")
    model, config = checkpoint.load(source, trust_code=trust_code)
    if not is_temporal(config):
        raise EdgesnnError(f"{artifact}: a graph over sequences, but checkpoint {source} holds a static model "
                           f"({config['model']})")
    spec = artifact_data.resolve(artifact, data_spec, graph=graph, ckpt=source)
    ds = load_sequences(spec, config["model"])
    pipeline.check_input_shape(config, ds, spec, source)
    x, y = ds.x_test[:samples], ds.y_test[:samples].numpy()
    if not len(x):
        raise EdgesnnError(f"{spec}: the test split is empty")
    (output,) = graph.outputs
    ir_out = np.asarray(graph.run_sequence(datasets.to_nhwc(x))[output])
    torch_out = model.integers(torch.as_tensor(x, dtype=torch.float32))["readout"]
    if ir_out.shape != torch_out.shape:
        raise EdgesnnError(f"{artifact}: readout of shape {ir_out.shape[1:]}, torch's {torch_out.shape[1:]}")
    differ = ir_out.astype(np.int64) != torch_out.astype(np.int64)
    per_sample = differ.reshape(len(x), -1).any(1)
    ir_pred, torch_pred = ir_out.argmax(1), torch_out.argmax(1)
    mismatches = int(per_sample.sum())
    row = {"runtime": "torch integer forward (SpikingSequence.integers)", "mismatches": mismatches,
           "mismatched_elements": int(differ.sum()), "argmax_mismatches": int((ir_pred != torch_pred).sum())}
    return {"artifact": str(artifact), "runtime": "edgesnn golden interpreter (numpy, integer-only, sequences)",
            "data": spec, "samples": int(len(y)), "steps": graph.sequence.steps, "mismatches": mismatches,
            "mismatched_elements": row["mismatched_elements"], "agreement": 1.0 - mismatches / len(y),
            "accuracy": float((ir_pred == y).mean()), "torch_accuracy": float((torch_pred == y).mean()),
            "checkpoint": str(source), "runtimes": {"torch-integers": row}}


def describe_states(graph) -> dict:
    """What inspect shows of a temporal graph: its steps, readout and states."""
    return {"steps": graph.sequence.steps, "readout": dict(graph.sequence.readout),
            "states": {name: {"shape": list(s.shape), "dtype": s.dtype, "bits": s.bits, "scale": s.scale,
                              "overflow": s.overflow} for name, s in graph.states.items()}}
