"""A user's own models, as the bring-your-own tests name them (tests.byo_nets:conv_net): plain torch,
with a "third-party" SFA-like neuron edgesnn does not know until --neuron-map maps it."""

import torch
from torch import nn


class ThirdPartySpike(nn.Module):
    """Another library's multi-level spike: clamp(round(u), 0, D) / D, without a surrogate."""

    def __init__(self, D: int = 4):
        super().__init__()
        self.D = D

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(u), 0, self.D) / self.D


def conv_net(in_shape, num_classes: int, width: int = 16) -> nn.Module:
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), ThirdPartySpike(),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(width * (h // 2) * (w // 2), 64), ThirdPartySpike(),
        nn.Linear(64, num_classes),
    )


def gelu_net(in_shape, num_classes: int) -> nn.Module:
    """GELU and a LayerNorm: nothing in edgesnn maps them."""
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.GELU(), nn.LayerNorm(32), ThirdPartySpike(),
                         nn.Linear(32, num_classes))


def not_a_module(in_shape, num_classes: int):
    return "a string"


# ---------------------------------------------------------------- trained elsewhere (tests/test_weights_in.py)

class RoundSpike(nn.Module):
    """A library's multi-level spike, trainable with plain torch: clamp(floor(u + 1/2), 0, D) / D forward
    (exactly, as edgesnn's SFA neuron), a straight-through gradient inside (0, D)."""

    def __init__(self, D: int = 4):
        super().__init__()
        self.D = D

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = torch.clamp(torch.floor(u + 0.5), 0, self.D).detach()
        inside = ((u > 0) & (u < self.D)).to(u.dtype)
        return (s + (u - u.detach()) * inside) / self.D  # forward: s + 0, exactly s


class LeakySpike(RoundSpike):
    """The same spike with state of its own in the state dict, as snnTorch's Leaky has (beta): a
    one-timestep model does not use it, and edgesnn's neuron has nowhere to keep it."""

    def __init__(self, D: int = 4):
        super().__init__(D)
        self.register_buffer("beta", torch.tensor(0.9))


def bn_net(in_shape, num_classes: int, width: int = 8, neuron=RoundSpike) -> nn.Module:
    """Conv -> BatchNorm -> spike, twice, then pool and a linear readout."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), neuron(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), neuron(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * width * (h // 2) * (w // 2), num_classes),
    )


def leaky_bn_net(in_shape, num_classes: int) -> nn.Module:
    return bn_net(in_shape, num_classes, neuron=LeakySpike)


def failing_net(in_shape, num_classes: int) -> nn.Module:
    raise ValueError("no such width")


def leaky_linear() -> nn.Module:
    """snnTorch's Leaky with a learned threshold after a linear layer (digits: 64 inputs)."""
    import snntorch

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), snntorch.Leaky(beta=0.9, learn_threshold=True))
