"""Checkpoints: DIR/model.safetensors + DIR/config.json (+ metrics.json). Never pickle.

config.json says how to rebuild the module (model name and constructor arguments, plus for a
compressed checkpoint the ``quantization`` spec of edgesnn.quantize.spec) and what the deploy
side needs to know (D, neuron kind, input shape, data set).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edgesnn import models
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_dir, atomic_path

FORMAT_VERSION = 1
WEIGHTS, CONFIG, METRICS = "model.safetensors", "config.json", "metrics.json"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+, torch.save zip archive


def save(model: torch.nn.Module, config: dict, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write the checkpoint into a temporary sibling folder and rename it into place."""
    with atomic_dir(out_dir, CONFIG) as tmp:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "edgesnn-checkpoint"})
        write_json(tmp / CONFIG, {"format_version": FORMAT_VERSION, **config})
        if metrics is not None:
            write_json(tmp / METRICS, metrics)
    return Path(out_dir)


def load(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, config) from a checkpoint folder."""
    path = Path(path)
    if path.is_file():
        if _is_pickle(path):
            raise EdgesnnError(f"{path} is a pickle/torch.save file; edgesnn loads only safetensors + JSON "
                               f"checkpoints (a folder with {WEIGHTS} and {CONFIG})")
        raise EdgesnnError(f"{path} is a file; a checkpoint is a folder with {WEIGHTS} and {CONFIG}")
    if not path.is_dir():
        raise EdgesnnError(f"{path}: no such checkpoint folder")
    for name in (WEIGHTS, CONFIG):
        if not (path / name).is_file():
            raise EdgesnnError(f"{path}: not a checkpoint (missing {name})")
    config = read_json(path / CONFIG)
    if not isinstance(config, dict) or "model" not in config or "kwargs" not in config:
        raise EdgesnnError(f"{path / CONFIG}: not an edgesnn checkpoint config (needs 'model' and 'kwargs')")
    if config.get("format_version") != FORMAT_VERSION:
        raise EdgesnnError(f"{path / CONFIG}: checkpoint format {config.get('format_version')}, expected {FORMAT_VERSION}")
    model = models.build(config["model"], config["kwargs"], config.get("neuron_map"), config.get("D", 4))
    if config.get("quantization"):
        from edgesnn.quantize import spec  # Brevitas is imported only for compressed checkpoints

        try:
            spec.apply(model, config["quantization"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:  # a hand-edited spec of the wrong shape
            raise EdgesnnError(f"{path / CONFIG}: invalid quantization spec "
                               f"({type(e).__name__}: {(str(e).splitlines() or [''])[0]})") from None
    if _is_pickle(path / WEIGHTS):  # never handed to anything that unpickles
        raise EdgesnnError(f"{path / WEIGHTS} is a pickle/torch.save file, not safetensors; edgesnn never loads "
                           f"pickles (save the state dict with safetensors.torch.save_file)")
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise EdgesnnError(f"{path / WEIGHTS}: corrupt or unreadable safetensors file ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EdgesnnError(f"{path}: weights do not match config.json ({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    return model.eval(), config


def _is_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4).startswith(_PICKLE_MAGIC)
    except OSError:
        return False


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgesnnError(f"{path}: unreadable JSON ({e})") from None


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
