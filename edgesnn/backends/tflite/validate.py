"""A .tflite file checked before a runtime sees it.

TFLite Micro does not verify the flatbuffer it is given (its Python loader reads it with the
flatbuffers package, which raises struct.error or TypeError on a damaged file, and its C++ side
follows every offset as is). So the file is walked here, iteratively and within a work bound, the
way flatbuffers' own verifier does: every table, vtable, vector and string lies inside the file,
every index (tensor, buffer, operator code, subgraph) points at something that exists, every
tensor shape passes :func:`edgesnn.limits.elements`, every constant's bytes match its shape, and
quantization scales are finite and positive. What the schema allows but edgesnn never writes and
the runtimes read without checks (sparse tensors, custom quantization, the second options union)
is refused. Field numbers are the TFLite schema's (schema.fbs, version 3).
"""

from __future__ import annotations

import math
import struct

from edgesnn import limits
from edgesnn.errors import EdgesnnError

MAX_BYTES = 2**31 - 1  # a flatbuffer addresses at most 2 GiB
TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
# TensorType -> bytes per element; STRING, RESOURCE, VARIANT and INT4 (never written here) are refused.
ZERO_POINT_RANGE = {9: (-128, 127), 7: (-32768, 32767), 3: (0, 255), 2: (0, 0), 4: (0, 0)}  # int8, int16, uint8, int32, int64
MAX_BUILTIN_OPTIONS = 126  # the BuiltinOptions union members of schema 3 (tflite 2.18)
# BuiltinOptions tables with offset fields (field -> "ints", "floats" or "string"); all the others hold scalars only.
OPTION_REFS = {
    "ReshapeOptions": {0: "ints"}, "SqueezeOptions": {0: "ints"}, "BucketizeOptions": {0: "floats"},
    "ConcatEmbeddingsOptions": {1: "ints", 2: "ints"}, "VarHandleOptions": {0: "string", 1: "string"},
}


