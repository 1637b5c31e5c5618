"""Spiking MLP: Linear -> BN -> MultiSpike blocks, then a linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from edgesnn.neurons import MultiSpike


class SpikingMLP(nn.Module):
    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, hidden=(128, 64), D: int = 4):
        super().__init__()
        width = 1
        for d in in_shape:
            width *= d
        layers = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), MultiSpike(D)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))
