"""Pooling between a convolution and its neuron, rewritten so the neuron reads the accumulator.

snnTorch's and SpikingJelly's tutorials write Conv -> (BN ->) Pool -> neuron. Exported in that
order, the pooled membrane is materialized as a tensor of its own before the neuron: a second
rounding (5-11 of 450 digits predictions off torch's for an average pool). Both pools have an
exact reordering:

- max pooling commutes with any non-decreasing function applied per element, and a MultiSpike
  (with or without a Q-SNN membrane grid) is one: Pool(fire(u)) == fire(Pool(u)). The neuron
  moves before the pool, which then pools int8 spike counts.
- average pooling after a stride-1 convolution is one convolution: the kernel
  (1 / p^2) sum_{i,j < p} W shifted by (i, j), with the pool's stride; a BatchNorm in between is
  per channel and affine, so it commutes with the average. The combined kernel is quantized
  once, like any float kernel, and costs fewer multiply-accumulates than the conv it replaces
  ((k + p - 1)^2 / p^2 per output against k^2). Measured on digits (25 epochs, 3 seeds), the
  float model's 8-bit IR differs on 3-4 of 450 predictions this way, against 5-11 through an
  int8 membrane and 6-8 through an int16 one; the neuron-first order of the same net, 0-1.

Only float convolutions are combined: a kernel on a trained integer grid (``weight_quant``) would
need wider integers than its bits. The rewrite works on the exporter's GraphModule: the user's
model is left as it is (the combined conv is a new module of that GraphModule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgesnn.export import torch_layer
from edgesnn.neurons import MultiSpike


# snnTorch's tutorials pool with F.max_pool2d: as modules, they take the same paths as nn.MaxPool2d.
_FUNCTIONAL = {
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    torch.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                  "divisor_override")),
}


def rewrite(gm: fx.GraphModule) -> fx.GraphModule:
    changed = _pool_modules(gm)
    for node in list(gm.graph.nodes):
        m = _module(gm, node)
        if isinstance(m, nn.MaxPool2d):
            changed |= _neuron_first(gm, node)
        elif m is not None and torch_layer(m) is nn.AvgPool2d:
            changed |= _fold_average(gm, node, m)
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm


def _pool_modules(gm: fx.GraphModule) -> bool:
    """Functional 2-D pools with constant arguments become pooling modules (``<name>_module``)."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _FUNCTIONAL or not node.args:
            continue
        cls, names = _FUNCTIONAL[node.target]
        params = {**dict(zip(names, node.args[1:])), **node.kwargs}
        if len(node.args) - 1 > len(names) or any(isinstance(v, fx.Node) for v in params.values()):
            continue
        if params.pop("return_indices", False):
            continue
        if params.get("stride") in (None, []):
            params.pop("stride", None)
        name = f"{node.name}_module"
        gm.add_submodule(name, cls(**params))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        changed = True
    return changed


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _neuron_first(gm: fx.GraphModule, pool: fx.Node) -> bool:
    """x -> MaxPool -> MultiSpike  becomes  x -> MultiSpike -> MaxPool (x a conv or BN result)."""
    neuron = _only_user(pool)
    src = pool.args[0]
    if neuron is None or not isinstance(_module(gm, neuron), MultiSpike) or neuron.args[0] is not pool:
        return False
    if not isinstance(src, fx.Node) or not isinstance(_module(gm, src), (nn.Conv2d, nn.BatchNorm2d)):
        return False
    neuron.replace_input_with(pool, src)
    pool.replace_input_with(src, neuron)
    neuron.replace_all_uses_with(pool, delete_user_cb=lambda user: user is not pool)
    pool.prepend(neuron)  # a node must come before its users
    return True


def _fold_average(gm: fx.GraphModule, pool: fx.Node, p: nn.AvgPool2d) -> bool:
    """conv -> [BN ->] AvgPool  becomes  conv' -> [BN] (conv' the combined kernel)."""
    if p.ceil_mode or _pair(p.padding) != (0, 0) or p.divisor_override is not None:
        return False
    kp, sp = _pair(p.kernel_size), _pair(p.stride or p.kernel_size)
    bn = pool.args[0]
    conv_node = bn.args[0] if isinstance(_module(gm, bn), nn.BatchNorm2d) and _only_user(bn) is pool else bn
    conv = _module(gm, conv_node)
    if conv is None or torch_layer(conv) is not nn.Conv2d or _only_user(conv_node) is None:
        return False
    if (hasattr(conv, "weight_quant") or _pair(conv.stride) != (1, 1) or _pair(conv.dilation) != (1, 1)
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
        return False
    k, w = _pair(conv.kernel_size), conv.weight.detach()
    combined = torch.zeros(*w.shape[:2], k[0] + kp[0] - 1, k[1] + kp[1] - 1, dtype=w.dtype)
    for i in range(kp[0]):
        for j in range(kp[1]):
            combined[:, :, i:i + k[0], j:j + k[1]] += w
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(combined.shape[2:]), stride=sp, padding=conv.padding,
                       groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        folded.weight.copy_(combined / (kp[0] * kp[1]))
        if conv.bias is not None:
            folded.bias.copy_(conv.bias.detach())
    name = f"{conv_node.target.replace('.', '_')}_avg_pooled"
    gm.add_submodule(name, folded)
    with gm.graph.inserting_before(conv_node):
        new = gm.graph.call_module(name, conv_node.args, conv_node.kwargs)
    new.meta = dict(conv_node.meta)
    conv_node.replace_all_uses_with(new)
    gm.graph.erase_node(conv_node)
    pool.replace_all_uses_with(pool.args[0])
    gm.graph.erase_node(pool)
    return True


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
