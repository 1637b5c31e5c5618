"""One-timestep SFA training: integer activations, T = 1, AdamW with a cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from edgesnn import distributed
from edgesnn.data import Dataset
from edgesnn.errors import EdgesnnError
from edgesnn.progress import Listener, reporting, step


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    return float((predict(model, x, batch_size) == y).float().mean())


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(b).argmax(1) for b in torch.split(x, batch_size)])


Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, x, y) -> loss


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def train(model: torch.nn.Module, data: Dataset, epochs: int, lr: float = 3e-3, weight_decay: float = 1e-4,
          batch_size: int = 64, seed: int = 0, on_epoch: Callable[[int, float], None] | None = None,
          loss_fn: Loss = cross_entropy, before_epoch: Callable[[int], None] | None = None,
          progress: bool | Listener | None = None) -> dict:
    """Train in place; ``on_epoch(epoch, mean_loss)`` is called after each epoch. Returns the metrics.

    ``progress``: True draws a bar on stderr (batches done, epoch and loss), a callable receives
    the :class:`edgesnn.progress.Event` of each batch; None (default) reports to the listener the
    caller set (the CLI's), which is nobody unless one was set; False reports to nobody.
    Compression methods plug in through ``loss_fn`` (regularizers, distillation) and
    ``before_epoch`` (schedules such as Q-SNN's surrogate temperature).

    Under torchrun (several ranks) it trains with DistributedDataParallel, each rank on its slice of
    every batch (edgesnn.distributed); in one process nothing changes.
    """
    if not lr > 0:  # also NaN; AdamW would raise a ValueError (a traceback) for a negative rate
        raise EdgesnnError(f"--lr must be positive, got {lr}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(data.x_train) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    with reporting(progress), step("train", total=epochs * steps_per_epoch) as bar:
        loss_value = _epochs(distributed.wrap(model), data, epochs, batch_size, loss_fn, opt, sched, gen, on_epoch,
                             before_epoch, bar)
    return {
        "train_loss": loss_value,
        "train_accuracy": evaluate(model, data.x_train, data.y_train),
        "test_accuracy": evaluate(model, data.x_test, data.y_test),
        "test_samples": len(data.x_test),
        "epochs": epochs,
    }


def _epochs(model, data, epochs, batch_size, loss_fn, opt, sched, gen, on_epoch, before_epoch, bar) -> float:
    """The training loop of :func:`train`; the last epoch's mean loss."""
    loss_value = float("nan")
    for epoch in range(epochs):
        if before_epoch:
            before_epoch(epoch)
        model.train()
        order = torch.randperm(len(data.x_train), generator=gen)
        total, count = 0.0, 0
        for idx in torch.split(order, batch_size):
            part = distributed.shard(idx)  # the whole batch in one process
            if len(idx) // distributed.world_size() < 2:  # BatchNorm needs two samples (on every rank)
                bar.advance()
                continue
            x, y = data.x_train[part], data.y_train[part]
            loss = loss_fn(model(x), x, y)
            opt.zero_grad()
            (loss * distributed.loss_scale(len(part), len(idx)) if distributed.active() else loss).backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()) * len(part), count + len(part)
            bar.advance(info=f"epoch {epoch + 1}/{epochs}  loss {total / count:.3f}")
        total, count = distributed.total([total, count])  # every rank's share (itself in one process)
        loss_value = total / max(count, 1)
        if not math.isfinite(loss_value):  # NaN / Inf in the data, or a diverged run: weights no export can use
            raise EdgesnnError(f"training diverged: the loss is {loss_value} in epoch {epoch + 1} (NaN or Inf in the "
                               f"data, or too high a learning rate); nothing was written")
        if on_epoch:
            on_epoch(epoch, loss_value)
    return loss_value
