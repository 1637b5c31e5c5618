"""Neurons and their deploy-time spike trains: every reachable activation decodes exactly."""

import numpy as np
import pytest
import torch

from edgesnn import spikes
from edgesnn.errors import EdgesnnError
from edgesnn.neurons import ILIF, LIF, IntegerIF, MultiSpike, TernarySpike

D_VALUES = [1, 2, 3, 4, 7, 8, 15, 16]


@pytest.mark.parametrize("D", D_VALUES)
@pytest.mark.parametrize("encoding", spikes.ENCODINGS)
def test_multispike_expansion_decodes_every_reachable_input(D, encoding):
    # every input on a fine grid covering below 0, every half point, and above D
    u = torch.arange(-2 * 64, (D + 2) * 64 + 1, dtype=torch.float32) / 64
    neuron = MultiSpike(D, normalize=False)
    s = neuron(u)
    assert set(s.unique().tolist()) == set(range(D + 1))  # all of 0..D is reachable
    train = neuron.expand(s, encoding)
    assert train.shape[0] == spikes.num_steps(D, encoding)
    assert set(np.unique(train).tolist()) <= {0, 1}
    np.testing.assert_array_equal(spikes.decode(train, encoding), s.numpy().astype(np.int64))


@pytest.mark.parametrize("D", D_VALUES)
def test_rate_burst_is_an_if_neuron_with_soft_reset(D):
    """SFA Proposition 1: IF (threshold 1, soft reset) fed u once fires floor(u) spikes, ones first."""
    u = np.arange(0, (D + 1) * 32) / 32
    fired = spikes.if_neuron_train(u, D)
    np.testing.assert_array_equal(fired.sum(0), np.minimum(np.floor(u), D))
    s = np.floor(u + 0.5).clip(0, D).astype(np.int64)
    np.testing.assert_array_equal(spikes.if_neuron_train(s, D), spikes.expand(s, D, "rate"))


def test_bitplane_is_msb_first():
    train = spikes.expand(np.array([5]), 7, "bitplane")
    assert train[:, 0].tolist() == [1, 0, 1]


def test_multispike_rounds_half_up_and_normalizes():
    u = torch.tensor([-0.5, 0.49, 0.5, 1.5, 2.5, 3.49, 9.0])
    assert MultiSpike(4, normalize=False)(u).tolist() == [0, 0, 1, 2, 3, 3, 4]
    assert MultiSpike(4)(u).tolist() == [0, 0, 0.25, 0.5, 0.75, 0.75, 1.0]


def test_multispike_gradient_is_straight_through_inside_range():
    u = torch.tensor([-1.0, 0.0, 0.3, 2.0, 3.9, 4.0, 5.0], requires_grad=True)
    MultiSpike(4, normalize=False)(u).sum().backward()
    assert u.grad.tolist() == [0, 0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_D_is_a_user_error(bad):
    with pytest.raises(EdgesnnError, match="positive integer"):
        MultiSpike(bad)


def test_integer_if_soft_reset_matches_reference_loop():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 5) * 3
    out = IntegerIF(4)(x)
    v = torch.zeros(3, 5)
    for t in range(6):
        v = v + x[t]
        s = torch.clamp(torch.floor(v + 0.5), 0, 4)
        assert torch.equal(out[t], s)
        v = v - s
    for D in (1, 4):
        s = IntegerIF(D)(torch.rand(4, 100) * (D + 2))
        np.testing.assert_array_equal(spikes.decode(IntegerIF(D).expand(s, "rate"), "rate"), s.numpy())


def test_ilif_decays_the_residual_membrane():
    x = torch.tensor([[2.7], [0.0], [1.0]])
    out = ILIF(4)(x)[:, 0].tolist()
    # u1 = 2.7 -> 3; u2 = (2.7 - 3) * 0.25 = -0.075 -> 0; u3 = (-0.075 - 0) * 0.25 + 1 = 0.98 -> 1
    assert out == [3, 0, 1]


def test_lif_is_binary_with_surrogate_gradient():
    x = torch.full((4, 10), 0.6, requires_grad=True)
    s = LIF(decay=0.5)(x)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert s[:, 0].tolist() == [0, 0, 1, 0]  # u: 0.6, 0.9, 1.05 fires (hard reset), 0.6
    s.sum().backward()
    assert x.grad.abs().sum() > 0


def test_ternary_spikes_and_their_expansion():
    x = torch.tensor([[[0.7, -0.8, 0.2, -0.3]]]).repeat(3, 1, 1).transpose(1, 2)  # (T=3, B=4, C=1)
    n = TernarySpike(channels=1)
    o = n(x)
    assert set(o.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert o[0, :, 0].tolist() == [1, -1, 0, 0]
    train = n.expand(o, "rate")
    np.testing.assert_array_equal(spikes.decode(train, "rate"), o.detach().numpy())
