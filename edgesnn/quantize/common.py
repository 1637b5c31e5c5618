"""What every compression method shares: options, the plan it returns, and the weight plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from edgesnn.errors import EdgesnnError
from edgesnn.export import trace
from edgesnn.quantize.spec import WEIGHT_LAYERS, get_module, quant_layer, set_module
from edgesnn.train import Loss, cross_entropy


@dataclass
class Options:
    """Command-line options of ``edgesnn quantize``; None means the method's default."""

    weight_bits: int | None = None
    membrane_bits: int | None = None
    prune: float = 0.0
    prune_criterion: str = "svs"  # qpsnn: which channels go (pruning.CRITERIA)
    spike_bits: int | None = None  # ibra: K, spike counts 0..2^K - 1 as K bit-plane steps
    stream_dtype: str | None = None  # residual streams trained as int8 / int16 (None: int16 where a neuron reads one)
    epochs: int = 20
    first_last_bits: int = 8
    layer_bits: dict[str, int] = field(default_factory=dict)  # inner weight layer -> its bits (qsnn, qpsnn)
    lr: float | None = None  # None: the method's DEFAULT_LR
    seed: int = 0


@dataclass
class Plan:
    """A method's prepared model and how to fine-tune it."""

    model: nn.Module
    spec: dict
    kwargs: dict
    loss_fn: Loss = cross_entropy
    before_epoch: Callable[[int], None] | None = None
    notes: list[str] = field(default_factory=list)


def edge_layers(model: nn.Module) -> tuple[set[str], set[str]]:
    """(first, last) weight layers: those no weight layer feeds, and those that feed none.

    Found on the traced graph, so a model with two classifier heads has two last layers.
    """
    gm = trace(model)
    modules = dict(gm.named_modules())
    is_weight = {n: n.op == "call_module" and isinstance(modules[n.target], WEIGHT_LAYERS) for n in gm.graph.nodes}
    first, last = set(), set()
    for n in gm.graph.nodes:
        if is_weight[n]:
            if not _reaches(n, is_weight, up=True):
                first.add(n.target)
            if not _reaches(n, is_weight, up=False):
                last.add(n.target)
    return first, last


def _reaches(node: fx.Node, is_weight: dict, up: bool) -> bool:
    seen, todo = set(), list(node.all_input_nodes if up else node.users)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if is_weight[n]:
            return True
        todo += n.all_input_nodes if up else list(n.users)
    return False


def inner_layers(model: nn.Module) -> list[str]:
    """The weight layers that are neither first nor last, in module order: those ``layer_bits`` may set."""
    first, last = edge_layers(model)
    return [n for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS) and n not in first | last]


def quantize_weights(model: nn.Module, quantizer: str, bits: int, first_last_bits: int,
                     layer_bits: dict[str, int] | None = None) -> dict:
    """Wrap every Conv2d / Linear in a Brevitas layer: first and last at ``first_last_bits``
    (uniform), the rest with ``quantizer`` at ``bits``, or at ``layer_bits[name]`` for a layer it
    names (uniform at 8 bits, where the odd-level grids would need 9-bit integers). Returns the
    ``weights`` spec."""
    first, last = edge_layers(model)
    inner = [n for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS) and n not in first | last]
    layer_bits = dict(layer_bits or {})
    for name, b in layer_bits.items():
        if name not in inner:
            raise EdgesnnError(f"layer_bits: {name!r} is not an inner weight layer of this model (the first and last "
                               f"take first_last_bits); its inner ones: {', '.join(inner) or 'none'}")
        if not 1 <= b <= 8:
            raise EdgesnnError(f"layer_bits: {name}: bits must be between 1 and 8, got {b}")
    weights = {}
    for name, m in list(model.named_modules()):
        if not isinstance(m, WEIGHT_LAYERS):
            continue
        if name in first or name in last:
            q, b = "uniform", first_last_bits
        else:
            own = layer_bits.get(name, bits)
            q, b = (quantizer, own) if own < 8 or quantizer == "uniform" else ("uniform", 8)
        weights[name] = {"quantizer": q, "bits": int(b)}
    for name, w in weights.items():
        set_module(model, name, quant_layer(get_module(model, name), w["quantizer"], w["bits"]))
    return weights


def kd_loss(teacher: nn.Module, alpha: float = 0.5, temperature: float = 1.0) -> Loss:
    """(1 - alpha) CE + alpha KL(teacher || student) at ``temperature``: distillation from the float model."""
    teacher.eval()

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        kd = nn.functional.kl_div(torch.log_softmax(logits / temperature, 1), torch.log_softmax(t / temperature, 1),
                                  reduction="batchmean", log_target=True) * temperature**2
        return (1 - alpha) * nn.functional.cross_entropy(logits, y) + alpha * kd

    return loss


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, hooks: list, batch_size: int = 256) -> None:
    """Run ``model`` in eval mode over ``x`` in batches so ``hooks`` record what they watch; then
    remove the hooks and restore the model's mode, whatever happens."""
    training = model.training
    try:
        model.eval()
        for batch in torch.split(x, batch_size):
            model(batch)
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
