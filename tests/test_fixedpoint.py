"""Requantization arithmetic: the vectorized numpy form equals TFLite's C code transcribed literally."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesnn.ir.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    add_multipliers,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_16x8,
    quantize_multiplier,
)


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _tflite_mbqm(x: int, m: int, shift: int) -> int:
    """tensorflow/lite/kernels/internal/common.h, double rounding, with Python ints."""
    left, right = max(shift, 0), max(-shift, 0)
    a = x * (1 << left)
    if a == m == INT32_MIN:
        high = INT32_MAX
    else:
        ab = a * m
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        high = _c_div(ab + nudge, 1 << 31)
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


# |x| * 2**shift must fit int32 (TFLite overflows otherwise): real <= 8 gives shift <= 4.
@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-6, max_value=8.0), st.lists(st.integers(-(2**26), 2**26), min_size=1, max_size=20))
def test_vectorized_requantization_equals_tflite_reference(real, xs):
    m, s = quantize_multiplier(real)
    got = multiply_by_quantized_multiplier(np.array(xs), m, s)
    assert got.tolist() == [_tflite_mbqm(x, m, s) for x in xs]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e6))
def test_quantized_multiplier_represents_the_real_one(real):
    m, s = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert math.isclose(m * 2.0 ** (s - 31), real, rel_tol=2**-30)


def test_left_shift_overflow_is_refused_not_wrapped():
    m, s = quantize_multiplier(8.0)
    with pytest.raises(OverflowError):
        multiply_by_quantized_multiplier(np.array([2**27]), m, s)


def test_known_multipliers():
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)  # below 2**-31: flushed as TFLite does


def test_requantization_rounds_half_away_from_zero_through_double_rounding():
    m, s = quantize_multiplier(0.25)
    assert multiply_by_quantized_multiplier(np.array([2, -2, 6, 1]), m, s).tolist() == [1, -1, 2, 1]
    # 1 * 0.25 = 0.25 rounds to 1: TFLite's double rounding (x/2 rounded, then /2 rounded).


def test_add_multipliers_follow_tflite():
    mults, shifts = add_multipliers(0.5, 0.25, 0.5, 20)
    # inputs: 0.5 / 1.0 and 0.25 / 1.0; output: 1.0 / (2**20 * 0.5)
    assert (mults[0], shifts[0]) == quantize_multiplier(0.5)
    assert (mults[1], shifts[1]) == quantize_multiplier(0.25)
    assert (mults[2], shifts[2]) == quantize_multiplier(2.0**-19)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**40), st.floats(1e-6, 100.0))
def test_16x8_requantization_rounds_once_half_up_with_a_16_bit_multiplier(x, real):
    """TFLite's int64 MultiplyByQuantizedMultiplier: y = floor(x * r / 2**(15 - shift) + 1/2), r the
    multiplier rounded to 16 bits, written here with exact fractions."""
    from fractions import Fraction

    m, shift = quantize_multiplier(real)
    reduced = (m + 2**15) // 2**16 if m < 0x7FFF0000 else 0x7FFF
    want = math.floor(Fraction(x * reduced, 2 ** (15 - shift)) + Fraction(1, 2))
    assert int(multiply_by_quantized_multiplier_16x8(np.array([x]), m, shift)[0]) == want


def test_16x8_and_double_rounding_differ():
    """The two arithmetics are not interchangeable: an int16-input conv must use its own."""
    x = np.arange(-100000, 100000, 7)
    m, shift = quantize_multiplier(0.0123456)
    assert (multiply_by_quantized_multiplier_16x8(x, m, shift) != multiply_by_quantized_multiplier(x, m, shift)).any()
    m, shift = quantize_multiplier(1.0)
    assert np.array_equal(multiply_by_quantized_multiplier_16x8(x, m, shift), x)  # the identity stays exact
