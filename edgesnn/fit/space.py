"""The search space of ``edgesnn fit``: what a trial may choose, derived from the checkpoint and the board.

A point is a compression method (none, qsnn, qpsnn, bestformer where the model takes it, ternary)
with its settings (weight bits: per inner layer for qsnn and qpsnn, and for none the float layers'
export width, 8 or 16; membrane bits, prune ratio),
the stream dtype, the SFA neurons' D (zoo models), the export target (for a board that runs
several) and, on the mcu target, which layers run event-driven. Every point is a recipe
(:func:`recipe`): a trial is ``edgesnn run`` of it, so the chosen point reproduces by running its
recipe.

Per-layer weight bits: the first and last weight layers stay at 8 bits (few weights, the most
sensitive); the inner ones are split into at most MAX_GROUPS runs of consecutive layers, each run
searched as one width. A model with up to MAX_GROUPS inner layers gets one width per layer; a deep
one, per stage of depth, so the space stays small enough for a few dozen trials to learn.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from edgesnn import boards
from edgesnn.errors import EdgesnnError
from edgesnn import recipes
from edgesnn.recipes import Recipe

METHODS = ("none", "qsnn", "qpsnn", "bestformer", "ternary")
# none: export --weight-bits of the float layers (16: two int8 planes, closer to torch, twice the bytes)
WEIGHT_BITS = {"none": (8, 16), "qsnn": (1, 2, 4, 8), "qpsnn": (2, 3, 4, 6, 8), "bestformer": (1,), "ternary": (8,)}
MEMBRANE_BITS = (4, 6, 8, 12, 16)  # qsnn
PRUNE = (0.0, 0.25, 0.5, 0.75)  # qpsnn
D_VALUES = (1, 2, 4, 8)
EVENT_DRIVEN = ("auto", "none", "all")  # mcu
STREAM_DTYPES = ("int8", "int16")  # quantize / export --stream-dtype
LAYER_BITS = recipes.LAYER_BITS_METHODS  # the methods whose inner layers take their own weight bits
MAX_GROUPS = 3  # searched widths over the inner weight layers
FIT_TARGETS = ("ir", "tflite", "mcu", "lava", "onnx")  # what a trial can export and profile on a board
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Space:
    """What the trials of one fit choose from (each tuple non-empty)."""

    methods: tuple[str, ...]
    D: tuple[int, ...]
    targets: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # method -> why the model cannot take it
    stream_dtypes: tuple[str, ...] = STREAM_DTYPES
    layers: tuple[tuple[str, ...], ...] = ()  # inner weight layers, in groups that share one searched width

    def as_dict(self) -> dict:
        return {"methods": list(self.methods), "D": list(self.D), "targets": list(self.targets),
                "excluded": dict(self.excluded), "stream_dtypes": list(self.stream_dtypes),
                "layers": [list(g) for g in self.layers]}


def build(ckpt: Path, board: boards.Board, methods=None, targets=None, D=None, trust_code=False,
          stream_dtypes=None) -> Space:
    """The space for ``ckpt`` on ``board``; ``methods``, ``targets``, ``D`` and ``stream_dtypes`` narrow it
    (None: all that apply)."""
    from edgesnn import checkpoint

    config = checkpoint.read_config(ckpt)
    if config.get("quantization"):
        raise EdgesnnError(f"{ckpt} is already compressed ({config['quantization'].get('method')}); "
                           "fit starts from the float checkpoint")
    wanted = tuple(methods or METHODS)
    bad = [m for m in wanted if m not in METHODS]
    if bad:
        raise EdgesnnError(f"--method: unknown {bad[0]!r}; fit searches {', '.join(METHODS)}")
    runs = tuple(t for t in board.targets if t in FIT_TARGETS)
    chosen = tuple(targets or runs)
    bad = [t for t in chosen if t not in runs]
    if bad or not chosen:
        raise EdgesnnError(f"--target: board {board.name} runs {', '.join(runs) or 'no target fit can export'}"
                           + (f", not {bad[0]}" if bad else ""))
    zoo = ":" not in config["model"]
    own_D = int(config.get("D", 4))
    if D:
        if not zoo and tuple(D) != (own_D,):
            raise EdgesnnError(f"--D: {config['model']} is your own model; fit keeps its D ({own_D})")
        if any(not 1 <= d <= 127 for d in D):
            raise EdgesnnError("--D: each value must be between 1 and 127")
    Ds = tuple(sorted(set(D))) if D else (tuple(sorted(set(D_VALUES) | {own_D})) if zoo else (own_D,))
    dtypes = tuple(dict.fromkeys(stream_dtypes or STREAM_DTYPES))
    bad = [d for d in dtypes if d not in STREAM_DTYPES]
    if bad:
        raise EdgesnnError(f"--stream-dtype: unknown {bad[0]!r}; fit searches {', '.join(STREAM_DTYPES)}")
    excluded, inner = _probe(ckpt, [m for m in wanted if m != "none"], trust_code)
    kept = tuple(m for m in wanted if m not in excluded)
    if not kept:
        raise EdgesnnError(f"{ckpt}: no method of {', '.join(wanted)} applies: "
                           + "; ".join(f"{m}: {why}" for m, why in excluded.items()))
    layers = groups(inner) if any(m in LAYER_BITS for m in kept) else ()
    return Space(kept, Ds, chosen, excluded, dtypes, layers)


def groups(inner: list[str], most: int = MAX_GROUPS) -> tuple[tuple[str, ...], ...]:
    """``inner`` (in depth order) as at most ``most`` runs of consecutive layers, sizes differing by one at most."""
    n = min(len(inner), most)
    out, start = [], 0
    for i in range(n):
        size = len(inner) // n + (i < len(inner) % n)
        out.append(tuple(inner[start:start + size]))
        start += size
    return tuple(out)


def _probe(ckpt: Path, methods: list[str], trust_code) -> tuple[dict[str, str], list[str]]:
    """Each method the model cannot take, and why (its own one-line refusal), tried on a copy; and the
    model's inner weight layers (neither first nor last), in module order."""
    if not methods:
        return {}, []
    from edgesnn import checkpoint, export
    from edgesnn import data as datasets
    from edgesnn.quantize import METHODS as PREPARE
    from edgesnn.quantize import Options, streams
    from edgesnn.quantize.common import inner_layers

    model, config = checkpoint.load(ckpt, trust_code=trust_code)
    ds = datasets.load(config["data"])
    why = {}
    for m in methods:
        try:
            with export.input_shape(ds.in_shape):
                plan = PREPARE[m].prepare(copy.deepcopy(model).train(), config, ds, Options())
                streams.insert(plan.model, 8)
        except EdgesnnError as e:
            why[m] = str(e)
    with export.input_shape(ds.in_shape):
        inner = inner_layers(model)
    return why, inner


