"""The one IR file format: a safetensors file whose metadata holds the graph as JSON.

Arrays (weights packed to their bit width, biases, multipliers, shifts) are safetensors tensors
named ``<op>.<field>``; the graph (tensors, ops, attributes) is JSON under the ``edgesnn_ir``
metadata key, next to ``edgesnn_ir_version``. Loading checks the version and the schema.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.ir import graph as g
from edgesnn.ir import packing

FORMAT = "edgesnn-ir"


def save(graph: g.Graph, path) -> None:
    """Write atomically (temp file + rename): a failed save leaves nothing half-written."""
    tensors, ops = {}, []
    for op in graph.ops:
        entry = {"kind": op.kind, **_jsonable(op.attrs())}
        for name, arr in op.arrays().items():
            key = f"{op.name}.{name}"
            if name == "weight":
                entry["weight_shape"] = list(arr.shape)
                arr = packing.pack(arr, op.weight_bits, op.weight_code)
            tensors[key] = np.ascontiguousarray(arr)
        ops.append(entry)
    header = {
        "layout": g.LAYOUT,
        "input": graph.input,
        "outputs": graph.outputs,
        "tensors": {k: asdict(v) for k, v in graph.tensors.items()},
        "ops": ops,
        "meta": graph.meta,
    }
    metadata = {"format": FORMAT, "edgesnn_ir_version": str(g.IR_VERSION), "edgesnn_ir": json.dumps(_jsonable(header))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load(path) -> g.Graph:
    path = Path(path)
    if not path.is_file():
        raise EdgesnnError(f"{path}: no such IR file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EdgesnnError(f"{path}: not an edgesnn IR file ({_first_line(e)})") from None
    if metadata.get("format") != FORMAT:
        raise EdgesnnError(f"{path}: not an edgesnn IR file (safetensors without edgesnn IR metadata)")
    version = metadata.get("edgesnn_ir_version")
    if version != str(g.IR_VERSION):
        raise EdgesnnError(f"{path}: IR version {version}, but this edgesnn reads version {g.IR_VERSION}; re-export the model")
    try:
        header = json.loads(metadata["edgesnn_ir"])
        return _graph_from_header(header, arrays)
    except EdgesnnError as e:
        raise EdgesnnError(f"{path}: invalid IR: {e}") from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise EdgesnnError(f"{path}: invalid IR: {type(e).__name__}: {_first_line(e)}") from None


def _graph_from_header(header: dict, arrays: dict) -> g.Graph:
    _require(header.get("layout") == g.LAYOUT, f"layout must be {g.LAYOUT}")
    tensors = {}
    for name, spec in header["tensors"].items():
        _require(spec["dtype"] in g.DTYPES, f"tensor {name}: unknown dtype {spec['dtype']!r}")
        tensors[name] = g.TensorSpec(**spec)
    ops = []
    for entry in header["ops"]:
        entry = dict(entry)
        kind = entry.pop("kind")
        _require(kind in g.OP_TYPES, f"unknown op kind {kind!r}")
        cls = g.OP_TYPES[kind]
        weight_shape = entry.pop("weight_shape", None)
        names = {f.name for f in fields(cls)}
        unknown = set(entry) - names
        _require(not unknown, f"op {entry.get('name')}: unknown fields {sorted(unknown)}")
        for f in fields(cls):
            key = f"{entry['name']}.{f.name}"
            if key in arrays:
                arr = arrays[key]
                if f.name == "weight":
                    _require(weight_shape is not None, f"op {entry['name']}: weight without shape")
                    arr = packing.unpack(arr, entry["weight_bits"], weight_shape, entry.get("weight_code", "signed"))
                entry[f.name] = arr
        op = cls(**entry)
        for ref in (*op.inputs, op.output):
            _require(ref in tensors, f"op {op.name} refers to unknown tensor {ref!r}")
        ops.append(op)
    _require(header["input"] in tensors, "unknown input tensor")
    for out in header["outputs"]:
        _require(out in tensors, f"unknown output tensor {out!r}")
    return g.Graph(tensors=tensors, ops=ops, input=header["input"], outputs=list(header["outputs"]), meta=header.get("meta", {}))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise EdgesnnError(message)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
