"""Deploy-time spike trains for integer (SFA) activations.

SFA trains with integer activations s in [0, D] (or signed, for ternary spikes) and deploys them
as spikes. Two encodings, both decoding to s exactly:

- ``rate``: s spikes over D virtual steps, the ones first (spike_d = [d < s]). This is what an IF
  neuron with threshold 1 and soft reset emits when it receives s at the first step
  (SFA Proposition 1; see :func:`if_neuron_train`).
- ``bitplane``: ceil(log2(D + 1)) steps, most significant bit first; spike_k weighs 2^(K-1-k).

Signed activations (ternary spikes) carry their sign on every spike. Everything here is numpy:
backends and profilers use it without torch.
"""

from __future__ import annotations

import numpy as np

from edgesnn.errors import EdgesnnError

ENCODINGS = ("rate", "bitplane")


def num_steps(D: int, encoding: str) -> int:
    """Virtual time steps one integer activation in [-D, D] needs."""
    _check(D, encoding)
    return D if encoding == "rate" else max(1, int(D).bit_length())


def expand(s: np.ndarray, D: int, encoding: str = "rate") -> np.ndarray:
    """Spike train of integer activations ``s``: shape (steps, *s.shape), values in {-1, 0, 1}."""
    _check(D, encoding)
    s = np.asarray(s)
    if not np.issubdtype(s.dtype, np.integer):
        raise EdgesnnError(f"spike expansion needs integer activations, got dtype {s.dtype}")
    mag = np.abs(s.astype(np.int64))
    if mag.size and mag.max() > D:
        raise EdgesnnError(f"activation {int(mag.max())} is outside [-{D}, {D}]")
    sign = np.sign(s).astype(np.int8)
    steps = num_steps(D, encoding)
    idx = np.arange(steps).reshape((steps,) + (1,) * s.ndim)
    if encoding == "rate":
        on = idx < mag
    else:
        on = ((mag >> (steps - 1 - idx)) & 1).astype(bool)
    return (on * sign).astype(np.int8)


def decode(train: np.ndarray, encoding: str = "rate") -> np.ndarray:
    """Integer activations carried by a spike train (inverse of :func:`expand`)."""
    train = np.asarray(train).astype(np.int64)
    if encoding == "rate":
        return train.sum(axis=0)
    if encoding == "bitplane":
        steps = train.shape[0]
        weights = (1 << np.arange(steps - 1, -1, -1)).reshape((steps,) + (1,) * (train.ndim - 1))
        return (train * weights).sum(axis=0)
    raise EdgesnnError(f"unknown spike encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")


def if_neuron_train(u: np.ndarray, steps: int, threshold: float = 1.0) -> np.ndarray:
    """Spikes of an IF neuron (soft reset) that receives ``u`` at the first step only.

    It fires floor(u / threshold) times for 0 <= u < (steps + 1) * threshold, all at the start:
    the neuron-level form of the ``rate`` encoding.
    """
    v = np.asarray(u, dtype=np.float64).copy()
    out = np.zeros((steps,) + v.shape, dtype=np.int8)
    for t in range(steps):
        fire = v >= threshold
        out[t] = fire
        v = v - fire * threshold
    return out


def _check(D: int, encoding: str) -> None:
    if int(D) != D or D <= 0:
        raise EdgesnnError(f"D must be a positive integer, got {D}")
    if encoding not in ENCODINGS:
        raise EdgesnnError(f"unknown spike encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
