"""The model `edgesnn import` builds from a NIR graph: a plain chain of layers, described in JSON.

A NIR graph is data, not code, so the checkpoint rebuilds it from ``layers`` (one dict per layer,
see :data:`LAYERS`) like any zoo model: safetensors weights + config.json, never pickle. Neurons
are SFA ``MultiSpike(D, normalize=False)``: their output is the integer spike count, which is what
the next NIR synapse receives over a window of spikes (see backends/nir for the mapping).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike

LAYERS = {
    "conv2d": "in, out, kernel [kh, kw], stride [sh, sw], padding [ph, pw], groups, bias (bool)",
    "linear": "in, out, bias (bool)",
    "avg_pool2d": "kernel [kh, kw], stride [sh, sw]",
    "sum_pool2d": "kernel [kh, kw], stride [sh, sw]",
    "flatten": "(no options)",
    "spike": "D (the neuron's largest spike count)",
}
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class SumPool2d(nn.Module):
    """Window sum (NIR's SumPool2d): an average pool times the window size, which the SFA exporter
    turns into the IR's exact sum_pool2d (the two factors cancel)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.pool = nn.AvgPool2d(tuple(kernel), tuple(stride))
        self.size = int(kernel[0]) * int(kernel[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * float(self.size)


class NIRNet(nn.Sequential):
    """``layers``: [{"name": ..., "kind": ..., options}, ...] in order (names: letters, digits, _).

    ``num_classes`` and ``D`` are what ``train`` passes every model; the graph fixes both, so they
    are unused (and ``train --model nir`` fails with a message saying where the model comes from)."""

    def __init__(self, in_shape=(1, 8, 8), layers=None, num_classes: int | None = None, D: int | None = None):
        if not layers:
            raise EdgesnnError("model 'nir' is built from a NIR graph by `edgesnn import FILE.nir`; it has no "
                               "default layers to train")
        modules = OrderedDict()
        for i, spec in enumerate(layers):
            name = spec.get("name", f"layer{i}") if isinstance(spec, dict) else None
            if not isinstance(name, str) or not _NAME.match(name) or name in modules:
                raise EdgesnnError(f"nir model layer {i}: bad or repeated name {name!r}")
            modules[name] = _layer(spec, name)
        super().__init__(modules)
        self.in_shape = tuple(int(d) for d in in_shape)


def _layer(spec: dict, name: str) -> nn.Module:
    kind = spec.get("kind")
    try:
        if kind == "conv2d":
            return nn.Conv2d(int(spec["in"]), int(spec["out"]), tuple(spec["kernel"]), tuple(spec["stride"]),
                             tuple(spec["padding"]), groups=int(spec["groups"]), bias=bool(spec["bias"]))
        if kind == "linear":
            return nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec["bias"]))
        if kind == "avg_pool2d":
            return nn.AvgPool2d(tuple(spec["kernel"]), tuple(spec["stride"]))
        if kind == "sum_pool2d":
            return SumPool2d(spec["kernel"], spec["stride"])
        if kind == "flatten":
            return nn.Flatten()
        if kind == "spike":
            return MultiSpike(int(spec["D"]), normalize=False)
    except (KeyError, TypeError, ValueError) as e:
        raise EdgesnnError(f"nir model layer {name!r} ({kind}): bad options ({type(e).__name__}: {e})") from None
    raise EdgesnnError(f"nir model layer {name!r}: unknown kind {kind!r}; kinds: {', '.join(LAYERS)}")
