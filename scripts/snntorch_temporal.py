"""The snnTorch twin of edgesnn's ``temporal-dense`` (scripts/bench_temporal.py), trained with snnTorch's
usual BPTT loop (its tutorials' loop, written out: ``snntorch.backprop`` is deprecated).

flatten -> Linear -> ``snntorch.Leaky`` (beta, threshold 1, reset by subtraction, fast-sigmoid
surrogate of the same slope as edgesnn's) -> Linear -> ``snntorch.Leaky`` with ``reset_mechanism="none"``
as the leaky-integrator readout (snnTorch has no LI neuron; its spikes are ignored); the logits are the
readout's membrane averaged over the T steps, as edgesnn's ``mean`` readout. Everything is float32:
no quantization of weights, currents or membranes. One difference of snnTorch's own: its subtraction
reset is applied at the next step, after the leak (edgesnn's LIF subtracts at once, and the leak then
acts on the reset membrane)."""

from __future__ import annotations

import math

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn


class LeakyDense(nn.Module):
    def __init__(self, frame_shape, classes: int, hidden: int = 64, beta: float = 0.9, readout_beta: float = 0.9,
                 slope: float = 5.0, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc1 = nn.Linear(math.prod(frame_shape), hidden)
            self.lif1 = snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="subtract",
                                  spike_grad=surrogate.fast_sigmoid(slope=slope))
            self.fc2 = nn.Linear(hidden, classes)
            self.li = snn.Leaky(beta=readout_beta, reset_mechanism="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, *frame) -> logits (N, classes): the readout membrane's mean over T."""
        mem1, mem2 = self.lif1.reset_mem(), self.li.reset_mem()
        total = 0
        for t in range(x.shape[1]):
            spk1, mem1 = self.lif1(self.fc1(x[:, t].flatten(1)), mem1)
            _, mem2 = self.li(self.fc2(spk1), mem2)
            total = total + mem2
        return total / x.shape[1]


def train(net: LeakyDense, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 5e-3, batch_size: int = 64,
          seed: int = 0) -> list[float]:
    """BPTT over whole sequences: Adam, cosine schedule, cross-entropy on the mean membrane; the same
    optimizer, schedule, batch size and shuffling as edgesnn.temporal.train.train. Returns each epoch's loss."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        losses.append(total / len(x))
    net.eval()
    return losses


@torch.no_grad()
def accuracy(net: LeakyDense, x, y) -> float:
    net.eval()
    pred = net(torch.as_tensor(x, dtype=torch.float32)).argmax(1)
    return float((pred == torch.as_tensor(y)).float().mean())
