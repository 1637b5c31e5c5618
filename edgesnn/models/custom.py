"""Bring-your-own model: a user's torch module named as ``module:factory``, with third-party
neurons mapped onto edgesnn's, by class (``--neuron-map mypkg.MultiSpike=sfa:D=4``) or by layer
(``--neuron-map head.lif=readout``); a library neuron keeps its own settings
(edgesnn.models.library_neurons).

The checkpoint records the factory, its arguments, the neuron map and what it made of each layer
(never the module itself: no pickle), so loading it imports the user's module again, calls the
factory and replaces the recorded layers with exactly the saved neurons. That runs code,
so a name that comes from a file (a checkpoint's config.json, a recipe) is imported only when the
user asked for it: ``trust_code`` is True (``--trust-code``), or a collection of the names the
user gave on the command line (``--model``, ``--neuron-map``), or False (nothing: the default).
Whatever the trust, a factory must be defined in the module it is named by: ``torch:os.system``
reaches ``os`` through an attribute of torch and is refused, and so is the standard library.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import types
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.limits import _short
from edgesnn.models import library_neurons
from edgesnn.neurons import MultiSpike

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
    """Every name a model spec may import: the factory, then each map key that can be a class's
    import path (a key such as ``8`` or ``blocks.0.sn`` only names a layer). A key such as ``head.lif``
    is a layer if the built model has one, and imports nothing then."""
    return ([model] if is_factory(model) else []) + [k for k in neuron_map or {} if CLASS_PATH.fullmatch(k)]


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
          trust_code: Trust = False, where: str | None = None, before_map=None) -> nn.Module:
    """Call the factory, map neurons, and refuse (naming every layer) what the exporter cannot read.

    The factory is checked against ``trust_code`` before it is imported, and each neuron class
    before it is (a key that names a submodule imports nothing). ``before_map(model)`` runs on the
    factory's own model (edgesnn.weights loads trained weights there, neuron state included)."""
    from edgesnn.export import undeployable_layers

    where = where or f"--model {spec}"
    model = make_model(spec, kwargs, trust_code, where)
    if before_map is not None:
        before_map(model)
    map_neurons(model, neuron_map, D, trust_code)
    bad = undeployable_layers(model)
    if bad:
        raise EdgesnnError(f"{where}: cannot map {len(bad)} layer(s) onto edgesnn: {', '.join(bad)}; map neurons "
                           f"with --neuron-map CLASS=sfa or --neuron-map LAYER=sfa (see docs/your-own-model.md)")
    return model


