"""The version of each operator code in a .tflite file, as TFLite's versioning rules give it.

An interpreter looks a kernel up by (builtin operator, version): a file that says version 1 for an
int8 CONV_2D names a kernel that did not exist at version 1, which an older interpreter or a build
registering only some versions refuses (today's LiteRT and TFLite Micro load it anyway).

Source: ``GetBuiltinOperatorVersion`` in LiteRT's ``tflite/tools/versioning/op_version.cc``
(google-ai-edge/LiteRT 22f0209bb81f981d629f1576209945657ef91b62; the same cases for these operators
as TensorFlow's ``tensorflow/lite/tools/versioning/op_version.cc`` at
02087409073e69754277a2d2cf20af23a44334de, except TRANSPOSE's and PAD's first case, which LiteRT added),
over the signature ``GetOpSignature`` (``op_signature.cc``) reads from the file. :data:`RULES` lists,
for every operator the lowering writes, those cases in the source's order; the first that holds
gives the version, else 1 (the source's ``return 1``). Like ``UpdateOpVersion``, an operator code
gets the highest version any of its operators needs (:func:`opcode_versions`).

What the rules say about edgesnn's kernels: the int8 kernels are versions 2-3 (CONV_2D,
DEPTHWISE_CONV_2D: 3; ADD, PAD, MAXIMUM, MINIMUM, MAX_POOL_2D, TRANSPOSE, BATCH_MATMUL: 2; MUL:
3, its rescale in1 * in2 / out being 1 or more); the int16 ones 3-5; the 16x8 convolutions
(int16 input, int8 filter, no ``quantized_bias_type``) fall through to 1, because the source's int16
case asks for an int16 filter; so do an int32 window sum's operators (QUANTIZE into int32, int32 ADD,
STRIDED_SLICE) and RESHAPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Schema defaults of the option fields a rule reads (schema.fbs): what an operator without the field has.
OPTION_DEFAULTS = {"PotScaleInt16": True, "QuantizedBiasType": 0, "DilationWFactor": 1, "DilationHFactor": 1,
                   "AsymmetricQuantizeInputs": False}


@dataclass(frozen=True)
class Spec:
    """One input or output of an operator (``OpSignatureTensorSpec``): its type and dimensions."""

    type: str  # "int8", "int16", "int32", "int64"; the rules also name "float32", "int4", "bool"
    dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class Signature:
    """What ``GetOpSignature`` derives from an operator in a file (``ext_options`` as named fields)."""

    op: str
    inputs: tuple[Spec, ...]
    outputs: tuple[Spec, ...]
    options: dict = field(default_factory=dict)  # builtin option fields as written (CamelCase)
    per_channel: bool = False  # CONV_2D / DEPTHWISE_CONV_2D filter, QUANTIZE output: a scale per channel
    grouped: bool = False  # CONV_2D: input channels != filter channels
    input_quantized: bool = False  # ADD: input 0 has quantization; MUL: either input has
    mul_scales: tuple[float, float, float] | None = None  # MUL: first scales of input 1, input 2, output

    def option(self, name: str):
        return self.options.get(name, OPTION_DEFAULTS[name])


def _in(s: Signature, i: int) -> str | None:
    return s.inputs[i].type if i < len(s.inputs) else None


def _out(s: Signature, i: int) -> str | None:
    # op_version.cc reads outputs.at(1) in CONV_2D's and DEPTHWISE_CONV_2D's int16 case (after the
    # filter type check that an edgesnn file never passes); a missing output simply does not match.
    return s.outputs[i].type if i < len(s.outputs) else None


def _rank(s: Signature) -> int:
    """Dimensions of input 0 (``op_sig.inputs.at(0).dims.size()``)."""
    return len(s.inputs[0].dims) if s.inputs else 0


def _types(s: Signature, inp: str, filt: str, out: str, out_index: int = 0) -> bool:
    return _in(s, 0) == inp and _in(s, 1) == filt and _out(s, out_index) == out


def _broadcast_over_4(s: Signature) -> bool:
    """``NeedBroadcastForBinaryInputs(op_sig) && GetInputMaxDims(op_sig) > 4``."""
    return len(s.inputs) >= 2 and s.inputs[0].dims != s.inputs[1].dims and max(len(x.dims) for x in s.inputs) > 4


def _mul_rescale_at_least_one(s: Signature) -> bool:
    """MUL version 3: in1 * in2 / out >= 1, in float32 as the source computes it (zero scales excluded)."""
    if s.mul_scales is None or 0 in s.mul_scales:
        return False
    a, b, c = (np.float32(v) for v in s.mul_scales)
    return bool(a * b / c >= 1.0)


Rule = tuple[int, str, Callable[[Signature], bool]]

RULES: dict[str, tuple[Rule, ...]] = {
    "CONV_2D": (
        (8, "int16 input, int8 filter, int16 output, quantized_bias_type set",
         lambda s: _types(s, "int16", "int8", "int16") and bool(s.option("QuantizedBiasType"))),
        (6, "grouped convolution", lambda s: s.grouped),
        (4, "int16 input and filter, int16 outputs[1]", lambda s: _types(s, "int16", "int16", "int16", 1)),
        (3, "int8 input, filter and output", lambda s: _types(s, "int8", "int8", "int8")),
        (7, "int8 input and output, int4 filter", lambda s: _types(s, "int8", "int4", "int8")),
        (5, "float32 hybrid, per-channel filter", lambda s: _types(s, "float32", "int8", "float32") and s.per_channel),
        (2, "float32 hybrid", lambda s: _types(s, "float32", "int8", "float32")),
    ),
    "DEPTHWISE_CONV_2D": (
        (5, "int16 input and filter, int16 outputs[1]", lambda s: _types(s, "int16", "int16", "int16", 1)),
        (6, "float32 hybrid, per-channel filter", lambda s: _types(s, "float32", "int8", "float32") and s.per_channel),
        (4, "float32 hybrid", lambda s: _types(s, "float32", "int8", "float32")),
        (3, "int8 input, filter and output", lambda s: _types(s, "int8", "int8", "int8")),
        (7, "int8 input and output, int4 filter", lambda s: _types(s, "int8", "int4", "int8")),
        (2, "dilation other than 1",
         lambda s: s.option("DilationWFactor") != 1 or s.option("DilationHFactor") != 1),
    ),
    "MUL": (
        (7, "int16 inputs without quantization, or uint32",
         lambda s: (_in(s, 0) == "int16" and not s.input_quantized) or _in(s, 0) == "uint32"),
        (6, "complex64 inputs", lambda s: _in(s, 0) == "complex64"),
        (5, "int64 inputs", lambda s: _in(s, 0) == "int64"),
        (4, "int16 inputs", lambda s: _in(s, 0) == "int16"),
        (3, "rescale input1_scale * input2_scale / output_scale >= 1", _mul_rescale_at_least_one),
        (2, "int8 inputs", lambda s: _in(s, 0) == "int8"),
    ),
    "MAX_POOL_2D": (
        (3, "int16 input and output", lambda s: _in(s, 0) == "int16" and _out(s, 0) == "int16"),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
    "TRANSPOSE": (
        (7, "int4 input", lambda s: _in(s, 0) == "int4"),
        (6, "input of more than 5 dimensions", lambda s: _rank(s) > 5),
        (5, "int16 input", lambda s: _in(s, 0) == "int16"),
        (4, "input of more than 4 dimensions", lambda s: _rank(s) > 4),
        (3, "bool input", lambda s: _in(s, 0) == "bool"),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
    "QUANTIZE": (
        (4, "int4 input or output", lambda s: "int4" in (_in(s, 0), _out(s, 0))),
        (3, "per-channel output", lambda s: s.per_channel),
        (2, "int16 output", lambda s: _out(s, 0) == "int16"),
    ),
    "MAXIMUM": (
        (4, "int16 input and output", lambda s: _in(s, 0) == "int16" and _out(s, 0) == "int16"),
        (3, "broadcast with an input of more than 4 dimensions", _broadcast_over_4),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
    "ADD": (
        (5, "int16 input without quantization", lambda s: _in(s, 0) == "int16" and not s.input_quantized),
        (4, "int64 input", lambda s: _in(s, 0) == "int64"),
        (3, "int16 input and output, pot_scale_int16 false",
         lambda s: _in(s, 0) == "int16" and _out(s, 0) == "int16" and not s.option("PotScaleInt16")),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
    "BATCH_MATMUL": (
        (3, "int16 inputs", lambda s: _in(s, 0) == "int16"),
        (2, "int8 inputs", lambda s: _in(s, 0) == "int8"),
        (4, "float32 hybrid, asymmetric_quantize_inputs",
         lambda s: _types(s, "float32", "int8", "float32") and bool(s.option("AsymmetricQuantizeInputs"))),
    ),
    "PAD": (
        (5, "bool input", lambda s: _in(s, 0) == "bool"),
        (4, "input of more than 4 dimensions", lambda s: _rank(s) > 4),
        (3, "int16 input", lambda s: _in(s, 0) == "int16"),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
    "RESHAPE": (),  # no case: the source's default, version 1
    "STRIDED_SLICE": (  # an int32 window sum's slices (lower.py): version 1
        (8, "offset", lambda s: bool(s.options.get("Offset", False))),
        (7, "uint32 input", lambda s: _in(s, 0) == "uint32"),
        (6, "ellipsis or new axis mask", lambda s: bool(s.options.get("EllipsisMask", 0) or s.options.get("NewAxisMask", 0))),
        (5, "string input", lambda s: _in(s, 0) == "string"),
        (4, "input of more than 4 dimensions", lambda s: _rank(s) > 4),
        (3, "bool input", lambda s: _in(s, 0) == "bool"),
        (2, "int8 input", lambda s: _in(s, 0) == "int8"),
    ),
}
RULES["MINIMUM"] = RULES["MAXIMUM"]  # one case list in the source
# The int32 programs (int32.py, state.py: a temporal graph's state, an int8 -> int16 dense): their operators'
# cases, apart from RULES (whose cases tests/test_tflite_op_versions.py lists); version 1 but CAST from or to int8.
INT32_RULES: dict[str, tuple[Rule, ...]] = {}
INT32_RULES["SUB"] = (
    (5, "int16 input and output, pot_scale_int16 false",
     lambda s: _in(s, 0) == "int16" and _out(s, 0) == "int16" and not s.option("PotScaleInt16")),
    (4, "int64 input", lambda s: _in(s, 0) == "int64"),
    (3, "broadcast with an input of more than 4 dimensions", _broadcast_over_4),
    (2, "int8 input", lambda s: _in(s, 0) == "int8"),
)
INT32_RULES["DIV"] = ((2, "broadcast with an input of more than 4 dimensions", _broadcast_over_4),)
INT32_RULES["GREATER"] = ((2, "int8 input", lambda s: _in(s, 0) == "int8"),)
INT32_RULES["CAST"] = (
    (7, "bfloat16 input or output", lambda s: "bfloat16" in (_in(s, 0), _out(s, 0))),
    (6, "int4 input, float32 output", lambda s: _in(s, 0) == "int4" and _out(s, 0) == "float32"),
    (5, "float64 or float16 input or output", lambda s: bool({"float64", "float16"} & {_in(s, 0), _out(s, 0)})),
    (4, "uint16 input or output", lambda s: "uint16" in (_in(s, 0), _out(s, 0))),
    (3, "int8 input or output", lambda s: "int8" in (_in(s, 0), _out(s, 0))),
    (2, "uint32 input or output", lambda s: "uint32" in (_in(s, 0), _out(s, 0))),
)


def version(sig: Signature) -> int:
    """The version op_version.cc gives ``sig``: its first case that holds, else 1."""
    rules = RULES.get(sig.op, INT32_RULES.get(sig.op))
    if rules is None:
        raise KeyError(f"no versioning rule for {sig.op}: add its op_version.cc cases to RULES")
    return next((v for v, _, holds in rules if holds(sig)), 1)


def signature(opcode: str, inputs: list[int], outputs: list[int], fields: dict, tensors) -> Signature:
    """An operator's signature from the tensors it reads and writes (objects with ``dtype``, ``shape``,
    ``scale`` (None: no quantization table) and ``quantized_dimension``), as op_signature.cc reads it."""
    ins, outs = [tensors[i] for i in inputs], [tensors[i] for i in outputs]
    spec = lambda t: Spec(t.dtype, tuple(int(d) for d in t.shape))  # noqa: E731
    scales = lambda t: [] if t.scale is None else list(t.scale)  # noqa: E731
    dim = lambda t, i: t.shape[i] if 0 <= i < len(t.shape) else None  # noqa: E731  (a malformed test model)
    extra = {}
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(ins) >= 2:
        filt = ins[1]
        channels = dim(filt, 0 if opcode == "CONV_2D" else 3)
        extra["per_channel"] = len(scales(filt)) > 0 and len(scales(filt)) == channels
        if opcode == "CONV_2D":
            extra["grouped"] = bool(len(ins[0].shape)) and dim(ins[0], 3) != dim(filt, 3)
    elif opcode == "QUANTIZE" and outs:
        out = outs[0]
        extra["per_channel"] = len(scales(out)) > 1 and len(scales(out)) == dim(out, out.quantized_dimension)
    elif opcode == "ADD" and ins:
        extra["input_quantized"] = ins[0].scale is not None
    elif opcode == "MUL" and len(ins) >= 2 and outs:
        extra["input_quantized"] = ins[0].scale is not None or ins[1].scale is not None
        if all(scales(t) for t in (ins[0], ins[1], outs[0])):
            extra["mul_scales"] = (scales(ins[0])[0], scales(ins[1])[0], scales(outs[0])[0])
    return Signature(opcode, tuple(spec(t) for t in ins), tuple(spec(t) for t in outs), dict(fields), **extra)


def opcode_versions(operators, tensors) -> dict[str, int]:
    """Operator code -> the highest version any of its operators needs (``UpdateOpVersion``). An
    operator without a rule (never lowered: tests write such files for the validator) keeps version 1;
    tests/test_tflite_op_versions.py checks every operator the lowering writes has a rule."""
    versions: dict[str, int] = {}
    for op in operators:
        known = op.opcode in RULES or op.opcode in INT32_RULES
        v = version(signature(op.opcode, op.inputs, op.outputs, op.fields, tensors)) if known else 1
        versions[op.opcode] = max(v, versions.get(op.opcode, 1))
    return versions
