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
