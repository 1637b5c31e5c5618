"""Data with a time axis: samples (N, T, C, H, W) or (N, T, F), for models whose state carries from one
timestep to the next; and ``digits-events``, the set generated here, offline, as the default for them.

``digits-events`` turns each of sklearn's 1,797 8x8 digits into a stream of T = 10 binary event frames
on a 12x12 canvas: the digit slides 4 pixels right or left (one pixel every 2 steps; the direction and a
vertical offset in 0..4 drawn with a fixed seed), and each pixel of the moving digit fires at each step
with probability pixel / 16 (a flickering, rate-coded sensor). The label is the digit, plus 10 when it
moves left: 20 classes. Summed over time, a right-moving and a left-moving digit give the same
distribution of images (each position is visited for 2 steps either way), so a static model can tell
the digit but not the direction; only the order of the frames holds it (tests/test_data_temporal.py
measures both baselines). The values are 0 or 1, so the int8 input of every export is exact.
"""

from __future__ import annotations

import numpy as np

from edgesnn.errors import EdgesnnError

EVENTS_SEED = 0
EVENTS_STEPS = 10
EVENTS_CANVAS = 12  # the 8x8 digit moves over 12 columns (4 pixels) and sits at a row offset in 0..4
EVENTS_TRAVEL = EVENTS_CANVAS - 8
DIRECTIONS = ("right", "left")  # label = digit + 10 * direction index
SHAPE = (1797, EVENTS_STEPS, 1, EVENTS_CANVAS, EVENTS_CANVAS)


def digits_events_arrays(seed: int = EVENTS_SEED, steps: int = EVENTS_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (1797, steps, 1, 12, 12) of 0/1 events, y int64 in 0..19), the same for the same seed."""
    from sklearn.datasets import load_digits

    if steps < 2:
        raise EdgesnnError(f"digits-events needs at least 2 steps, not {steps}")
    d = load_digits()
    images, digits = d.images.astype(np.float64) / 16.0, d.target.astype(np.int64)
    n = len(digits)
    rng = np.random.default_rng(seed)
    direction = rng.integers(0, 2, n)
    row = rng.integers(0, EVENTS_TRAVEL + 1, n)
    # column offset at step t: 0 .. TRAVEL evenly over the steps (right), reversed (left)
    along = (np.arange(steps) * (EVENTS_TRAVEL + 1)) // steps  # steps=10: 0 0 1 1 2 2 3 3 4 4
    col = np.where(direction[:, None] == 0, along[None, :], EVENTS_TRAVEL - along[None, :])  # (n, steps)
    rate = np.zeros((n, steps, EVENTS_CANVAS, EVENTS_CANVAS))
    for i in range(n):
        for t in range(steps):
            rate[i, t, row[i]:row[i] + 8, col[i, t]:col[i, t] + 8] = images[i]
    events = (rng.random(rate.shape) < rate).astype(np.float32)[:, :, None]
    return events, digits + 10 * direction


def digits_events():
    """The built-in ``digits-events`` set: :func:`digits_events_arrays`, split as every set (stratified, seed 0)."""
    from edgesnn import data

    x, y = digits_events_arrays()
    return data._split("digits-events", x, y, steps=x.shape[1])


BUILTIN = {"digits-events": digits_events}


def describe(shape) -> str:
    """'(N, T=10, 1, 12, 12)': a temporal shape with its time axis named."""
    n, t, *rest = shape
    return "(" + ", ".join([str(n), f"T={t}", *map(str, rest)]) + ")"


def static_refusal(name: str, shape) -> EdgesnnError:
    """What a consumer of static samples says about a data set with a time axis: one line, naming the axis."""
    return EdgesnnError(f"data set {name!r} has a time axis: samples {describe(shape)} are sequences for a temporal "
                        f"model; this takes static samples (N, C, H, W) or (N, features)")


def flatten_time(x) -> np.ndarray:
    """(N, T, ...) -> (N, T * prod(...)): a sequence as one feature vector (the full-sequence baseline)."""
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def sum_time(x) -> np.ndarray:
    """(N, T, ...) -> (N, prod(...)): the counts summed over time (what a static model of the sum sees)."""
    x = np.asarray(x)
    return x.sum(axis=1).reshape(len(x), -1)
