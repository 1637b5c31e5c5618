"""export_tensors.as_transpose: the one IR transpose (of some reshape of the storage) that lays a
torch value out as an op needs it, found from the index array alone."""

import itertools

import numpy as np

from edgesnn.export_tensors import as_transpose


def test_every_transpose_of_every_small_shape_is_found():
    rng = np.random.default_rng(0)
    for rank in (2, 3, 4):
        for _ in range(40):
            shape = [int(d) for d in rng.integers(1, 5, rank)]
            for perm in itertools.permutations(range(rank)):
                seq = np.arange(int(np.prod(shape))).reshape(shape).transpose(perm).ravel()
                found = as_transpose(seq)
                assert found is not None, (shape, perm)
                inner, p = found
                assert np.array_equal(np.arange(seq.size).reshape(inner).transpose(p).ravel(), seq)


def test_a_shuffle_that_is_no_transpose_is_refused():
    assert as_transpose(np.array([0, 2, 1, 3, 5, 4])) is None  # two swaps of neighbours: no stride pattern
    assert as_transpose(np.array([1, 0, 2, 3])) is None  # does not start at element 0
