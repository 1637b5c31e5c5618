"""Trained weights from elsewhere: a state dict file, read safely and loaded into a built model.

A user who trained a model in their own code brings its ``state_dict`` as a safetensors file or a
``torch.save`` file. A torch file is a pickle, so it is read only with
``torch.load(weights_only=True)``: torch's restricted unpickler, which builds tensors and plain
containers and refuses every other global. A file that pickles objects (``torch.save(model)``) is
refused with one line saying what to save instead; it is never read any other way.

Sizes are checked before anything is read (the safetensors header, the torch archive's records),
and loading is strict: the file must hold every key of the model, with its shape, apart from
BatchNorm's ``num_batches_tracked`` counters (which many scripts drop), and nothing else. A user
model takes the file as its factory builds it, library neurons included (an snnTorch ``Leaky``'s
``threshold`` and ``beta``); the neuron map then reads the trained settings from those instances
(edgesnn.models.custom). Loading copies each tensor as it is: no forward pass runs, so BatchNorm
statistics are the file's.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from edgesnn import limits, models
from edgesnn.checkpoint import _check_finite
from edgesnn.errors import EdgesnnError
from edgesnn.files import sha256_file
from edgesnn.limits import _short
from edgesnn.models import custom

MAX_PICKLE_BYTES = 64 << 20  # a torch file's data.pkl: a state dict of 100,000 tensors is a few MB
MAX_RECORDS = 200_000  # entries of a torch zip archive (one per tensor storage, plus a few)
SHOWN = 5  # keys named in a mismatch error; the rest are counted
SAVE_HINT = ("save model.state_dict() instead: safetensors.torch.save_file(model.state_dict(), 'w.safetensors') "
             "or torch.save(model.state_dict(), 'w.pt')")
_BATCHES = "num_batches_tracked"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_state_dict(path: str | Path, strip_prefixes: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Name -> tensor of a safetensors or torch state dict file, each tensor checked (a real, dense,
    finite CPU tensor), with ``strip_prefixes`` removed from the start of the keys, in order
    (``module.`` from DDP). A torch file that wraps one state dict in a training checkpoint
    (``{'state_dict': ..., 'epoch': ...}``) gives that state dict."""
    return _read(Path(path), tuple(strip_prefixes))[0]


def read(path: str | Path, strip_prefixes: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, provenance): the provenance names the file, its sha256, its format, the entry
    a wrapped state dict came from and the prefixes stripped, for the checkpoint's metrics."""
    path = Path(path)
    state, fmt, key = _read(path, tuple(strip_prefixes))
    return state, {"file": path.name, "sha256": sha256_file(path), "format": fmt, "entry": key,
                   "strip_prefix": list(strip_prefixes), "tensors": len(state)}


