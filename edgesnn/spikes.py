"""Deploy-time spike trains for integer (SFA) activations.

SFA trains with integer activations s in [0, D] (or signed, for ternary spikes) and deploys them
as spikes. Two codes (``--spike-code``), both decoding to s exactly:

- ``rate-burst``: s spikes over D virtual steps, the ones first (spike_d = [d < s]). This is what
  an IF neuron with threshold 1 and soft reset emits when it receives s at the first step
  (SFA Proposition 1; see :func:`if_neuron_train`). It costs s synaptic operations (SOPs).
- ``bit-plane`` (the IBRA-LIF paper's "binary conversion"): K = ceil(log2(D + 1)) steps, most
  significant bit first; spike_k weighs 2^(K-1-k). A receiving layer integrates it exactly by
  doubling its accumulator before each step (acc = 2 acc + W x_k): after K steps acc = W s. It
  costs popcount(s) SOPs in K steps instead of s SOPs in D steps.

The names ``rate`` and ``bitplane`` are accepted as aliases. Signed activations (ternary spikes)
carry their sign on every spike. :func:`count_tensors` finds the IR tensors whose integers are
spike counts (what a spike-driven layer can read as a train). Everything here is numpy: backends
and profilers use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesnn.errors import EdgesnnError

CODES = ("rate-burst", "bit-plane")
ENCODINGS = CODES  # the former name of the tuple
_ALIASES = {"rate": "rate-burst", "bitplane": "bit-plane"}


def code_name(code: str) -> str:
    """The canonical name of a spike code (an alias such as 'bitplane' accepted); refuses others."""
    name = _ALIASES.get(code, code)
    if name not in CODES:
        raise EdgesnnError(f"unknown spike code {code!r}; available: {', '.join(CODES)}")
    return name


def num_steps(D: int, encoding: str) -> int:
    """Virtual time steps one integer activation in [-D, D] needs."""
    code = _check(D, encoding)
    return int(D) if code == "rate-burst" else max(1, int(D).bit_length())


def expand(s: np.ndarray, D: int, encoding: str = "rate-burst") -> np.ndarray:
    """Spike train of integer activations ``s``: shape (steps, *s.shape), values in {-1, 0, 1}."""
    code = _check(D, encoding)
    s = np.asarray(s)
    if not np.issubdtype(s.dtype, np.integer):
        raise EdgesnnError(f"spike expansion needs integer activations, got dtype {s.dtype}")
    mag = np.abs(s.astype(np.int64))
    if mag.size and mag.max() > D:
        raise EdgesnnError(f"activation {int(mag.max())} is outside [-{D}, {D}]")
    sign = np.sign(s).astype(np.int8)
    steps = num_steps(D, code)
    idx = np.arange(steps).reshape((steps,) + (1,) * s.ndim)
    if code == "rate-burst":
        on = idx < mag
    else:
        on = ((mag >> (steps - 1 - idx)) & 1).astype(bool)
    return (on * sign).astype(np.int8)


def decode(train: np.ndarray, encoding: str = "rate-burst") -> np.ndarray:
    """Integer activations carried by a spike train (inverse of :func:`expand`)."""
    code = code_name(encoding)
    train = np.asarray(train).astype(np.int64)
    if code == "rate-burst":
        return train.sum(axis=0)
    acc = np.zeros(train.shape[1:], dtype=np.int64)
    for step in train:  # the receiving layer's doubling accumulator
        acc = 2 * acc + step
    return acc


def spike_ops(counts: np.ndarray, encoding: str) -> np.ndarray:
    """Spikes each integer count sends in the code: |s| (rate-burst) or its set bits (bit-plane)."""
    mag = np.abs(np.asarray(counts).astype(np.int64))
    if code_name(encoding) == "rate-burst":
        return mag
    bits = np.zeros_like(mag)
    while mag.any():
        bits += mag & 1
        mag = mag >> 1
    return bits


def if_neuron_train(u: np.ndarray, steps: int, threshold: float = 1.0) -> np.ndarray:
    """Spikes of an IF neuron (soft reset) that receives ``u`` at the first step only.

    It fires floor(u / threshold) times for 0 <= u < (steps + 1) * threshold, all at the start:
    the neuron-level form of the ``rate-burst`` code.
    """
    v = np.asarray(u, dtype=np.float64).copy()
    out = np.zeros((steps,) + v.shape, dtype=np.int8)
    for t in range(steps):
        fire = v >= threshold
        out[t] = fire
        v = v - fire * threshold
    return out


@dataclass(frozen=True)
class Counts:
    """An IR tensor whose integers are spike counts: value = ``unit`` x n with |n| <= ``D``."""

    unit: int  # the integer one spike adds (a power of two: 1, or the exporter's 2^k headroom)
    D: int  # the largest count |n| an element carries (a sum pool's: the window's spikes)
    signed: bool = False

    @property
    def unit_shift(self) -> int:
        return self.unit.bit_length() - 1


def count_tensors(graph) -> dict[str, Counts]:
    """Tensors of ``graph`` (an edgesnn.ir Graph) that carry spike counts, with zero point 0: a
    neuron's output (spike_D set), and what keeps its integers counts: reshapes, transposes, max pools, sum
    pools (the window's spikes add up: D x window) and exact x 2^k widenings (multiplier 2^30,
    shift k + 1, clamp never binding)."""
    found = {name: Counts(1, int(spec.spike_D), bool(spec.signed)) for name, spec in graph.tensors.items()
             if spec.spike_D is not None and spec.zero_point == 0}
    for op in graph.ops:
        src = found.get(op.inputs[0]) if op.inputs else None
        if src is None or graph.tensors[op.output].zero_point != 0 or op.output in found:
            continue
        if op.kind in ("reshape", "transpose", "max_pool2d"):
            found[op.output] = src
        elif op.kind == "sum_pool2d":
            found[op.output] = Counts(src.unit, src.D * int(np.prod(op.kernel)), src.signed)
        elif op.kind == "requantize" and np.size(op.multiplier) == 1 and int(op.multiplier[0]) == 1 << 30 \
                and int(np.ravel(op.shift)[0]) >= 1:
            unit = src.unit << (int(np.ravel(op.shift)[0]) - 1)
            lo = -src.D * unit if src.signed else 0
            if op.clamp[0] <= lo and op.clamp[1] >= src.D * unit:
                found[op.output] = Counts(unit, src.D, src.signed)
    return found


def _check(D: int, encoding: str) -> str:
    if int(D) != D or D <= 0:
        raise EdgesnnError(f"D must be a positive integer, got {D}")
    return code_name(encoding)
