"""Exact int32 programs in TFLite builtins, for what no quantized TFLite kernel computes as the IR does.

Plain int32 tensors (no quantization) and only the int32 ops LiteRT's reference kernels and TFLite Micro
both run (measured with ai-edge-litert 2.3 and the tflite-micro wheel: CAST, ADD, SUB, MUL, DIV, MAXIMUM,
MINIMUM, GREATER, STRIDED_SLICE, RESHAPE; TFLite Micro has no int32 SUM, ABS, SIGN, SELECT, FLOOR_DIV,
RIGHT_SHIFT or int32-output BATCH_MATMUL / FULLY_CONNECTED). int32 DIV truncates toward zero in both; on
values known to be non-negative it is a floor.

- :meth:`Int32Program.dense`: a dense layer from int8 to int16 (a temporal model's current: TFLite's int8
  kernels write int8 only, its 16x8 kernels round once where the IR rounds twice). The products by a
  broadcast MUL, their sum by halving STRIDED_SLICEs and ADDs, the bias, then :meth:`mbqm`.
- :meth:`Int32Program.mbqm`: TFLite's MultiplyByQuantizedMultiplier (the IR's requantization) for
  |x << left| < 2**30, on the magnitude u = |a| and the sign apart: SaturatingRoundingDoublingHighMul is
  sign * floor((u M + 2**30 - [a < 0]) / 2**31), computed from 15- and 16-bit pieces of u and M whose
  products fit int32 (tests/test_temporal_tflite.py checks it against the IR's on the boundaries), and
  RoundingDivideByPOT rounds half away from zero: sign * floor((H + 2**(e-1)) / 2**e).
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.tflite import flatbuffer as fb
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.packing import widen

LIMIT = 1 << 30  # |x << left| below it: every piece of mbqm fits int32


class Int32Program:
    """Emits int32 operators into one lowering (``lw``: lower._Lowering)."""

    def __init__(self, lw):
        self.lw = lw
        self.count = 0

    def tensor(self, op, what: str, shape, dtype: str = "int32") -> int:
        self.count += 1
        return self.lw.model.add_tensor(fb.Tensor(f"{op.name}.{what}.{self.count}", list(shape), dtype))

    def const(self, op, what: str, values) -> int:
        arr = np.asarray(values, np.int64).reshape(-1)
        assert arr.min(initial=0) >= -(2**31) and arr.max(initial=0) < 2**31
        self.count += 1
        return self.lw.model.add_tensor(fb.Tensor(f"{op.name}.{what}.{self.count}", [len(arr)], "int32",
                                                  data=arr.astype(np.int32)))

    def binary(self, op, opcode: str, a: int, b: int, shape, what: str, out: int | None = None) -> int:
        out = self.tensor(op, what, shape) if out is None else out
        options = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}.get(opcode)
        fields = {"FusedActivationFunction": 0} if options else {}
        self.lw.emit(opcode, [a, b], [out], options, last=False, **fields)
        return out

    def cast(self, op, src: int, shape, what: str, dtype: str = "int32", out: int | None = None) -> int:
        out = self.tensor(op, what, shape, dtype) if out is None else out
        self.lw.emit("CAST", [src], [out], last=False)
        return out

    def split(self, op, x: int, unit: int, shape, what: str) -> tuple[int, int]:
        """(x // unit, x % unit) of a non-negative x."""
        high = self.binary(op, "DIV", x, self.const(op, "unit", [unit]), shape, f"{what}.high")
        scaled = self.binary(op, "MUL", high, self.const(op, "unit", [unit]), shape, f"{what}.scaled")
        return high, self.binary(op, "SUB", x, scaled, shape, f"{what}.low")

    def mbqm(self, op, a: int, multiplier, shift, shape) -> int:
        """MultiplyByQuantizedMultiplier(a, multiplier, shift) per channel (last axis), |a << left| < 2**30."""
        m = np.asarray(multiplier, np.int64).reshape(-1)
        s = np.asarray(shift, np.int64).reshape(-1)
        left, right = np.maximum(s, 0), np.maximum(-s, 0)
        add, mul, sub, div = (lambda x, y, w, k=k: self.binary(op, k, x, y, shape, w) for k in ("ADD", "MUL", "SUB", "DIV"))
        c = lambda v, w="c": self.const(op, w, v)  # noqa: E731
        if left.any():
            a = mul(a, c(1 << left, "left"), "shifted")
        fired = self.tensor(op, "negative", shape, "bool")
        self.lw.emit("GREATER", [c([0], "zero"), a], [fired], last=False)
        neg = self.cast(op, fired, shape, "neg")
        sign = sub(c([1], "one"), mul(neg, c([2], "two"), "twice"), "sign")
        u = mul(a, sign, "magnitude")
        u1, u0 = self.split(op, u, 1 << 15, shape, "u")
        m1, m0 = c(m >> 16, "m1"), c(m & 0xFFFF, "m0")
        t3, t2, t1, t0 = mul(u1, m1, "t3"), mul(u1, m0, "t2"), mul(u0, m1, "t1"), mul(u0, m0, "t0")
        t2h, t2l = self.split(op, t2, 1 << 16, shape, "t2")
        t1h, t1l = self.split(op, t1, 1 << 15, shape, "t1")
        t0h, t0l = self.split(op, t0, 1 << 16, shape, "t0")
        t2q, t2b = self.split(op, t2l, 2, shape, "t2l")
        nudge_high = sub(c([1 << 14], "n14"), neg, "nudge.high")  # 2**30 - [a < 0] = high * 2**16 + low
        nudge_low = mul(neg, c([(1 << 16) - 1], "n16"), "nudge.low")
        low = add(add(mul(t2b, c([1 << 15], "b15"), "t2b15"), t0l, "low0"), nudge_low, "low")
        carry = div(low, c([1 << 16], "b16"), "carry")
        g_ = add(add(add(add(t2q, t1l, "g0"), t0h, "g1"), nudge_high, "g2"), carry, "g")
        high = add(add(add(t3, t2h, "h0"), t1h, "h1"), div(g_, c([1 << 15], "b15"), "g15"), "high")
        if right.any():
            half = np.where(right > 0, 1 << np.maximum(right - 1, 0), 0)
            high = div(add(high, c(half, "half"), "rounded"), c(1 << right, "pot"), "divided")
        return mul(high, sign, "mbqm")

    def row_sums(self, op, p: int, rows: int, n: int) -> int:
        """[1, 1, rows, n] -> [1, 1, rows, 1]: the sum over the last axis, halving with STRIDED_SLICE and ADD."""
        tail, length, cur = None, n, p
        while length > 1:
            half = length // 2
            a = self.slice(op, cur, rows, 0, half)
            b = self.slice(op, cur, rows, half, 2 * half)
            if length % 2:
                t = self.slice(op, cur, rows, 2 * half, length)
                tail = t if tail is None else self.binary(op, "ADD", tail, t, [1, 1, rows, 1], "tail")
            cur, length = self.binary(op, "ADD", a, b, [1, 1, rows, half], "half"), half
        return cur if tail is None else self.binary(op, "ADD", cur, tail, [1, 1, rows, 1], "sum")

    def slice(self, op, x: int, rows: int, begin: int, end: int) -> int:
        out = self.tensor(op, "slice", [1, 1, rows, end - begin])
        args = [self.const(op, "begin", [0, 0, 0, begin]), self.const(op, "end", [1, 1, rows, end]),
                self.const(op, "strides", [1, 1, 1, 1])]
        self.lw.emit("STRIDED_SLICE", [x, *args], [out], "StridedSliceOptions", last=False)
        return out

    def dense(self, op: g.Dense) -> None:
        """An int8 -> int16 dense, exactly the IR's: acc = W (x - zp) + b, MBQM, + zp_out, clamp."""
        lw = self.lw
        spec_in, out = lw.spec(op.inputs[0]), lw.spec(op.output)
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
        rows, n = w.shape
        lo, hi = lw.bounds[op.inputs[0]]
        reach = max(abs(lo - spec_in.zero_point), abs(hi - spec_in.zero_point))
        left = np.maximum(np.broadcast_to(np.asarray(op.shift, np.int64), (rows,)), 0)
        worst = (np.abs(w).sum(1) * reach + np.abs(np.asarray(op.bias, np.int64))) << left
        if worst.max(initial=0) >= LIMIT:
            raise EdgesnnError(f"tflite: IR op '{op.name}' ({op.kind}) maps {spec_in.dtype} to {out.dtype}; its exact "
                               f"int32 program takes accumulators below 2**30 and this one can reach {int(worst.max()):,}")
        x = self.cast(op, lw.activation(op.inputs[0]), [1, 1, 1, n], "x")
        shape = [1, 1, 1, rows]
        acc = self.linear(op, x, spec_in.zero_point, w)
        acc = self.binary(op, "ADD", acc, self.const(op, "bias", np.broadcast_to(op.bias, (rows,))), shape, "biased")
        m = np.broadcast_to(np.asarray(op.multiplier, np.int64), (rows,))
        s = np.broadcast_to(np.asarray(op.shift, np.int64), (rows,))
        y = self.mbqm(op, acc, m, s, shape)
        if out.zero_point:
            y = self.binary(op, "ADD", y, self.const(op, "zp_out", [out.zero_point]), shape, "zp")
        lo, hi = op.clamp
        lo, hi = max(lo, g.dtype_range(out.dtype)[0]), min(hi, g.dtype_range(out.dtype)[1])
        y = self.binary(op, "MAXIMUM", y, self.const(op, "low", [lo]), shape, "low")
        y = self.binary(op, "MINIMUM", y, self.const(op, "high", [hi]), shape, "high")
        self.cast(op, y, shape, "out", out.dtype, lw.activation(op.output))
        lw.bounds[op.output] = (lo, hi)

    def linear(self, op, x: int, zero_point: int, w: np.ndarray) -> int:
        """W (x - zero_point) of an int32 vector x [1, 1, 1, n]: [1, 1, 1, rows] (the caller bounds it)."""
        rows, n = w.shape
        if zero_point:
            x = self.binary(op, "SUB", x, self.const(op, "zp", [zero_point]), [1, 1, 1, n], "centered")
        products = self.binary(op, "MUL", x, self.const_matrix(op, w), [1, 1, rows, n], "products")
        total = self.row_sums(op, products, rows, n)
        shape = [1, 1, 1, rows]
        acc = self.tensor(op, "acc", shape)
        self.lw.emit("RESHAPE", [total, self.lw.shape_const(f"{op.name}.acc", shape)], [acc], "ReshapeOptions",
                     last=False, NewShape=shape)
        return acc

    def const_matrix(self, op, w: np.ndarray) -> int:
        self.count += 1
        return self.lw.model.add_tensor(fb.Tensor(f"{op.name}.weight32.{self.count}", list(w.shape), "int32",
                                                  data=w.astype(np.int32)))
