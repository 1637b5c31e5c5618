"""Residual streams and outputs quantized in torch as the IR carries them (see neurons.StreamQuant).

The model is traced with torch.fx and a StreamQuant goes on the output of every tensor + tensor,
on each operand that is not already on an integer grid (a Conv2d / Linear / BatchNorm result,
say), and on the model's outputs, for all their readers: a neuron reading the stem that a
shortcut also adds reads the stem's stream integers, as the IR computes it once. Operands on a
grid (another stream, spikes, a stream times a constant) are left alone: the IR's ADD reads them exactly. The outputs are the IR's int8 / int16
logits: rounded in the IR only, two close classes tie there and not in torch (every mismatch of
an int8-stream resnet on mnist5k was such a tie). The result is a GraphModule whose submodules
keep their names, so the checkpoint's other weights load as before; the quantizers are
``streams.0``, ``streams.1``, ... in graph order, which the spec replays (``stream_bits``)
before the weights load. Their scales follow the fine-tuning (StreamQuant).
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx, nn

from edgesnn.errors import EdgesnnError
from edgesnn.ir.fixedpoint import reduced_multiplier_ratio
from edgesnn.export import is_add, trace
from edgesnn.export_tensors import VIEWS
from edgesnn.neurons import NEURONS, MultiSpike, StreamQuant

BITS = {"int8": 8, "int16": 16}
_PASSING = (nn.Identity, nn.Dropout, nn.Flatten, nn.MaxPool2d)  # a value on a grid stays on it


def insert(model: nn.Module, bits: int) -> nn.Module:
    """``model`` as a GraphModule with StreamQuant(bits) at its residual adds and outputs (scales not set yet)."""
    gm = trace(model)
    if hasattr(gm, "streams"):
        raise EdgesnnError("the model already has an attribute 'streams'; stream quantizers go there")
    quantizers = nn.ModuleList()
    gm.add_module("streams", quantizers)  # filled below; call_module checks its targets exist

    def quantizer(src: fx.Node, where: fx.Node, after: bool) -> fx.Node:
        quantizers.append(StreamQuant(bits))
        with (gm.graph.inserting_after(where) if after else gm.graph.inserting_before(where)):
            return gm.graph.call_module(f"streams.{len(quantizers) - 1}", (src,))

    for add in [n for n in gm.graph.nodes if is_add(n)]:
        for value in [*dict.fromkeys(_before_views(a) for a in add.args if not _on_grid(a, gm)), add]:
            q = quantizer(value, value, after=True)  # every reader sees the stream's integers, as in the IR
            value.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    for result in list(output.all_input_nodes):
        if not (result.op == "call_module" and isinstance(gm.get_submodule(result.target), StreamQuant)):
            output.replace_input_with(result, quantizer(result, output, after=False))
    for node in gm.graph.nodes:  # an int16 stream a quantized layer writes rounds as the 16x8 kernel does
        if bits == 16 and node.op == "call_module" and isinstance(gm.get_submodule(node.target), StreamQuant):
            gm.get_submodule(node.target).writer_ratio = _writer(gm, node.args[0])
    for node in gm.graph.nodes:  # a Q-SNN membrane reading an int16 stream rounds as the IR does
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), StreamQuant):
            for user in node.users:
                m = gm.get_submodule(user.target) if user.op == "call_module" else None
                if isinstance(m, MultiSpike) and m.membrane is not None and user.args[0] is node:
                    m.membrane.read_stream(gm.get_submodule(node.target))
    gm.graph.lint()
    gm.recompile()
    return gm.train(model.training)


class _WriterRatio:
    """M16 / M per output channel of the quantized layer (and BatchNorm) writing a stream, computed
    as the exporter computes it: weight scale x BN gain x the input spikes' 1/D, in float32."""

    def __init__(self, layer: nn.Module, bn: nn.Module | None, factor: float):
        self.layer, self.bn, self.factor = layer, bn, factor

    def __call__(self, stream_scale: torch.Tensor) -> torch.Tensor:
        from edgesnn.quantize.quantizers import weight_quant

        with torch.no_grad():
            scale = weight_quant(self.layer).integers(self.layer.weight)[1].double()
            if self.bn is not None:
                std = torch.sqrt(self.bn.running_var.double() + self.bn.eps)
                scale = scale * ((self.bn.weight.detach().double() if self.bn.affine else torch.ones_like(std)) / std)
            w = (scale * self.factor).abs().numpy().astype(np.float32)
            real = w.astype(np.float64) / np.float64(np.float32(float(stream_scale)))
            return torch.as_tensor(reduced_multiplier_ratio(real))


def _writer(gm: fx.GraphModule, node: fx.Node) -> _WriterRatio | None:
    """The ratio of the layer writing the stream ``node`` feeds, when it is a quantized conv /
    linear (+ BatchNorm) reading spikes: the IR runs it in a 16x8 kernel on the spikes scaled by
    a power of two, so its multiplier's mantissa is the weight scale's over the stream's. (The
    stem's also involves the input's scale, which only the exporter knows.)"""
    module = lambda n: gm.get_submodule(n.target) if n.op == "call_module" else None  # noqa: E731
    bn = module(node)
    if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and len(node.users) == 1:
        node = node.args[0]
    else:
        bn = None
    layer = module(node)
    if layer is None or not hasattr(layer, "weight_quant") or len(node.users) != 1:
        return None
    src = _before_views(node.args[0])
    spikes = module(src)
    if isinstance(spikes, MultiSpike) and spikes.membrane is None and (spikes.D & (spikes.D - 1)) == 0:
        return _WriterRatio(layer, bn, 1.0 / spikes.D if spikes.normalize else 1.0)
    return None


def _is_view(node: fx.Node) -> bool:
    return node.op in ("call_method", "call_function") and node.target in VIEWS


def _before_views(node: fx.Node) -> fx.Node:
    """The value a chain of reshapes / transposes rearranges: the stream quantizer goes there, on
    the layer's result, which the exporter then materializes on the trained grid directly."""
    while _is_view(node) and isinstance(node.args[0], fx.Node) and len(node.args[0].users) == 1:
        node = node.args[0]
    return node


def _on_grid(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether the IR holds ``node`` exactly as an integer tensor times a power-of-two-friendly factor."""
    if _is_view(node):
        return _on_grid(node.args[0], gm)
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, (StreamQuant, *NEURONS.values())):
            return True
        return isinstance(m, _PASSING) and _on_grid(node.args[0], gm)
    if node.op in ("call_function", "call_method") and node.target in (operator.mul, torch.mul, "mul"):
        a, b = node.args
        value, const = (a, b) if isinstance(a, fx.Node) else (b, a)
        return isinstance(const, (int, float)) and not isinstance(const, bool) and _on_grid(value, gm)
    return False
