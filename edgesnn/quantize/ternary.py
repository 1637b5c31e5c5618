"""Ternary spikes (Guo et al., AAAI 2024): {-1, 0, 1} spikes with a learnable per-channel amplitude.

Every SFA neuron becomes a one-timestep :class:`~edgesnn.neurons.TernaryStep`, and the network
is fine-tuned with float weights so the amplitudes a_c learn. For the last quarter of the epochs
each amplitude is folded into the next layer's weights (W[:, c] *= a_c, a_c = 1 from then on)
and every layer trains on its 8-bit per-channel grid, so the deployed weights are the ones the
fine-tuning saw. (The exporter folds amplitudes the same way for float layers.) Folding needs
each neuron's spikes to reach only Conv2d (grouped ones too: each column reads one channel) /
Linear layers, through average pooling or flatten. A neuron whose spikes reach anything else (a
product of spikes in attention, a residual add, max pooling) keeps a_c = 1: a product of two
spikes would carry a_c * a'_c per channel pair, which no weight or threshold of the integer graph
holds, so there the spikes are plain {-1, 0, 1}, in training as at export.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from edgesnn.errors import EdgesnnError
from edgesnn.export import column_factors, trace
from edgesnn.neurons import MultiSpike, TernaryStep
from edgesnn.quantize.common import Options, Plan
from edgesnn.quantize.pruning import spike_consumers
from edgesnn.quantize.spec import WEIGHT_LAYERS, get_module, quant_layer, set_module

WEIGHT_BITS = 8
DEFAULT_LR = 3e-3  # the amplitudes and the new {-1, 0, 1} code: 1e-3 left the model short after 20 epochs


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    if opts.weight_bits not in (None, WEIGHT_BITS):
        raise EdgesnnError("ternary spikes keep 8-bit weights: the amplitudes fold into them (drop --weight-bits)")
    neurons, consumers = _ternary_neurons(model, data.x_train[:2])
    for name, n in neurons.items():
        set_module(model, name, TernaryStep(n["channels"], n["threshold"], n.get("learn_amplitude", True)))
    weights = {name: {"quantizer": "uniform", "bits": WEIGHT_BITS}
               for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}
    fold_at = opts.epochs - max(1, opts.epochs // 4)

    def before_epoch(epoch: int) -> None:
        if epoch == fold_at:
            _fold_amplitudes(model, consumers)
            for name, w in weights.items():
                set_module(model, name, quant_layer(get_module(model, name), w["quantizer"], w["bits"]))

    return Plan(model, {"neurons": neurons, "weights": weights}, config["kwargs"], before_epoch=before_epoch)


def _ternary_neurons(model: nn.Module, example: torch.Tensor):
    gm = trace(model)
    ShapeProp(gm).propagate(example)
    modules = dict(gm.named_modules())
    neurons, consumers = {}, {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], MultiSpike):
            continue
        found = spike_consumers(node, modules, 1, grouped=True)
        if any(u.op == "call_module" and isinstance(modules[u.target], nn.MaxPool2d) for u in node.users):
            found = None  # a negative amplitude would not commute with the max
        neurons[node.target] = {"kind": "ternary_step", "channels": int(node.meta["tensor_meta"].shape[1]),
                                "threshold": 0.5}
        if found:
            consumers[node.target] = found
        else:  # reaches a product, an add or a max pool: unit amplitude (module docstring)
            neurons[node.target]["learn_amplitude"] = False
    if not neurons:
        raise EdgesnnError("ternary spikes: the model has no MultiSpike neurons to replace")
    return neurons, consumers


@torch.no_grad()
def _fold_amplitudes(model: nn.Module, consumers: dict[str, list[tuple[str, int]]]) -> None:
    """W[:, c] *= a_c in every layer the neuron feeds (a block of columns per channel after a
    flatten); then a_c = 1 and frozen."""
    for name, layers in consumers.items():
        a = get_module(model, name).amplitude
        for layer, block in layers:
            m = get_module(model, layer)
            m.weight.mul_(column_factors(a.repeat_interleave(block), m.weight.shape, getattr(m, "groups", 1)))
        a.fill_(1.0)
        a.requires_grad_(False)
