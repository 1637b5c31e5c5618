"""Q-SNN (Wei et al., ACM MM 2024): low-bit weights and membrane potentials, WS-DR regularizer."""

from __future__ import annotations

import torch
from torch import nn

from edgesnn.neurons import MultiSpike
from edgesnn.quantize.common import Options, Plan, quantize_weights
from edgesnn.quantize.quantizers import QSNNWeight
from edgesnn.quantize.spec import set_membrane_bits
from edgesnn.train import Loss

DEFAULT_WEIGHT_BITS, DEFAULT_MEMBRANE_BITS = 1, 8  # the released setting
WSDR_LAMBDA = 5e-3
DEFAULT_LR = 1e-3


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    bits = opts.weight_bits or DEFAULT_WEIGHT_BITS
    membrane_bits = opts.membrane_bits or DEFAULT_MEMBRANE_BITS
    set_membrane_bits(model, membrane_bits)
    weights = quantize_weights(model, "qsnn", bits, opts.first_last_bits, opts.layer_bits)
    quantizers = [m for m in model.modules() if isinstance(m, QSNNWeight)]

    def anneal(epoch: int) -> None:  # t = 10^(-1 + 2 epoch / epochs): the tanh surrogate sharpens
        for q in quantizers:
            q.t = 10 ** (-1 + 2 * epoch / max(opts.epochs, 1))

    return Plan(model, {"membrane_bits": membrane_bits, "weights": weights}, config["kwargs"],
                loss_fn=wsdr_loss(model), before_epoch=anneal)


def wsdr_loss(model: nn.Module, lam: float = WSDR_LAMBDA) -> Loss:
    """CE + lam * mean_l (r_l - 0.5)^2 over the spiking layers but the first and the last, with
    r_l the layer's mean firing rate (for integer spikes: the mean of s / D)."""
    neurons = [m for m in model.modules() if isinstance(m, MultiSpike)][1:-1]
    rates: dict[int, torch.Tensor] = {}

    def hook(m, inputs, out, i):
        rates[i] = (out if m.normalize else out / m.D).mean()

    for i, m in enumerate(neurons):
        m.register_forward_hook(lambda m, inp, out, i=i: hook(m, inp, out, i) if m.training else None)

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, y)
        if not rates:
            return ce
        reg = torch.stack([(r - 0.5) ** 2 for r in rates.values()]).mean()
        rates.clear()
        return ce + lam * reg

    return loss
