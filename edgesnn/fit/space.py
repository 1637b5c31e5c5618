"""The search space of ``edgesnn fit``: what a trial may choose, derived from the checkpoint and the board.

A point is a compression method (none, qsnn, qpsnn, bestformer where the model takes it, ternary)
with its settings (weight bits, membrane bits, prune ratio), the SFA neurons' D (zoo models), the
export target (for a board that runs several) and, on the mcu target, which layers run
event-driven. Every point is a recipe (:func:`recipe`): a trial is ``edgesnn run`` of it, so the
chosen point reproduces by running its recipe.
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
WEIGHT_BITS = {"qsnn": (1, 2, 4, 8), "qpsnn": (2, 3, 4, 6, 8), "bestformer": (1,), "ternary": (8,)}
MEMBRANE_BITS = (4, 6, 8, 12, 16)  # qsnn
PRUNE = (0.0, 0.25, 0.5, 0.75)  # qpsnn
D_VALUES = (1, 2, 4, 8)
EVENT_DRIVEN = ("auto", "none", "all")  # mcu
FIT_TARGETS = ("ir", "tflite", "mcu", "lava", "onnx")  # what a trial can export and profile on a board
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Space:
    """What the trials of one fit choose from (each tuple non-empty)."""

    methods: tuple[str, ...]
    D: tuple[int, ...]
    targets: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # method -> why the model cannot take it

    def as_dict(self) -> dict:
        return {"methods": list(self.methods), "D": list(self.D), "targets": list(self.targets),
                "excluded": dict(self.excluded)}


def build(ckpt: Path, board: boards.Board, methods=None, targets=None, D=None, trust_code=False) -> Space:
    """The space for ``ckpt`` on ``board``; ``methods``, ``targets`` and ``D`` narrow it (None: all that apply)."""
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
    excluded = _unfit_methods(ckpt, [m for m in wanted if m != "none"], trust_code)
    kept = tuple(m for m in wanted if m not in excluded)
    if not kept:
        raise EdgesnnError(f"{ckpt}: no method of {', '.join(wanted)} applies: "
                           + "; ".join(f"{m}: {why}" for m, why in excluded.items()))
    return Space(kept, Ds, chosen, excluded)


def _unfit_methods(ckpt: Path, methods: list[str], trust_code) -> dict[str, str]:
    """Each method the model cannot take, and why (its own one-line refusal), tried on a copy."""
    if not methods:
        return {}
    from edgesnn import checkpoint, export
    from edgesnn import data as datasets
    from edgesnn.quantize import METHODS as PREPARE
    from edgesnn.quantize import Options, streams

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
    return why


def suggest(trial, space: Space) -> dict:
    """A point: Optuna's define-by-run choices, one parameter name per setting of each method."""
    method = trial.suggest_categorical("method", list(space.methods))
    point = {"method": method, "D": trial.suggest_categorical("D", list(space.D)),
             "target": trial.suggest_categorical("target", list(space.targets))}
    if method in WEIGHT_BITS:
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
    if method != "none":
        q = {"method": method, "epochs": epochs}
        for key in ("weight_bits", "membrane_bits", "prune"):
            if key in point:
                q[key] = point[key]
        raw["quantize"] = q
    target = {"target": point["target"]}
    if point["target"] == "mcu":
        target.update(board=board_spec, event_driven=point.get("event_driven", "auto"))
    if point["target"] == "lava":
        target["lava_mode"] = "graded"
    exports = [{"target": "ir"}] + ([target] if point["target"] != "ir" else [])
    cls = recipe_class()
    folder = cls.model_validate({**raw, "export": [target]}).export[0].folder()
    raw.update(export=exports, profile=[{"export": folder, "board": board_spec}])
    return cls.model_validate(raw)


def recipe_class() -> type[Recipe]:
    """The class a recipe validates with: the one built for the registered targets, where recipes builds one."""
    return recipes.schema() if hasattr(recipes, "schema") else Recipe
