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

import torch
from torch import fx, nn

from edgesnn.errors import EdgesnnError
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
    for node in gm.graph.nodes:  # a Q-SNN membrane reading an int16 stream rounds as the IR does
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), StreamQuant):
            for user in node.users:
                m = gm.get_submodule(user.target) if user.op == "call_module" else None
                if isinstance(m, MultiSpike) and m.membrane is not None and user.args[0] is node:
                    m.membrane.read_stream(gm.get_submodule(node.target))
    gm.graph.lint()
    gm.recompile()
    return gm.train(model.training)


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
