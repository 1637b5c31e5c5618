"""Ternary spikes (Guo et al., AAAI 2024): {-1, 0, 1} spikes with a learnable per-channel amplitude.

Every SFA neuron becomes a one-timestep :class:`~edgesnn.neurons.TernaryStep`. Its amplitude
folds into the next layer's weights at export, which is why the weights stay float during
fine-tuning and are quantized by the exporter afterwards (8-bit per channel), and why each
neuron's spikes must reach only Conv2d / Linear layers (through average pooling or flatten).
"""

from __future__ import annotations

from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from edgesnn.errors import EdgesnnError
from edgesnn.export import trace
from edgesnn.neurons import MultiSpike, TernaryStep
from edgesnn.quantize.common import Options, Plan
from edgesnn.quantize.pruning import _consumers
from edgesnn.quantize.spec import set_module



def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    if opts.weight_bits not in (None, 8):
        raise EdgesnnError("ternary spikes keep 8-bit weights: the amplitudes fold into them at export "
                           "(drop --weight-bits)")
    if opts.membrane_bits is not None:
        raise EdgesnnError("--membrane-bits applies to the qsnn method")
    gm = trace(model)
    ShapeProp(gm).propagate(data.x_train[:2])
    modules = dict(gm.named_modules())
    neurons = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], MultiSpike):
            consumers = _consumers(node, modules, 1)
            reached = [type(modules[u.target]).__name__ for u in node.users if u.op == "call_module"]
            if not consumers or any(isinstance(modules[u.target], nn.MaxPool2d) for u in node.users if u.op == "call_module"):
                raise EdgesnnError(f"ternary spikes: neuron '{node.target}' feeds {reached or 'a tensor operation'}; "
                                   f"its amplitude can fold only into Conv2d / Linear layers")
            channels = int(node.meta["tensor_meta"].shape[1])
            neurons[node.target] = {"kind": "ternary_step", "channels": channels, "threshold": 0.5}
    if not neurons:
        raise EdgesnnError("ternary spikes: the model has no MultiSpike neurons to replace")
    for name, n in neurons.items():
        set_module(model, name, TernaryStep(n["channels"], n["threshold"]))
    return Plan(model, {"neurons": neurons}, config["kwargs"])
