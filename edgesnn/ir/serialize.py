"""The one IR file format: a safetensors file whose metadata holds the graph as JSON.

Arrays (weights packed to their bit width, biases, multipliers, shifts) are safetensors tensors
named ``<op>.<field>``; the graph (tensors, ops, attributes) is JSON under the ``edgesnn_ir``
metadata key, next to ``edgesnn_ir_version``. Loading checks the version and the schema.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from edgesnn import limits
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.ir import graph as g
from edgesnn.ir import interpreter, packing, state
from edgesnn.ir.fixedpoint import WIDE_INPUTS

FORMAT = "edgesnn-ir"
OP_TYPES = {**g.OP_TYPES, **state.OP_TYPES}  # the ops of one timestep, and the stateful ones of a temporal graph


def save(graph: g.Graph, path) -> None:
    """Write atomically (temp file + rename): a failed save leaves nothing half-written."""
    header, arrays = to_header(graph)
    metadata = {"format": FORMAT, "edgesnn_ir_version": str(g.IR_VERSION), "edgesnn_ir": json.dumps(header)}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)
        _sort_metadata(tmp)


def to_header(graph: g.Graph) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph as its JSON header and its arrays (``<op>.<field>``, weights packed to their bit width)."""
    arrays, ops = {}, []
    for op in graph.ops:
        entry = {"kind": op.kind, **_jsonable(op.attrs())}
        for name, arr in op.arrays().items():
            if name == "weight":
                entry["weight_shape"] = list(arr.shape)
                arr = packing.pack(arr, op.weight_bits, op.weight_code)
            arrays[f"{op.name}.{name}"] = np.ascontiguousarray(arr)
        ops.append(entry)
    header = {"layout": g.LAYOUT, "input": graph.input, "outputs": graph.outputs,
              "tensors": {k: asdict(v) for k, v in graph.tensors.items()}, "ops": ops, "meta": graph.meta,
              **state.header_entries(graph)}
    return _jsonable(header), arrays


