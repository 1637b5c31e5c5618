"""The model zoo: every architecture is built from edgesnn's neurons and exports through SFA."""

from __future__ import annotations

import inspect

from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.limits import _short, check_memory
from edgesnn.models import custom
from edgesnn.models.cnn import SpikingCNN
from edgesnn.models.mlp import SpikingMLP
from edgesnn.models.nirnet import NIRNet
from edgesnn.models.resnet import SpikingResNet
from edgesnn.models.spikeformer import SpikeFormer, e_spikeformer_5m_config
from edgesnn.temporal.conv import conv_model
from edgesnn.temporal.model import dense_model

MODELS: dict[str, type[nn.Module]] = {"mlp": SpikingMLP, "cnn": SpikingCNN, "resnet": SpikingResNet, "spikeformer": SpikeFormer,
                                   "nir": NIRNet,  # nir: built by `edgesnn import` from a NIR graph
                                   "temporal-dense": dense_model,  # over sequences: edgesnn/temporal (BPTT, state)
                                   "temporal-conv": conv_model}
TEMPORAL = frozenset({"temporal-dense", "temporal-conv"})  # models over sequences (N, T, ...): trained and exported by edgesnn.temporal.pipeline

__all__ = ["MODELS", "TEMPORAL", "build", "default_kwargs", "resolved_kwargs", "e_spikeformer_5m_config"]


def default_kwargs(name: str, in_shape, num_classes: int, D: int, trust_code: custom.Trust = False) -> dict:
    """Constructor arguments for a data set's input shape: the one place models and data meet.
    ``trust_code``: what a user factory needs to be imported (see custom.py)."""
    if custom.is_factory(name):
        return custom.data_kwargs(name, in_shape, num_classes, D, trust_code)
    _check_name(name)
    if name in TEMPORAL:  # in_shape: one frame of the sequences
        return {"frame_shape": [int(d) for d in in_shape], "classes": num_classes}
    if name == "spikeformer":
        if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
            raise EdgesnnError(f"spikeformer needs square (C, H, W) images, got input shape {tuple(in_shape)}")
        return {"in_channels": int(in_shape[0]), "image_size": int(in_shape[1]), "num_classes": num_classes, "D": D}
    if name in ("cnn", "resnet") and len(in_shape) != 3:
        raise EdgesnnError(f"{name} needs (C, H, W) images, got input shape {tuple(in_shape)}")
    return {"in_shape": [int(d) for d in in_shape], "num_classes": num_classes, "D": D}


def resolved_kwargs(name: str, kwargs: dict) -> dict:
    """Every constructor argument, defaults included, so a checkpoint survives a change of defaults."""
    if custom.is_factory(name):
        return dict(kwargs)  # a user's factory: what the recipe or data set passes, as given
    _check_name(name)
    params = inspect.signature(MODELS[name]).parameters
    full = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    full.update(kwargs)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def build(name: str, kwargs: dict, neuron_map: dict[str, str] | None = None, D: int = 4,
          trust_code: custom.Trust = False, where: str | None = None) -> nn.Module:
    """A zoo model by name, or a user's ``module:factory`` with its ``neuron_map`` (see custom.py),
    imported only if ``trust_code`` allows it. ``where`` prefixes errors (default: --model NAME)."""
    if custom.is_factory(name):
        return custom.build(name, kwargs, neuron_map, D, trust_code, where)
    if neuron_map:
        raise EdgesnnError(f"--neuron-map applies to a user model (--model module:factory), not to {name!r}")
    _check_name(name)
    if not isinstance(kwargs, dict):
        raise EdgesnnError(f"model {name!r}: its options (kwargs) must be a mapping, got {type(kwargs).__name__}")
    cls = MODELS[name]
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(kwargs) - accepted
    if unknown:
        raise EdgesnnError(f"model {name!r} has no option(s) {sorted(unknown)}; it takes {sorted(accepted)}")
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:  # RuntimeError: torch (a negative size)
        raise EdgesnnError(f"cannot build model {name!r} with {_short(kwargs, 200)}: "
                           f"{_short((str(e).splitlines() or [''])[0], 200)}") from None
    empty = next((n for n, p in model.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # a width or channel count of 0: torch builds it, and fails only while running
        raise EdgesnnError(f"cannot build model {name!r} with {_short(kwargs, 200)}: {empty} would have no "
                           "weights (a dimension of 0)")
    return model


def check_training_size(name: str, kwargs: dict, neuron_map: dict[str, str] | None = None, D: int = 4,
                        trust_code: custom.Trust = False) -> None:
    """Refuse, before any real allocation, a model whose training state would exceed the memory
    budget: built on the meta device (shapes only), its parameters and buffers counted four times
    (weights, gradients and AdamW's two moments)."""
    import torch

    try:
        with torch.device("meta"):
            skeleton = build(name, kwargs, neuron_map, D, trust_code)
    except EdgesnnError:
        raise
    except Exception:  # noqa: BLE001 - a user factory that cannot run on the meta device: built for real later
        return
    nbytes = sum(t.numel() * t.element_size() for t in [*skeleton.parameters(), *skeleton.buffers()])
    check_memory(4 * nbytes, f"training model {_short(name)} (weights, gradients and optimizer state)")


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise EdgesnnError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or module:factory for your own")
