"""QP-SNN (Wei et al., ICLR 2025): ReScaW weight quantization and SVS structured pruning."""

from __future__ import annotations

from torch import nn

from edgesnn.quantize.common import Options, Plan, quantize_weights
from edgesnn.quantize.pruning import prune

DEFAULT_WEIGHT_BITS = 4
CALIBRATION_SAMPLES = 512
DEFAULT_LR = 1e-3


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    """Prune first (SVS on the trained model's spike maps, or a control criterion: see pruning.py), then
    quantize and fine-tune both together."""
    widths = (prune(model, opts.prune, data.x_train[:CALIBRATION_SAMPLES], opts.prune_criterion, opts.seed)
              if opts.prune else {})
    weights = quantize_weights(model, "rescaw", opts.weight_bits or DEFAULT_WEIGHT_BITS, opts.first_last_bits,
                               opts.layer_bits)
    return Plan(model, {"widths": widths, "weights": weights}, config["kwargs"])
