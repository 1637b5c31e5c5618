"""The IR's requantization (edgesnn/ir/fixedpoint.py) written in ONNX integer ops: the one place
this backend spells it out. Every value here is an int64 tensor; constants are per output channel
(the last axis), or one for the whole tensor.

ONNX has no arithmetic right shift on signed integers (BitShift takes unsigned types only), and
runtimes have disagreed on integer Div of negative numbers (onnxruntime truncates, ONNX's reference
evaluator floored: onnx/onnx#7570). Every division below is therefore a quotient of a non-negative
numerator by a power of two, where truncation is the floor in every runtime; floor(v / 2**k) is
((v + 2**62) / 2**k) - 2**(62 - k), exact for |v| < 2**62.

- Double rounding (int8 streams; ``multiply_by_quantized_multiplier``), for an accumulator x that
  the IR requires to fit int32 after its left shift, and a multiplier m in [0, 2**31):

      a = x * 2**max(shift, 0)
      h = floor((a * m + 2**30) / 2**31)          # SaturatingRoundingDoublingHighMul
      y = sign(h) * ((|h| + 2**(e-1)) / 2**e)    # RoundingDivideByPOT, e = max(-shift, 0)

  TFLite's high multiply adds 2**30 to a*m >= 0 and 1 - 2**30 to a*m < 0, then truncates toward
  zero; both cases equal floor((a*m + 2**30) / 2**31) (for a*m < 0, trunc((p + 1 - 2**30) / 2**31)
  = ceil(...) = floor((p + 2**30) / 2**31)). Its saturation (a = m = -2**31) cannot occur: m >= 0.
  |a * m| < 2**62. RoundingDivideByPOT rounds half away from zero, which is the sign-magnitude form
  (e = 0: the half term is 0 and y = h).
- Single rounding (int16 inputs of conv2d / dense / reduce_sum / batch_matmul, and whatever else the
  IR's ``linear_requantizer`` gives TFLite's 16x8 kernels' rule, ``multiply_by_quantized_multiplier_16x8``),
  for an int64 accumulator |x| < 2**47:

      y = floor((x * reduced + 2**(t-1)) / 2**t),  t = 15 - shift,  reduced = reduced_multiplier(m)

  |x * reduced| < 2**62 (reduced <= 0x7FFF) and 1 <= t <= 46.
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.onnx.builder import Builder
from edgesnn.ir import fixedpoint
from edgesnn.ir import graph as g

_OFFSET = 62  # floor(v / 2**k) = ((v + 2**62) / 2**k) - 2**(62 - k) for |v| < 2**62


def double_rounding(b: Builder, x: str, multiplier, shift, hint: str) -> str:
    """TFLite's MultiplyByQuantizedMultiplier of the int64 tensor ``x`` (see the module)."""
    m = np.ravel(np.asarray(multiplier, np.int64))
    s = np.ravel(np.asarray(shift, np.int64))
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    if left.any():
        x = b.node("Mul", [x, b.i64(np.int64(1) << left, "left_shift")], f"{hint}.shifted")
    p = b.node("Mul", [x, b.i64(m, "multiplier")], f"{hint}.product")
    p = b.node("Add", [p, b.i64((1 << 30) + (1 << _OFFSET), "high_mul_round")], f"{hint}.nudged")
    h = b.node("Div", [p, b.i64(1 << 31, "pow2_31")], f"{hint}.quotient")
    h = b.node("Sub", [h, b.i64(1 << (_OFFSET - 31), "high_mul_offset")], f"{hint}.high")
    if not right.any():
        return h
    magnitude = b.node("Add", [b.node("Abs", [h], f"{hint}.abs"), b.i64((np.int64(1) << right) >> 1, "half")],
                       f"{hint}.rounded")
    magnitude = b.node("Div", [magnitude, b.i64(np.int64(1) << right, "right_shift")], f"{hint}.divided")
    return b.node("Mul", [b.node("Sign", [h], f"{hint}.sign"), magnitude], f"{hint}.requantized")


def single_rounding_16x8(b: Builder, x: str, multiplier, shift, hint: str) -> str:
    """TFLite's 16x8 MultiplyByQuantizedMultiplier (int64 accumulator) of ``x`` (see the module)."""
    s = np.ravel(np.asarray(shift, np.int64))  # below 15: lower.py refuses others, as the IR does when it runs
    reduced = fixedpoint.reduced_multiplier(np.ravel(np.asarray(multiplier, np.int64)))
    t = 15 - s
    p = b.node("Mul", [x, b.i64(reduced, "reduced_multiplier")], f"{hint}.product")
    p = b.node("Add", [p, b.i64((np.int64(1) << (t - 1)) + (np.int64(1) << _OFFSET), "round_16x8")], f"{hint}.nudged")
    q = b.node("Div", [p, b.i64(np.int64(1) << t, "pow2_16x8")], f"{hint}.quotient")
    return b.node("Sub", [q, b.i64(np.int64(1) << (_OFFSET - t), "offset_16x8")], f"{hint}.requantized")


def wide_rule(input_dtype: str) -> bool:
    """Whether an op reading ``input_dtype`` takes the 16x8 rule: the IR's own choice (fixedpoint.linear_requantizer)."""
    return fixedpoint.linear_requantizer(input_dtype) is fixedpoint.multiply_by_quantized_multiplier_16x8


def requantizer(input_dtype: str):
    """The arithmetic an op's accumulator takes by its input dtype, as the IR chooses it."""
    return single_rounding_16x8 if wide_rule(input_dtype) else double_rounding


def finish(b: Builder, acc: str, op: g.Op, out: g.TensorSpec, output: str, input_dtype: str = "int8") -> str:
    """The interpreter's ``_finish``: requantize the int64 accumulator ``acc`` with the op's multipliers,
    add the output zero point, clamp to the op's range, cast to the output dtype (as ``output``)."""
    y = requantizer(input_dtype)(b, acc, op.multiplier, op.shift, op.name)
    return clamp_cast(b, y, out.zero_point, op.clamp, out.dtype, output, op.name)


def clamp_cast(b: Builder, y: str, zero_point: int, clamp, dtype: str, output: str, hint: str) -> str:
    if zero_point:
        y = b.node("Add", [y, b.i64(zero_point, "zero_point")], f"{hint}.zp")
    y = b.node("Clip", [y, b.i64(clamp[0], "clamp_lo"), b.i64(clamp[1], "clamp_hi")], f"{hint}.clamped")
    return b.cast(y, dtype, hint, out=output)