def suggest(trial, space: Space) -> dict:
    """A point: Optuna's define-by-run choices, one parameter name per setting of each method."""
    method = trial.suggest_categorical("method", list(space.methods))
    point = {"method": method, "D": trial.suggest_categorical("D", list(space.D)),
             "target": trial.suggest_categorical("target", list(space.targets)),
             "stream_dtype": trial.suggest_categorical("stream_dtype", list(space.stream_dtypes))}
    if method in LAYER_BITS and space.layers:  # one width per group of inner layers: {layer: bits}
        point["weight_bits"] = {}
        for i, group in enumerate(space.layers):
            bits = trial.suggest_categorical(f"{method}.weight_bits.{i}", list(WEIGHT_BITS[method]))
            point["weight_bits"].update(dict.fromkeys(group, bits))
    elif method in WEIGHT_BITS:
        point["weight_bits"] = trial.suggest_categorical(f"{method}.weight_bits", list(WEIGHT_BITS[method]))
    if method == "qsnn":
        point["membrane_bits"] = trial.suggest_categorical("qsnn.membrane_bits", list(MEMBRANE_BITS))
    if method == "qpsnn":
        point["prune"] = trial.suggest_categorical("qpsnn.prune", list(PRUNE))
    if point["target"] == "mcu":
        point["event_driven"] = trial.suggest_categorical("mcu.event_driven", list(EVENT_DRIVEN))
    return point


def recipe(point: dict, ckpt: Path, config: dict, board_spec: str, epochs: int, seed: int, name: str) -> Recipe:
    """The recipe of a point: the checkpoint's weights (train epochs 0, or ``epochs`` of fine-tuning when
    D changes and nothing else would train), the compression, the IR (the accuracy, on the whole test
    split) and the point's target, profiled on the board."""
    own_D = int(config.get("D", 4))
    method = point["method"]
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "D"}  # D is the point's
    model = {"name": config["model"], "D": point["D"], "kwargs": kwargs,
             "weights": str((Path(ckpt) / WEIGHTS_FILE).resolve())}
    if config.get("neuron_map"):
        model["neuron_map"] = dict(config["neuron_map"])
    retrain = method == "none" and point["D"] != own_D
    raw = {"name": name, "data": config["data"], "model": model,
           "train": {"epochs": epochs if retrain else 0, "seed": seed}}
    dtype = point.get("stream_dtype", "int8")
    if method != "none":
        q = {"method": method, "epochs": epochs}
        for key in ("weight_bits", "membrane_bits", "prune"):
            if key in point:
                q[key] = point[key]
        if isinstance(q.get("weight_bits"), dict):  # per layer: the first's width, and the layers that differ
            bits = q.pop("weight_bits")
            q["weight_bits"] = next(iter(bits.values()))
            layer_bits = {layer: b for layer, b in bits.items() if b != q["weight_bits"]}
            if layer_bits:
                q["layer_bits"] = layer_bits
        raw["quantize"] = {**q, "stream_dtype": dtype}  # the compressed checkpoint's: every export uses it
    target = {"target": point["target"]}
    plain = {"stream_dtype": dtype, **({"weight_bits": point["weight_bits"]} if "weight_bits" in point else {})}
    if method == "none":
        target.update(plain)
    if point["target"] == "mcu":
        target.update(board=board_spec, event_driven=point.get("event_driven", "auto"))
    if point["target"] == "lava":
        target["lava_mode"] = "graded"
    ir = {"target": "ir", **(plain if method == "none" else {})}
    exports = [ir] + ([target] if point["target"] != "ir" else [])
    cls = recipe_class()
    folder = cls.model_validate({**raw, "export": [target]}).export[0].folder()
    raw.update(export=exports, profile=[{"export": folder, "board": board_spec}])
    return cls.model_validate(raw)


def recipe_class() -> type[Recipe]:
    """The class a recipe validates with: the one built for the registered targets, where recipes builds one."""
    return recipes.schema() if hasattr(recipes, "schema") else Recipe
