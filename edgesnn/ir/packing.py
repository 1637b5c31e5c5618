"""Sub-byte weight storage: b-bit fields, little-endian bit order, in one of two codes.

- ``signed``: two's-complement fields holding the symmetric range [-(2**(b-1) - 1), 2**(b-1) - 1]
  (2**b - 1 levels, zero included; b = 2 gives ternary weights). Defined for b = 2..8.
- ``odd``: the 2**b odd integers in [-(2**b - 1), 2**b - 1], stored as k = (q + 2**b - 1) / 2.
  This is the grid of sign (b = 1: q = -1 or +1), Q-SNN's and ReScaW's 2**b uniform levels
  (gamma * (2k / (2**b - 1) - 1) = q * gamma / (2**b - 1)). Defined for b = 1..7, so q fits int8.
"""

from __future__ import annotations

import numpy as np

CODES = ("signed", "odd")


def weight_range(bits: int, code: str = "signed") -> tuple[int, int]:
    check_format(bits, code)
    q = 2 ** (bits - 1) - 1 if code == "signed" else 2**bits - 1
    return -q, q


def widening_shift(bits: int, code: str) -> int:
    """Left shift that widens a b-bit weight to int8 without overflow: 8 - b (signed), 7 - b (odd).

    The IR computes with the widened weights q * 2**shift, and ``weight_scale`` is their scale.
    Widening changes no real value, but the accumulator gets ``shift`` more bits, so TFLite's
    requantization (whose first rounding happens at the accumulator's resolution) stays close to
    the exact product even for 1-bit weights; and a .tflite file carries these int8 weights as is.
    """
    check_format(bits, code)
    return 8 - bits if code == "signed" else 7 - bits


def widen(values: np.ndarray, bits: int, code: str) -> np.ndarray:
    return np.asarray(values).astype(np.int32) << widening_shift(bits, code)


def check_format(bits: int, code: str) -> None:
    if code not in CODES:
        raise ValueError(f"weight code must be one of {', '.join(CODES)}, got {code!r}")
    if code == "signed" and not 2 <= bits <= 8:
        raise ValueError(f"signed weights take 2..8 bits, got {bits}")
    if code == "odd" and not 1 <= bits <= 7:
        raise ValueError(f"odd-level weights take 1..7 bits, got {bits}")


def check_weights(values: np.ndarray, bits: int, code: str = "signed") -> None:
    lo, hi = weight_range(bits, code)
    if values.size == 0:
        return
    if values.min() < lo or values.max() > hi:
        raise ValueError(f"{bits}-bit {code} weights must lie in [{lo}, {hi}]")
    if code == "odd" and not (values % 2 == 1).all():
        raise ValueError(f"{bits}-bit odd-level weights must be odd integers")


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int, code: str = "signed") -> np.ndarray:
    """Flattened ``values`` packed into ceil(n * bits / 8) bytes."""
    v = np.asarray(values, dtype=np.int64).ravel()
    check_weights(v, bits, code)
    if bits == 8:
        return v.astype(np.int8).view(np.uint8)
    field = (v + 2**bits - 1) // 2 if code == "odd" else v & ((1 << bits) - 1)
    bit_matrix = (field[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little")


def unpack(data: np.ndarray, bits: int, shape, code: str = "signed") -> np.ndarray:
    """Inverse of :func:`pack`: int8 array of ``shape``."""
    check_format(bits, code)
    count = int(np.prod(shape))
    data = np.asarray(data, dtype=np.uint8).ravel()
    if data.size != packed_nbytes(count, bits):
        raise ValueError(f"packed weights: expected {packed_nbytes(count, bits)} bytes, got {data.size}")
    if bits == 8:
        return data.view(np.int8).reshape(shape).copy()
    bit_matrix = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits)
    field = (bit_matrix.astype(np.int64) << np.arange(bits)).sum(axis=1)
    if code == "odd":
        values = 2 * field - (2**bits - 1)
    else:
        values = np.where(field >= 1 << (bits - 1), field - (1 << bits), field)
    return values.astype(np.int8).reshape(shape)
