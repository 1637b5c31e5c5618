"""Spiking CNN: conv -> BN -> MultiSpike stages with average pooling, then a linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from edgesnn.neurons import MultiSpike


class SpikingCNN(nn.Module):
    """``channels[i]`` is stage i's width; ``pool[i]`` says whether stage i ends with 2x2 average pooling."""

    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, channels=(32, 64), pool=(True, True),
                 hidden: int = 128, D: int = 4):
        super().__init__()
        c, h, w = in_shape
        layers = []
        for width, p in zip(channels, pool, strict=True):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), MultiSpike(D)]
            if p:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.features = nn.Sequential(*layers)
        head = [nn.Linear(c * h * w, hidden), nn.BatchNorm1d(hidden), MultiSpike(D)] if hidden else []
        self.head = nn.Sequential(*head)
        self.classifier = nn.Linear(hidden or c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.classifier(self.head(x))
