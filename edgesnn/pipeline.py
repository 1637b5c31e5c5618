"""The steps the CLI runs, as library calls: train, export, verify, inspect.

Each returns plain data (dicts) so the CLI only prints, and scripts and tests read numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from edgesnn import baselines, checkpoint, models, targets, threads
from edgesnn import data as datasets
from edgesnn import weights as weight_files
from edgesnn.errors import EdgesnnError
from edgesnn.files import one_writer, replaceable_dir
from edgesnn.export import CHECK_SAMPLES, export
from edgesnn.export import check as export_check
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.ir.packing import packed_nbytes
from edgesnn.train import evaluate, train

TARGETS = targets.names()  # every target, in the order --help lists them (edgesnn.targets)
CALIBRATION_SAMPLES = 1024
# ... but at most this many input values in all (1024 CIFAR-sized images), and at least 64 images:
# calibration runs the float model over every image, and at 224 x 224 1024 images took E-SpikeFormer-T
# 151 s of a 60 s export goal (BENCHMARKS.md, "E-SpikeFormer at full width"); 64 of them take ~10 s.
CALIBRATION_VALUES = 1024 * 3 * 32 * 32
CALIBRATION_MIN_SAMPLES = 64


def calibration_samples(sample_shape) -> int:
    """How many training images calibrate an export of inputs of ``sample_shape``."""
    per_sample = max(1, math.prod(sample_shape))
    return min(CALIBRATION_SAMPLES, max(CALIBRATION_MIN_SAMPLES, CALIBRATION_VALUES // per_sample))


@one_writer
def train_model(model_name: str, data_spec: str, epochs: int, out: Path, D: int = 4, lr: float = 3e-3,
                seed: int = 0, on_epoch=None, model_kwargs: dict | None = None,
                neuron_map: dict[str, str] | None = None, weights: str | Path | None = None,
                strip_prefix: tuple[str, ...] | list[str] = ()) -> dict:
    """``model_kwargs`` override the data set's default constructor arguments (e.g. channels).
    ``model_name`` is a zoo model or a user's ``module:factory``, whose third-party neuron classes
    ``neuron_map`` maps onto edgesnn neurons (edgesnn.models.custom). The caller names them, so
    they are the code this call may import (a recipe's are checked by edgesnn.run first). The metrics
    record torch's thread count and, for a set small enough (edgesnn.baselines), the trivial baselines.
    ``weights``: a trained state dict file (safetensors or torch.save; ``strip_prefix`` removed from
    its keys) loaded into the built model (edgesnn.weights). With ``epochs`` 0 the checkpoint holds
    exactly those weights and BatchNorm statistics (evaluated, never run in train mode); otherwise
    training fine-tunes them. The metrics name the file and its sha256."""
    if model_name in models.TEMPORAL:  # over sequences: BPTT in edgesnn.temporal (no D, SFA or --weights)
        if weights is not None or neuron_map or strip_prefix:
            raise EdgesnnError(f"model {model_name!r} takes no --weights, --strip-prefix or --neuron-map")
        replaceable_dir(out, checkpoint.CONFIG)
        from edgesnn.temporal import pipeline as temporal

        return temporal.train_checkpoint(model_name, data_spec, epochs, out, lr, seed, model_kwargs, on_epoch)
    if epochs < 0 or (epochs == 0 and weights is None):
        raise EdgesnnError(f"--epochs must be at least 1, got {epochs}" + (
            ", unless --weights FILE brings trained weights (untrained, the checkpoint would hold random ones)"
            if epochs == 0 else ""))
    if strip_prefix and weights is None:
        raise EdgesnnError("--strip-prefix applies to the keys of --weights FILE, and no --weights was given")
    replaceable_dir(out, checkpoint.CONFIG)
    ds = datasets.load(data_spec)
    torch.manual_seed(seed)
    named = set(models.custom.named_code(model_name, neuron_map))
    kwargs = models.resolved_kwargs(model_name, {**models.default_kwargs(model_name, ds.in_shape, ds.num_classes, D, named),
                                                 **(model_kwargs or {})})
    if epochs:
        models.check_training_size(model_name, kwargs, neuron_map, D, trust_code=named)
    model, source = (models.build(model_name, kwargs, neuron_map, D, trust_code=named), None) if weights is None else \
        weight_files.build_loaded(model_name, kwargs, neuron_map, D, named, weights, strip_prefix)
    export_check(model, ds.x_train[:CHECK_SAMPLES])  # what export would refuse, before any epoch (eval mode only)
    metrics = train(model, ds, epochs, lr=lr, seed=seed, on_epoch=on_epoch) if epochs else {
        "train_accuracy": evaluate(model, ds.x_train, ds.y_train), "test_accuracy": evaluate(model, ds.x_test, ds.y_test),
        "test_samples": len(ds.x_test), "epochs": 0}  # eval mode only: BatchNorm statistics stay the file's
    if source is not None:
        metrics["weights"] = source
    metrics["threads"] = threads.current()  # another count may train another model (edgesnn/threads.py)
    if baselines.small_enough(ds):  # what the task demands: logistic regression and 3-NN on the same split
        metrics["baselines"] = baselines.baselines(ds)
    config = {
        "model": model_name, "kwargs": kwargs, "D": D, "neuron": "multispike", "normalize": True,
        "input_shape": list(ds.in_shape), "num_classes": ds.num_classes, "data": datasets.recorded(data_spec),
        "timesteps": 1,
    }
    if neuron_map:
        config["neuron_map"] = dict(neuron_map)
    checkpoint.save(model, config, out, metrics)
    return metrics


def default_stream_dtype(ckpt: Path) -> str:
    """The stream dtype ``export`` uses without ``--stream-dtype``: what the compression asked for, else int8."""
    return _default_stream_dtype(checkpoint.read_config(ckpt))


def _default_stream_dtype(config: dict) -> str:
    return (config.get("quantization") or {}).get("stream_dtype", "int8")


@one_writer
def export_model(ckpt: Path, target: str, out: Path, weight_bits: int = 8, stream_dtype: str | None = None,
                 board: str | None = None, source_ref: str | None = None, trust_code: models.custom.Trust = False,
                 **options) -> Path:
    """Write the artifact of ``target`` (edgesnn.targets) for the checkpoint ``ckpt`` into the folder ``out``.

    ``stream_dtype`` None: the dtype the checkpoint's streams trained at (quantize --stream-dtype), else int8.
    ``board``: a board name or YAML file, for a target that builds for one (its ``builds_for``).
    ``options``: the target's own options (its ``export_options``, listed by ``edgesnn export --help``); an
    option of another target is refused when it is strict, else ignored. ``source_ref``: how the artifact names its
    checkpoint (default: the absolute path; a relative path is read from the artifact's folder, which keeps a
    run folder relocatable and its files independent of where it is). ``trust_code``: whether the checkpoint
    may import the user code it names (see checkpoint.load)."""
    t = targets.get(target)
    options, board_spec = targets.prepared(t, board, options)  # a bad option or board fails before any work
    if Path(out).exists() and not Path(out).is_dir():
        raise EdgesnnError(f"{out}: exists and is not a folder (--out names the folder the artifact goes in)")
    if t.replaces_folder:  # it replaces the whole folder: only one it wrote
        replaceable_dir(out, t.files[0])
    model, config = checkpoint.load(ckpt, trust_code=trust_code)
    source_ref = source_ref or str(Path(ckpt).resolve())
    if config["model"] in models.TEMPORAL:  # a graph over sequences, from the state dict alone (no calibration)
        from edgesnn.temporal import pipeline as temporal

        graph = temporal.graph_of(model, config, ckpt, {"source": {"checkpoint": source_ref, "model": config["model"],
                                                                   "data": config.get("data")}})
        targets.check_takes(t, graph)
        return t.export(graph, Path(out), board_spec, options, None)
    if not config.get("data"):
        raise EdgesnnError(f"{Path(ckpt) / checkpoint.CONFIG}: records no data set, which calibration needs")
    ds = _data_for(config, config["data"], ckpt)
    data_ref = datasets.recorded(config["data"])  # a checkpoint from before paths were recorded absolute
    calibration = ds.x_train[:calibration_samples(ds.x_train.shape[1:])]
    if t.source == "torch":  # the one kind that starts from the torch model (edgesnn/from_torch)
        return t.export_from_torch(model, calibration, Path(out), {"edgesnn.checkpoint": source_ref,
                                                                   "edgesnn.data": data_ref}, options)
    meta = {"source": {"checkpoint": source_ref, "model": config["model"], "data": data_ref},
            "weight_bits": weight_bits,  # for float layers; quantized layers keep their trained bits
            "quantization": (config.get("quantization") or {}).get("method")}
    stream_dtype = stream_dtype or _default_stream_dtype(config)
    from edgesnn.backends.nir import exact_graph  # a checkpoint imported from edgesnn's NIR keeps its exact program

    graph = exact_graph(model, config, meta) or export(model, calibration, weight_bits=weight_bits, meta=meta,
                                                       stream_dtype=stream_dtype)
    targets.check_takes(t, graph)
    return t.export(graph, Path(out), board_spec, options, datasets.to_nhwc(calibration[:256]))


def verify(artifact: Path, data_spec: str | None = None, ckpt: Path | None = None, ir: Path | None = None,
           samples: int | None = None, trust_code: models.custom.Trust = False, **options) -> dict:
    """Run an artifact over the test split and compare it with what it came from: the target that
    recognizes it verifies it (:meth:`edgesnn.targets.Target.verify`): an artifact written from the IR
    against the IR's golden interpreter, every output integer (``ir``: the IR, default model.ir beside it),
    the IR itself and a torch export against torch (``ckpt``: default the checkpoint the file names).
    ``samples``: only the first N test samples where the target takes it. ``trust_code``: whether the
    checkpoint may import the user code it names, and (True only) whether a build the artifact holds may run.
    ``data_spec`` None: the data set the artifact records (edgesnn.artifact_data); the result's "data" says
    which. ``options``: the targets' verify options (``edgesnn verify --help``)."""
    return targets.verify(artifact, data_spec, ckpt, ir, samples=samples, trust_code=trust_code, **options)


def _data_for(config: dict, data_spec: str, ckpt) -> datasets.Dataset:
    """The data set, checked against the input shape the checkpoint's model takes."""
    ds = datasets.load(data_spec)
    check_input_shape(config, ds, data_spec, ckpt)
    return ds


def check_input_shape(config: dict, ds: datasets.Dataset, data_spec: str, ckpt) -> None:
    want = config.get("input_shape") or (config.get("kwargs") or {}).get("in_shape")
    if want is not None and list(ds.in_shape) != list(want):
        raise EdgesnnError(f"{data_spec}: samples of shape {tuple(ds.in_shape)}, but the model of {ckpt} takes "
                           f"{tuple(want)}")


def named_checkpoint(artifact: Path, ref: str | None) -> Path | None:
    """The checkpoint an artifact names: absolute, or relative to the artifact's folder."""
    return None if ref is None else artifact.parent / ref


def inspect(path: Path) -> dict:
    """Layers, dtypes, shapes, parameter count and bytes of a checkpoint folder or an IR file."""
    path = Path(path)
    if path.is_file() and path.suffix != ".ir" and targets.recognize(path) is not None:  # another target's file
        raise EdgesnnError(f"{path}: inspect takes a checkpoint folder or an edgesnn IR file (model.ir); "
                           f"for this file see `edgesnn verify` or `edgesnn profile`")
    if path.is_dir() or path.suffix not in (".ir",):
        return _inspect_checkpoint(path)
    graph = load_ir(path)
    rows = []
    for op in graph.ops:
        out = graph.tensors[op.output]
        w = getattr(op, "weight", None)
        bias = getattr(op, "bias", None)
        bias_size = 0 if bias is None else int(bias.size)  # a recurrent op has none
        params = 0 if w is None else int(w.size + bias_size)
        weight_bytes = 0 if w is None else packed_nbytes(w.size, op.weight_bits)
        nbytes = 0 if w is None else weight_bytes + 4 * bias_size + 8 * op.multiplier.size
        rows.append({
            "name": op.name, "op": op.kind, "inputs": [_describe(graph.tensors[i]) for i in op.inputs],
            "output": _describe(out),
            "weight": None if w is None else f"{op.weight_bits}-bit {op.weight_code} {list(w.shape)}",
            "channels": None if w is None else int(w.shape[0]),
            "params": params, "weight_bytes": weight_bytes, "bytes": nbytes,
        })
    return {"kind": "ir", "path": str(path), "input": _describe(graph.tensors[graph.input]),
            "outputs": [_describe(graph.tensors[o]) for o in graph.outputs], "layers": rows,
            "params": sum(r["params"] for r in rows), "weight_bytes": sum(r["weight_bytes"] for r in rows),
            "bytes": sum(r["bytes"] for r in rows), "file_bytes": path.stat().st_size, "meta": graph.meta,
            **_sequence(graph)}


def _sequence(graph) -> dict:
    """A temporal graph's steps, readout and states (edgesnn.temporal.pipeline); nothing for a static one."""
    if not graph.stateful:
        return {}
    from edgesnn.temporal import pipeline as temporal

    return temporal.describe_states(graph)


def _inspect_checkpoint(path: Path) -> dict:
    """A zoo model is built and described layer by layer; a checkpoint naming user code is described
    from its config and safetensors header only: inspect never imports what a file names. ``neuron_layers``:
    what the neuron map made of each layer, as the checkpoint recorded it (models/custom.py)."""
    described = checkpoint.describe(path)
    config = described["config"]
    if described["imports"]:
        tensors = described["tensors"]
        return {"kind": "checkpoint", "path": str(path), "model": config["model"], "config": config, "built": False,
                "imports": described["imports"], "tensors": tensors, "layers": [], "weight_layers": [],
                "neuron_layers": config.get("neuron_layers") or [],
                "params": sum(math.prod(t["shape"]) for t in tensors), "bytes": sum(t["bytes"] for t in tensors)}
    model, config = checkpoint.load(path)
    rows = []
    for name, module in model.named_modules():
        if any(part.endswith("_quant") for part in name.split(".")):
            continue  # Brevitas quantizer internals: the weight layers table shows their formats
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own and not isinstance(module, tuple(_neuron_types())):
            continue
        params = sum(p.numel() for _, p in module.named_parameters(recurse=False))
        rows.append({
            "name": name, "op": type(module).__name__,
            "shapes": {k: list(v.shape) for k, v in own}, "dtype": str(own[0][1].dtype).replace("torch.", "") if own else "-",
            "params": params, "bytes": sum(v.numel() * v.element_size() for _, v in own),
        })
    weight_layers = _weight_layers(model)
    sequence = {}
    if config["model"] in models.TEMPORAL:  # the states and steps the exported graph will have
        from edgesnn.temporal import pipeline as temporal

        sequence = temporal.describe_states(temporal.graph_of(model, config, path, {}))
    return {"kind": "checkpoint", "path": str(path), "model": config["model"], "config": config, "built": True,
            **sequence, "imports": [], "tensors": described["tensors"], "layers": rows,
            "weight_layers": weight_layers, "neuron_layers": config.get("neuron_layers") or [],
            "params": sum(r["params"] for r in rows), "bytes": sum(r["bytes"] for r in rows),
            "float32_weight_bytes": 4 * sum(r["weights"] for r in weight_layers)}


def _weight_layers(model: torch.nn.Module) -> list[dict]:
    """Each Conv2d / Linear: channels, weight count and real format (quantizer and bits, or float32)."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        tq = getattr(getattr(m, "weight_quant", None), "tensor_quant", None)  # edgesnn's Brevitas quantizers
        conv = isinstance(m, torch.nn.Conv2d)
        rows.append({"layer": name, "type": "conv2d" if conv else "dense",
                     "in": m.in_channels if conv else m.in_features, "out": m.out_channels if conv else m.out_features,
                     "weights": m.weight.numel(),
                     "format": f"{tq.name} {tq.bits}-bit" if hasattr(tq, "bits") else
                     f"{m.weight_quantizer} {m.weight_bits}-bit" if hasattr(m, "weight_bits") else "float32"})
                     # a temporal layer's grid (edgesnn/temporal/neurons.py QLinear: uniform 8-bit unless quantized)
    return rows


def _neuron_types():
    from edgesnn.neurons import NEURONS

    return NEURONS.values()


def _describe(spec: g.TensorSpec) -> str:
    extra = f" spikes[0,{spec.spike_D}]" if spec.spike_D else ""
    return f"{spec.dtype}{list(spec.shape)}{extra}"

