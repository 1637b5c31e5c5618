"""Targets: the one interface every deployment target implements, and the registry that ``export``,
``verify``, ``profile``, ``run`` and the CLI find them in (docs/adding-a-target.md).

Hub and spoke: a target reads the IR (the hub) and lives in one folder, ``backends/<name>/target.py``
for the built-in ones. Nothing outside that folder names it: the CLI adds the options it declares,
``export`` calls its :meth:`Target.export`, ``verify`` and ``profile`` ask every target whether it
:meth:`~Target.recognizes` an artifact. Modelled on TVM's target kinds (a name and typed options with
defaults) and pytest's plugins (Python entry points in group :data:`GROUP`): a third-party package adds
a target without editing edgesnn. Plain classes, no metaclass: a target is an instance of a
:class:`Target` subclass.

This module imports neither torch nor a backend: the CLI reads the targets' declarations at start-up,
and a board's install (edgesnn[device]) runs verify and profile through it. A target imports its
backend inside its methods (onnx and nir load their torch or onnx parts only when asked for). A target
whose package cannot be imported here (tflite without the tflite schema package) is left out, and naming
it is one line saying why (:func:`problems`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgesnn.errors import EdgesnnError

GROUP = "edgesnn.targets"  # the entry-point group a package declares its targets in
_BUILTIN = (("ir", "edgesnn.backends.ir.target:IR"), ("onnx", "edgesnn.backends.onnx.target:ONNX"),
            ("onnx-qcdq", "edgesnn.from_torch.target:QCDQ"), ("tflite", "edgesnn.backends.tflite.target:TFLITE"),
            ("mcu", "edgesnn.backends.mcu.target:MCU"), ("lava", "edgesnn.backends.lava.target:LAVA"),
            ("nir", "edgesnn.backends.nir.target:NIR"))  # the order --help lists them in


@dataclass(frozen=True)
class Option:
    """An option a target declares: ``name`` in Python (``export_model(..., name=value)``), ``--name`` (dashes)
    on the command line, ``name`` in a recipe's export entry.

    ``type``: str, int, float, bool (a flag) or Path. ``choices``: the values --help shows and the shell
    completes; with ``other`` (e.g. ``LAYER,...``) they are suggestions and any string is taken. The target checks the value itself (:meth:`Target.prepare`),
    with its own error line. ``strict``: given to a target that does not declare it, the option is
    refused with ``refused`` (``{flag}``, ``{target}``, ``{owners}``, ``{artifact}`` filled in); otherwise it
    is ignored there. ``recipe``: ``"always"`` (its value, default included, is in the recipe's stage key:
    how a run tells a changed export), ``"when-set"`` (only when given: an option added later keeps
    existing run folders' keys), or None (not a recipe key). ``recipe_default``: its default in a recipe
    when that differs from the command line's."""

    name: str
    help: str
    type: type = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    other: str | None = None
    strict: bool = False
    refused: str = "{flag}: an option of --target {owners}, not of {target}"
    recipe: str | None = None
    recipe_default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def given(self, value) -> bool:
        """Whether ``value`` was asked for (differs from the default)."""
        return value is not None and value != self.default


# One option several targets run: declared once, so its help and checks are the same for each.
SPIKE_CODE = Option("spike_code", "send spike counts as real spike trains: rate-burst (s spikes in D steps) or "
                    "bit-plane (the bits of s, MSB first, ceil(log2(D+1)) steps). Default: integer counts",
                    choices=("rate-burst", "bit-plane"), strict=True,
                    refused="{flag}: the {target} target runs no spike trains ({owners} do)", recipe="when-set")


class Target:
    """One deployment target. Subclass it, set the class attributes, implement the methods its
    artifacts need; :func:`register` it or name it in an entry point (group ``edgesnn.targets``).

    What a target declares:

    - ``name`` (``--target NAME``), ``help`` (one line for --help: what the artifact is).
    - ``artifact``: how --help names the artifact (``model.tflite``); ``describes``: how an error line
      lists it (``a .tflite file``); ``rank``: where it stands in those lists (the IR first, files, folders).
    - ``file``: the artifact inside export's --out folder (None: the folder itself is the artifact);
      ``files``: every file export writes there, one commit (:func:`edgesnn.files.atomic_files`).
      ``replaces_folder``: export replaces the whole --out folder, which must be one it wrote (``files[0]``
      marks it).
    - ``source``: ``"ir"`` (export reads the IR: every target but one) or ``"torch"`` (export reads the
      torch model: :meth:`export_from_torch`; see edgesnn/from_torch/).
    - ``export_options`` / ``verify_options``: :class:`Option` s; the CLI adds them to ``export`` /
      ``verify`` and they appear in --help.
    - ``builds_for``: board kinds export builds for (non-empty: export needs ``--board``, a board of one of
      them, passed to :meth:`export`). ``runs_on``: board kinds whose energy or fit this target models
      (:meth:`board_energy`, :meth:`board_fit`), for its own artifacts and, from the IR alone, for others.
    - ``kernel_sources``: the kernel sources export can build with (mcu: tvm, cmsis-nn), first the
      default; its ``kernels`` option chooses. A new source is a new choice in the target's own folder.
    - ``stateful``: whether the target runs a graph whose state is carried from one call to the next
      (a sequence model, issue 24: each sample is a sequence of steps). A graph that says it is stateful
      (``graph.stateful``) is refused by a target that does not.
    - ``on_board``: verify runs the artifact on a board (over a connection the target's options name)
      rather than on this machine or an emulator of the board here.
    - ``profiled``: profile takes its artifact; otherwise ``not_profiled`` says why (recipes).
    - ``run_samples``: how many test samples a recipe's verify runs (None: the whole split);
      ``scratch``: folders verify leaves in the artifact that are not part of it (a build);
      ``builds_code``: verifying or profiling runs a build the export wrote (a Makefile): only with
      trust, which a run gives the artifacts it wrote itself.
    """

    name: str = ""
    help: str = ""
    artifact: str = ""
    describes: str = ""
    rank: int = 100
    file: str | None = None
    files: tuple[str, ...] = ()
    replaces_folder: bool = False
    source: str = "ir"
    export_options: tuple[Option, ...] = ()
    verify_options: tuple[Option, ...] = ()
    builds_for: tuple[str, ...] = ()
    runs_on: tuple[str, ...] = ()
    kernel_sources: tuple[str, ...] = ()
    stateful: bool = False
    on_board: bool = False
    profiled: bool = True
    not_profiled: str | None = None
    run_samples: int | None = None
    scratch: tuple[str, ...] = ()
    builds_code: bool = False

    # ---- export ---------------------------------------------------------------------------------

    def prepare(self, options: dict, spell=None) -> dict:
        """Check and resolve this target's option values (a bad value is one EdgesnnError line) before
        any work; return them resolved. ``spell(name)``: how the user wrote an option (``--lava-mode``
        on the command line, ``lava_mode`` in a recipe), for the error line."""
        return options

    def export(self, graph, out: Path, board, options: dict, calibration: np.ndarray) -> Path:
        """Write the artifact of IR ``graph`` into the folder ``out`` (nothing half-written: check
        everything first, then commit the files in one step); return the artifact's path. ``board``:
        a :class:`edgesnn.boards.Board` when ``builds_for`` is set, else None; ``options``: the values of
        ``export_options`` (prepared); ``calibration``: training samples, NHWC floats (at most 256)."""
        raise NotImplementedError  # the registry takes no target of source "ir" without its own (_check)

    def export_from_torch(self, model, example, out: Path, meta: dict[str, str], options: dict) -> Path:
        """``source == "torch"``: write the artifact of the torch ``model`` (``example``: input samples)."""
        raise NotImplementedError  # the registry takes no target of source "torch" without its own (_check)

    def summary(self, artifact: Path) -> list[str]:
        """Lines the CLI prints after ``wrote PATH`` (a report the export wrote)."""
        return []

    # ---- verify ---------------------------------------------------------------------------------

    def recognizes(self, path: Path) -> bool:
        """Whether ``path`` is this target's artifact (a suffix, a file in a folder): cheap, no heavy import."""
        return False

    def verify(self, artifact: Path, data: str | None, *, ckpt: Path | None, ir: Path | None, samples: int | None,
               trust_code, options: dict) -> dict:
        """Run the artifact over the test split of ``data`` (None: the data set it records) and compare it
        with what it came from. The result has ``artifact``, ``data``, ``samples``, ``mismatches`` and
        ``runtime``; a target compared with the IR gives every output integer of each runtime it ran in
        under ``runtimes`` (:func:`integer_result` builds exactly that), which ``edgesnn.verdict`` judges
        and the CLI prints. ``samples``: only the first N (None: all); ``options``: ``verify_options``."""
        raise EdgesnnError(f"{artifact}: the {self.name} target has no verify")

    # ---- profile --------------------------------------------------------------------------------

    def profile_graph(self, artifact: Path, trust_code: bool):
        """(the IR graph, the target's memory) of the artifact: e.g. ``file_bytes``, ``arena_bytes``,
        ``flash`` / ``ram`` of a build (profile's fit reads flash, then the file; RAM, then the arena)."""
        raise EdgesnnError(f"{artifact}: the {self.name} target has no profile")

    def spike_code(self, artifact: Path) -> str | None:
        """The spike code the artifact was exported with (None: integer counts)."""
        return None

    def measure(self, artifact: Path, xq: np.ndarray) -> tuple[list[float], int]:
        """(ms per inference of each timed pass, peak resident bytes) of the artifact run here on the
        quantized inputs ``xq`` (profile --measure): by default its IR in numpy, in a child process."""
        from edgesnn.profile.measure import _measure_python

        return _measure_python("ir", artifact, xq)

    def board_energy(self, board, artifact: Path | None, graph, x: np.ndarray) -> dict | None:
        """This target's energy model of ``board`` (a kind in ``runs_on``): ``energy_board_pj`` and
        ``energy_board_note``; ``artifact`` None: estimated from the IR ``graph`` for another target's
        artifact. None: no model for this board."""
        return None

    def board_fit(self, board, target_memory: dict, graph, x: np.ndarray) -> dict | None:
        """Whether the model fits ``board`` (a kind in ``runs_on``) when it is not counted in bytes of
        flash and RAM (Loihi 2: neuro cores). None: bytes, as for every board."""
        return None

    # ---- run ------------------------------------------------------------------------------------

    def flash_bytes(self, folder: Path) -> tuple[int, str]:
        """What the export in ``folder`` puts in a device's flash, and how it was counted: by default
        the artifact file (a folder target counts its constants)."""
        path = self.path_in(folder)
        return path.stat().st_size, f"{path.name} file"

    def path_in(self, folder: Path) -> Path:
        """The artifact inside an export folder."""
        return Path(folder) / self.file if self.file else Path(folder)

    def __repr__(self) -> str:
        return f"<target {self.name}>"


# ---- the one result shape -----------------------------------------------------------------------

def integer_result(artifact: Path, runtime: str, got: list[np.ndarray], want: list[np.ndarray], **extra) -> dict:
    """The verify result of an artifact run in ``runtime``, every output integer compared with the IR's
    golden interpreter: ``got`` and ``want`` the outputs (batch first), in the IR's output order."""
    n = len(want[0])
    differs, elements, argmax = np.zeros(n, bool), 0, None
    for a, b in zip(got, want):
        a = np.asarray(a).reshape(b.shape)
        bad = a != b
        differs |= bad.reshape(n, -1).any(1)
        elements += int(bad.sum())
    first, golden = np.asarray(got[0]).reshape(want[0].shape), want[0]
    if golden.ndim == 2:
        argmax = int((first.argmax(1) != golden.argmax(1)).sum())
    row = {"runtime": runtime, "mismatches": int(differs.sum()), "mismatched_elements": elements,
           "argmax_mismatches": argmax}
    return {"artifact": str(artifact), **extra, "samples": n, "runtime": runtime, "mismatches": row["mismatches"],
            "mismatched_elements": elements, "runtimes": {runtime: row}}


REQUIRED = ("data", "samples", "mismatches")


def checked_result(target: Target, r) -> dict:
    """A target's verify result, refused in one line when it lacks what every result has."""
    missing = [k for k in REQUIRED if not isinstance(r, dict) or k not in r]
    if missing:
        raise EdgesnnError(f"target {target.name}: its verify result has no {', '.join(missing)} "
                           f"(see docs/adding-a-target.md)")
    return r


# ---- the registry -------------------------------------------------------------------------------

class _Registry:
    def __init__(self):
        self.targets: dict[str, Target] | None = None
        self.broken: dict[str, str] = {}  # entry-point name -> why it did not load (one line)
        self.generation = 0  # changes with every registration: recipes rebuild their schema

    def load(self) -> dict[str, Target]:
        if self.targets is None:
            self.targets = {}
            for name, ref in _BUILTIN:
                try:  # a target module imports no optional package; should one, the others still work
                    self._add(_resolve(ref))
                except ImportError as e:
                    self.broken[name] = f"target {name} cannot be loaded here: {type(e).__name__}: {e}"
            for ep in _entry_points():
                try:
                    target = ep.load()
                    target = target() if isinstance(target, type) else target
                    _check(target)
                    if target.name in self.targets:
                        raise ValueError(f"a target named {target.name!r} is already registered")
                    self._add(target)
                except Exception as e:  # noqa: BLE001 - a plugin's failure is its line, never edgesnn's crash
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    self.broken[ep.name] = (f"target plugin {ep.name!r} ({ep.value}) failed to load: "
                                            f"{type(e).__name__}: {first}")
        return self.targets

    def _add(self, target: Target) -> None:
        self.targets[target.name] = target
        self.generation += 1


OPTION_TYPES = (str, int, float, bool, Path)  # what the command line parses
RESERVED = {"checkpoint", "target", "out", "weight_bits", "stream_dtype", "board", "source_ref", "trust_code", "artifact",
            "data", "ir", "samples", "min_agreement", "json_out", "quiet", "verbose", "command_threads"}  # the commands' own


def _check(target) -> None:
    """A target the registry can take: a named Target whose options the CLI can parse."""
    if not isinstance(target, Target) or not target.name:
        raise TypeError(f"{type(target).__name__} is not an edgesnn.targets.Target with a name")
    method = {"ir": "export", "torch": "export_from_torch"}.get(target.source)
    if method is None or getattr(type(target), method) is getattr(Target, method):
        raise TypeError(f"target {target.name!r}: source {target.source!r} needs its own {method or 'export'}() "
                        "(source 'ir': export, 'torch': export_from_torch)")
    for o in (*target.export_options, *target.verify_options):
        if not isinstance(o, Option) or o.type not in OPTION_TYPES or o.recipe not in (None, "always", "when-set"):
            raise TypeError(f"option {getattr(o, 'name', o)!r} is not an Option of type "
                            f"{', '.join(t.__name__ for t in OPTION_TYPES)} with recipe None, 'always' or 'when-set'")
        if o.name in RESERVED or not o.name.isidentifier():
            raise TypeError(f"option {o.name!r}: a name export or verify has already, or not a Python name")


def _resolve(ref: str) -> Target:
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry_points():
    return list(metadata.entry_points(group=GROUP))


_registry = _Registry()


def register(target: Target, replace: bool = False) -> Target:
    """Add ``target`` (tests, or a program that builds one): its name must be new unless ``replace``."""
    targets = _registry.load()
    _check(target)
    if target.name in targets and not replace:
        raise EdgesnnError(f"a target named {target.name!r} is already registered")
    _registry._add(target)
    return target


def unregister(name: str) -> None:
    """Remove a target :func:`register` added (tests clean up with it)."""
    _registry.load().pop(name, None)
    _registry.generation += 1


def generation() -> int:
    """A number that changes whenever the registry does."""
    _registry.load()
    return _registry.generation


def all_targets() -> list[Target]:
    """Every target, in the order --help lists them."""
    return list(_registry.load().values())


def names() -> tuple[str, ...]:
    return tuple(_registry.load())


def get(name: str) -> Target:
    """The target named ``name``; an unknown or broken one is one line."""
    targets = _registry.load()
    if name in targets:
        return targets[name]
    if name in _registry.broken:
        raise EdgesnnError(_registry.broken[name])
    raise EdgesnnError(f"unknown target {name!r}; available: {', '.join(targets)}")


def problems() -> list[str]:
    """Why each plugin that did not load failed, one line each."""
    _registry.load()
    return list(_registry.broken.values())


def by_rank() -> list[Target]:
    return sorted(all_targets(), key=lambda t: t.rank)


def recognize(path: Path) -> Target | None:
    """The target whose artifact ``path`` is (None: none)."""
    for target in by_rank():
        if target.recognizes(Path(path)):
            return target
    return None


def owners(option: str, kind: str = "export") -> list[Target]:
    """The targets that declare an option of that name (``kind``: export or verify)."""
    return [t for t in all_targets() if any(o.name == option for o in getattr(t, f"{kind}_options"))]


def options(kind: str = "export") -> list[Option]:
    """Every option the targets declare for ``kind`` (export or verify), each name once, in target order."""
    seen: dict[str, Option] = {}
    for t in all_targets():
        for o in getattr(t, f"{kind}_options"):
            seen.setdefault(o.name, o)
    return list(seen.values())


def owner_names(option: str, kind: str = "export", joiner: str = ", ") -> str:
    return joiner.join(sorted(t.name for t in owners(option, kind)))


def take_options(target: Target, given: dict, kind: str = "export", spell=None, artifact=None) -> dict:
    """The values of ``target``'s own options from ``given`` (defaults filled in). An option no target
    declares is refused; a strict option of other targets given a value is refused with its own line."""
    spell = spell or (lambda name: "--" + name.replace("_", "-"))
    known = {o.name: o for o in options(kind)}
    mine = {o.name: o for o in getattr(target, f"{kind}_options")}
    for name, value in given.items():
        if name not in known:
            raise EdgesnnError(f"{kind} takes no option {name!r}; options of the targets: {', '.join(known) or 'none'}")
        o = known[name]
        if name not in mine and o.strict and o.given(value):
            raise EdgesnnError(o.refused.format(flag=spell(name), target=target.name, artifact=artifact,
                                                owners=owner_names(name, kind, " and ")))
    return {name: given.get(name, o.default) for name, o in mine.items()}


def prepared(target: Target, board: str | None, options: dict, spell=None) -> tuple[dict, Any]:
    """(the target's option values, checked and resolved; its board) before any work."""
    own = target.prepare(take_options(target, options, spell=spell), spell)
    if not target.builds_for:
        return own, None
    from edgesnn import boards

    choices = f"{', '.join(boards.available(target.builds_for))} (or a .yaml file)"
    if board is None:
        raise EdgesnnError(f"--target {target.name} needs --board (one of {choices})")
    spec = boards.load(board)
    if spec.kind not in target.builds_for:
        raise EdgesnnError(f"board {spec.name} ({spec.kind}) cannot run --target {target.name}; boards for "
                           f"{target.name}: {choices}")
    return own, spec


def export_ir(target: str, ir: Path, out: Path, board: str | None = None, calibration: np.ndarray | None = None,
              **options) -> Path:
    """Write ``target``'s artifact of an IR file (a model.ir written by ``export``), without the checkpoint:
    a target reads nothing else. ``calibration``: NHWC float samples for the targets that measure firing
    rates (mcu, lava); None: the first 256 training samples of the data set the IR records (a temporal
    graph's target reads the recorded sequences itself)."""
    from edgesnn.ir import load as load_ir

    t = get(target)
    if t.source != "ir":
        raise EdgesnnError(f"--target {t.name} exports the torch model, not an IR (export a checkpoint)")
    own, spec = prepared(t, board, options)
    graph = load_ir(ir)
    check_takes(t, graph)
    if calibration is None and not graph.stateful:
        from edgesnn import artifact_data
        from edgesnn import data as datasets

        _, ds = artifact_data.load(Path(ir), None, arrays=True, graph=graph)
        calibration = datasets.to_nhwc(ds.x_train[:256])
    if Path(out).exists() and not Path(out).is_dir():
        raise EdgesnnError(f"{out}: exists and is not a folder (--out names the folder the artifact goes in)")
    if t.replaces_folder:
        from edgesnn.files import replaceable_dir

        replaceable_dir(out, t.files[0])
    return t.export(graph, Path(out), spec, own, calibration)


def check_takes(target: Target, graph) -> None:
    """A graph over sequences (state carried between steps) only for a target that says it runs one."""
    if graph.stateful and not target.stateful:
        raise EdgesnnError(f"--target {target.name} runs no stateful graph (a model over sequences)")


def verify(artifact: Path, data: str | None = None, ckpt: Path | None = None, ir: Path | None = None,
           samples: int | None = None, trust_code=False, **options) -> dict:
    """Verify whatever artifact ``artifact`` is: the target that recognizes it runs it (see
    :meth:`Target.verify`); ``options``: the targets' verify options (a strict one of another target is
    refused). Imports no torch unless the artifact's target needs it."""
    from edgesnn.files import check_not_interrupted

    artifact = Path(artifact)
    if samples is not None and samples < 1:
        raise EdgesnnError(f"--samples must be at least 1, got {samples}")
    check_not_interrupted(artifact if artifact.is_dir() else artifact.parent)  # a stopped export's half-swapped files
    target = recognize(artifact)
    if target is None:
        kinds = _listed(t.describes for t in by_rank())
        raise EdgesnnError(f"{artifact}: verify takes {kinds}")
    own = take_options(target, options, "verify", artifact=artifact)
    return checked_result(target, target.verify(artifact, data, ckpt=ckpt, ir=ir, samples=samples,
                                                trust_code=trust_code, options=own))


def profiled(path: Path) -> Target:
    """The target of an artifact profile takes, or one line listing what it takes."""
    target = recognize(path)
    if target is None or not target.profiled:
        raise EdgesnnError(f"{path}: profile takes {_listed(t.artifact for t in by_rank() if t.profiled)}")
    return target


def _listed(items) -> str:
    """'a, b, c or d', each once."""
    items = list(dict.fromkeys(i for i in items if i))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
