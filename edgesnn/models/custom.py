"""Bring-your-own model: a user's torch module named as ``module:factory``, with third-party
neuron classes mapped onto edgesnn's neurons (``--neuron-map mypkg.MultiSpike=sfa:D=4``).

The checkpoint records the factory, its arguments and the neuron map (never the module itself:
no pickle), so loading it imports the user's module again and calls the factory. That runs code,
so a name that comes from a file (a checkpoint's config.json, a recipe) is imported only when the
user asked for it: ``trust_code`` is True (``--trust-code``), or a collection of the names the
user gave on the command line (``--model``, ``--neuron-map``), or False (nothing: the default).
Whatever the trust, a factory must be defined in the module it is named by: ``torch:os.system``
reaches ``os`` through an attribute of torch and is refused, and so is the standard library.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import types
from collections.abc import Collection

from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike

TARGETS = {"sfa": MultiSpike}  # edgesnn neurons a third-party class can map onto
_DOTTED = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
FACTORY_SPEC = re.compile(rf"{_DOTTED}:{_DOTTED}")  # use fullmatch: `$` would accept a trailing newline
CLASS_PATH = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)+")  # module.Class
# What the data set knows: passed to a factory that takes these parameters, unless the recipe sets them.
DATA_ARGS = ("in_shape", "num_classes", "D")
OPT_IN = "pass --trust-code if you trust it (Python: trust_code=True)"

Trust = bool | Collection[str]


def is_factory(name: str) -> bool:
    return ":" in name


# ---------------------------------------------------------------- trust

def trusts(trust_code: Trust | None, name: str) -> bool:
    """Whether ``trust_code`` lets ``name`` (``module:factory`` or ``module.Class``) be imported.

    A collection holds the names the user typed; trusting a factory also trusts the classes of its
    own module (importing that module is what the factory already needs)."""
    if trust_code is True:
        return True
    if not trust_code:
        return False
    names = {trust_code} if isinstance(trust_code, str) else set(trust_code)
    if name in names:
        return True
    module = name.rpartition(".")[0] if not is_factory(name) else None
    return module is not None and any(is_factory(t) and t.partition(":")[0] == module for t in names)


def describe(name: str) -> str:
    """``module:factory`` / ``module.Class`` in words: what importing it would run."""
    if is_factory(name):
        module, _, attr = name.partition(":")
        return f"the factory {attr} of module {module} ({name})"
    module, _, cls = name.rpartition(".")
    return f"the neuron class {cls} of module {module} ({name})"


def require_trust(name: str, trust_code: Trust | None, where: str, model_option: bool = False) -> None:
    """Refuse, naming the module and the factory, code that a file names and the user did not ask for.
    The standard library is refused first, whatever the trust."""
    _refuse_stdlib(name.partition(":")[0] if is_factory(name) else name.split(".")[0], where)
    if trusts(trust_code, name):
        return
    alt = f", or name it with --model {name}" if model_option and is_factory(name) else ""
    raise EdgesnnError(f"{where}: names user code, {describe(name)}, which edgesnn would import and run; "
                       f"{OPT_IN}{alt}")


def named_code(model: str, neuron_map: dict | None) -> list[str]:
    """Every name a model spec would import: the factory, then each neuron class."""
    return ([model] if is_factory(model) else []) + list(neuron_map or {})


# ---------------------------------------------------------------- resolving names

def load_factory(spec: str, trust_code: Trust = False, where: str | None = None):
    """The callable ``module:attr`` names (the current folder is importable, as for ``python -m``)."""
    where = where or f"--model {spec!r}"
    if not isinstance(spec, str) or not FACTORY_SPEC.fullmatch(spec):
        raise EdgesnnError(f"{where}: a user model is named as module:factory, e.g. mymodels:build_net")
    module_name, attr = spec.split(":")
    require_trust(spec, trust_code, where)  # the standard library first, then the user's opt-in
    module = _import(module_name, where)
    obj = _walk(module, module_name, attr, where, classes_only=False)
    if not callable(obj):
        raise EdgesnnError(f"{where}: {attr} is not callable")
    return obj


def resolve_class(name: str, trust_code: Trust = False, where: str | None = None) -> type:
    """``pkg.mod.Class`` (or a class re-exported as ``pkg.Class``): the longest importable module prefix."""
    where = where or f"--neuron-map {name}"
    if not isinstance(name, str) or not CLASS_PATH.fullmatch(name):
        raise EdgesnnError(f"{where}: cannot find the class {name!r} (give its import path, e.g. mypkg.MultiSpike)")
    require_trust(name, trust_code, where)
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = _import(module_name, where, quiet=True)
        except ImportError:
            continue
        try:
            return _walk(module, module_name, ".".join(parts[i:]), where, classes_only=True)
        except EdgesnnError as e:
            if "has no attribute" not in str(e):
                raise
        break
    raise EdgesnnError(f"{where}: cannot find the class {name!r} (give its import path, e.g. mypkg.MultiSpike)")


def _refuse_stdlib(module_name: str, where: str) -> None:
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "__main__"):
        raise EdgesnnError(f"{where}: {module_name} is a standard-library module, not a model")


def _walk(module: types.ModuleType, module_name: str, path: str, where: str, classes_only: bool):
    """``module``'s attribute ``path`` (``a`` or ``Class.attr``), reached only through what the module
    itself defines: no module on the way (``torch:os.system``), no dunder, only classes in between,
    and a class or function at the end whose ``__module__`` is the named module or a submodule."""
    obj, parts = module, path.split(".")
    for i, part in enumerate(parts):
        if part.startswith("__"):
            raise EdgesnnError(f"{where}: {part} is a private attribute, not a factory")
        if isinstance(obj, types.ModuleType):
            found = vars(obj).get(part, _MISSING)  # no module __getattr__ hooks
        else:
            try:
                found = getattr(obj, part, _MISSING)
            except Exception:  # noqa: BLE001 - a property of the user's class failed
                found = _MISSING
        if found is _MISSING:
            raise EdgesnnError(f"{where}: module {module_name} has no attribute {path!r}")
        obj = found
        reached = ".".join(parts[: i + 1])
        if isinstance(obj, types.ModuleType):
            raise EdgesnnError(f"{where}: {module_name}.{reached} is a module, not something {module_name} defines; "
                               f"name the module itself (module:factory)")
        last = i == len(parts) - 1
        kind_ok = isinstance(obj, type) or (last and not classes_only and _is_function(obj))
        if not kind_ok:
            want = "a class" if classes_only or not last else "a class or function"
            raise EdgesnnError(f"{where}: {module_name}.{reached} is a {type(obj).__name__}, not {want} defined "
                               f"in {module_name}")
        owner = getattr(obj, "__module__", None)
        if not isinstance(owner, str) or not (owner == module_name or owner.startswith(module_name + ".")):
            raise EdgesnnError(f"{where}: {module_name}.{reached} is defined in {owner}, not in {module_name}; "
                               f"name it where it is defined")
    return obj


def _is_function(obj) -> bool:
    """A Python function, or a classmethod bound to its class (``Net.create``)."""
    return inspect.isfunction(obj) or (inspect.ismethod(obj) and isinstance(obj.__self__, type))


_MISSING = object()


def _import(module_name: str, where: str, quiet: bool = False):
    """Import the user's module; ``quiet``: a missing module is an ImportError for the caller."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        if quiet:
            raise
        raise EdgesnnError(f"{where}: cannot import {module_name} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise EdgesnnError(f"{where}: importing {module_name} failed with {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------- building

def data_kwargs(spec: str, in_shape, num_classes: int, D: int, trust_code: Trust = False) -> dict:
    """The data set's facts the factory asks for by parameter name."""
    factory = load_factory(spec, trust_code)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    facts = {"in_shape": [int(d) for d in in_shape], "num_classes": int(num_classes), "D": int(D)}
    return {k: v for k, v in facts.items() if k in params}


def build(spec: str, kwargs: dict, neuron_map: dict[str, str] | None = None, D: int = 4,
          trust_code: Trust = False, where: str | None = None) -> nn.Module:
    """Call the factory, map neurons, and refuse (naming every layer) what the exporter cannot read.

    Every name is checked against ``trust_code`` before anything is imported."""
    from edgesnn.export import undeployable_layers

    where = where or f"--model {spec}"
    for name in named_code(spec, neuron_map):
        require_trust(name, trust_code, where)
    factory = load_factory(spec, trust_code, where)
    try:
        model = factory(**kwargs)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: report its failure as one line
        raise EdgesnnError(f"{where}: the factory failed with {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise EdgesnnError(f"{where}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    for cls_name, target in (neuron_map or {}).items():
        cls = resolve_class(cls_name, trust_code, f"--neuron-map {cls_name}")
        make = neuron_factory(cls_name, target, D)
        if not replace(model, cls, make):
            raise EdgesnnError(f"--neuron-map {cls_name}={target}: the model has no {cls_name} layer")
    bad = undeployable_layers(model)
    if bad:
        raise EdgesnnError(f"{where}: cannot map {len(bad)} layer(s) onto edgesnn: {', '.join(bad)}; map "
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


def replace(model: nn.Module, cls: type, make) -> int:
    """Replace every submodule that is a ``cls`` with ``make()``; returns how many."""
    targets = [name for name, m in model.named_modules() if name and isinstance(m, cls)]
    targets = [t for t in targets if not any(t.startswith(o + ".") for o in targets)]  # outermost only
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = make()
    return len(targets)
