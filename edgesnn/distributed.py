"""Data-parallel fine-tuning under torchrun: DistributedDataParallel, gloo on CPU, nccl on GPUs.

A process torchrun started (RANK and WORLD_SIZE in its environment) joins the process group when it
first trains (:func:`start`). Every rank draws the same shuffled batches from the same seed and
trains on its slice of each one (:func:`shard`); its loss is scaled so that DDP's average of the
ranks' gradients is the gradient of the whole batch's mean loss, as in one process. What still
differs from one process is what cannot be the same on CPU: BatchNorm normalises each rank's slice
with that slice's statistics (SyncBatchNorm runs on GPUs only; there it is used), and float sums
add in another order. Only rank 0 writes the checkpoint (:func:`one_writer`, :func:`is_writer`).

``edgesnn quantize --nproc-per-node N`` starts N ranks here through torchrun (:func:`launch`); a
user's own torchrun (``torchrun --nnodes 2 --nproc-per-node 4 -m edgesnn quantize ...``) works the same.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
from datetime import timedelta

from edgesnn.errors import EdgesnnError

JOIN_SECONDS = 300  # how long a rank waits for the others, joining and at each collective


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """Whether this process is one of several torchrun started."""
    return world_size() > 1


def is_writer() -> bool:
    """Rank 0, or a process on its own: the one that writes outputs."""
    return rank() == 0


def start() -> None:
    """Join torchrun's process group (once per process): nccl where there is a GPU, else gloo."""
    import torch
    import torch.distributed as dist

    if not active() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=JOIN_SECONDS))
    except (RuntimeError, ValueError) as e:
        raise EdgesnnError(f"rank {rank()} of {world_size()}: cannot join the process group "
                           f"({(str(e).strip().splitlines() or [''])[0][:200]})") from None
    atexit.register(_stop)


def _stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model):
    """``model`` in DistributedDataParallel (on a GPU, its BatchNorms synchronised); itself in one process."""
    if not active():
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    start()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
        return DistributedDataParallel(model, device_ids=[device.index])  # buffers follow rank 0
    return DistributedDataParallel(model)  # buffers (BatchNorm statistics) follow rank 0


def shard(idx):
    """This rank's slice of a batch's sample indices (every rank holds the same batch)."""
    return idx[rank()::world_size()] if active() else idx


def loss_scale(shard_size: int, batch_size: int) -> float:
    """The factor on a rank's mean loss that makes DDP's mean of gradients the whole batch's."""
    return world_size() * shard_size / batch_size if active() else 1.0


def total(values: list[float]) -> list[float]:
    """``values`` summed over the ranks (themselves in one process)."""
    if not active():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def one_writer(fn):
    """:func:`edgesnn.files.one_writer` on the writing rank; the other ranks compute without a lock and write nothing."""
    from edgesnn.files import one_writer as locked

    writer = locked(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return writer(*args, **kwargs) if is_writer() else fn(*args, **kwargs)

    return call


def launch(nproc: int, argv: list[str]) -> int:
    """``edgesnn ARGV`` in ``nproc`` processes on this machine under torchrun; their exit status."""
    if nproc < 1:
        raise EdgesnnError(f"--nproc-per-node must be at least 1, got {nproc}")
    if active():
        raise EdgesnnError("--nproc-per-node: this process already runs under torchrun; give the process count "
                           "to torchrun only")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "edgesnn", *argv]
    from edgesnn import proc

    with proc.popen(cmd) as p:  # its own group, ended whole however this ends; output goes to ours
        return p.wait()


def relaunch(nproc: int, argv: list[str], option: str, check=None) -> int:
    """This command line (``argv``, which gave ``option N``) again in ``nproc`` ranks, without the option.
    ``check``: what must hold first (its error is one line here, not one per rank under torchrun's traceback)."""
    rest = without_option(argv, option)
    if rest == list(argv):  # called from Python, not from this command line: there is nothing to relaunch
        raise EdgesnnError(f"{option}: relaunches the edgesnn command line; from Python, run it under torchrun")
    if check is not None:
        check()
    return launch(nproc, rest)


def without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (the launcher's own option, not the ranks')."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out