def make_model(spec: str, kwargs: dict, trust_code: Trust = False, where: str | None = None) -> nn.Module:
    """The factory's model as it builds it, no neuron mapped yet. Trained weights that hold a library
    neuron's state (a learned threshold) load into this one; :func:`map_neurons` then reads them."""
    where = where or f"--model {spec}"
    factory = load_factory(spec, trust_code, where)
    try:
        model = factory(**kwargs)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: report its failure as one line
        if torch.get_default_device().type == "meta":
            raise  # sizing on the meta device (a library reading a tensor's value): the caller builds for real
        raise EdgesnnError(f"{where}: the factory failed with {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise EdgesnnError(f"{where}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ---------------------------------------------------------------- the neuron map

class Readout(nn.Module):
    """An output neuron turned into the plain logits: its membrane after one timestep from rest,
    ``scale`` times the input (the change from rest: a constant resting potential, the same for
    every output, is left out; it moves no argmax).

    The exporter reads the identity child as it is and folds the constant factor into the layer
    before, so the logits deploy as that layer's output."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = _positive(scale, "a readout's scale")
        self.membrane = nn.Identity()

    def forward(self, x):
        u = self.membrane(x)
        return u * self.scale if self.scale != 1.0 else u

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"


TARGETS = {"sfa": MultiSpike, "readout": Readout}  # the edgesnn neurons a map entry can name
_TAKES = {"sfa": "D=INT (or max_value=INT), normalize=true|false, threshold=X (or gain=X)", "readout": "scale=X"}
_ALIASES = {"max_value": "D", "threshold": "gain"}  # option -> the setting it gives
# A submodule's path (torch's names, dot-separated: "head.lif", "blocks.0.sn", "8"); a class path is one too.
MAP_KEY = re.compile(r"[^\s.=]+(?:\.[^\s.=]+)*")
LAYERS = "edgesnn_neuron_layers"  # attribute of a mapped model: its layer records (see map_neurons)


@dataclass(frozen=True)
class Target:
    """A parsed target: its kind and the settings the map gives explicitly (None: from the instance)."""

    kind: str
    D: int | None = None
    normalize: bool | None = None
    gain: float | None = None
    scale: float | None = None


def parse_neuron_map(items: list[str] | None) -> dict[str, str]:
    """``["mypkg.Cls=sfa:D=4", "head.lif=readout", ...]`` -> {key: target}, each target checked."""
    out = {}
    for item in items or []:
        key, sep, target = item.partition("=")
        key, target = key.strip(), target.strip()
        if not sep or not key or not target or not MAP_KEY.fullmatch(key):
            raise EdgesnnError(f"--neuron-map {item!r}: expected CLASS=TARGET or LAYER=TARGET, e.g. "
                               f"mypkg.MultiSpike=sfa:D=4 or head.lif=readout")
        parse_target(target, f"--neuron-map {key}={target}")
        out[key] = target
    return out


def parse_target(target: str, where: str) -> Target:
    """``sfa[:D=N][,normalize=B][,threshold=X]`` or ``readout[:scale=X]``, checked."""
    kind, _, options = target.partition(":")
    kind = kind.strip()
    if kind not in TARGETS:
        raise EdgesnnError(f"{where}: unknown edgesnn neuron {kind!r}; available: {', '.join(TARGETS)}")
    given: dict = {}
    for opt in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = (part.strip() for part in opt.partition("="))
        setting = _ALIASES.get(key, key)
        if not sep or setting not in {"sfa": ("D", "normalize", "gain"), "readout": ("scale",)}[kind]:
            raise EdgesnnError(f"{where}: unknown option {opt!r}; {kind} takes {_TAKES[kind]}")
        if setting in given:
            raise EdgesnnError(f"{where}: {setting} is given twice")
        try:
            if setting == "D":
                given["D"] = int(value)
            elif setting == "normalize":
                given["normalize"] = {"true": True, "false": False}[value.lower()]
            else:
                number = _positive(float(value), key)
                given[setting] = 1.0 / (2.0 * number) if key == "threshold" else number
        except (ValueError, KeyError):
            raise EdgesnnError(f"{where}: bad value {value!r} for {key}") from None
        except EdgesnnError as e:
            raise EdgesnnError(f"{where}: {e}") from None
    try:
        if kind == "sfa":
            MultiSpike(given.get("D", 4), gain=given.get("gain", 1.0))  # a bad D or gain: the neuron's message
        else:
            Readout(given.get("scale", 1.0))
    except EdgesnnError as e:
        raise EdgesnnError(f"{where}: {e}") from None
    return Target(kind, **given)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise EdgesnnError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def neuron_for(target: Target, instance: library_neurons.Instance | None, D: int) -> tuple[nn.Module, str]:
    """The edgesnn neuron for one instance and the target that rebuilds it exactly: what the map
    gives, else what the instance says, else the defaults (``D``, normalized, gain 1)."""
    if target.kind == "readout":
        scale = target.scale if target.scale is not None else (instance.scale if instance else 1.0)
        return Readout(scale), f"readout:scale={scale!r}"
    D = target.D or (instance.D if instance and instance.D else D)
    normalize = next(v for v in (target.normalize, instance and instance.normalize, True) if v is not None)
    gain = target.gain if target.gain is not None else \
        1.0 / (2.0 * instance.threshold) if instance and instance.threshold else 1.0
    return MultiSpike(D, normalize, gain), f"sfa:D={D},normalize={str(normalize).lower()},gain={gain!r}"


def map_neurons(model: nn.Module, neuron_map: dict[str, str] | None, D: int = 4,
                trust_code: Trust = False) -> list[dict]:
    """Replace, in place, the neurons ``neuron_map`` names; returns the layer records, also kept on the
    model (attribute ``edgesnn_neuron_layers``) for the checkpoint to save.

    A key that names a submodule of ``model`` (``model.get_submodule``: ``head.lif``, ``8``) maps
    that instance and imports nothing. Any other key is a class's import path, checked against
    ``trust_code`` before it is imported, and maps every outermost instance of the class or a
    subclass. A path entry overrides a class entry for its instance; an instance that two class
    entries match takes the entry of its most derived class. Each mapped neuron keeps what its
    instance says (edgesnn.models.library_neurons) unless the target gives it."""
    if not neuron_map:
        return []
    from edgesnn.export import DEPLOYABLE

    targets = {key: parse_target(t, f"--neuron-map {key}={t}") for key, t in neuron_map.items()}
    modules = list(model.named_modules(remove_duplicate=False))
    if isinstance(neuron_map, LayerMap):  # a checkpoint's record: layers only, nothing to import
        for key in neuron_map:
            if _submodule(model, key) is None:
                raise EdgesnnError(f"layer {_short(key)} of the checkpoint's neuron_layers: the factory's model has no "
                                   f"such layer")
    classes = {key: _class_key(model, key, neuron_map[key], trust_code, modules)
               for key in neuron_map if _submodule(model, key) is None}
    chosen: dict[str, str] = {}  # layer -> key
    for key, cls in classes.items():
        found = [name for name, m in modules if name and isinstance(m, cls)]
        found = [n for n in found if not any(n.startswith(o + ".") for o in found)]  # outermost only
        if not found:
            raise EdgesnnError(f"--neuron-map {key}={neuron_map[key]}: the model has no {key} layer")
        for name in found:
            mro = type(model.get_submodule(name)).__mro__
            if name not in chosen or mro.index(cls) < mro.index(classes[chosen[name]]):
                chosen[name] = key
    chosen.update({key: key for key in neuron_map if key not in classes})  # a path overrides a class
    for inner in chosen:
        outer = next((o for o in chosen if inner.startswith(o + ".")), None)
        if outer is not None:
            raise EdgesnnError(f"--neuron-map {chosen[inner]}={neuron_map[chosen[inner]]}: layer {inner} is inside "
                               f"{outer}, which {chosen[outer]}={neuron_map[chosen[outer]]} replaces whole")
    records = []
    for name in (n for n, _ in modules if n in chosen):  # the model's order
        key, old = chosen[name], model.get_submodule(name)
        cls = f"{type(old).__module__}.{type(old).__qualname__}"
        where = f"--neuron-map {key}={neuron_map[key]}: layer {name} ({cls})"
        if isinstance(old, DEPLOYABLE):
            raise EdgesnnError(f"{where} is a layer the exporter reads as it is; --neuron-map replaces neurons")
        instance = library_neurons.read(old, where)
        _check_unread(targets[key], instance, old, where)
        neuron, exact = neuron_for(targets[key], instance, D)
        parent, _, child = name.rpartition(".")
        (model.get_submodule(parent) if parent else model)._modules[child] = neuron
        records.append({"layer": name, "class": cls, "key": key, "target": exact,
                        "instance": instance.describe() if instance else None})
    model.__dict__[LAYERS] = model.__dict__.get(LAYERS, []) + records
    return records


def _check_unread(target: Target, instance, old: nn.Module, where: str) -> None:
    """A neuron of snnTorch or SpikingJelly that no reader knows: its settings are given, never guessed."""
    lib = library_neurons.library(old)
    if instance is not None or lib is None:
        return
    if target.kind == "readout" and target.scale is None:
        raise EdgesnnError(f"{where}: edgesnn does not read this {lib} neuron's membrane; give it: readout:scale=X "
                           f"(the membrane per unit of input after one step from rest)")
    if target.kind == "sfa" and (target.D is None or target.gain is None):
        raise EdgesnnError(f"{where}: edgesnn does not read this {lib} neuron's settings; give them: "
                           f"sfa:D=N,threshold=X (its largest count, and the input at which it first fires)")


def _submodule(model: nn.Module, key: str) -> nn.Module | None:
    try:
        return model.get_submodule(key)
    except AttributeError:
        return None


def _class_key(model: nn.Module, key: str, target: str, trust_code: Trust, modules) -> type:
    """The class a key that names no submodule imports; a key that cannot be a class, or names
    none, is an unknown layer: one error with the model's layers of the closest names."""
    where = f"--neuron-map {key}={target}"
    names = [name for name, _ in modules if name]
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.6)
    if not CLASS_PATH.fullmatch(key):
        from edgesnn.export import undeployable_layers

        hint = (f"close names: {', '.join(close)}" if close else
                f"layers to map: {', '.join(undeployable_layers(model)[:8]) or 'none'}")
        raise EdgesnnError(f"{where}: the model has no layer {key!r} ({hint})")
    try:
        return resolve_class(key, trust_code, where)
    except EdgesnnError as e:
        if not close:
            raise
        raise EdgesnnError(f"{where}: the model has no layer {key!r} (close names: {', '.join(close)}), and as a "
                           f"class: {str(e).removeprefix(where + ': ')}") from None


