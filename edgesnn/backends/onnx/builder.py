"""A small ONNX graph builder: nodes in order, constants as initializers (deduplicated by value),
unique value names. The lowering (lower.py) and the requantization (requant.py) write through it."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

INT = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
       "int32": TensorProto.INT32, "int64": TensorProto.INT64}


class Builder:
    def __init__(self, reserved=()):
        self.nodes: list = []
        self.initializers: list = []
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set(reserved)

    def name(self, hint: str) -> str:
        """``hint``, or ``hint.2``, ``hint.3``, ... when taken."""
        name, k = hint, 1
        while name in self._names:
            k += 1
            name = f"{hint}.{k}"
        self._names.add(name)
        return name

    def const(self, value, dtype, hint: str = "const") -> str:
        """An integer initializer; equal constants (dtype, shape, values) are one initializer."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.name(hint)
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def i64(self, value, hint: str = "const") -> str:
        return self.const(value, np.int64, hint)

    def node(self, op_type: str, inputs, hint: str, out: str | None = None, **attrs) -> str:
        """Append ``op_type(inputs)``; returns its output's name (``out``, or a new name from ``hint``)."""
        out = out if out is not None else self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(f"{hint}/{op_type}"), **attrs))
        return out

    def cast(self, x: str, dtype: str, hint: str, out: str | None = None) -> str:
        return self.node("Cast", [x], f"{hint}.{dtype}", out, to=INT[dtype])
