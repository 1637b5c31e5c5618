"""Checkpoints: DIR/model.safetensors + DIR/config.json (+ metrics.json). Never pickle.

config.json says how to rebuild the module (model name and constructor arguments, plus for a
compressed checkpoint the ``quantization`` spec of edgesnn.quantize.spec) and what the deploy
side needs to know (D, neuron kind, input shape, data set).

A checkpoint is a file someone may have sent: :func:`load` checks the config's types, imports a
user factory only if ``trust_code`` allows it (see models/custom.py), builds the model on torch's
meta device first (no memory) to check its size against the budget and its tensors against the
safetensors header, and refuses NaN / Inf weights, all before the real model is allocated.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgesnn import limits, models
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_dir, atomic_path, dumps_json, write_json  # noqa: F401 (write_json: kept importable from here)
from edgesnn.limits import _short
from edgesnn.models import custom

FORMAT_VERSION = 1
WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
MAX_D = 127  # an SFA neuron's largest spike count (int8 activations)
_SIZES = ("in_shape", "num_classes", "D", "in_channels", "image_size")  # kwargs that are dimensions (>= 1)


def save(model: torch.nn.Module, config: dict, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write the checkpoint into a temporary sibling folder and rename it into place."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    _check_finite(state, f"{out_dir}: the model to save")
    if custom.mapped_layers(model) and "neuron_layers" not in config:  # what the neuron map made of each layer
        config = {**config, "neuron_layers": custom.mapped_layers(model)}
    texts = {CONFIG: dumps_json({"format_version": FORMAT_VERSION, **config}, Path(out_dir) / CONFIG)}
    if metrics is not None:
        texts[METRICS] = dumps_json(metrics, Path(out_dir) / METRICS)
    with atomic_dir(out_dir, CONFIG) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "edgesnn-checkpoint"})
        for name, text in texts.items():
            (tmp / name).write_text(text)
    return Path(out_dir)


def load(path: str | Path, trust_code: custom.Trust = False) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, config) from a checkpoint folder.

    ``trust_code``: whether a user factory or neuron class the config names may be imported (True,
    or the collection of names the user gave; see models/custom.py). Zoo models need none."""
    path = Path(path)
    config = read_config(path)
    for name in custom.config_code(config):
        custom.require_trust(name, trust_code, str(path / CONFIG))
    tensors = weights_header(path)
    _check_model_size(path, config, tensors, trust_code)
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise EdgesnnError(f"{path / WEIGHTS}: corrupt or unreadable safetensors file ({_short(e, 200)})") from None
    _check_finite(state, str(path / WEIGHTS))
    model = _build(path, config, trust_code)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise EdgesnnError(f"{path}: weights do not match config.json "
                           f"({_short(lines[1].strip() if len(lines) > 1 else e, 300)})") from None
    return model.eval(), config


def read_config(path: str | Path) -> dict:
    """config.json of the checkpoint folder ``path``, its types checked (a file of the wrong shape is
    one line naming the key, never a TypeError later)."""
    path = Path(path)
    if path.is_file():
        if not limits.is_safetensors(path) and _looks_pickled(path):
            raise EdgesnnError(f"{path} is a pickle/torch.save file; edgesnn loads only safetensors + JSON "
                               f"checkpoints (a folder with {WEIGHTS} and {CONFIG})")
        raise EdgesnnError(f"{path} is a file; a checkpoint is a folder with {WEIGHTS} and {CONFIG}")
    if not path.is_dir():
        raise EdgesnnError(f"{path}: no such checkpoint folder")
    for name in (WEIGHTS, CONFIG):
        if not (path / name).is_file():
            raise EdgesnnError(f"{path}: not a checkpoint (missing {name})")
    where = path / CONFIG
    config = limits.read_json(where, "checkpoint config")
    if not isinstance(config, dict) or "model" not in config or "kwargs" not in config:
        raise EdgesnnError(f"{where}: not an edgesnn checkpoint config (needs 'model' and 'kwargs')")
    if config.get("format_version") != FORMAT_VERSION:
        raise EdgesnnError(f"{where}: checkpoint format {_short(config.get('format_version'))}, expected {FORMAT_VERSION}")
    _check_config(config, where)
    return config


