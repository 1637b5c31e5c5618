"""Write a .tflite flatbuffer with the `tflite` package's generated schema builders.

Why this and not a converter: the IR already fixes every integer and every float32 scale, and a
converter (litert-torch, the TensorFlow converter) would re-derive quantization parameters from a
float model, which is exactly what must not happen. The `tflite` package is the TFLite schema
compiled by flatc (no TensorFlow, no jax), so the file is written field by field from the IR.

This module knows the schema only: tensors, buffers, operators with their builtin options, one
subgraph. Which ops to emit is :mod:`edgesnn.backends.tflite.lower`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

from edgesnn.backends.tflite.op_versions import opcode_versions

TENSOR_TYPES = {"int8": tflite.TensorType.INT8, "int16": tflite.TensorType.INT16,
                "int32": tflite.TensorType.INT32, "int64": tflite.TensorType.INT64,
                "bool": tflite.TensorType.BOOL}  # bool: a temporal graph's spike comparison (state.py)
NUMPY_TYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64}
SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"


@dataclass
class Tensor:
    name: str
    shape: list[int]
    dtype: str
    scale: list[float] | None = None  # None: not quantized (shapes, indices)
    zero_point: list[int] | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors carry their values


@dataclass
class Operator:
    opcode: str  # a tflite.BuiltinOperator name, e.g. "CONV_2D"
    inputs: list[int]
    outputs: list[int]
    options: str | None = None  # a tflite.BuiltinOptions name, e.g. "Conv2DOptions"
    fields: dict = field(default_factory=dict)  # schema field name (CamelCase) -> value
    source: str = ""  # the IR op it computes (part of), for messages; not written to the file


@dataclass
class Model:
    tensors: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    description: str = ""

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_operator(self, op: Operator) -> None:
        self.operators.append(op)

    def serialize(self) -> bytes:
        return _Writer(self).bytes()


class _Writer:
    """Flatbuffers are built bottom-up: vectors and strings before the tables that hold them."""

    def __init__(self, model: Model):
        self.m = model
        self.b = flatbuffers.Builder(1024)

    def bytes(self) -> bytes:
        b, m = self.b, self.m
        opcodes = sorted({op.opcode for op in m.operators})
        versions = opcode_versions(m.operators, m.tensors)  # what TFLite's versioning rules give each
        # Buffer 0 is the empty sentinel every tensor without data points at.
        buffers = [self._buffer(None)] + [self._buffer(t.data) for t in m.tensors if t.data is not None]
        tensors, next_buffer = [], 1
        for t in m.tensors:
            index = 0
            if t.data is not None:
                index, next_buffer = next_buffer, next_buffer + 1
            tensors.append(self._tensor(t, index))
        operators = [self._operator(op, opcodes.index(op.opcode)) for op in m.operators]
        name = b.CreateString("main")
        subgraph_tensors = self._vector(tflite.SubGraphStartTensorsVector, tensors)
        subgraph_inputs = self._ints(tflite.SubGraphStartInputsVector, m.inputs)
        subgraph_outputs = self._ints(tflite.SubGraphStartOutputsVector, m.outputs)
        subgraph_ops = self._vector(tflite.SubGraphStartOperatorsVector, operators)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, subgraph_tensors)
        tflite.SubGraphAddInputs(b, subgraph_inputs)
        tflite.SubGraphAddOutputs(b, subgraph_outputs)
        tflite.SubGraphAddOperators(b, subgraph_ops)
        tflite.SubGraphAddName(b, name)
        subgraph = tflite.SubGraphEnd(b)

        codes = [self._opcode(op, versions[op]) for op in opcodes]
        description = b.CreateString(m.description)
        model_codes = self._vector(tflite.ModelStartOperatorCodesVector, codes)
        model_subgraphs = self._vector(tflite.ModelStartSubgraphsVector, [subgraph])
        model_buffers = self._vector(tflite.ModelStartBuffersVector, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, SCHEMA_VERSION)
        tflite.ModelAddOperatorCodes(b, model_codes)
        tflite.ModelAddSubgraphs(b, model_subgraphs)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, model_buffers)
        b.Finish(tflite.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())

    def _vector(self, start, offsets: list[int]) -> int:
        start(self.b, len(offsets))
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def _ints(self, start, values, prepend=None) -> int:
        start(self.b, len(values))
        for v in reversed(list(values)):
            (prepend or self.b.PrependInt32)(int(v))
        return self.b.EndVector()

    def _floats(self, start, values) -> int:
        start(self.b, len(values))
        for v in reversed(list(values)):
            self.b.PrependFloat32(float(v))
        return self.b.EndVector()

    def _buffer(self, data: np.ndarray | None) -> int:
        b = self.b
        vec = None
        if data is not None:
            raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
            b.StartVector(1, len(raw), 16)  # 16-byte alignment: kernels may read constants with SIMD loads
            b.head = b.head - len(raw)
            b.Bytes[b.head:b.head + len(raw)] = raw
            vec = b.EndVector()
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    def _tensor(self, t: Tensor, buffer_index: int) -> int:
        b = self.b
        name = b.CreateString(t.name)
        shape = self._ints(tflite.TensorStartShapeVector, t.shape)
        quant = None
        if t.scale is not None:
            scale = self._floats(tflite.QuantizationParametersStartScaleVector, t.scale)
            zero = self._ints(tflite.QuantizationParametersStartZeroPointVector, t.zero_point, b.PrependInt64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, buffer_index)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    def _operator(self, op: Operator, opcode_index: int) -> int:
        b = self.b
        inputs = self._ints(tflite.OperatorStartInputsVector, op.inputs)
        outputs = self._ints(tflite.OperatorStartOutputsVector, op.outputs)
        options = self._options(op) if op.options else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index)
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options))
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)

    def _options(self, op: Operator) -> int:
        """Options tables through the generated ``<Name>Start/Add<Field>/End`` functions."""
        vectors = {k: self._ints(getattr(tflite, f"{op.options}Start{k}Vector"), v)
                   for k, v in op.fields.items() if isinstance(v, (list, tuple))}
        getattr(tflite, f"{op.options}Start")(self.b)
        for key, value in op.fields.items():
            getattr(tflite, f"{op.options}Add{key}")(self.b, vectors.get(key, value))
        return getattr(tflite, f"{op.options}End")(self.b)

    def _opcode(self, name: str, version: int) -> int:
        code = getattr(tflite.BuiltinOperator, name)
        tflite.OperatorCodeStart(self.b)
        # Codes above 127 live only in builtin_code; the deprecated int8 field then holds the placeholder.
        tflite.OperatorCodeAddDeprecatedBuiltinCode(self.b, min(code, tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES))
        tflite.OperatorCodeAddBuiltinCode(self.b, code)
        tflite.OperatorCodeAddVersion(self.b, version)
        return tflite.OperatorCodeEnd(self.b)
