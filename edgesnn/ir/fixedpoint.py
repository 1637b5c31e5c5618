"""Fixed-point requantization: the one definition of how an int32 accumulator is rescaled.

This is TFLite's reference arithmetic (``QuantizeMultiplier`` and ``MultiplyByQuantizedMultiplier``
in tensorflow/lite/kernels/internal/{quantization_util.cc,common.h}, default double rounding), which
TOSA RESCALE (double_round) and CMSIS-NN's ``arm_nn_requantize`` share. Every backend that carries
the same float32 scales therefore reproduces the IR bit for bit.

For a real multiplier M = s_in * s_w / s_out (computed in double from float32 scales):

    q, shift = frexp(M)                      # M = q * 2**shift, q in [0.5, 1)
    multiplier = round_half_away(q * 2**31)  # int32 (q == 1 after rounding -> 2**30, shift + 1)

and an accumulator x becomes

    y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**max(shift, 0), multiplier),
                            max(-shift, 0))

where SaturatingRoundingDoublingHighMul(a, b) = (a*b + (2**30 if a*b >= 0 else 1 - 2**30)) / 2**31
truncated toward zero (INT32_MIN * INT32_MIN saturates to INT32_MAX), and RoundingDivideByPOT
rounds half away from zero.

Convolutions and dense layers whose *input* is int16 use TFLite's 16x8 kernels instead (the only
int16 convolutions LiteRT and TFLite Micro have), which accumulate in int64 and requantize once
with the multiplier reduced to 16 bits (``MultiplyByQuantizedMultiplier(int64_t, ...)``):

    reduced = (multiplier + 2**15) >> 16   (0x7FFF if multiplier >= 0x7FFF0000)
    y = (x * reduced + 2**(14 - shift)) >> (15 - shift)      # floor: rounds half up

An int32 input of a conv2d / dense / reduce_sum is a window sum (sum_pool2d) of an int16 stream,
which int16 cannot hold. No runtime has an int32 convolution, but a window sum followed by a
convolution is one convolution of the summed values with the kernel spread over the window (the
same integer accumulator), which TFLite runs in its 16x8 kernel: so int32 inputs take the 16x8 rule.
"""

from __future__ import annotations

import math

import numpy as np

from edgesnn.errors import EdgesnnError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """(multiplier, shift) for a non-negative real multiplier, exactly as TFLite derives them."""
    if real_multiplier < 0:
        raise ValueError(f"requantization multiplier must be >= 0, got {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # q > 0: round half away from zero
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise EdgesnnError(f"requantization multiplier {real_multiplier:.6g} is too large for int32 fixed point: the "
                           "model holds an extreme weight, BatchNorm statistic or scale")
    return q_fixed, shift


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(m)) for m in np.atleast_1d(real_multipliers)]
    return (np.array([p[0] for p in pairs], dtype=np.int32), np.array([p[1] for p in pairs], dtype=np.int32))


def effective_multiplier(s_in, s_w, s_out) -> np.ndarray:
    """double(s_in) * double(s_w) / double(s_out) from float32 scales, per channel (TFLite's order)."""
    f32 = lambda v: np.asarray(v, dtype=np.float32).astype(np.float64)  # noqa: E731
    return np.atleast_1d(f32(s_in) * f32(s_w) / f32(s_out))


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a|, |b| <= 2**31: fits int64
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # C division: truncate toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """Requantize int32 accumulators ``x``; ``multiplier``/``shift`` broadcast (per channel: last axis)."""
    x = np.asarray(x, dtype=np.int64)
    if x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        raise OverflowError("accumulator outside int32")
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = x << left
    if shifted.size and (shifted.min() < INT32_MIN or shifted.max() > INT32_MAX):
        raise OverflowError("left-shifted accumulator outside int32")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_16x8(x, multiplier, shift) -> np.ndarray:
    """Requantize int64 accumulators of an int16-input conv/dense, as TFLite's 16x8 kernels do."""
    x = np.asarray(x, dtype=np.int64)
    if x.size and (x.min() < -(2**47) or x.max() >= 2**47):
        raise OverflowError("16x8 accumulator outside +-2**47")
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift >= 15):
        raise OverflowError("16x8 requantization shift must be below 15")
    reduced = reduced_multiplier(multiplier)
    total = 15 - shift
    return (x * reduced + (np.int64(1) << (total - 1))) >> total


def reduced_multiplier(multiplier) -> np.ndarray:
    """The 16x8 kernels' multiplier: the int32 one rounded to its top 16 bits (saturating at 0x7FFF)."""
    multiplier = np.asarray(multiplier, dtype=np.int64)
    return np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)


def reduced_multiplier_ratio(real_multipliers) -> np.ndarray:
    """M16 / M per channel: the real multiplier a 16x8 kernel applies (its multiplier reduced to
    16 bits, ``multiply_by_quantized_multiplier_16x8``) over the real one it stands for. A layer
    writing an int16 stream scales by it; torch's stream quantizer does too (quantize/streams.py)."""
    real = np.atleast_1d(np.asarray(real_multipliers, dtype=np.float64))
    mult, shift = quantize_multipliers(real)
    reduced = reduced_multiplier(mult)
    return np.where(real > 0, reduced * np.exp2(shift.astype(np.float64) - 15) / np.where(real > 0, real, 1.0), 1.0)


WIDE_INPUTS = ("int16", "int32")  # conv2d / dense / reduce_sum inputs that take the 16x8 rule (int32: a window sum)


def linear_requantizer(input_dtype: str):
    """The requantization of a conv2d / dense by its input dtype: int16 and int32 (window sum) inputs
    take the 16x8 kernels'."""
    return multiply_by_quantized_multiplier_16x8 if input_dtype in WIDE_INPUTS else multiply_by_quantized_multiplier


ADD_LEFT_SHIFT = {"int8": 20, "int16": 15}  # TFLite's ADD headroom per activation type


def add_multipliers(s_a: float, s_b: float, s_out: float, left_shift: int):
    """(multipliers, shifts) for inputs a, b and the output of an int8 ADD, as TFLite's add.cc derives them."""
    s_a, s_b, s_out = (float(np.float32(v)) for v in (s_a, s_b, s_out))
    twice_max = 2.0 * max(s_a, s_b)
    reals = [s_a / twice_max, s_b / twice_max, twice_max / ((1 << left_shift) * s_out)]
    return quantize_multipliers(reals)