def _check_config(config: dict, where: Path) -> None:
    model, kwargs = config["model"], config["kwargs"]
    if not isinstance(model, str) or not model:
        raise EdgesnnError(f"{where}: 'model' must be a model name or module:factory, got {_short(model)}")
    if custom.is_factory(model) and not custom.FACTORY_SPEC.fullmatch(model):
        raise EdgesnnError(f"{where}: 'model' {_short(model)} is not module:factory")
    if not isinstance(kwargs, dict):
        raise EdgesnnError(f"{where}: 'kwargs' must be a mapping of constructor arguments, got {_short(kwargs)}")
    if "D" in config and not _int_in(config["D"], 1, MAX_D):
        raise EdgesnnError(f"{where}: 'D' must be an integer from 1 to {MAX_D}, got {_short(config['D'])}")
    neuron_map = config.get("neuron_map")
    if neuron_map is not None:
        if not isinstance(neuron_map, dict) or not all(
                isinstance(k, str) and custom.MAP_KEY.fullmatch(k) and isinstance(v, str) for k, v in neuron_map.items()):
            raise EdgesnnError(f"{where}: 'neuron_map' must map class paths (module.Class) or layers to edgesnn neurons, "
                               f"got {_short(neuron_map)}")
    if config.get("neuron_layers") is not None:
        custom.check_layers(config["neuron_layers"], str(where))
    quantization = config.get("quantization")
    if quantization is not None and not isinstance(quantization, dict):
        raise EdgesnnError(f"{where}: invalid quantization spec (a mapping expected, got {_short(quantization)})")
    for key in ("method", "stream_dtype"):
        if quantization and quantization.get(key) is not None and not isinstance(quantization[key], str):
            raise EdgesnnError(f"{where}: invalid quantization spec ({key} must be a string, got {_short(quantization[key])})")
    for key in ("data", "nir"):
        expected = str if key == "data" else dict
        if config.get(key) is not None and not isinstance(config[key], expected):
            raise EdgesnnError(f"{where}: {key!r} must be a {'data set name' if key == 'data' else 'mapping'}, "
                               f"got {_short(config[key])}")
    if config.get("input_shape") is not None:
        _check_sizes(config["input_shape"], f"{where}: 'input_shape'")
    if config.get("num_classes") is not None and not _int_in(config["num_classes"], 1):
        raise EdgesnnError(f"{where}: 'num_classes' must be an integer >= 1, got {_short(config['num_classes'])}")
    if not custom.is_factory(model):  # a zoo model's dimensions; a user factory's arguments are its own
        for key in _SIZES:
            if key == "in_shape" and key in kwargs:
                _check_sizes(kwargs[key], f"{where}: kwargs.in_shape")
            elif key in kwargs and kwargs[key] is not None and not _int_in(kwargs[key], 1):
                raise EdgesnnError(f"{where}: kwargs.{key} must be a positive integer, got {_short(kwargs[key])}")


def _check_sizes(shape, where: str) -> None:
    limits.elements(shape, where)
    if not all(d >= 1 for d in shape):
        raise EdgesnnError(f"{where}: every dimension must be >= 1, got {_short(shape)}")


