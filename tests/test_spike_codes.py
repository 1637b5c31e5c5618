"""The deploy-time spike codes (edgesnn.spikes): rate-burst and bit-plane trains decode to the
integer counts, a layer integrates a bit-plane train exactly, and the IR tensors that carry spike
counts are found with their unit and largest count."""

import numpy as np
import pytest

from edgesnn import spikes
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g


def test_codes_their_aliases_and_steps():
    assert spikes.CODES == ("rate-burst", "bit-plane")
    assert [spikes.code_name(c) for c in ("rate", "bitplane", "rate-burst", "bit-plane")] == [
        "rate-burst", "bit-plane", "rate-burst", "bit-plane"]
    with pytest.raises(EdgesnnError, match="unknown spike code 'morse'; available: rate-burst, bit-plane"):
        spikes.code_name("morse")
    assert [spikes.num_steps(D, "rate-burst") for D in (1, 4, 7, 8)] == [1, 4, 7, 8]
    assert [spikes.num_steps(D, "bit-plane") for D in (1, 4, 7, 8)] == [1, 3, 3, 4]  # ceil(log2(D + 1))


def test_bit_plane_trains_are_msb_first_and_integrate_exactly_by_doubling():
    s = np.array([[0, 1, 5, 7], [-6, 3, -1, 4]])
    train = spikes.expand(s, 7, "bit-plane")
    assert train[:, 0, 2].tolist() == [1, 0, 1] and train[:, 1, 0].tolist() == [-1, -1, 0]  # 5 = 101, -6 = -(110)
    np.testing.assert_array_equal(spikes.decode(train, "bit-plane"), s)
    rng = np.random.default_rng(0)
    W = rng.integers(-128, 128, (5, 4))
    for row, counts in zip(np.moveaxis(train, 1, 0), s):  # one input vector's train: steps x 4
        acc = np.zeros(5, np.int64)
        for x_k in row:
            acc = 2 * acc + W @ x_k  # doubling before each step ...
        shifted = sum((W @ x_k) << (len(row) - 1 - k) for k, x_k in enumerate(row))  # ... or shifted adds
        np.testing.assert_array_equal(acc, W @ counts)
        np.testing.assert_array_equal(shifted, W @ counts)


def test_spikes_sent_per_count_in_each_code():
    counts = np.array([0, 1, 2, 3, 4, 7, -5])
    assert spikes.spike_ops(counts, "rate-burst").tolist() == [0, 1, 2, 3, 4, 7, 5]
    assert spikes.spike_ops(counts, "bit-plane").tolist() == [0, 1, 1, 2, 1, 3, 2]
    for code in spikes.CODES:  # what a train of the code really carries
        train = spikes.expand(counts, 7, code)
        np.testing.assert_array_equal(np.abs(train).sum(0), spikes.spike_ops(counts, code))


def _requantize(name, src, out, shift, clamp):
    return g.Requantize(name, [src], out, multiplier=np.array([1 << 30], np.int32), shift=np.array([shift], np.int32),
                        clamp=clamp)


def test_count_tensors_follow_widenings_pools_and_reshapes_only_while_exact():
    t = {"x": g.TensorSpec([4, 4, 2], "int8", 0.1, -128),
         "s": g.TensorSpec([4, 4, 2], "int8", 1.0, spike_D=4),
         "s16": g.TensorSpec([4, 4, 2], "int8", 1 / 16),  # s x 16, clamp [0, 64]: exact
         "clipped": g.TensorSpec([4, 4, 2], "int8", 1 / 32),  # s x 32 clamped at 100: not counts
         "pool": g.TensorSpec([2, 2, 2], "int8", 1.0),  # sum of 2x2 windows: counts up to 16
         "flat": g.TensorSpec([8], "int8", 1.0),
         "t": g.TensorSpec([4, 4, 2], "int8", 1.0, spike_D=1, signed=True)}
    ops = [_requantize("n", "x", "s", 1, [0, 4]), _requantize("w", "s", "s16", 5, [0, 64]),
           _requantize("c", "s", "clipped", 6, [0, 100]), g.SumPool2D("p", ["s"], "pool"),
           g.Reshape("f", ["pool"], "flat"), _requantize("tern", "x", "t", 1, [-1, 1])]
    found = spikes.count_tensors(g.Graph(t, ops, "x", ["flat"]))
    assert found == {"s": spikes.Counts(1, 4), "s16": spikes.Counts(16, 4), "pool": spikes.Counts(1, 16),
                     "flat": spikes.Counts(1, 16), "t": spikes.Counts(1, 1, signed=True)}
    assert found["s16"].unit_shift == 4