def _read(path: Path, strip: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], str, str | None]:
    for p in strip:
        if not isinstance(p, str) or not p:
            raise EdgesnnError(f"--strip-prefix: a prefix must be a non-empty string, got {_short(p)}")
    if not path.is_file():
        raise EdgesnnError(f"{path}: no such weights file")
    head = _head(path)
    if not limits.is_safetensors(path) and (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        obj, fmt = _torch_load(path, head), "torch"  # a torch.save zip archive, or a pickle (torch's legacy format)
    else:  # a safetensors file is recognised by its header (its first byte is part of a length)
        obj, fmt = _safetensors(path), "safetensors"
    state, key = _state_dict(obj, path)
    state = _stripped(state, strip, path)
    _check_tensors(state, path)
    return state, fmt, key


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as e:
        raise EdgesnnError(f"{path}: cannot read ({e.strerror or e})") from None


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, its declared tensor bytes checked against the memory budget first."""
    try:
        header = limits.safetensors_header(path)
    except EdgesnnError as e:
        reason = str(e).removeprefix(f"{path}: ")
        if path.suffix == ".safetensors":
            raise EdgesnnError(f"{path}: corrupt or truncated safetensors file ({reason})") from None
        raise EdgesnnError(f"{path}: not a safetensors or torch state dict file ({reason}); {SAVE_HINT}") from None
    declared = sum(t["data_offsets"][1] - t["data_offsets"][0] for k, t in header.items() if k != "__metadata__")
    limits.check_memory(declared, f"{path}: reading its tensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:  # e.g. a dtype torch lacks
        raise EdgesnnError(f"{path}: corrupt or unreadable safetensors file ({_short(e, 200)})") from None


def _torch_load(path: Path, head: bytes):
    """``torch.load(weights_only=True)`` after checking the sizes it would read: a zip archive's
    records (declared, uncompressed), or a legacy pickle's file size."""
    size = path.stat().st_size
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                records = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise EdgesnnError(f"{path}: corrupt or truncated torch file (not a readable zip archive: {_short(e)})") from None
        if len(records) > MAX_RECORDS:
            raise EdgesnnError(f"{path}: {len(records):,} records, more than the {MAX_RECORDS:,} a state dict file may have")
        pickles = [r for r in records if r.filename.endswith(".pkl")]
        if not pickles:
            raise EdgesnnError(f"{path}: a zip archive, but not a torch.save file (no data.pkl); {SAVE_HINT}")
        big = next((r for r in pickles if r.file_size > MAX_PICKLE_BYTES), None)
        if big is not None:
            raise EdgesnnError(f"{path}: {big.filename} declares {big.file_size:,} bytes, more than the "
                               f"{MAX_PICKLE_BYTES:,} a state dict's pickle may have")
        limits.check_memory(sum(r.file_size for r in records), f"{path}: reading its tensors")
    else:
        limits.check_memory(size, f"{path}: reading its tensors")
    try:
        with warnings.catch_warnings(), open(path, "rb") as f:  # an open file: torch.load reads a *.safetensors path itself
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            return torch.load(f, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - the restricted unpickler: whatever fails is the file's
        text = str(e)
        found = _GLOBAL.search(text)
        if found:
            raise EdgesnnError(f"{path}: pickles Python objects ({_short(found.group(1))}), not only tensors; edgesnn "
                               f"never unpickles objects: {SAVE_HINT}") from None
        if "TorchScript" in text:
            raise EdgesnnError(f"{path}: a TorchScript archive (torch.jit.save), which runs code when loaded, not a "
                               f"state dict; {SAVE_HINT}") from None
        if "Weights only load failed" in text:
            reason = next((line.strip() for line in text.splitlines()[1:] if line.strip()
                           and "weights_only" not in line and "Weights only" not in line), "")
            raise EdgesnnError(f"{path}: a pickle that torch.load(weights_only=True) cannot read "
                               f"({_short(reason or type(e).__name__)}), not a state dict file; {SAVE_HINT}") from None
        raise EdgesnnError(f"{path}: corrupt or truncated torch file ({type(e).__name__}: "
                           f"{_short((text.strip().splitlines() or [''])[0], 160)})") from None


def _state_dict(obj, path: Path) -> tuple[dict, str | None]:
    """The state dict in what a file held: the mapping itself, or the one mapping of tensors a
    training checkpoint wraps (``{'state_dict': ..., 'epoch': 3, 'optimizer': ...}``)."""
    if not isinstance(obj, Mapping):
        raise EdgesnnError(f"{path}: holds {type(obj).__name__}, not a state dict (a mapping of names to "
                           f"tensors); {SAVE_HINT}")
    has_tensors = lambda m: any(isinstance(v, torch.Tensor) for v in m.values())  # noqa: E731
    nested = [k for k, v in obj.items() if isinstance(k, str) and isinstance(v, Mapping) and has_tensors(v)]
    if has_tensors(obj) or not nested:
        state, key = obj, None
    elif len(nested) == 1:
        state, key = obj[nested[0]], nested[0]
    else:
        names = ", ".join(_short(k, 40) for k in nested[:SHOWN])
        raise EdgesnnError(f"{path}: holds {len(nested)} state dicts ({names}); save the one to deploy on its own, "
                           f"e.g. torch.save(ckpt[{_short(nested[0], 40)!r}], 'w.pt')")
    if not state:
        raise EdgesnnError(f"{path}: holds no tensors; {SAVE_HINT}")
    inside = "" if key is None else f"[{_short(key, 40)!r}]"
    for name, value in state.items():
        if not isinstance(name, str):
            raise EdgesnnError(f"{path}{inside}: key {_short(name)} ({type(name).__name__}) is not a parameter name")
        if not isinstance(value, torch.Tensor):
            raise EdgesnnError(f"{path}{inside}: entry {_short(name)!r} holds {type(value).__name__}, not a tensor; a state "
                               f"dict maps parameter names to tensors ({SAVE_HINT})")
    return dict(state), key


def _stripped(state: dict[str, torch.Tensor], strip: tuple[str, ...], path: Path) -> dict[str, torch.Tensor]:
    if not strip:
        return state
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        new = name
        for p in strip:
            new = new.removeprefix(p)
        if not new or new in out:
            what = "is empty" if not new else "is another key's too"
            raise EdgesnnError(f"{path}: key {_short(name)!r} without --strip-prefix {' '.join(strip)} {what}")
        out[new] = t
    return out


def _check_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Dense real CPU tensors, within the memory budget as views (a stride-0 view of one element can
    declare a billion), and finite (checkpoint._check_finite names the tensor)."""
    for name, t in state.items():
        if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu" or t.is_complex():
            kind = t.layout if t.layout != torch.strided else t.dtype if t.is_quantized or t.is_complex() else t.device
            raise EdgesnnError(f"{path}: tensor {_short(name)!r} is {kind}; a state dict of dense real tensors is expected")
    limits.check_memory(sum(t.numel() * t.element_size() for t in state.values()), f"{path}: its tensors")
    _check_finite(state, str(path))


# ---------------------------------------------------------------- loading into a model

def build_loaded(model_name: str, kwargs: dict, neuron_map: dict | None, D: int, trust_code: custom.Trust,
                 path: str | Path, strip_prefixes: Iterable[str] = ()) -> tuple[nn.Module, dict]:
    """(model holding the file's weights, provenance). A user factory's model takes them as the
    factory builds it, before the neuron map: the file is that model's state dict, neuron state
    included, and the map then reads each neuron's trained settings (a learned threshold) from its
    instance. The mapped model is checked as :func:`edgesnn.models.build` checks it."""
    state, source = read(path, strip_prefixes)
    where = f"--model {model_name}"
    if not custom.is_factory(model_name):
        model = models.build(model_name, kwargs, neuron_map, D, trust_code)
        load_into(model, state, str(path), where)
        return model, source
    model = custom.build(model_name, kwargs, neuron_map, D, trust_code, where,
                         before_map=lambda m: load_into(m, state, str(path), where))
    return model, source


def load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str, model_desc: str = "the model") -> None:
    """Copy ``state`` into ``model`` exactly (no forward pass, so BatchNorm statistics stay the
    file's); every mismatch is one error: missing and unexpected keys (with a --strip-prefix hint
    when one would make them match), then shapes and kinds (float / integer). ``where`` (the file)
    and ``model_desc`` (e.g. ``--model mymod:net``) name the two sides."""
    target = model.state_dict()
    missing = [k for k in target if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        parts = ([f"{len(missing)} missing key(s): {_names(missing)}"] if missing else []) + \
                ([f"{len(unexpected)} unexpected key(s): {_names(unexpected)}"] if unexpected else [])
        raise EdgesnnError(f"{where}: does not match {model_desc}: {'; '.join(parts)}{_prefix_hint(list(state), set(target))}")
    wrong = [f"{k} {list(state[k].shape)} in the file, {list(t.shape)} in the model"
             for k, t in target.items() if k in state and state[k].shape != t.shape]
    if wrong:
        raise EdgesnnError(f"{where}: does not match {model_desc}: {len(wrong)} tensor(s) of another shape: "
                           f"{_names(wrong, 120)}")
    kinds = [f"{k} ({_dtype(state[k])} in the file, {_dtype(t)} in the model)"
             for k, t in target.items() if k in state and state[k].is_floating_point() != t.is_floating_point()]
    if kinds:
        raise EdgesnnError(f"{where}: does not match {model_desc}: {len(kinds)} tensor(s) of another kind: "
                           f"{_names(kinds, 120)}")
    full = {k: state[k] if k in state else t for k, t in target.items()}  # a missing counter keeps the model's
    model.load_state_dict(full, strict=True)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _optional(key: str) -> bool:
    """BatchNorm's batch counter: only a momentum of None reads it, and many scripts drop it."""
    return key.rpartition(".")[2] == _BATCHES


def _names(keys: list[str], width: int = 60) -> str:
    shown = ", ".join(_short(k, width) for k in keys[:SHOWN])
    return shown + (f", ... (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def _prefix_hint(keys: list[str], model_keys: set[str]) -> str:
    """'; ... pass --strip-prefix P' when every file key starts with P and, without it, names a model key."""
    first = keys[0].split(".") if keys else []
    for n in range(1, len(first)):
        prefix = ".".join(first[:n]) + "."
        if not all(k.startswith(prefix) for k in keys):
            break
        if all(k[len(prefix):] in model_keys for k in keys):
            return f"; every key in the file starts with {_short(prefix)!r}: pass --strip-prefix {_short(prefix)}"
    return ""