def _sort_metadata(path: Path) -> None:
    """safetensors writes its metadata map in hash order, which changes from one process to the
    next; rewrite the header (same length) with the keys sorted so equal graphs give equal bytes."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            raise AssertionError("canonical safetensors header is longer than the original")
        f.seek(8)
        f.write(text.ljust(n))  # safetensors pads its header with spaces to 8-byte alignment


def load(path) -> g.Graph:
    """Every size the file declares is checked before it is allocated: the safetensors header
    (each tensor's byte range inside the file), the graph JSON's size and depth, the op and tensor
    counts, the arrays' bytes, and (in :func:`graph_from_header`) what running one sample needs."""
    path = Path(path)
    if not path.is_file():
        raise EdgesnnError(f"{path}: no such IR file")
    try:
        st_header = limits.safetensors_header(path)
    except EdgesnnError as e:
        raise EdgesnnError(f"{path}: not an edgesnn IR file ({_without(str(e), path)})") from None
    metadata = st_header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise EdgesnnError(f"{path}: not an edgesnn IR file (safetensors without edgesnn IR metadata)")
    version = metadata.get("edgesnn_ir_version")
    if version != str(g.IR_VERSION):
        raise EdgesnnError(f"{path}: IR version {limits._short(version, 40)}, but this edgesnn reads version "
                           f"{g.IR_VERSION}; re-export the model")
    if "edgesnn_ir" not in metadata:
        raise EdgesnnError(f"{path}: invalid IR: no graph (the 'edgesnn_ir' metadata entry)")
    try:
        header = limits.loads_json(metadata["edgesnn_ir"], "the graph JSON")
        check_counts(header)
    except EdgesnnError as e:
        raise EdgesnnError(f"{path}: invalid IR: {_one_line(str(e))}") from None
    limits.check_memory(sum(_nbytes(v) for k, v in st_header.items() if k != "__metadata__"), f"{path}: reading its arrays")
    try:
        with safe_open(str(path), framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EdgesnnError(f"{path}: not an edgesnn IR file ({_first_line(e)})") from None
    try:
        graph = graph_from_header(header, arrays)
    except EdgesnnError as e:
        raise EdgesnnError(f"{path}: invalid IR: {_one_line(str(e))}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise EdgesnnError(f"{path}: invalid IR: {type(e).__name__}: {_one_line(_first_line(e))}") from None
    graph.path = str(path)
    interpreter.plan(graph, 1)  # a graph that cannot run one sample within the memory budget is refused here
    return graph


def check_counts(header) -> None:
    """Op and tensor counts within :data:`edgesnn.limits.MAX_GRAPH_NODES`, before anything walks them."""
    if not isinstance(header, dict):
        return  # graph_from_header says what is wrong
    for key in ("ops", "tensors"):
        items = header.get(key)
        if isinstance(items, (list, dict)) and len(items) > limits.MAX_GRAPH_NODES:
            raise EdgesnnError(f"{len(items):,} {key}, more than the {limits.MAX_GRAPH_NODES:,} an IR may have")


def _nbytes(entry: dict) -> int:
    offsets = entry["data_offsets"]
    return offsets[1] - offsets[0]


def _without(message: str, path: Path) -> str:
    """A limits message without its leading path (the caller's message names the file)."""
    return message.removeprefix(f"{path}: ")


def graph_from_header(header: dict, arrays: dict) -> g.Graph:
    """The graph of a header and its arrays, with every schema, arity, order and shape check a file gets."""
    _require(isinstance(header, dict), "the graph JSON must be an object")
    _require(header.get("layout") == g.LAYOUT, f"layout must be {g.LAYOUT}")
    _require(isinstance(header.get("tensors"), dict), "'tensors' must be an object of tensor specs")
    _require(isinstance(header.get("ops"), list), "'ops' must be a list")
    _require(isinstance(header.get("meta", {}), dict), "'meta' must be an object")
    source = header.get("meta", {}).get("source", {})
    _require(isinstance(source, dict) and all(isinstance(v, str) for v in source.values()),
             "'meta.source' must be an object of strings (the checkpoint, model and data it came from)")
    check_counts(header)
    tensors = {}
    spec_fields = {f.name for f in fields(g.TensorSpec)}
    for name, spec in header["tensors"].items():
        _require(isinstance(spec, dict), f"tensor {name}: spec must be an object")
        _require(spec.get("dtype") in g.DTYPES, f"tensor {name}: unknown dtype {spec.get('dtype')!r}")
        unknown = set(spec) - spec_fields
        _require(not unknown, f"tensor {name}: unknown fields {sorted(unknown)}")
        missing = {"shape", "dtype", "scale"} - set(spec)
        _require(not missing, f"tensor {name}: missing fields {sorted(missing)}")
        tensors[name] = g.TensorSpec(**spec)
        _check_tensor(name, tensors[name])
    ops = []
    for entry in header["ops"]:
        _require(isinstance(entry, dict) and isinstance(entry.get("name"), str), "every op must be an object with a 'name'")
        entry = dict(entry)
        kind = entry.pop("kind", None)
        _require(isinstance(kind, str) and kind in OP_TYPES, f"op {entry['name']}: unknown op kind {kind!r}")
        cls = OP_TYPES[kind]
        weight_shape = entry.pop("weight_shape", None)
        names = {f.name for f in fields(cls)}
        unknown = set(entry) - names
        _require(not unknown, f"op {entry['name']}: unknown fields {sorted(unknown)}")
        for f in fields(cls):
            key = f"{entry['name']}.{f.name}"
            if key in arrays:
                arr = arrays[key]
                if f.name == "weight":
                    _require(_is_int_list(weight_shape) and all(d >= 0 for d in weight_shape),
                             f"op {entry['name']}: weight without a valid shape")
                    count = limits.elements(weight_shape, f"op {entry['name']}: weight")
                    bits, code = entry.get("weight_bits", 8), entry.get("weight_code", "signed")
                    _require(_is_int(bits) and isinstance(code, str), f"op {entry['name']}: bad weight_bits/weight_code")
                    _require(arr.size == packing.packed_nbytes(count, bits) if 1 <= bits <= 8 else True,
                             f"op {entry['name']}: weight of shape {weight_shape} at {bits} bits needs "
                             f"{packing.packed_nbytes(count, bits):,} packed bytes, the file holds {arr.size:,}")
                    limits.check_memory(count * (17 * bits + 1), f"op {entry['name']}: unpacking its weights")
                    arr = packing.unpack(arr, bits, weight_shape, code)
                entry[f.name] = arr
        _require({"inputs", "output"} <= set(entry), f"op {entry['name']}: missing 'inputs' or 'output'")
        op = cls(**entry)
        _require(isinstance(op.inputs, list) and all(isinstance(i, str) for i in op.inputs) and isinstance(op.output, str),
                 f"op {op.name}: 'inputs' must be a list of tensor names and 'output' a tensor name")
        for ref in (*op.inputs, op.output):
            _require(ref in tensors, f"op {op.name} refers to unknown tensor {ref!r}")
        ops.append(op)
    _require(isinstance(header.get("input"), str) and header["input"] in tensors, "unknown input tensor")
    _require(isinstance(header.get("outputs"), list) and header["outputs"], "'outputs' must be a non-empty list")
    for out in header["outputs"]:
        _require(isinstance(out, str) and out in tensors, f"unknown output tensor {out!r}")
    states, sequence = state.read_header(header)
    graph = g.Graph(tensors=tensors, ops=ops, input=header["input"], outputs=list(header["outputs"]), meta=header.get("meta", {}),
                    states=states, sequence=sequence)
    _check_graph(graph)
    state.check_graph(graph)
    return graph


_ARITY = {"mul": 2, "add": 2, "batch_matmul": 2}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_int_list(v, n: int | None = None) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v) and (n is None or len(v) == n)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_tensor(name: str, t: g.TensorSpec) -> None:
    limits.elements(t.shape, f"tensor {name}")
    _require(_is_int_list(t.shape) and all(1 <= d <= 2**24 for d in t.shape) and math.prod(t.shape) <= 2**28,
             f"tensor {name}: shape must be a list of positive integers, got {t.shape!r}")
    _require(_is_number(t.scale) and 0 < t.scale < 3.4e38 and np.float32(t.scale) > 0,
             f"tensor {name}: scale must be a positive float32 number, got {t.scale!r}")
    lo, hi = g.dtype_range(t.dtype)
    _require(_is_int(t.zero_point) and lo <= t.zero_point <= hi, f"tensor {name}: zero_point must be an integer in {t.dtype}")
    _require(t.spike_D is None or (_is_int(t.spike_D) and t.spike_D >= 0), f"tensor {name}: spike_D must be null or an integer >= 0")
    _require(isinstance(t.signed, bool), f"tensor {name}: signed must be true or false")


def _array(op, field: str, dtype, length: int | None = None, ndim: int = 1) -> np.ndarray:
    arr = getattr(op, field)
    _require(isinstance(arr, np.ndarray), f"op {op.name}: missing array {field!r}")
    _require(arr.dtype == dtype and arr.ndim == ndim, f"op {op.name}: {field} must be a {ndim}-d {np.dtype(dtype).name} array")
    if length is not None:
        _require(arr.shape[0] == length, f"op {op.name}: {field} has {arr.shape[0]} entries, expected {length}")
    return arr


def _check_requant(op, channels: int, in_dtype: str) -> None:
    mult = _array(op, "multiplier", np.int32)
    n = mult.shape[0] if op.kind == "add" else None
    _require(op.kind == "add" or mult.shape[0] in (1, channels), f"op {op.name}: multiplier must have 1 or {channels} entries")
    shift = _array(op, "shift", np.int32, mult.shape[0] if n is None else n)
    _require(mult.size and mult.min() >= 0, f"op {op.name}: multipliers must be non-negative")
    top = 14 if in_dtype in WIDE_INPUTS and op.kind in ("conv2d", "dense", "reduce_sum", "batch_matmul") else 30
    _require(shift.size and shift.min() >= -62 and shift.max() <= top, f"op {op.name}: shift outside [-62, {top}]")


def _check_graph(graph: g.Graph) -> None:
    """Types, array shapes and the shape of every op's output, in order: a graph that loads runs."""
    ts = graph.tensors
    known = {graph.input}
    for op in graph.ops:
        name = op.name
        _require(len(op.inputs) == _ARITY.get(op.kind, 1), f"op {name}: {op.kind} takes {_ARITY.get(op.kind, 1)} inputs, got {len(op.inputs)}")
        for i in op.inputs:
            _require(i in known, f"op {name}: input {i!r} is not computed before it")
        _require(op.output not in known, f"op {name}: tensor {op.output!r} is written twice")
        ins = [list(ts[i].shape) for i in op.inputs]
        out = list(ts[op.output].shape)
        in_dtype = ts[op.inputs[0]].dtype
        if hasattr(op, "clamp"):
            lo, hi = g.dtype_range(ts[op.output].dtype)
            _require(_is_int_list(op.clamp, 2) and lo <= op.clamp[0] <= op.clamp[1] <= hi,
                     f"op {name}: clamp must be [low, high] within {ts[op.output].dtype}")
        if op.kind in ("conv2d", "dense"):
            _require(_is_int(op.weight_bits) and isinstance(op.weight_code, str), f"op {name}: bad weight format")
            w = _array(op, "weight", np.int8, ndim=4 if op.kind == "conv2d" else 2)
            _array(op, "bias", np.int32, w.shape[0])
            ws = getattr(op, "weight_scale")
            _require(ws is None or (isinstance(ws, np.ndarray) and ws.dtype.kind == "f"), f"op {name}: weight_scale must be a float array")
        if op.kind == "dense":
            _require(len(ins[0]) >= 1 and w.shape[1] == ins[0][-1], f"op {name}: weight {list(w.shape)} does not fit input {ins[0]}")
            want = [*ins[0][:-1], w.shape[0]]
        elif op.kind == "conv2d":
            _require(_is_int_list(op.stride, 2) and min(op.stride) >= 1, f"op {name}: stride must be two positive integers")
            _require(_is_int_list(op.padding, 4) and min(op.padding) >= 0 and max(op.padding) <= 2**16,
                     f"op {name}: padding must be four non-negative integers")
            _require(_is_int(op.groups) and op.groups >= 1, f"op {name}: groups must be a positive integer")
            _require(len(ins[0]) == 3, f"op {name}: conv2d input must be HWC, got {ins[0]}")
            o, kh, kw, cg = w.shape
            (h, wd, c), (t, b, l, r), (sh, sw) = ins[0], op.padding, op.stride
            _require(min(o, kh, kw, cg) >= 1 and c == cg * op.groups and o % op.groups == 0 and h + t + b >= kh and wd + l + r >= kw,
                     f"op {name}: weight {list(w.shape)} (groups {op.groups}) does not fit input {ins[0]}")
            want = [(h + t + b - kh) // sh + 1, (wd + l + r - kw) // sw + 1, o]
        elif op.kind == "reduce_sum":
            _require(len(ins[0]) == 3, f"op {name}: reduce_sum input must be HWC")
            _require(_is_number(op.scale), f"op {name}: scale must be a number")
            want = [1, 1, ins[0][2]]
        elif op.kind in ("sum_pool2d", "max_pool2d"):
            _require(_is_int_list(op.kernel, 2) and _is_int_list(op.stride, 2) and min(*op.kernel, *op.stride) >= 1,
                     f"op {name}: kernel and stride must be two positive integers")
            _require(len(ins[0]) == 3 and ins[0][0] >= op.kernel[0] and ins[0][1] >= op.kernel[1],
                     f"op {name}: kernel {op.kernel} does not fit input {ins[0]}")
            want = [(ins[0][0] - op.kernel[0]) // op.stride[0] + 1, (ins[0][1] - op.kernel[1]) // op.stride[1] + 1, ins[0][2]]
        elif op.kind in ("mul", "add"):
            try:
                want = list(np.broadcast_shapes(tuple(ins[0]), tuple(ins[1])))
            except ValueError:
                raise EdgesnnError(f"op {name}: input shapes {ins[0]} and {ins[1]} do not broadcast") from None
            if op.kind == "add":
                _require(_is_int(op.left_shift) and 0 <= op.left_shift <= 24, f"op {name}: left_shift must be in 0..24")
                _require(op.input_scales is None or (isinstance(op.input_scales, list) and all(map(_is_number, op.input_scales))),
                         f"op {name}: input_scales must be null or a list of numbers")
                _array(op, "multiplier", np.int32, 3)
        elif op.kind == "transpose":
            _require(_is_int_list(op.perm, len(ins[0])) and sorted(op.perm) == list(range(len(ins[0]))),
                     f"op {name}: perm must be a permutation of the input's {len(ins[0])} axes")
            want = [ins[0][p] for p in op.perm]
        elif op.kind == "batch_matmul":
            a, b = ins
            _require(isinstance(op.adj_y, bool), f"op {name}: adj_y must be true or false")
            _require(ts[op.inputs[1]].dtype == in_dtype == ts[op.output].dtype and in_dtype in ("int8", "int16")
                     and ts[op.inputs[0]].zero_point == 0 and ts[op.inputs[1]].zero_point == 0,
                     f"op {name}: inputs and output must all be int8 or all int16, the inputs with zero point 0")
            b = [*b[:-2], b[-1], b[-2]] if op.adj_y and len(b) >= 2 else b
            _require(len(a) >= 2 and len(a) == len(b) and a[:-2] == b[:-2] and a[-1] == b[-2],
                     f"op {name}: inputs {ins[0]} and {ins[1]} (adj_y {op.adj_y}) do not multiply")
            want = [*a[:-1], b[-1]]
            _require(np.size(op.multiplier) == 1, f"op {name}: batch_matmul takes one multiplier (per tensor)")
        elif op.kind == "requantize":
            _require(op.input_scale is None or _is_number(op.input_scale), f"op {name}: input_scale must be null or a number")
            want = ins[0]
        elif op.kind in state.OP_TYPES:
            want = state.check_op(graph, op, ins, out)
        else:  # reshape
            want = out if math.prod(out) == math.prod(ins[0]) else None
        _require(want == out, f"op {name}: output {op.output!r} has shape {out}, but {op.kind} gives {want}")
        if isinstance(op, (g.Requantized, g.Add)):
            _check_requant(op, out[-1], in_dtype)
        known.add(op.output)
    for o in graph.outputs:
        _require(o in known, f"output {o!r} is not computed")


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


def _one_line(text: str) -> str:
    """Names read from the file may hold line breaks: escape them so the error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