class _Reader:
    """Bounds-checked reads of one flatbuffer; ``work`` bounds the total objects and elements
    visited, so references that alias one big vector many times cannot make the walk quadratic."""

    def __init__(self, data: bytes, where: str):
        self.data, self.n, self.where = data, len(data), where
        self.work = 2 * len(data) + 4096

    def fail(self, what: str):
        raise EdgesnnError(f"{self.where}: not a valid TFLite flatbuffer ({what})")

    def spend(self, units: int) -> None:
        self.work -= units
        if self.work < 0:
            self.fail("its references overlap more than its size allows")

    def unpack(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            self.fail(f"a read of {size} bytes at offset {pos} is outside the file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int) -> tuple[int, int, int]:
        """(position, vtable position, vtable size) of the table at ``pos``, all inside the file."""
        self.spend(1)
        vt = pos - self.unpack("<i", pos)
        vt_size, obj_size = self.unpack("<H", vt), self.unpack("<H", vt + 2)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > self.n or obj_size < 4 or pos + obj_size > self.n:
            self.fail(f"the table at offset {pos} has a vtable outside the file")
        return pos, vt, vt_size

    def field(self, t, i: int) -> int:
        """Offset of field ``i`` inside table ``t`` (0: absent)."""
        pos, vt, vt_size = t
        return self.unpack("<H", vt + 4 + 2 * i) if 4 + 2 * i < vt_size else 0

    def scalar(self, t, i: int, fmt: str, default=0):
        off = self.field(t, i)
        return default if off == 0 else self.unpack(fmt, t[0] + off)

    def target(self, t, i: int) -> int | None:
        """Where the offset field ``i`` points (forward, inside the file), or None when absent."""
        off = self.field(t, i)
        if off == 0:
            return None
        pos = t[0] + off
        return pos + self.unpack("<I", pos)

    def vector(self, t, i: int, elem: int) -> tuple[int, int] | None:
        """(start of the elements, length) of a vector field of ``elem``-byte elements."""
        pos = self.target(t, i)
        if pos is None:
            return None
        length = self.unpack("<I", pos)
        if pos + 4 + length * elem > self.n:
            self.fail(f"a vector of {length:,} elements at offset {pos} runs past the end of the file")
        return pos + 4, length

    def numbers(self, t, i: int, fmt: str) -> list:
        v = self.vector(t, i, struct.calcsize(fmt))
        if v is None:
            return []
        start, length = v
        self.spend(length)
        return list(struct.unpack_from(f"<{length}{fmt}", self.data, start))

    def string(self, t, i: int) -> bytes | None:
        v = self.vector(t, i, 1)
        if v is None:
            return None
        start, length = v
        if start + length >= self.n or self.data[start + length] != 0:
            self.fail(f"the string at offset {start - 4} has no terminating zero")
        return self.data[start:start + length]

    def tables(self, t, i: int) -> list:
        v = self.vector(t, i, 4)
        if v is None:
            return []
        start, length = v
        self.spend(length)
        return [self.table(start + 4 * k + self.unpack("<I", start + 4 * k)) for k in range(length)]

    def subtable(self, t, i: int):
        pos = self.target(t, i)
        return None if pos is None else self.table(pos)


def validate(data: bytes, where: str) -> None:
    """Refuse, in one line naming ``where``, a .tflite file a runtime could not load safely."""
    if len(data) > MAX_BYTES:
        raise EdgesnnError(f"{where}: {len(data):,} bytes, more than a TFLite flatbuffer can address")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgesnnError(f"{where}: not a TFLite flatbuffer (no TFL3 file identifier)")
    r = _Reader(data, where)
    model = r.table(r.unpack("<I", 0))
    codes = r.tables(model, 1)
    for code in codes:  # deprecated_builtin_code, custom_code, version, builtin_code
        r.scalar(code, 0, "<b"), r.string(code, 1), r.scalar(code, 2, "<i"), r.scalar(code, 3, "<i")
    r.string(model, 3)  # description
    spans = [_buffer(r, b) for b in r.tables(model, 4)]  # (start of the data or None, bytes)
    buffers = [n for _, n in spans]
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        r.fail("no subgraph")
    if any(not 0 <= b < len(buffers) for b in r.numbers(model, 5, "i")):
        r.fail("a metadata buffer index outside its buffers")
    for meta in r.tables(model, 6):  # name, buffer
        r.string(meta, 0)
        if not 0 <= r.scalar(meta, 1, "<I") < max(len(buffers), 1):
            r.fail("a metadata entry names a buffer it does not have")
    for sig in r.tables(model, 7):  # inputs, outputs (TensorMap: name, tensor_index), signature_key, subgraph_index
        for tm in r.tables(sig, 0) + r.tables(sig, 1):
            r.string(tm, 0), r.scalar(tm, 1, "<I")
        r.string(sig, 2)
        if not 0 <= r.scalar(sig, 4, "<I") < len(subgraphs):
            r.fail("a signature names a subgraph it does not have")
    ops = [max(r.scalar(c, 3, "<i"), r.scalar(c, 0, "<b")) for c in codes]  # a runtime takes the larger code
    activations = 0
    for sg in subgraphs:
        tensors, operators, size = _subgraph(r, sg, len(codes), buffers)
        activations += size
        for op in operators:
            _check_op(r, op, ops[op["code"]], tensors, spans)
    # LiteRT allocates every non-constant tensor; TFLite Micro gets an arena of 16x the file (runtime.py)
    limits.check_memory(activations + 16 * len(data), f"{where}: running it")


def _buffer(r: _Reader, b) -> tuple[int | None, int]:
    """(start, bytes) of one buffer: inline data, or (offset, size) into the file after the flatbuffer."""
    inline = r.vector(b, 0, 1)
    offset, size = r.scalar(b, 1, "<Q"), r.scalar(b, 2, "<Q")
    if offset > 1 or size:
        if offset + size > r.n:
            r.fail(f"a buffer at offset {offset} of {size:,} bytes runs past the end of the file")
        return offset, size
    return (None, 0) if inline is None else inline


def _subgraph(r: _Reader, sg, n_codes: int, buffers: list[int]) -> tuple[list[dict], list[dict], int]:
    """Checks one subgraph's structure; returns its tensors, its operators and the bytes of its
    non-constant tensors."""
    tensors = [_tensor(r, t, k, buffers) for k, t in enumerate(r.tables(sg, 0))]
    n = len(tensors)
    activations = sum(t["bytes"] for t in tensors if t["buffer"] is None)
    operators = []
    for field, what in ((1, "input"), (2, "output")):
        if any(not 0 <= i < n for i in r.numbers(sg, field, "i")):
            r.fail(f"a subgraph {what} names a tensor it does not have")
    for k, op in enumerate(r.tables(sg, 3)):
        code = r.scalar(op, 0, "<I")
        if not 0 <= code < n_codes:
            r.fail("an operator names an operator code the file does not have")
        for field in (1, 2, 8):  # inputs (-1: an omitted optional input), outputs, intermediates
            if any(not -1 <= i < n for i in r.numbers(op, field, "i")):
                r.fail("an operator names a tensor its subgraph does not have")
        kind, options = _options(r, op)
        operators.append({"index": k, "code": code, "inputs": r.numbers(op, 1, "i"), "outputs": r.numbers(op, 2, "i"),
                          "options_type": kind, "options": options})
        r.vector(op, 5, 1), r.vector(op, 7, 1)  # custom_options, mutating_variable_inputs
        offset, size = r.scalar(op, 9, "<Q"), r.scalar(op, 10, "<Q")
        if offset + size > r.n:
            r.fail("an operator's large custom options run past the end of the file")
        if r.scalar(op, 11, "<B"):
            r.fail("an operator uses the second builtin options union, which edgesnn does not read")
    r.string(sg, 4)
    return tensors, operators, activations


def _options(r: _Reader, op) -> None:
    import tflite

    kind = r.scalar(op, 3, "<B")
    options = r.subtable(op, 4)
    if options is None:
        return kind, None
    if not 1 <= kind <= MAX_BUILTIN_OPTIONS:
        r.fail(f"builtin options of unknown type {kind}")
    name = next((k for k, v in vars(tflite.BuiltinOptions).items() if v == kind and not k.startswith("_")), "")
    for field, what in OPTION_REFS.get(name, {}).items():
        if what == "string":
            r.string(options, field)
        else:
            r.numbers(options, field, "i" if what == "ints" else "f")
    return kind, options


def _tensor(r: _Reader, t, index: int, buffers: list[int]) -> dict:
    """Checks one tensor; returns its shape, type, bytes, constant buffer (None: not a constant)
    and quantization."""
    where = f"{r.where}: tensor {index}"
    shape = r.numbers(t, 0, "i")
    count = limits.elements(shape, where)
    kind = r.scalar(t, 1, "<b")
    if kind not in TYPE_BYTES:
        raise EdgesnnError(f"{where}: tensor type {kind} is not one edgesnn runs")
    nbytes = count * TYPE_BYTES[kind]
    buffer = r.scalar(t, 2, "<I")
    if not 0 <= buffer < max(len(buffers), 1):
        raise EdgesnnError(f"{where}: buffer {buffer} does not exist (the file has {len(buffers)})")
    r.string(t, 3)
    if buffers and buffers[buffer] and buffers[buffer] != nbytes:
        raise EdgesnnError(f"{where}: its constant data has {buffers[buffer]:,} bytes, its shape needs {nbytes:,}")
    q = r.subtable(t, 4)
    scale, zero_point = _quantization(r, q, shape, kind, where) if q is not None else ([], [])
    if r.target(t, 6) is not None or r.target(t, 9) is not None:
        raise EdgesnnError(f"{where}: sparse or variant tensors are not read by edgesnn")
    r.numbers(t, 7, "i")  # shape_signature
    constant = buffer if buffers and buffers[buffer] else None
    return {"index": index, "shape": shape, "type": kind, "bytes": nbytes, "buffer": constant,
            "scale": scale, "zero_point": zero_point}


def _quantization(r: _Reader, q, shape: list[int], kind: int, where: str) -> tuple[list, list]:
    r.numbers(q, 0, "f"), r.numbers(q, 1, "f")  # min, max
    scale, zero_point = r.numbers(q, 2, "f"), r.numbers(q, 3, "q")
    if r.scalar(q, 4, "<B") or r.target(q, 5) is not None:
        raise EdgesnnError(f"{where}: custom quantization is not read by edgesnn")
    dim = r.scalar(q, 6, "<i")
    lo, hi = ZERO_POINT_RANGE.get(kind, (0, 0))
    if not all(lo <= z <= hi for z in zero_point):
        raise EdgesnnError(f"{where}: a zero point outside its type's range [{lo}, {hi}]")
    if not scale:
        return scale, zero_point
    if not all(math.isfinite(s) and s > 0 for s in scale):
        raise EdgesnnError(f"{where}: quantization scales must be finite and positive")
    channels = shape[dim] if 0 <= dim < len(shape) else None
    if len(zero_point) != len(scale) or (len(scale) > 1 and len(scale) != channels):
        raise EdgesnnError(f"{where}: {len(scale)} scales and {len(zero_point)} zero points do not fit shape {shape} "
                           f"(quantized dimension {dim})")
    return scale, zero_point


# ---------------------------------------------------------------- operators
# The runtimes trust what a converter guarantees: an operator's arity, its tensors' ranks and
# shapes, its options. A file that breaks these crashes them (a division by zero in TFLite Micro,
# a read past an array in XNNPACK), so each operator edgesnn writes is checked as its kernel's
# Prepare would assume; other operators are refused.

ACTIVATION_TYPES = (9, 7)  # int8, int16
INT32 = 2
INT32_OPS = ("QUANTIZE", "RESHAPE", "ADD", "STRIDED_SLICE")  # an int32 window sum (lower.py): its only operators
# a temporal graph's state arithmetic (state.py): plain int32 tensors, a bool comparison, CASTs between them
STATE_OPS = ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "GREATER", "CAST", "RESHAPE")
BOOL = 6
CASTS = {(9, 2), (7, 2), (2, 9), (2, 7), (6, 9), (6, 2)}  # int8/int16 <-> int32, bool -> int8 / int32
OPS = {  # builtin code -> (name, input counts, options type it needs or None)
    3: ("CONV_2D", (3,), 1), 4: ("DEPTHWISE_CONV_2D", (3,), 2), 17: ("MAX_POOL_2D", (1,), 5),
    22: ("RESHAPE", (1, 2), None), 0: ("ADD", (2,), None), 18: ("MUL", (2,), None), 55: ("MAXIMUM", (2,), None),
    57: ("MINIMUM", (2,), None), 114: ("QUANTIZE", (1,), None), 34: ("PAD", (2,), None),
    39: ("TRANSPOSE", (2,), None), 126: ("BATCH_MATMUL", (2,), 101), 45: ("STRIDED_SLICE", (4,), 32),
    41: ("SUB", (2,), None), 42: ("DIV", (2,), None), 61: ("GREATER", (2,), None), 53: ("CAST", (1,), None),
}
MAX_RANK = 5  # TFLite Micro's TRANSPOSE and BATCH_MATMUL refuse more; its MAXIMUM / MINIMUM broadcast in 5-d
_ADD_LEFT_SHIFT = {9: 20, 7: 15}  # TFLite's ADD: int8 inputs shifted left by 20, int16 by 15


def _check_op(r: _Reader, op: dict, code: int, tensors: list[dict], spans: list) -> None:
    name, arities, options_type = OPS.get(code, (None, (), None))
    where = f"{r.where}: operator {op['index']}"
    if name is None:
        raise EdgesnnError(f"{where}: builtin operator {code} is not one edgesnn writes")
    where += f" ({name})"
    ins, outs = op["inputs"], op["outputs"]
    if len(ins) not in arities or len(outs) != 1 or min(ins + outs) < 0:
        raise EdgesnnError(f"{where}: {len(ins)} inputs and {len(outs)} outputs, not what {name} takes")
    x, out = tensors[ins[0]], tensors[outs[0]]
    if out["buffer"] is not None:
        raise EdgesnnError(f"{where}: writes into a constant tensor")
    types = ACTIVATION_TYPES + ((INT32,) if name in INT32_OPS + STATE_OPS else ())
    if name == "CAST" and (x["type"], out["type"]) not in CASTS or name == "GREATER" and out["type"] != BOOL:
        raise EdgesnnError(f"{where}: casts or compares types edgesnn never writes")
    if name in ("CAST", "GREATER"):
        types += (BOOL,)
    if x["type"] not in types or out["type"] not in types or 0 in x["shape"] + out["shape"]:
        raise EdgesnnError(f"{where}: its input and output must be non-empty int8 or int16 tensors"
                           f"{' (int32: a window sum)' if name in INT32_OPS else ''}")
    if name == "QUANTIZE" and INT32 in (x["type"], out["type"]) and (
            x["type"] == out["type"] or len(x["scale"]) != 1 or len(out["scale"]) != 1):
        raise EdgesnnError(f"{where}: an int32 QUANTIZE needs another type on its other side and one scale on each")
    if name in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "GREATER", "STRIDED_SLICE") and x["type"] == INT32 and any(
            tensors[i]["scale"] for i in [*ins[:1 if name == "STRIDED_SLICE" else 2], *outs]):
        raise EdgesnnError(f"{where}: int32 tensors it adds or slices carry no quantization (plain integers)")
    if options_type is not None and (op["options_type"] != options_type or op["options"] is None):
        raise EdgesnnError(f"{where}: its options are missing or of another operator")
    if name == "DIV" and (tensors[ins[1]]["buffer"] is None or 0 in _int32s(r, tensors[ins[1]], spans)):
        raise EdgesnnError(f"{where}: divides by something other than a constant without zeros")
    if name not in ("QUANTIZE", "CAST", "GREATER") and x["type"] != out["type"]:
        raise EdgesnnError(f"{where}: its input and output types differ")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        want = _conv_shape(r, op, name, x, tensors[ins[1]], tensors[ins[2]], where)
    elif name == "MAX_POOL_2D":
        o = op["options"]
        want = _window_shape(r, o, x, (r.scalar(o, 4, "<i"), r.scalar(o, 3, "<i")), (1, 1), where) + [x["shape"][3]]
    elif name == "RESHAPE":
        want = out["shape"] if math.prod(out["shape"]) == math.prod(x["shape"]) else None
    elif name in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "GREATER"):
        want = _broadcast(x, tensors[ins[1]], out, name, where)
    elif name in ("QUANTIZE", "CAST"):
        want = x["shape"]
    elif name == "TRANSPOSE":
        want = _transposed_shape(r, x, tensors[ins[1]], spans, where)
    elif name == "BATCH_MATMUL":
        want = _product_shape(r, op, x, tensors[ins[1]], out, where)
    elif name == "STRIDED_SLICE":
        want = _sliced_shape(r, op, x, [tensors[i] for i in ins[1:]], spans, where)
    else:  # PAD
        want = _padded_shape(r, x, tensors[ins[1]], spans, where)
    if want != out["shape"]:
        raise EdgesnnError(f"{where}: output shape {out['shape']}, but its inputs give {want}")


