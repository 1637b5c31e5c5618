"""The snnTorch baseline of scripts/bench.py: edgesnn's spiking CNN as a multi-timestep LIF network.

Same layers as :class:`edgesnn.models.cnn.SpikingCNN` (conv -> BN -> neuron stages with 2x2 average
pooling, a linear -> BN -> neuron hidden layer, a linear classifier), but every neuron is an
``snntorch.Leaky`` (binary spikes, leak ``beta``, threshold 1, reset by subtraction, snnTorch's
default ATan surrogate gradient) run for ``T`` timesteps. The image is the input current at every
step (direct encoding); the logits are the classifier's output averaged over the steps. The first
conv + BN sees the same input at every step, so it is computed once (snnTorch's tutorials repeat
it per step; hoisting it only makes the baseline faster).
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn


class LifCNN(nn.Module):
    def __init__(self, in_shape=(1, 8, 8), num_classes: int = 10, channels=(32, 64), pool=(True, True),
                 hidden: int = 128, T: int = 4, beta: float = 0.9):
        super().__init__()
        self.T = int(T)
        c, h, w = in_shape
        self.convs, self.bns, self.lifs, self.pools = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), []
        for width, p in zip(channels, pool, strict=True):
            self.convs.append(nn.Conv2d(c, width, 3, padding=1, bias=False))
            self.bns.append(nn.BatchNorm2d(width))
            self.lifs.append(snn.Leaky(beta=beta))
            self.pools.append(bool(p))
            if p:
                h, w = h // 2, w // 2
            c = width
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(c * h * w, hidden) if hidden else None
        self.bn_fc1 = nn.BatchNorm1d(hidden) if hidden else None
        self.lif_fc1 = snn.Leaky(beta=beta) if hidden else None
        self.classifier = nn.Linear(hidden or c * h * w, num_classes)

    @classmethod
    def like(cls, kwargs: dict, T: int, beta: float = 0.9) -> "LifCNN":
        """The LIF twin of a SpikingCNN built with ``kwargs`` (a checkpoint's config["kwargs"])."""
        keep = ("in_shape", "num_classes", "channels", "pool", "hidden")
        return cls(**{k: kwargs[k] for k in keep if k in kwargs}, T=T, beta=beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mems = [lif.reset_mem() for lif in self.lifs]
        mem_fc1 = self.lif_fc1.reset_mem() if self.lif_fc1 is not None else None
        first = self.bns[0](self.convs[0](x))  # constant input current: once, not per step
        out = 0
        for _ in range(self.T):
            h = first
            for i in range(len(self.convs)):
                if i:
                    h = self.bns[i](self.convs[i](h))
                spk, mems[i] = self.lifs[i](h, mems[i])
                h = self.pool(spk) if self.pools[i] else spk
            h = torch.flatten(h, 1)
            if self.fc1 is not None:
                h, mem_fc1 = self.lif_fc1(self.bn_fc1(self.fc1(h)), mem_fc1)
            out = out + self.classifier(h)
        return out / self.T
