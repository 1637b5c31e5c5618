"""Limits on what a file may declare, checked before anything is allocated, recursed into or run.

edgesnn reads files that users download and share. Every loader asks this module first, so a
hostile file (a JSON or YAML bomb, a header that declares terabytes, a graph a million nodes
deep) is one error line instead of an exhausted machine. The limits are documented in
SECURITY.md; the memory budget can be changed with ``EDGESNN_MEMORY_LIMIT`` (bytes, or with a
K/M/G/T suffix).
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import yaml

from edgesnn.errors import EdgesnnError

MAX_JSON_BYTES = 256 << 20  # a config, IR header or NIR program is kilobytes; 256 MiB is far past any real one
MAX_ARTIFACT_JSON_BYTES = 16 << 20  # project.json, lava.json, loihi2.json: kilobytes when edgesnn writes them
MAX_DEPTH = 64  # nesting of JSON and YAML documents (real ones nest < 10 deep)
MAX_YAML_NODES = 100_000  # scalars + collections in a recipe or board file; aliases are refused outright
MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit
MAX_GRAPH_NODES = 100_000  # ops of an IR, nodes and edges of a NIR graph
MAX_TENSOR_RANK = 8
MAX_CLASSES = 100_000  # class labels of a data set are indices below this (a label of 2**40 would size a 2**40-wide output)
MEMORY_FRACTION = 0.5  # default budget: half of RAM (or of the address-space limit, when one is set)
MEMORY_ENV = "EDGESNN_MEMORY_LIMIT"
# What reading an .npz (its zip, its .npy headers and arrays) raises on a damaged file; RuntimeError: an
# encrypted member, NotImplementedError: an unsupported compression.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error)

_SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                       "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# ---------------------------------------------------------------- memory

def memory_budget() -> int:
    """Bytes one model's weights or activations may take: ``EDGESNN_MEMORY_LIMIT``, else half of
    RAM, or of the process's address-space limit if that is lower."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
        if not m:
            raise EdgesnnError(f"{MEMORY_ENV}={text!r}: expected bytes, e.g. 8G or 500M")
        return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        total = min(total, soft)
    return int(total * MEMORY_FRACTION)


def check_memory(needed: int, what: str) -> None:
    """Refuse ``what`` when it needs more bytes than the budget, before anything is allocated."""
    allowed = memory_budget()
    if needed > allowed:
        raise EdgesnnError(f"{what} needs {needed:,} bytes, more than the {allowed:,} allowed "
                           f"(set {MEMORY_ENV} to change the limit)")


