"""BESTformer (IJCAI 2025): 1-bit weights, binary attention maps, the reversible block, and
distillation from the full-precision model during fine-tuning.

On the spike-driven transformer the model is rebuilt with ``reversible`` and
``binary_attention`` (the float weights carry over; only the second classifier head is new).
On other models only the Conv2d / Linear weights are binarized, and the result says so.
The first layer and the classifier(s) stay at 8 bits, as BESTformer keeps them full precision.
"""

from __future__ import annotations

import copy

from torch import nn

from edgesnn import models
from edgesnn.errors import EdgesnnError
from edgesnn.quantize.common import Options, Plan, kd_loss, quantize_weights

DISTILL_ALPHA = 0.5
DEFAULT_LR = 3e-3  # 1-bit latent weights need the larger steps: at 1e-3 fine-tuning collapsed in our runs


def prepare(model: nn.Module, config: dict, data, opts: Options) -> Plan:
    if opts.weight_bits not in (None, 1):
        raise EdgesnnError(f"BESTformer weights are 1-bit, got --weight-bits {opts.weight_bits}")
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    kwargs, notes = dict(config["kwargs"]), []
    if config["model"] == "spikeformer":
        kwargs.update(reversible=True, binary_attention=True)
        student = models.build("spikeformer", kwargs)
        missing, unexpected = student.load_state_dict(model.state_dict(), strict=False)
        if unexpected:
            raise EdgesnnError(f"float spikeformer weights do not fit the reversible model: {unexpected[:3]}")
        model = student
        notes.append(f"reversible blocks and binary attention; new parameters: {len(missing)} (second head)")
    else:
        notes.append(f"BESTformer's binary attention and reversible block apply to the spike-driven transformer; "
                     f"on {config['model']} only the Conv2d/Linear weights are binarized")
    weights = quantize_weights(model, "sign", 1, opts.first_last_bits)
    spec = {"weights": weights}
    return Plan(model, spec, models.resolved_kwargs(config["model"], kwargs),
                loss_fn=kd_loss(teacher, DISTILL_ALPHA), notes=notes)
