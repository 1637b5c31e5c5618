"""Static arena planning: every activation gets a fixed offset in one RAM block, no malloc.

Buffers whose lifetimes (first write .. last read, in op order) overlap never share bytes; the
rest reuse them. Placement is TFLite Micro's greedy planner: largest buffer first, at the lowest
aligned offset that clashes with no already placed buffer alive at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16  # bytes: SIMD loads and 64-bit accesses stay aligned on every target


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int  # bytes
    first: int  # index of the step that writes it
    last: int  # index of the last step that reads it


def plan(buffers: list[Buffer]) -> tuple[dict[str, int], int]:
    """(offset of each buffer, arena bytes)."""
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        clashes = sorted((off, off + other.size) for other, off in placed
                         if other.first <= buf.last and buf.first <= other.last)
        offset = 0
        for lo, hi in clashes:
            if offset + buf.size <= lo:
                break
            offset = max(offset, _align(hi))
        placed.append((buf, offset))
        offsets[buf.name] = offset
    total = max((off + b.size for b, off in placed), default=0)
    return offsets, _align(total)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