def elements(shape, where: str) -> int:
    """The element count of a declared shape, checked: a list of at most MAX_TENSOR_RANK ints >= 0."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_TENSOR_RANK or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise EdgesnnError(f"{where}: shape must be a list of at most {MAX_TENSOR_RANK} integers >= 0, got {_short(shape)}")
    return math.prod(shape)


# ---------------------------------------------------------------- JSON

def json_depth(text: str) -> int:
    """Deepest nesting of a JSON text, found without parsing (so without recursion)."""
    bare = re.sub(r'"[^"\\]*(?:\\.[^"\\]*)*"', "", text)  # strings may hold brackets (unrolled: linear time)
    brackets = re.sub(r"[^\[\]{}]", "", bare)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.encode(), dtype=np.uint8)
    delta = np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)
    return int(np.cumsum(delta).max())


def loads_json(text: str | bytes, where: str):
    """``json.loads`` after checking size and depth; every failure is one EdgesnnError naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise EdgesnnError(f"{where}: not UTF-8 JSON") from None
    if not isinstance(text, str):
        raise EdgesnnError(f"{where}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_JSON_BYTES:
        raise EdgesnnError(f"{where}: {len(text):,} bytes of JSON, more than the {MAX_JSON_BYTES:,} allowed")
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise EdgesnnError(f"{where}: JSON nested {depth} deep, more than the {MAX_DEPTH} allowed")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise EdgesnnError(f"{where}: not valid JSON ({_short(e)})") from None


def read_bytes(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """A file's bytes, its size checked before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise EdgesnnError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a {what} may have")
        return path.read_bytes()
    except OSError as e:
        raise EdgesnnError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def read_json(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES, where: str | None = None):
    """A JSON file, size-checked before it is read; ``where`` prefixes errors in its content (default: the path)."""
    return loads_json(read_bytes(path, what, max_bytes), where or str(path))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------- YAML

class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, and with bounded nesting and node count: an alias
    bomb (billion laughs) and a deeply nested document are refused while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_NODES} YAML nodes", self.peek_event().start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"YAML nested more than {MAX_DEPTH} deep", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str | bytes, where: str):
    """One YAML document, safe, bounded; every failure is one EdgesnnError naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise EdgesnnError(f"{where}: not UTF-8 text") from None
    if len(text) > MAX_JSON_BYTES:
        raise EdgesnnError(f"{where}: {len(text):,} bytes, more than the {MAX_JSON_BYTES:,} allowed")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise EdgesnnError(f"{where}: not valid YAML ({at}{_short(e.problem or e.context, 120)})") from None
    except yaml.YAMLError as e:
        raise EdgesnnError(f"{where}: not valid YAML ({_short(e)})") from None
    except RecursionError:
        raise EdgesnnError(f"{where}: YAML nested too deep") from None


def read_yaml(path: str | Path, what: str = "YAML file"):
    return load_yaml(read_bytes(path, what), str(path))


# ---------------------------------------------------------------- safetensors

def safetensors_header(path: str | Path) -> dict:
    """The header of a safetensors file, checked against the file before any tensor is read:
    a little-endian u64 length, then that many bytes of JSON (an object), then each tensor's
    dtype, shape and byte range inside the file. This is how a safetensors file is recognised:
    its first byte is part of a length, not a magic number."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise EdgesnnError(f"{path}: not a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise EdgesnnError(f"{path}: not a safetensors file (header length {n} for a file of {size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise EdgesnnError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:1] != b"{":
        raise EdgesnnError(f"{path}: not a safetensors file (its header is not a JSON object)")
    header = loads_json(raw.rstrip(b" "), f"{path}: safetensors header")
    if not isinstance(header, dict):
        raise EdgesnnError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise EdgesnnError(f"{path}: safetensors metadata must map names to strings")
            continue
        where = f"{path}: tensor {_short(name)}"
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise EdgesnnError(f"{where}: unknown dtype in the safetensors header")
        count = elements(entry.get("shape"), where)
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes
                and offsets[1] - offsets[0] == count * _SAFETENSORS_DTYPES[entry["dtype"]]):
            raise EdgesnnError(f"{where}: byte range {_short(offsets)} does not match its shape in a file of {size} bytes")
    return header


def is_safetensors(path: str | Path) -> bool:
    try:
        safetensors_header(path)
    except EdgesnnError:
        return False
    return True


# ---------------------------------------------------------------- npz

def npz_declared_bytes(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's declared shape and dtype in an .npz, read from the .npy headers only; the total
    is checked against the memory budget before any array is read (a header that declares 2^48
    elements, or a zip bomb, is refused here)."""
    path = Path(path)
    out, total = {}, 0
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if len(members) > 1000:
                raise EdgesnnError(f"{path}: {len(members)} arrays, more than the 1000 an .npz may hold")
            for info in members:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = _npy_header(f, version)
                if any(d < 0 for d in shape):  # a negative size would offset another array's in the total
                    raise ValueError(f"array {_short(info.filename)} declares a negative dimension {tuple(shape)}")
                if dtype.hasobject:
                    raise EdgesnnError(f"{path}: array {_short(info.filename)} holds pickled objects (Python objects); not accepted")
                nbytes = math.prod(shape) * dtype.itemsize
                total += nbytes
                out[info.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    except EdgesnnError:
        raise
    except (*NPZ_ERRORS, struct.error, SyntaxError, TypeError) as e:
        raise EdgesnnError(f"{path}: not a readable .npz file ({_short(e)})") from None
    check_memory(total, f"{path}: reading its arrays")
    return out


def _npy_header(f, version: tuple[int, int]):
    """(shape, fortran_order, dtype) of one .npy member, through numpy's public readers (the 3.0
    version only differs in allowing UTF-8 field names, and np.save writes it for those alone)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
    return readers[version](f, max_header_size=10000)


def _short(obj, n: int = 80) -> str:
    """One line, at most ``n`` characters, of anything a file said (never a forged second line)."""
    text = str(obj) if isinstance(obj, (str, BaseException)) else repr(obj)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= n else text[: n - 3] + "..."