def _conv_shape(r: _Reader, op: dict, name: str, x: dict, w: dict, b: dict, where: str) -> list[int]:
    o = op["options"]
    if len(x["shape"]) != 4 or len(w["shape"]) != 4 or w["type"] != 9 or b["type"] not in (2, 4) or len(b["shape"]) != 1 \
            or w["buffer"] is None or b["buffer"] is None or 0 in w["shape"]:
        raise EdgesnnError(f"{where}: needs a 4-d input, constant int8 4-d weights and a constant int32/int64 bias")
    c, (cout, kh, kw, cin) = x["shape"][3], w["shape"]
    if name == "CONV_2D":
        dilation = (r.scalar(o, 5, "<i", 1), r.scalar(o, 4, "<i", 1))
        ok = c % cin == 0 and cout % (c // cin) == 0
    else:
        dilation = (r.scalar(o, 6, "<i", 1), r.scalar(o, 5, "<i", 1))
        multiplier = r.scalar(o, 3, "<i")
        ok = cout == 1 and multiplier >= 1 and cin == c * multiplier
        cout = cin
    if not ok or b["shape"][0] != cout:
        raise EdgesnnError(f"{where}: weights {w['shape']} and bias {b['shape']} do not fit input {x['shape']}")
    if len(w["scale"]) not in (0, 1, cout) or len(b["scale"]) not in (0, 1, cout):
        raise EdgesnnError(f"{where}: per-channel scales do not match its {cout} output channels")
    return _window_shape(r, o, x, (kh, kw), dilation, where) + [cout]


def _window_shape(r: _Reader, o, x: dict, kernel, dilation, where: str) -> list[int]:
    """[N, H, W] of a conv or pool output: TFLite's SAME (ceil(n / s)) or VALID padding."""
    padding, stride = r.scalar(o, 0, "<b"), (r.scalar(o, 2, "<i"), r.scalar(o, 1, "<i"))
    if len(x["shape"]) != 4 or padding not in (0, 1) or min(*stride, *kernel, *dilation) < 1 \
            or max(*stride, *kernel, *dilation) > 2**16:
        raise EdgesnnError(f"{where}: needs a 4-d input, SAME or VALID padding, and strides, kernel and dilation "
                           f"in 1..65536")
    n, h, w, _ = x["shape"]
    size = []
    for extent, k, s, d in zip((h, w), kernel, stride, dilation):
        span = (k - 1) * d + 1
        size.append((extent + s - 1) // s if padding == 0 else (extent - span) // s + 1)
    if min(size) < 1:
        raise EdgesnnError(f"{where}: its window does not fit input {x['shape']}")
    return [n, *size]


def _broadcast(a: dict, b: dict, out: dict, name: str, where: str) -> list[int] | None:
    rank = MAX_RANK if name in ("MAXIMUM", "MINIMUM") else 4  # ADD and MUL: 4-d, all edgesnn writes for them
    if b["type"] != a["type"] or max(len(a["shape"]), len(b["shape"])) > rank or 0 in b["shape"]:
        raise EdgesnnError(f"{where}: needs two tensors of one type, of rank at most {rank}")
    if name == "ADD" and a["scale"] and b["scale"] and out["scale"]:  # its kernels refuse (abort) a multiplier >= 1
        twice = 2 * max(a["scale"][0], b["scale"][0])
        if twice / ((1 << _ADD_LEFT_SHIFT[a["type"]]) * out["scale"][0]) >= 1:
            raise EdgesnnError(f"{where}: its output scale is too small for its inputs' scales")
    shape = []
    for da, db in zip([1] * (rank - len(a["shape"])) + a["shape"], [1] * (rank - len(b["shape"])) + b["shape"]):
        if da != db and 1 not in (da, db):
            return None
        shape.append(max(da, db))
    return shape[rank - max(len(a["shape"]), len(b["shape"])):]


def _int32s(r: _Reader, t: dict, spans: list) -> tuple:
    """The values of a constant int32 tensor."""
    if t["type"] != INT32:
        return (0,)
    start, _ = spans[t["buffer"]]
    return struct.unpack_from(f"<{math.prod(t['shape'])}i", r.data, start)


def _transposed_shape(r: _Reader, x: dict, perm: dict, spans: list, where: str) -> list[int]:
    rank = len(x["shape"])
    if perm["buffer"] is None or perm["type"] != 2 or perm["shape"] != [rank] or not 1 <= rank <= MAX_RANK:
        raise EdgesnnError(f"{where}: needs a constant int32 permutation of shape [rank] for an input of rank 1..{MAX_RANK}")
    start, _ = spans[perm["buffer"]]
    values = struct.unpack_from(f"<{rank}i", r.data, start)
    if sorted(values) != list(range(rank)):
        raise EdgesnnError(f"{where}: {list(values)} is not a permutation of its input's {rank} axes")
    return [x["shape"][p] for p in values]


def _product_shape(r: _Reader, op: dict, a: dict, b: dict, out: dict, where: str) -> list[int] | None:
    """The output shape TFLite's BATCH_MATMUL computes: batch axes broadcast, [M, K] x [K, N] (adj_x, adj_y)."""
    ranks = (len(a["shape"]), len(b["shape"]))
    if b["type"] != a["type"] or not all(2 <= n <= MAX_RANK for n in ranks) or 0 in b["shape"]:
        raise EdgesnnError(f"{where}: needs two tensors of one type, of rank 2..{MAX_RANK}")
    if any(len(t["scale"]) != 1 for t in (a, b, out)) or (a["type"] == 7 and any(t["zero_point"] != [0] for t in (a, b, out))):
        raise EdgesnnError(f"{where}: its tensors need one scale each (and zero point 0 when int16)")
    adj_x, adj_y = r.scalar(op["options"], 0, "<B"), r.scalar(op["options"], 1, "<B")
    sa, sb = a["shape"], b["shape"]
    m, k = (sa[-1], sa[-2]) if adj_x else (sa[-2], sa[-1])
    kb, n = (sb[-1], sb[-2]) if adj_y else (sb[-2], sb[-1])
    rank = max(ranks)
    batch = []
    for da, db in zip([1] * (rank - ranks[0]) + sa[:-2], [1] * (rank - ranks[1]) + sb[:-2]):
        if da != db and 1 not in (da, db):
            raise EdgesnnError(f"{where}: batch axes of {sa} and {sb} do not broadcast")
        batch.append(max(da, db))
    if k != kb:
        raise EdgesnnError(f"{where}: {sa} and {sb} (adj_x {bool(adj_x)}, adj_y {bool(adj_y)}) do not multiply")
    return [*batch, m, n]


def _sliced_shape(r: _Reader, op: dict, x: dict, args: list[dict], spans: list, where: str) -> list[int]:
    """STRIDED_SLICE as edgesnn writes it: constant int32 begin, end, strides of shape [rank], rank 1..4,
    0 <= begin < end <= the axis, strides >= 1, every mask and ``offset`` unset."""
    rank = len(x["shape"])
    if not 1 <= rank <= 4 or any(a["buffer"] is None or a["type"] != INT32 or a["shape"] != [rank] for a in args):
        raise EdgesnnError(f"{where}: needs constant int32 begin, end and strides of shape [rank] for an input of rank 1..4")
    if any(r.scalar(op["options"], field, "<i") for field in range(5)) or r.scalar(op["options"], 5, "<B"):
        raise EdgesnnError(f"{where}: its masks and offset must be unset")
    begin, end, step = (struct.unpack_from(f"<{rank}i", r.data, spans[a["buffer"]][0]) for a in args)
    shape = []
    for b, e, s, d in zip(begin, end, step, x["shape"]):
        if not (0 <= b < e <= d and s >= 1):
            raise EdgesnnError(f"{where}: begin {list(begin)}, end {list(end)} and strides {list(step)} do not fit "
                               f"input {x['shape']}")
        shape.append((e - b + s - 1) // s)
    return shape


def _padded_shape(r: _Reader, x: dict, pads: dict, spans: list, where: str) -> list[int]:
    rank = len(x["shape"])
    if pads["buffer"] is None or pads["type"] not in (2, 4) or pads["shape"] != [rank, 2] or not 1 <= rank <= 4:
        raise EdgesnnError(f"{where}: needs constant int32 or int64 paddings of shape [rank, 2] for an input of rank 1..4")
    start, _ = spans[pads["buffer"]]
    values = struct.unpack_from(f"<{2 * rank}{'i' if pads['type'] == 2 else 'q'}", r.data, start)
    if min(values) < 0 or max(values) > 2**16:
        raise EdgesnnError(f"{where}: paddings must lie in 0..65536")
    return [d + values[2 * i] + values[2 * i + 1] for i, d in enumerate(x["shape"])]
