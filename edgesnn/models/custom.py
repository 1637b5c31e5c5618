"""Bring-your-own model: a user's torch module named as ``module:factory``, with third-party
neuron classes mapped onto edgesnn's neurons (``--neuron-map mypkg.MultiSpike=sfa:D=4``).

The checkpoint records the factory, its arguments and the neuron map (never the module itself:
no pickle), so loading it imports the user's module again and calls the factory. That runs the
user's code, as any Python import does; edgesnn refuses factories from the standard library and
anything that does not return a torch module, so a tampered config.json cannot name
``os:system`` or ``subprocess:run``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike

TARGETS = {"sfa": MultiSpike}  # edgesnn neurons a third-party class can map onto
FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# What the data set knows: passed to a factory that takes these parameters, unless the recipe sets them.
DATA_ARGS = ("in_shape", "num_classes", "D")


def is_factory(name: str) -> bool:
    return ":" in name


def load_factory(spec: str):
    """The callable ``module:attr`` names (the current folder is importable, as for ``python -m``)."""
    if not FACTORY_SPEC.match(spec):
        raise EdgesnnError(f"--model {spec!r}: a user model is named as module:factory, e.g. mymodels:build_net")
    module_name, attr = spec.split(":")
    if module_name.split(".")[0] in sys.stdlib_module_names or module_name.split(".")[0] == "builtins":
        raise EdgesnnError(f"--model {spec!r}: {module_name} is a standard-library module, not a model")
    module = _import(module_name, f"--model {spec!r}")
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise EdgesnnError(f"--model {spec!r}: module {module_name} has no attribute {attr!r}")
    if not callable(obj):
        raise EdgesnnError(f"--model {spec!r}: {attr} is not callable")
    return obj


def data_kwargs(spec: str, in_shape, num_classes: int, D: int) -> dict:
    """The data set's facts the factory asks for by parameter name."""
    try:
        params = inspect.signature(load_factory(spec)).parameters
    except (TypeError, ValueError):
        return {}
    facts = {"in_shape": [int(d) for d in in_shape], "num_classes": int(num_classes), "D": int(D)}
    return {k: v for k, v in facts.items() if k in params}


def build(spec: str, kwargs: dict, neuron_map: dict[str, str] | None = None, D: int = 4) -> nn.Module:
    """Call the factory, map neurons, and refuse (naming every layer) what the exporter cannot read."""
    from edgesnn.export import undeployable_layers

    factory = load_factory(spec)
    try:
        model = factory(**kwargs)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: report its failure as one line
        raise EdgesnnError(f"--model {spec}: the factory failed with {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise EdgesnnError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    for cls_name, target in (neuron_map or {}).items():
        cls = resolve_class(cls_name)
        make = neuron_factory(cls_name, target, D)
        if not replace(model, cls, make):
            raise EdgesnnError(f"--neuron-map {cls_name}={target}: the model has no {cls_name} layer")
    bad = undeployable_layers(model)
    if bad:
        raise EdgesnnError(f"--model {spec}: cannot map {len(bad)} layer(s) onto edgesnn: {', '.join(bad)}; map "
                           f"neuron classes with --neuron-map CLASS={next(iter(TARGETS))}:D=N (see README, Your own model)")
    return model


def parse_neuron_map(items: list[str] | None) -> dict[str, str]:
    """``["mypkg.Cls=sfa:D=4", ...]`` -> {"mypkg.Cls": "sfa:D=4"}, each target checked."""
    out = {}
    for item in items or []:
        cls_name, sep, target = item.partition("=")
        if not sep or not cls_name or not target:
            raise EdgesnnError(f"--neuron-map {item!r}: expected CLASS=TARGET, e.g. mypkg.MultiSpike=sfa:D=4")
        neuron_factory(cls_name, target, 4)  # checks the target's syntax now
        out[cls_name.strip()] = target.strip()
    return out


def neuron_factory(cls_name: str, target: str, D: int):
    """A zero-argument constructor of the edgesnn neuron ``target`` (``sfa[:D=4[,normalize=false]]``)."""
    where = f"--neuron-map {cls_name}={target}"
    kind, _, options = target.partition(":")
    if kind not in TARGETS:
        raise EdgesnnError(f"{where}: unknown edgesnn neuron {kind!r}; available: {', '.join(TARGETS)}")
    kwargs = {"D": D, "normalize": True}
    for opt in filter(None, options.split(",")):
        key, sep, value = opt.partition("=")
        if not sep or key not in kwargs:
            raise EdgesnnError(f"{where}: unknown option {opt!r}; {kind} takes D=INT and normalize=true|false")
        try:
            kwargs[key] = int(value) if key == "D" else {"true": True, "false": False}[value.lower()]
        except (ValueError, KeyError):
            raise EdgesnnError(f"{where}: bad value {value!r} for {key}") from None
    neuron = TARGETS[kind]
    neuron(**kwargs)  # a bad D fails here, with the neuron's own message
    return lambda: neuron(**kwargs)


def resolve_class(name: str) -> type:
    """``pkg.mod.Class`` (or a class re-exported as ``pkg.Class``): the longest importable module prefix."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            return obj
        break
    raise EdgesnnError(f"--neuron-map: cannot find the class {name!r} (give its import path, e.g. mypkg.MultiSpike)")


def replace(model: nn.Module, cls: type, make) -> int:
    """Replace every submodule that is a ``cls`` with ``make()``; returns how many."""
    targets = [name for name, m in model.named_modules() if name and isinstance(m, cls)]
    targets = [t for t in targets if not any(t.startswith(o + ".") for o in targets)]  # outermost only
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = make()
    return len(targets)


def _import(module_name: str, where: str):
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise EdgesnnError(f"{where}: cannot import {module_name} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise EdgesnnError(f"{where}: importing {module_name} failed with {type(e).__name__}: {e}") from None
