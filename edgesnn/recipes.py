"""Recipes: a whole deployment described once (data, model, training, compression, export targets,
boards to profile) in YAML, validated with pydantic. Every output a recipe produces lives under the
run's output folder: a recipe names stages and boards, never output paths.
"""

from __future__ import annotations

from pathlib import Path
import re
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator,
                      model_validator)

from edgesnn import resources, targets
from edgesnn.errors import EdgesnnError
from edgesnn.limits import read_yaml
from edgesnn.models.custom import FACTORY_SPEC, MAP_KEY, parse_neuron_map
from edgesnn.threads import MAX as MAX_THREADS

RECIPES_DIR = resources.folder("recipes")
DEFAULT = "digits-sfa-cnn"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _board_name(v: str) -> str:
    """A board name, or a board .yaml file whose stem names the output folder: never a path into DIR's parents."""
    stem = Path(v).stem if v.endswith((".yaml", ".yml")) else v
    if not _NAME.match(stem) or stem in (".", ".."):
        raise ValueError(f"{v!r} is not a board name (letters, digits, '.', '_', '-') or a .yaml file")
    return v


BoardName = Annotated[str, AfterValidator(_board_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Model(_Strict):
    name: str  # a zoo model, or a user's module:factory
    D: int = Field(4, ge=1, le=127)
    kwargs: dict = Field(default_factory=dict)
    neuron_map: dict[str, str] = Field(default_factory=dict)  # neuron class or layer -> edgesnn neuron
    weights: str | None = None  # a trained state dict file (edgesnn.weights), relative to the current folder
    strip_prefix: list[str] = Field(default_factory=list)  # removed from the start of its keys, in order

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from edgesnn.models import MODELS

        if v not in MODELS and not FACTORY_SPEC.fullmatch(v):
            raise ValueError(f"{v!r} is neither a model ({', '.join(MODELS)}) nor module:factory")
        return v

    @model_validator(mode="after")
    def _map_needs_factory(self):
        if self.neuron_map and ":" not in self.name:
            raise ValueError("neuron_map applies to a user model (name: module:factory)")
        for key in self.neuron_map:
            if not MAP_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is neither a class's import path (module.Class) nor a layer (head.lif)")
        try:
            parse_neuron_map([f"{cls_name}={target}" for cls_name, target in self.neuron_map.items()])
        except EdgesnnError as e:
            raise ValueError(str(e)) from None
        return self


class Train(_Strict):
    epochs: int = Field(30, ge=0)  # 0: the model's weights file as it is (needs model.weights)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0


LAYER_BITS_METHODS = ("qsnn", "qpsnn")  # the methods whose inner weight layers take their own bits


class Quantize(_Strict):
    method: Literal["qsnn", "qpsnn", "bestformer", "ternary", "ibra", "mpbn", "int8"]
    weight_bits: int | None = Field(None, ge=1, le=8)
    membrane_bits: int | None = Field(None, ge=2, le=16)
    spike_bits: int | None = Field(None, ge=1, le=7)  # ibra
    prune: float = Field(0.0, ge=0, lt=1)
    epochs: int = Field(20, ge=1)
    lr: float | None = Field(None, gt=0)
    # inner weight layer -> its bits (qsnn, qpsnn; the first and last stay at 8, the others at weight_bits)
    layer_bits: dict[str, Annotated[int, Field(ge=1, le=8)]] = Field(default_factory=dict)
    stream_dtype: Literal["int8", "int16"] | None = None  # quantize --stream-dtype; every export then uses it

    @model_validator(mode="after")
    def _layer_bits(self):
        if self.layer_bits and self.method not in LAYER_BITS_METHODS:
            raise ValueError(f"layer_bits applies to the {' and '.join(LAYER_BITS_METHODS)} methods, not {self.method}")
        return self

    def key(self) -> dict:
        """The settings in the quantize stage's key: one left unset is not in it (the keys as they were)."""
        unset = {k for k, empty in (("spike_bits", None), ("layer_bits", {}), ("stream_dtype", None))
                 if getattr(self, k) == empty}
        return self.model_dump(exclude=unset)

    def options(self, seed: int):
        """The quantize options of this entry (edgesnn.quantize.Options)."""
        from edgesnn.quantize import Options

        return Options(weight_bits=self.weight_bits, membrane_bits=self.membrane_bits, spike_bits=self.spike_bits,
                       prune=self.prune, epochs=self.epochs, lr=self.lr, seed=seed, layer_bits=dict(self.layer_bits),
                       stream_dtype=self.stream_dtype)


class Export(_Strict):
    """An export entry: ``target``, ``board`` (for a target that builds for one) and the options of the
    targets that recipes take (edgesnn.targets.Option.recipe). Its fields come from the registry: the class
    :func:`schema` builds is a subclass of this one. ``stream_dtype`` is export --stream-dtype (unset: the
    compression's, else int8)."""

    stream_dtype: Literal["int8", "int16"] | None = None
    weight_bits: Literal[1, 2, 3, 4, 5, 6, 7, 8, 16] | None = None  # export --weight-bits (float layers; unset: 8)

    def _options(self) -> dict:
        """Each recipe option's value as the user gave it (the command line's default where not given)."""
        return {o.name: getattr(self, o.name) if o.name in self.model_fields_set else o.default
                for o in _recipe_options()}

    @model_validator(mode="after")
    def _target_options(self):
        """The target's own options, checked and resolved by the target (a spike code on lava is its mode);
        a strict option of another target is refused in the target's words."""
        t = targets.get(self.target)
        spell = lambda name: name  # noqa: E731 - a recipe's keys are the options' names
        try:
            own = t.prepare(targets.take_options(t, self._options(), spell=spell), spell)
        except EdgesnnError as e:
            raise ValueError(str(e)) from None
        for name, value in own.items():
            if name in type(self).model_fields:
                setattr(self, name, value)
        return self

    def target_options(self) -> dict:
        """What ``export_model`` takes for this entry: the board and the target's recipe options."""
        own = {o.name for o in targets.get(self.target).export_options if o.recipe}
        bits = {} if self.weight_bits is None else {"weight_bits": self.weight_bits}
        return {"board": self.board, "stream_dtype": self.stream_dtype, **bits, **{name: getattr(self, name) for name in own}}

    def key(self) -> dict:
        """The settings in the stage's key: an option set "when-set" (and the stream dtype) only when it has a value."""
        unset = {o.name for o in _recipe_options() if o.recipe == "when-set" and getattr(self, o.name) == _field(o)[1]}
        return self.model_dump(exclude=unset | {name for name in ("stream_dtype", "weight_bits") if getattr(self, name) is None})

    def folder(self) -> str:
        """Its folder in the run's output: the target, and for a board's build the board's name (a file's stem)."""
        return f"{self.target}-{Path(self.board).stem}" if self.board else self.target


def _recipe_options() -> list:
    return [o for o in targets.options("export") if o.recipe]


def _field(o):
    """(type, default) of a recipe option's pydantic field: its choices as a Literal unless they are suggestions."""
    kind = Literal[o.choices] if o.choices and not o.other else o.type
    default = o.default if o.recipe_default is None else o.recipe_default
    return (kind | None if default is None else kind), default


class Profile(_Strict):
    export: str  # an Export folder name: ir, tflite, mcu-<board>, lava
    board: BoardName

    def stage(self) -> str:
        return f"profile:{self.export}:{Path(self.board).stem}"

    def file(self) -> str:
        """Its report in the run's output: the export's folder and the board's name (a file's stem)."""
        return f"profile-{self.export}-{Path(self.board).stem}.json"


class Recipe(_Strict):
    """A recipe; its ``export`` and ``profile`` lists are added by :func:`schema` (the targets' fields)."""

    name: str
    data: str = "digits"  # a built-in set (edgesnn.data.BUILTIN), an .npz file or a data folder (edgesnn.data_folders)
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)  # pins torch's count for every stage (edgesnn/threads.py)
    model: Model
    train: Train = Field(default_factory=Train)
    quantize: Quantize | None = None

    @model_validator(mode="after")
    def _weights(self):
        if self.model.strip_prefix and not self.model.weights:
            raise ValueError("model.strip_prefix applies to the keys of model.weights, and none is given")
        if self.train.epochs == 0 and not self.model.weights:
            raise ValueError("train.epochs 0 needs model.weights (untrained, the checkpoint would hold random weights)")
        return self

    @model_validator(mode="after")
    def _stream_dtype(self):
        """A compressed checkpoint's streams are trained at one dtype: an export cannot ask for another."""
        trained = (self.quantize.stream_dtype or "int8") if self.quantize else None
        for e in getattr(self, "export", []):  # the list schema() adds
            if trained and e.stream_dtype not in (None, trained):
                raise ValueError(f"export {e.target}: stream_dtype {e.stream_dtype}, but the compression trains its "
                                 f"streams as {trained} (set quantize.stream_dtype instead)")
        return self

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        from edgesnn.data import BUILTIN
        from edgesnn.data_folders import FOLDER_FORMS, split_spec

        if v in BUILTIN or v.endswith(".npz"):
            return v
        try:
            folder, _ = split_spec(v)  # the options' syntax; the folder is read when the run trains
        except EdgesnnError as e:
            raise ValueError(str(e)) from None
        if not Path(folder).is_dir():
            raise ValueError(f"{v!r} is not a data set: use {', '.join(map(repr, BUILTIN))}, an .npz file or a "
                             f"folder ({FOLDER_FORMS})")
        return v


_schema: tuple[int, type[Recipe]] | None = None


def schema() -> type[Recipe]:
    """The Recipe class for the targets registered now (rebuilt when the registry changes): ``export``
    entries whose ``target`` is one of them and whose fields are their recipe options."""
    global _schema
    generation = targets.generation()
    if _schema is None or _schema[0] != generation:
        fields = {"target": (Literal[targets.names()], ...), "board": (BoardName | None, None)}
        fields.update({o.name: _field(o) for o in _recipe_options()})
        export = create_model("Export", __base__=Export, **fields)
        recipe = create_model("Recipe", __base__=Recipe, export=(list[export], ...),
                              profile=(list[Profile], Field(default_factory=list)))
        _schema = (generation, recipe)
    return _schema[1]


def load(spec: str | Path) -> Recipe:
    """A shipped recipe by name (edgesnn/shipped/recipes/NAME.yaml) or path; errors name the file and the key."""
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPES_DIR / f"{spec}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
            raise EdgesnnError(f"unknown recipe {spec!r}; available: {names} (or a .yaml file)")
    raw = read_yaml(path, "recipe")  # bounded: no aliases, nesting and node count limited
    if not isinstance(raw, dict):
        raise EdgesnnError(f"{path}: a recipe is a YAML mapping")
    try:
        recipe = schema().model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = " ".join(".".join(str(p) for p in err["loc"]).split()) or "(top level)"
        raise EdgesnnError(f"{path}: {key}: {err['msg'].lower()}") from None
    folders = [e.folder() for e in recipe.export]
    for kind, names in (("export", folders), ("profile", [p.file() for p in recipe.profile])):
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        if twice:
            raise EdgesnnError(f"{path}: {kind}: listed twice: {', '.join(twice)} (each writes one folder or file)")
    for p in recipe.profile:
        if p.export not in folders:
            raise EdgesnnError(f"{path}: profile.export: {p.export!r} is not one of this recipe's exports "
                               f"({', '.join(folders)})")
        t = targets.get(recipe.export[folders.index(p.export)].target)
        if not t.profiled:
            runs = [f"{o.name}-<board>" if o.builds_for else o.name for o in targets.all_targets() if o.profiled]
            raise EdgesnnError(f"{path}: profile.export: {t.not_profiled or f'the {t.name} target has no profile'}; "
                               f"profile the export that runs it ({', '.join(runs[:-1])} or {runs[-1]})")
    for e in recipe.export:
        t = targets.get(e.target)
        if t.builds_for and not e.board:
            raise EdgesnnError(f"{path}: export: the {t.name} target needs a board")
    return recipe
