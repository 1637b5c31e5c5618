"""How many threads torch computes with: one unless the user says otherwise.

The thread count changes the model: torch splits reductions (convolution and matrix-product
gradients, BatchNorm statistics) across threads, and float sums in another order round
differently, so the same seed trains a different model with another count (the spiking CNN,
seed 0, digits: 0.9911 with one thread, 0.9956 with two). With one thread by default the same seed
gives the same model on any machine, whatever OMP_NUM_THREADS or MKL_NUM_THREADS say; one thread
is also the fastest on a small, shared machine (two threads on a loaded 2-core machine trained 3x
slower). ``--threads N`` / ``EDGESNN_THREADS=N`` (the CLI) or a recipe's ``threads`` choose another
count: reproducible with that same count only.

Setting the count never imports torch: before torch is imported the count is kept and applied when
it is (a one-shot import hook), so the commands a board runs without torch (edgesnn.device) work.
"""

from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager

ENV = "EDGESNN_THREADS"
DEFAULT = 1
MAX = 1024  # more threads than any machine has cores: a typo, not a setting
HELP = ("threads torch computes with, for every command (edgesnn --threads N COMMAND ...); the default, 1, trains the "
        "same model from the same seed on any machine, another count may train a different one")


def use(n: int) -> None:
    """torch computes with ``n`` threads from now on: at once if it is imported, else once it is."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        return
    hook = next((f for f in sys.meta_path if isinstance(f, _WhenImported)), None)
    if hook is None:
        sys.meta_path.insert(0, _WhenImported(n))
    else:
        hook.n = n


class _WhenImported:
    """Finds nothing itself: on the first ``import torch`` it lets the other finders find it, and
    sets the thread count right after torch's own module has run."""

    def __init__(self, n: int):
        self.n = n

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding this hook
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # torch's own loader, then the thread count
            run(module)
            module.set_num_threads(self.n)

        spec.loader.exec_module = exec_module
        return spec


def current() -> int:
    import torch

    return torch.get_num_threads()


@contextmanager
def pinned(n: int | None):
    """torch computes with ``n`` threads inside the block (None: unchanged), then as before."""
    if n is None:
        yield
        return
    before = current()
    use(n)
    try:
        yield
    finally:
        use(before)
