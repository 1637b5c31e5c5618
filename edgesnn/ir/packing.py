"""Sub-byte weight storage: b-bit two's-complement fields, little-endian bit order.

1-bit weights are binary {-1, +1} (bit 0 -> -1, bit 1 -> +1); b >= 2 bits hold integers in the
symmetric range [-(2**(b-1) - 1), 2**(b-1) - 1].
"""

from __future__ import annotations

import numpy as np


def weight_range(bits: int) -> tuple[int, int]:
    if not 1 <= bits <= 8:
        raise ValueError(f"weight bits must be 1..8, got {bits}")
    if bits == 1:
        return -1, 1
    q = 2 ** (bits - 1) - 1
    return -q, q


def check_weights(values: np.ndarray, bits: int) -> None:
    lo, hi = weight_range(bits)
    if values.size == 0:
        return
    if bits == 1 and not np.isin(values, (-1, 1)).all():
        raise ValueError("1-bit weights must be -1 or +1")
    if values.min() < lo or values.max() > hi:
        raise ValueError(f"{bits}-bit weights must lie in [{lo}, {hi}]")


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Flattened ``values`` packed into ceil(n * bits / 8) bytes."""
    v = np.asarray(values, dtype=np.int64).ravel()
    check_weights(v, bits)
    if bits == 8:
        return v.astype(np.int8).view(np.uint8)
    field = (v > 0).astype(np.int64) if bits == 1 else v & ((1 << bits) - 1)
    bit_matrix = (field[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little")


def unpack(data: np.ndarray, bits: int, shape) -> np.ndarray:
    """Inverse of :func:`pack`: int8 array of ``shape``."""
    count = int(np.prod(shape))
    data = np.asarray(data, dtype=np.uint8).ravel()
    if data.size != packed_nbytes(count, bits):
        raise ValueError(f"packed weights: expected {packed_nbytes(count, bits)} bytes, got {data.size}")
    if bits == 8:
        return data.view(np.int8).reshape(shape).copy()
    bit_matrix = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits)
    field = (bit_matrix.astype(np.int64) << np.arange(bits)).sum(axis=1)
    if bits == 1:
        values = 2 * field - 1
    else:
        values = np.where(field >= 1 << (bits - 1), field - (1 << bits), field)
    return values.astype(np.int8).reshape(shape)
