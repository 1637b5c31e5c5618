"""QP-SNN's structured pruning: score channels by the rank of their spike maps (SVS), then
remove the lowest-scoring ones physically — the layers become narrower, nothing is masked.

Prunable channel groups are found on the fx graph, so any model built from edgesnn's layers
works: a spiking neuron whose input is Conv2d/Linear (+ BatchNorm) used by nothing else, and
whose spikes reach only Conv2d/Linear layers (through pooling, dropout or flatten). Channels
tied to a residual add, a product or a grouped conv are left alone.

Two controls choose the channels otherwise, to show what SVS itself contributes: ``random``
(a seeded random choice per group) and ``inverted-svs`` (the highest-scoring channels go first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgesnn.errors import EdgesnnError
from edgesnn.export import trace
from edgesnn.neurons import MultiSpike
from edgesnn.quantize.common import calibrate
from edgesnn.quantize.spec import get_module, narrowed, set_module

CRITERIA = ("svs", "random", "inverted-svs")
_PASS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class ChannelGroup:
    neuron: str  # the spiking layer whose output maps score the channels
    producers: list[str]  # layers whose output channels go (Conv2d/Linear, then its BatchNorm)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer, inputs per channel)
    channels: int = 0


def channel_groups(model: nn.Module, example: torch.Tensor) -> list[ChannelGroup]:
    gm = trace(model)
    ShapeProp(gm).propagate(example[:2])
    modules = dict(gm.named_modules())
    groups = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], MultiSpike):
            continue
        producers = _producers(node, modules)
        consumers = spike_consumers(node, modules, 1)
        if producers and consumers:
            groups.append(ChannelGroup(node.target, producers, consumers, node.meta["tensor_meta"].shape[1]))
    return groups


def _producers(node: fx.Node, modules) -> list[str] | None:
    chain, src = [], node.args[0]
    while isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1:
        m = modules[src.target]
        if isinstance(m, _BN) and not chain:
            chain.append(src.target)
            src = src.args[0]
            continue
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            return [src.target, *chain]
        return None
    return None


def spike_consumers(node: fx.Node, modules, block: int, grouped: bool = False) -> list[tuple[str, int]] | None:
    """The Conv2d / Linear layers a neuron's spikes reach (through pooling, dropout or flatten),
    each with the inputs per channel; None if they reach anything else (an add, a product, ...).
    ``grouped`` also accepts grouped convolutions (a per-channel factor folds into them; a pruned
    channel would not, since their input and output channels are tied)."""
    found = []
    for user in node.users:
        if user.op == "call_module":
            m = modules[user.target]
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and (grouped or m.groups == 1)):
                found.append((user.target, block))
                continue
            if isinstance(m, _PASS):
                more = spike_consumers(user, modules, block, grouped)
            elif isinstance(m, nn.Flatten) and m.start_dim == 1:
                more = spike_consumers(user, modules, block * _spatial(node), grouped)
            else:
                return None
        elif user.op == "call_function" and user.target is torch.flatten and user.args[1:2] == (1,):
            more = spike_consumers(user, modules, block * _spatial(node), grouped)
        else:
            return None
        if more is None:
            return None
        found += more
    return found


def _spatial(node: fx.Node) -> int:
    shape = node.meta["tensor_meta"].shape
    n = 1
    for d in shape[2:]:
        n *= int(d)
    return n


@torch.no_grad()
def svs_scores(model: nn.Module, groups: list[ChannelGroup], calibration: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per channel: the numerical rank of its spike map, averaged over the calibration samples.

    One timestep here, so the time average is the map itself; a dense layer's 1x1 "map" has
    rank 1 when the neuron fires and 0 otherwise.
    """
    outputs: dict[str, list[torch.Tensor]] = {g.neuron: [] for g in groups}
    hooks = [get_module(model, g.neuron).register_forward_hook(
        lambda m, i, o, name=g.neuron: outputs[name].append(o.detach())) for g in groups]
    calibrate(model, calibration, hooks, batch_size)
    scores = {}
    for name, outs in outputs.items():
        s = torch.cat(outs)
        maps = s if s.dim() == 4 else s[:, :, None, None]
        scores[name] = torch.linalg.matrix_rank(maps.double()).double().mean(0)
    return scores


def prune(model: nn.Module, ratio: float, calibration: torch.Tensor, criterion: str = "svs",
          seed: int = 0) -> dict[str, dict]:
    """Remove ``ratio`` of the channels of every prunable group: by ``criterion``, ``svs`` (lowest SVS
    scores first, QP-SNN's), ``inverted-svs`` (highest first) or ``random`` (seeded by ``seed``).

    Returns the ``widths`` spec entry of every narrowed layer (see quantize/spec.py).
    """
    if not 0 <= ratio < 1:
        raise EdgesnnError(f"prune ratio must be in [0, 1), got {ratio}")
    if criterion not in CRITERIA:
        raise EdgesnnError(f"unknown pruning criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    groups = channel_groups(model, calibration)
    if not groups and ratio > 0:
        raise EdgesnnError("the model has no prunable channels (spiking layers between two weight layers)")
    widths: dict[str, dict] = {}
    for g, order in zip(groups, removal_orders(model, groups, calibration, criterion, seed)):
        n_remove = min(int(round(ratio * g.channels)), g.channels - 1)
        if n_remove == 0:
            continue
        keep = torch.sort(order[n_remove:]).values
        for name in g.producers:
            _narrow_out(model, name, keep, widths)
        for name, block in g.consumers:
            _narrow_in(model, name, keep, block, widths)
    return widths


def removal_orders(model: nn.Module, groups: list[ChannelGroup], calibration: torch.Tensor, criterion: str = "svs",
                   seed: int = 0) -> list[torch.Tensor]:
    """Per group, its channel indices in the order ``criterion`` removes them (ties: lower index first)."""
    if criterion == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.randperm(g.channels, generator=gen) for g in groups]
    scores = svs_scores(model, groups, calibration)
    return [torch.argsort(scores[g.neuron], descending=criterion == "inverted-svs", stable=True) for g in groups]


def _narrow_out(model, name: str, keep: torch.Tensor, widths: dict) -> None:
    m = get_module(model, name)
    new = narrowed(m, _in_dim(widths, name, m), len(keep))
    state = {k: (v[keep] if v.dim() and v.shape[0] == _out_channels(m) else v) for k, v in m.state_dict().items()}
    new.load_state_dict(state)
    set_module(model, name, new.train(m.training))
    widths.setdefault(name, {})["out"] = len(keep)
    if not isinstance(m, _BN):
        widths[name].setdefault("in", _in_channels(m))


def _narrow_in(model, name: str, keep: torch.Tensor, block: int, widths: dict) -> None:
    m = get_module(model, name)
    cols = (keep[:, None] * block + torch.arange(block)).reshape(-1)
    new = narrowed(m, len(cols), _out_channels(m))
    state = dict(m.state_dict())
    state["weight"] = state["weight"][:, cols]
    new.load_state_dict(state)
    set_module(model, name, new.train(m.training))
    widths.setdefault(name, {})["in"] = len(cols)
    widths[name].setdefault("out", _out_channels(m))


def _in_dim(widths, name, m):
    return None if isinstance(m, _BN) else widths.get(name, {}).get("in", _in_channels(m))


def _in_channels(m: nn.Module) -> int:
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


def _out_channels(m: nn.Module) -> int:
    if isinstance(m, _BN):
        return m.num_features
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features

