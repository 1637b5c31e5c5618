"""MPBN (Guo et al., ICCV 2023): a BatchNorm on the membrane potential of every SFA neuron.

Each MultiSpike(D) becomes ``MPBNSpike(C, D)``, whose BN normalizes the membrane per channel
before firing (see :class:`edgesnn.neurons.MPBNSpike`). It starts as the identity on the trained
network (statistics from calibration samples, gamma = std, beta = mean), so fine-tuning starts
from the trained function. The weights fine-tune on their per-channel uniform grid
(``--weight-bits``, default 8). At export the BN folds into the firing thresholds: into the
Conv2d / Linear before the neuron, or into a depthwise 1x1 convolution when the membrane is a
residual sum.
"""

from __future__ import annotations

import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MPBNSpike, MultiSpike
from edgesnn.quantize.common import Options, Plan, calibrate, quantize_weights
from edgesnn.quantize.spec import set_module

DEFAULT_WEIGHT_BITS = 8
DEFAULT_LR = 1e-3
CALIBRATION_SAMPLES = 512


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    stats = _membrane_stats(model, data.x_train[:CALIBRATION_SAMPLES])
    if not stats:
        raise EdgesnnError("mpbn: the model has no MultiSpike neurons to give a membrane BatchNorm")
    neurons = {}
    for name, (mean, var) in stats.items():
        old = model.get_submodule(name)
        n = MPBNSpike(mean.numel(), old.D, old.normalize)
        with torch.no_grad():  # BN(u) = u on the calibration statistics
            n.bn.running_mean.copy_(mean)
            n.bn.running_var.copy_(var)
            n.bn.weight.copy_(torch.sqrt(var + n.bn.eps))
            n.bn.bias.copy_(mean)
        set_module(model, name, n)
        neurons[name] = n.spec()
    weights = quantize_weights(model, "uniform", opts.weight_bits or DEFAULT_WEIGHT_BITS, opts.first_last_bits)
    spec = {"neurons": neurons, "weights": weights}
    return Plan(model, spec, config["kwargs"])


@torch.no_grad()
def _membrane_stats(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per MultiSpike, the mean and variance of its input per channel (axis 1) over the samples."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, []).append(args[0]))
             for name, m in model.named_modules() if isinstance(m, MultiSpike)]
    calibrate(model, x, hooks)
    stats = {}
    for name, inputs in seen.items():
        u = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t in inputs], dim=1).double()
        stats[name] = (u.mean(1).float(), u.var(1, unbiased=False).float())
    return stats
