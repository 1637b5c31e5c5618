"""IBRA-LIF (Ye et al., arXiv 2506.05679): every SFA neuron becomes an integer binary neuron with
range alignment, deployed as bit-plane spike trains.

Each MultiSpike(D) becomes ``IBRALIF(bits=K, window=D)``: the membrane window [0, D] the trained
neuron used is aligned with the K-bit integer range [0, 2^K - 1] (N = (2^K - 1) / D counts per
unit), so the fine-tuned network keeps its scale and gains 2^K - 1 levels (see
:class:`edgesnn.neurons.IBRALIF`). The weights fine-tune on their per-channel uniform grid
(``--weight-bits``, default 8), so the IR holds the trained integers and the exporter can place
every threshold where torch has it. The IR's spike counts (spike_D = 2^K - 1) decode from K
bit-plane steps: ``export --spike-code bit-plane`` on the targets that run spike trains.
"""

from __future__ import annotations

from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import IBRALIF, MultiSpike
from edgesnn.quantize.common import Options, Plan, quantize_weights
from edgesnn.quantize.spec import set_module

DEFAULT_SPIKE_BITS = 4  # 15 levels in 4 virtual steps (a rate code would need 15)
DEFAULT_WEIGHT_BITS = 8
DEFAULT_LR = 1e-3


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    bits = opts.spike_bits or DEFAULT_SPIKE_BITS
    neurons = {}
    for name, m in list(model.named_modules()):
        if isinstance(m, MultiSpike):
            n = IBRALIF(bits, window=m.D, normalize=m.normalize)
            set_module(model, name, n)
            neurons[name] = n.spec()
    if not neurons:
        raise EdgesnnError("ibra: the model has no MultiSpike neurons to replace")
    weights = quantize_weights(model, "uniform", opts.weight_bits or DEFAULT_WEIGHT_BITS, opts.first_last_bits)
    spec = {"neurons": neurons, "weights": weights}
    return Plan(model, spec, config["kwargs"])