def mapped_layers(model: nn.Module) -> list[dict]:
    """The layer records of a model :func:`map_neurons` mapped: layer, the class it replaced, the map
    key that chose it, the exact target and what the instance said."""
    return list(model.__dict__.get(LAYERS, []))


# ---------------------------------------------------------------- the checkpoint's record

class LayerMap(dict):
    """A neuron map whose keys are all layers (a checkpoint's record): a key naming no layer is an
    error, never a class to import."""


def rebuild_map(config: dict) -> dict[str, str] | None:
    """The map that rebuilds a checkpoint's model: each recorded layer's exact target by path (the
    saved neurons whatever the instances say now: a trained threshold is in no weight of the mapped
    model), else the map as the user gave it."""
    layers = config.get("neuron_layers")
    return LayerMap((row["layer"], row["target"]) for row in layers) if layers else config.get("neuron_map")


def config_code(config: dict) -> list[str]:
    """What loading a checkpoint imports: the factory, and the neuron classes of a map that has no
    layer records (recorded layers are rebuilt by path)."""
    return named_code(config["model"], None if config.get("neuron_layers") else config.get("neuron_map"))


def check_layers(layers, where: str) -> None:
    """A config's ``neuron_layers`` (from a file): a list of records with the types :func:`map_neurons` writes."""
    if not isinstance(layers, list):
        raise EdgesnnError(f"{where}: 'neuron_layers' must be a list of layer records, got {type(layers).__name__}")
    for row in layers:
        ok = (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("layer", "class", "key", "target"))
              and MAP_KEY.fullmatch(row["layer"]) and isinstance(row.get("instance"), (str, type(None))))
        if not ok:
            raise EdgesnnError(f"{where}: invalid 'neuron_layers' record {_short(row)} (layer, class, key and target "
                               f"strings expected)")
        parse_target(row["target"], f"{where}: 'neuron_layers' {_short(row['layer'])}")


def check_rebuilt(model: nn.Module, config: dict, where: str) -> None:
    """The rebuilt model replaced, at each recorded layer, a neuron of the recorded class (by name:
    a library may move a class between its modules); another class there is another model."""
    now = {row["layer"]: row["class"] for row in mapped_layers(model)}
    for row in config.get("neuron_layers") or []:
        if now.get(row["layer"], "").rpartition(".")[2] != row["class"].rpartition(".")[2]:
            raise EdgesnnError(f"{where}: layer {_short(row['layer'])} was a {_short(row['class'])} when the "
                               f"checkpoint was saved; the factory now builds a {_short(now.get(row['layer']))} there")
