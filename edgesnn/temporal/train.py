"""BPTT over sequences (N, T, ...): the whole sequence runs forward, the loss is cross-entropy on the
readout (the LI membrane's mean, or spike counts), and the gradient flows back through every step via
the neurons' surrogate and straight-through rounding. Accuracy is measured on the exact integer
forward, which is what the exported IR computes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.temporal.model import SpikingSequence


@dataclass
class History:
    loss: list[float] = field(default_factory=list)
    test_accuracy: float | None = None


def train(model: SpikingSequence, x: torch.Tensor, y: torch.Tensor, epochs: int = 5, lr: float = 5e-3,
          batch_size: int = 64, seed: int = 0, log=None, on_epoch=None, before_epoch=None) -> History:
    """Train ``model`` in place on sequences ``x`` (N, T, *frame) with labels ``y``; calibrates its input
    scale on ``x`` first. Returns the mean loss of each epoch. ``log`` takes a line per epoch, ``on_epoch``
    (epoch, mean loss) as edgesnn.train's, ``before_epoch`` (epoch) before each (Q-SNN's annealing)."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    if x.dim() < 3 or len(x) != len(y) or not len(x):
        raise EdgesnnError(f"training takes sequences (N, T, ...) with one label each, got x {tuple(x.shape)}, "
                           f"y {tuple(y.shape)}")
    model.calibrate(x)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    history = History()
    model.train()
    for epoch in range(epochs):
        if before_epoch:
            before_epoch(epoch)
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        history.loss.append(total / len(x))
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {history.loss[-1]:.4f}")
        if on_epoch:
            on_epoch(epoch, history.loss[-1])
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: SpikingSequence, x, y) -> float:
    """Top-1 accuracy of the exact integer forward (ties: the first class, as numpy's argmax)."""
    model.eval()
    q = model.integers(torch.as_tensor(x, dtype=torch.float32))["readout"]
    return float(np.mean(np.argmax(q, axis=1) == np.asarray(y)))
