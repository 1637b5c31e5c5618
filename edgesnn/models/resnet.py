"""Spiking ResNet with membrane shortcuts (MS-ResNet style).

The residual stream carries membrane potentials; every branch starts with a spiking neuron, so
the addition is on real values and no spike is ever added to a spike.
"""

from __future__ import annotations

import torch
from torch import nn

from edgesnn.neurons import MultiSpike


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class MembraneBlock(nn.Module):
    """x + BN(conv(SN(BN(conv(SN(x)))))); a strided 1x1 conv_bn of SN(x) when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, D: int = 4):
        super().__init__()
        self.sn1 = MultiSpike(D)
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.sn2 = MultiSpike(D)
        self.conv2 = conv_bn(c_out, c_out, 3, 1)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sn1(x)
        out = self.conv2(self.sn2(self.conv1(s)))
        return out + (self.shortcut(s) if self.shortcut is not None else x)


class SpikingResNet(nn.Module):
    """Stem conv_bn, stages of MembraneBlocks (stride 2 between stages), SN, global average pool, linear."""

    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, channels=(16, 32), blocks=(1, 1), D: int = 4):
        super().__init__()
        self.stem = conv_bn(in_shape[0], channels[0])
        layers, c = [], channels[0]
        for i, (width, n) in enumerate(zip(channels, blocks, strict=True)):
            for j in range(n):
                layers.append(MembraneBlock(c, width, 2 if (i > 0 and j == 0) else 1, D))
                c = width
        self.blocks = nn.Sequential(*layers)
        self.sn = MultiSpike(D)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.sn(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))