def _int_in(v, low: int, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def weights_header(path: str | Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets} of the checkpoint's weights, from the safetensors
    header alone. A safetensors file is recognised by its header (a length, then JSON), not by a
    first byte; a pickle or torch.save file is refused without being read."""
    weights = Path(path) / WEIGHTS
    try:
        header = limits.safetensors_header(weights)
    except EdgesnnError as e:
        if _looks_pickled(weights):
            raise EdgesnnError(f"{weights} is a pickle/torch.save file, not safetensors; edgesnn never loads "
                               f"pickles (save the state dict with safetensors.torch.save_file)") from None
        reason = str(e).removeprefix(f"{weights}: ")
        raise EdgesnnError(f"{weights}: corrupt or unreadable safetensors file ({reason})") from None
    return {k: v for k, v in header.items() if k != "__metadata__"}


def describe(path: str | Path) -> dict:
    """What a checkpoint holds, read without building its model, so no code it names runs: the
    config, the code it would import, and each tensor's dtype, shape and bytes (from the header)."""
    config = read_config(path)
    tensors = [{"name": name, "dtype": t["dtype"], "shape": list(t["shape"]),
                "bytes": t["data_offsets"][1] - t["data_offsets"][0]}
               for name, t in sorted(weights_header(path).items())]
    imports = [{"name": n, "kind": "factory" if custom.is_factory(n) else "neuron class",
                "module": n.partition(":")[0] if custom.is_factory(n) else n.rpartition(".")[0],
                "object": n.partition(":")[2] if custom.is_factory(n) else n.rpartition(".")[2]}
               for n in custom.config_code(config)]
    return {"config": config, "imports": imports, "tensors": tensors}


def _build(path: Path, config: dict, trust_code: custom.Trust) -> torch.nn.Module:
    """The model config.json describes (on the current default device), its compression replayed."""
    where = str(path / CONFIG)
    model = models.build(config["model"], config["kwargs"], custom.rebuild_map(config), config.get("D", 4),
                         trust_code=trust_code, where=where)
    custom.check_rebuilt(model, config, where)
    if config.get("quantization"):
        from edgesnn.quantize import spec  # Brevitas is imported only for compressed checkpoints

        try:
            from edgesnn.export import input_shape

            with input_shape(config.get("input_shape")):
                model = spec.apply(model, config["quantization"])
        except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:  # a hand-edited spec
            raise EdgesnnError(f"{where}: invalid quantization spec "
                               f"({type(e).__name__}: {_short((str(e).splitlines() or [''])[0], 200)})") from None
    return model


def _check_model_size(path: Path, config: dict, tensors: dict, trust_code: custom.Trust) -> None:
    """Build the model on the meta device (shapes, no memory) and refuse it, before any real
    allocation, if it needs more memory than the budget or its tensors are not the file's."""
    try:
        with torch.device("meta"):
            skeleton = _build(path, config, trust_code)
    except EdgesnnError:
        if custom.is_factory(config["model"]):
            return  # a user factory that cannot run on the meta device: trusted code, built for real below
        raise
    except Exception as e:  # noqa: BLE001 - torch on the meta device, for arguments no real model has
        if custom.is_factory(config["model"]):
            return
        raise EdgesnnError(f"{path / CONFIG}: cannot build model {_short(config['model'])} "
                           f"({type(e).__name__}: {_short((str(e).splitlines() or [''])[0], 200)})") from None
    model_bytes = sum(t.numel() * t.element_size() for t in chain(skeleton.parameters(), skeleton.buffers()))
    file_bytes = sum(t["data_offsets"][1] - t["data_offsets"][0] for t in tensors.values())
    limits.check_memory(model_bytes + file_bytes, f"{path}: the model config.json describes (with its weights)")
    state = skeleton.state_dict()
    missing = [k for k in state if k not in tensors]
    unexpected = [k for k in tensors if k not in state]
    if missing or unexpected:
        parts = ([f"Missing key(s) in {WEIGHTS}: {_short(missing, 120)}"] if missing else []) + \
                ([f"Unexpected key(s) in {WEIGHTS}: {_short(unexpected, 120)}"] if unexpected else [])
        raise EdgesnnError(f"{path}: weights do not match config.json ({'; '.join(parts)})")
    for name, t in state.items():
        if list(t.shape) != list(tensors[name]["shape"]):
            raise EdgesnnError(f"{path}: weights do not match config.json (size mismatch for {_short(name)}: "
                               f"{tensors[name]['shape']} in {WEIGHTS}, {list(t.shape)} in the model config.json describes)")


def _check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """NaN or Inf in a weight or a BatchNorm statistic: no deployment can represent it."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
            raise EdgesnnError(f"{where}: tensor '{_short(name)}' holds {kind}")


def _looks_pickled(path: Path) -> bool:
    """A pickle (protocol 2 to 5: 0x80 then the protocol) or a torch.save zip archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head == b"PK\x03\x04"
