"""The steps the CLI runs, as library calls: train, export, verify, inspect.

Each returns plain data (dicts) so the CLI only prints, and scripts and tests read numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from edgesnn import artifact_data, baselines, boards, checkpoint, device, models, threads
from edgesnn import data as datasets
from edgesnn import weights as weight_files
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_files, check_not_interrupted, one_writer, replaceable_dir
from edgesnn.export import CHECK_SAMPLES, export
from edgesnn.export import check as export_check
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.ir.packing import packed_nbytes
from edgesnn.device import beside_ir as _beside_ir
from edgesnn.device import with_accuracy as _with_accuracy
from edgesnn.train import evaluate, predict, train

TARGETS = ("ir", "onnx", "onnx-qcdq", "tflite", "mcu", "lava", "nir")
IR_FILE, ONNX_FILE, TFLITE_FILE = "model.ir", "model.onnx", "model.tflite"
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
                 board: str | None = None, event_driven: str = "auto", lava_mode: str | None = None,
                 source_ref: str | None = None, trust_code: models.custom.Trust = False,
                 spike_code: str | None = None, runtime: str | None = None, kernels: str = "tvm",
                 cmsis_nn: Path | None = None) -> Path:
    """``stream_dtype`` None: the dtype the checkpoint's streams trained at (quantize --stream-dtype), else int8.
    ``runtime``: the tflite target's runtime (backends.tflite.EXPORT_RUNTIMES): litert (default: LiteRT
    and TFLite Micro) or tflite-runtime (2.14 as well: a graph it cannot run is refused, naming the op).
    ``board`` and ``event_driven``: the mcu target (a board name or YAML file; see backends/mcu);
    ``kernels`` (tvm or cmsis-nn) and ``cmsis_nn`` (the CMSIS-NN folder): the mcu target's kernel source;
    ``lava_mode``: the lava target's neuron mode, graded (default), rate-burst or bit-plane.
    ``spike_code``: rate-burst or bit-plane spike trains where the target runs them (lava: the same
    as ``lava_mode``; mcu: event-driven layers reading spike counts); None: integer counts. ``source_ref``: how the
    artifact names its checkpoint (default: the absolute path; a relative path is read from the
    artifact's folder, which keeps a run folder relocatable and its files independent of where it is).
    ``trust_code``: whether the checkpoint may import the user code it names (see checkpoint.load)."""
    if target not in TARGETS:
        raise EdgesnnError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    if spike_code is not None and target not in ("lava", "mcu"):
        raise EdgesnnError(f"--spike-code: the {target} target runs no spike trains (lava and mcu do)")
    if target == "lava":  # a bad mode or spike code fails before any work
        from edgesnn.backends.lava import resolve_mode

        lava_mode = resolve_mode(lava_mode, spike_code) or "graded"
    elif spike_code is not None:
        from edgesnn.spikes import code_name

        spike_code = code_name(spike_code)
    board_spec = _mcu_board(board) if target == "mcu" else None  # a bad board fails before any work
    if kernels != "tvm" or cmsis_nn is not None:  # a bad kernel source or CMSIS-NN folder too
        if target != "mcu":
            raise EdgesnnError(f"--kernels/--cmsis-nn: choose the kernels of --target mcu, not of {target}")
        from edgesnn.backends.mcu.cmsis_nn import check_kernels

        check_kernels(kernels, cmsis_nn)
    if runtime is not None:  # a bad runtime fails before any work
        if target != "tflite":
            raise EdgesnnError(f"--runtime: chooses the TFLite runtime of --target tflite, not of {target}")
        from edgesnn.backends.tflite import check_runtime

        check_runtime(runtime)
    if Path(out).exists() and not Path(out).is_dir():
        raise EdgesnnError(f"{out}: exists and is not a folder (--out names the folder the artifact goes in)")
    if target in ("mcu", "lava"):  # these replace the whole folder: only one they wrote
        replaceable_dir(out, _folder_marker(target))
    model, config = checkpoint.load(ckpt, trust_code=trust_code)
    if not config.get("data"):
        raise EdgesnnError(f"{Path(ckpt) / checkpoint.CONFIG}: records no data set, which calibration needs")
    ds = _data_for(config, config["data"], ckpt)
    data_ref = datasets.recorded(config["data"])  # a checkpoint from before paths were recorded absolute
    calibration = ds.x_train[:calibration_samples(ds.x_train.shape[1:])]
    source_ref = source_ref or str(Path(ckpt).resolve())
    if target == "onnx-qcdq":  # Brevitas QCDQ of the torch model (quantized weights, float activations), vs torch
        from edgesnn.backends.onnx.qcdq import export_qcdq

        Path(out).mkdir(parents=True, exist_ok=True)
        return export_qcdq(model, calibration[:2], Path(out) / ONNX_FILE, metadata={
            "edgesnn.checkpoint": source_ref, "edgesnn.data": data_ref})
    meta = {"source": {"checkpoint": source_ref, "model": config["model"], "data": data_ref},
            "weight_bits": weight_bits,  # for float layers; quantized layers keep their trained bits
            "quantization": (config.get("quantization") or {}).get("method")}
    stream_dtype = stream_dtype or _default_stream_dtype(config)
    from edgesnn.backends.nir import exact_graph  # a checkpoint imported from edgesnn's NIR keeps its exact program

    graph = exact_graph(model, config, meta) or export(model, calibration, weight_bits=weight_bits, meta=meta,
                                                       stream_dtype=stream_dtype)
    if target == "nir":  # the IR is written next to the NIR file it was lowered from: both in one commit
        from edgesnn.backends.nir import NIR_FILE, export_nir

        with atomic_files(out, (NIR_FILE, IR_FILE)) as tmp:
            export_nir(graph, tmp / NIR_FILE)  # an op NIR cannot express fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / NIR_FILE
    if target == "tflite":  # the IR is written next to the .tflite (verify compares the two): both in one commit
        from edgesnn.backends.tflite import export_tflite

        with atomic_files(out, (TFLITE_FILE, IR_FILE)) as tmp:
            export_tflite(graph, tmp / TFLITE_FILE, runtime)  # an op TFLite (or runtime) cannot run fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / TFLITE_FILE
    if target == "onnx":  # the integer ONNX from the IR, the IR beside it (verify compares the two): one commit
        from edgesnn.backends.onnx import export_integer

        with atomic_files(out, (ONNX_FILE, IR_FILE)) as tmp:
            export_integer(graph, tmp / ONNX_FILE)  # an op the lowering cannot express fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / ONNX_FILE
    if target == "lava":
        from edgesnn.backends.lava import export_lava

        export_lava(graph, Path(out), lava_mode, datasets.to_nhwc(calibration[:256]))
        return Path(out)
    if target == "mcu":
        from edgesnn.backends.mcu import export_mcu

        export_mcu(graph, board_spec, Path(out), event_driven, datasets.to_nhwc(calibration[:256]), spike_code,
                   kernels, cmsis_nn)
        return Path(out)
    path = Path(out) / IR_FILE
    graph.save(path)
    return path


def _folder_marker(target: str) -> str:
    """The file every folder the target writes holds."""
    if target == "mcu":
        from edgesnn.backends.mcu.project import PROJECT_FILE

        return PROJECT_FILE
    from edgesnn.backends.lava import NETWORK_FILE

    return NETWORK_FILE


def _mcu_board(board: str | None) -> boards.Board:
    """The board --target mcu builds for: a bare-metal MCU or an aarch64 Linux board."""
    choices = f"{', '.join(boards.available(boards.BUILD_KINDS))} (or a .yaml file)"
    if board is None:
        raise EdgesnnError(f"--target mcu needs --board (one of {choices})")
    spec = boards.load(board)
    if spec.kind not in boards.BUILD_KINDS:
        raise EdgesnnError(f"board {spec.name} ({spec.kind}) cannot run --target mcu; boards for mcu: {choices}")
    return spec


def verify(artifact: Path, data_spec: str | None = None, ckpt: Path | None = None, ir: Path | None = None,
           qemu: bool = False, samples: int | None = None, lava_mode: str | None = None,
           trust_code: models.custom.Trust = False, spike_code: str | None = None) -> dict:
    """Golden interpreter over the whole test split vs the torch model the IR came from; a .tflite
    file or an integer .onnx file is compared with the golden interpreter of its IR (``ir``, default:
    model.ir beside it), a QCDQ .onnx file with torch;
    an MCU project folder is built and run (host; with ``qemu`` also the board's emulated core).
    ``trust_code``: whether the checkpoint an IR or ONNX file names may import the user code it
    names, and (True only) whether an MCU project's Makefile may run. ``lava_mode`` / ``spike_code``:
    the mode a Lava folder runs in (default: its exported one); an MCU project runs the code it was built with.
    ``data_spec`` None: the data set the artifact records (edgesnn.artifact_data); the result's "data" says which.
    A .tflite file and an MCU project are verified by :func:`edgesnn.device.verify` (no torch)."""
    artifact = Path(artifact)
    if device.handles(artifact):
        return device.verify(artifact, data_spec, ir, qemu=qemu, samples=samples, trust_code=trust_code,
                             spike_code=spike_code)
    if samples is not None and samples < 1:
        raise EdgesnnError(f"--samples must be at least 1, got {samples}")
    check_not_interrupted(artifact if artifact.is_dir() else artifact.parent)  # a stopped export's half-swapped files
    if artifact.is_dir() and (artifact / "lava.json").is_file():
        from edgesnn.backends.lava import resolve_mode, verify_lava

        mode = resolve_mode(lava_mode, spike_code)
        spec, ds = artifact_data.load(artifact, data_spec)
        return {"data": spec, **_with_accuracy(verify_lava(artifact, datasets.to_nhwc(ds.x_test), samples, mode),
                                               artifact, ds)}
    if spike_code is not None:
        raise EdgesnnError(f"{artifact}: --spike-code chooses how a Lava folder runs; other artifacts run what they "
                           "were exported as (export --target mcu --spike-code builds the code in)")
    if artifact.suffix == ".onnx":
        return _verify_onnx(artifact, data_spec, ckpt, ir, trust_code)
    if artifact.suffix == ".nir":
        return _verify_nir(artifact, data_spec, ir)
    if artifact.suffix != ".ir":
        raise EdgesnnError(f"{artifact}: verify takes an edgesnn IR file (.ir), a .tflite file, an ONNX file (.onnx), "
                          "a NIR file (.nir), an MCU project folder or a Lava folder")
    graph = load_ir(artifact)
    source = ckpt or _named_checkpoint(artifact, graph.meta.get("source", {}).get("checkpoint"))
    if source is None:
        raise EdgesnnError(f"{artifact}: the IR does not name its checkpoint; pass --checkpoint DIR")
    model, config = checkpoint.load(source, trust_code=trust_code)
    data_spec, ds = artifact_data.load(artifact, data_spec, graph=graph, ckpt=source)
    _check_input_shape(config, ds, data_spec, source)
    x, y = ds.x_test, ds.y_test.numpy()
    ir_out = graph.run(datasets.to_nhwc(x))
    if ir_out.ndim != 2:
        raise EdgesnnError(f"{artifact}: output shape {ir_out.shape[1:]} is not a class score vector")
    ir_pred = ir_out.argmax(1)
    torch_pred = predict(model, x).numpy()
    mismatches = int((ir_pred != torch_pred).sum())
    return {
        "artifact": str(artifact), "runtime": "edgesnn golden interpreter (numpy, integer-only)",
        "data": data_spec, "samples": int(len(y)), "mismatches": mismatches,
        "agreement": 1.0 - mismatches / len(y), "accuracy": float((ir_pred == y).mean()),
        "torch_accuracy": float((torch_pred == y).mean()), "checkpoint": str(source),
    }


def _data_for(config: dict, data_spec: str, ckpt) -> datasets.Dataset:
    """The data set, checked against the input shape the checkpoint's model takes."""
    ds = datasets.load(data_spec)
    _check_input_shape(config, ds, data_spec, ckpt)
    return ds


def _check_input_shape(config: dict, ds: datasets.Dataset, data_spec: str, ckpt) -> None:
    want = config.get("input_shape") or (config.get("kwargs") or {}).get("in_shape")
    if want is not None and list(ds.in_shape) != list(want):
        raise EdgesnnError(f"{data_spec}: samples of shape {tuple(ds.in_shape)}, but the model of {ckpt} takes "
                           f"{tuple(want)}")


def _named_checkpoint(artifact: Path, ref: str | None) -> Path | None:
    """The checkpoint an artifact names: absolute, or relative to the artifact's folder."""
    return None if ref is None else artifact.parent / ref


def _verify_onnx(artifact: Path, data_spec: str | None, ckpt: Path | None, ir: Path | None,
                 trust_code: models.custom.Trust = False) -> dict:
    """An integer ONNX file: every output integer in onnxruntime vs the golden interpreter of its IR
    (``ir``, default model.ir beside it), as a .tflite. A QCDQ file: onnxruntime over the whole test
    split vs the torch model it was exported from (``ckpt``, default the one it names)."""
    from edgesnn.backends.onnx import INTEGER, compare, file_format, read_metadata

    if not artifact.is_file():
        raise EdgesnnError(f"{artifact}: no such file")
    kind = file_format(artifact)
    if kind is None and ir is None and ckpt is None:
        raise EdgesnnError(f"{artifact}: the ONNX file does not say what it was exported from; pass --ir PATH (an "
                           "integer ONNX file) or --checkpoint DIR (a QCDQ file)")
    if kind == INTEGER or (kind is None and ir is not None):  # a checkpoint, as for a .tflite, plays no part
        graph, ir = _beside_ir(artifact, ir)
        data_spec, ds = artifact_data.load(artifact, data_spec, graph=graph)
        r = compare(artifact, graph, datasets.to_nhwc(ds.x_test))
        y = ds.y_test.numpy()
        return {"artifact": str(artifact), "ir": str(ir), "data": data_spec, **r,
                "ir_accuracy": float((graph.run(datasets.to_nhwc(ds.x_test)).argmax(1) == y).mean())}
    if ir is not None:
        raise EdgesnnError(f"{artifact}: a QCDQ ONNX file is compared with torch (--checkpoint), not with an IR")
    from edgesnn.backends.onnx.qcdq import compare_qcdq, run_qcdq

    source = ckpt or _named_checkpoint(artifact, read_metadata(artifact).get("edgesnn.checkpoint"))
    if source is None:
        raise EdgesnnError(f"{artifact}: the ONNX file does not name its checkpoint; pass --checkpoint DIR")
    model, config = checkpoint.load(source, trust_code=trust_code)
    data_spec, ds = artifact_data.load(artifact, data_spec, ckpt=source)
    _check_input_shape(config, ds, data_spec, source)
    r = compare_qcdq(model, artifact, ds.x_test)
    pred = run_qcdq(artifact, ds.x_test.numpy()).argmax(1)
    y = ds.y_test.numpy()
    return {"artifact": str(artifact), "data": data_spec, "checkpoint": str(source), **r,
            "accuracy": float((pred == y).mean()), "torch_accuracy": float((predict(model, ds.x_test).numpy() == y).mean())}


def _verify_nir(artifact: Path, data_spec: str | None, ir: Path | None) -> dict:
    from edgesnn.backends.nir.verify import verify_nir

    graph, ir = _beside_ir(artifact, ir)
    data_spec = artifact_data.resolve(artifact, data_spec, graph=graph)
    return {**verify_nir(artifact, graph, data_spec), "ir": str(ir)}


def inspect(path: Path) -> dict:
    """Layers, dtypes, shapes, parameter count and bytes of a checkpoint folder or an IR file."""
    path = Path(path)
    if path.is_file() and path.suffix in (".tflite", ".onnx", ".nir"):
        raise EdgesnnError(f"{path}: inspect takes a checkpoint folder or an edgesnn IR file (model.ir); "
                           f"for this file see `edgesnn verify` or `edgesnn profile`")
    if path.is_dir() or path.suffix not in (".ir",):
        return _inspect_checkpoint(path)
    graph = load_ir(path)
    rows = []
    for op in graph.ops:
        out = graph.tensors[op.output]
        w = getattr(op, "weight", None)
        params = 0 if w is None else int(w.size + op.bias.size)
        weight_bytes = 0 if w is None else packed_nbytes(w.size, op.weight_bits)
        nbytes = 0 if w is None else weight_bytes + 4 * op.bias.size + 8 * op.multiplier.size
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
            "bytes": sum(r["bytes"] for r in rows), "file_bytes": path.stat().st_size, "meta": graph.meta}


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
    return {"kind": "checkpoint", "path": str(path), "model": config["model"], "config": config, "built": True,
            "imports": [], "tensors": described["tensors"], "layers": rows,
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
                     "format": f"{tq.name} {tq.bits}-bit" if hasattr(tq, "bits") else "float32"})
    return rows


def _neuron_types():
    from edgesnn.neurons import NEURONS

    return NEURONS.values()


def _describe(spec: g.TensorSpec) -> str:
    extra = f" spikes[0,{spec.spike_D}]" if spec.spike_D else ""
    return f"{spec.dtype}{list(spec.shape)}{extra}"

