"""Boards: one YAML file per board in edgesnn/shipped/boards/ (ISA and core, clock, memory, power,
energy per operation, the targets that run on it, the QEMU machine that emulates its core, and where
every figure comes from). ``--board`` takes a board name or a path to a YAML file.

The schema (``FIELDS``): every board has ``name``, ``kind``, ``isa``, ``targets`` and ``sources``;
an ``mcu`` also ``cpu``, ``clock_hz``, ``flash_bytes`` and ``ram_bytes``; a ``linux-aarch64``
board ``cpu``, ``clock_hz`` and ``memory_bytes``. Everything else may be left out or ``null``
(unknown: a figure without a source stays null and a ``notes`` entry says so). A figure a board
file cannot know (the host's memory and cores) is read from the running machine by :func:`load`.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgesnn import limits, resources
from edgesnn.errors import EdgesnnError

BOARDS_DIR = resources.folder("boards")
KINDS = ("mcu", "linux-aarch64", "neuromorphic", "host")
BUILD_KINDS = ("mcu", "linux-aarch64")  # what the MCU backend (--target mcu) can build for
TARGETS = ("ir", "onnx", "tflite", "mcu", "lava")


@dataclass(frozen=True)
class Board:
    name: str
    kind: str  # one of KINDS
    isa: str | None  # instruction set, e.g. "Armv7E-M (Thumb-2)" (host: read at load)
    cpu: str | None = None  # gcc's -mcpu (mcu, linux-aarch64)
    cores: int | None = None
    clock_hz: int | None = None  # the CPU's top clock
    flash_bytes: int | None = None  # MCU: on-chip (or board) flash for code and constants
    ram_bytes: int | None = None  # MCU: the SRAM one static arena can use
    memory_bytes: int | None = None  # Linux boards: DRAM (the smallest variant sold)
    idle_power_w: float | None = None
    active_power_w: float | None = None
    energy_pj: dict[str, float] = field(default_factory=dict)  # per operation: cycle, synop, neuron_update
    targets: list[str] = field(default_factory=list)  # edgesnn targets whose artifact runs on it
    qemu_machine: str | None = None  # qemu-system-arm -M for an MCU's core
    qemu_user: str | None = None  # user-mode emulator for a Linux board's programs (qemu-aarch64)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # uncertainty, derivations
    figures: dict | None = None  # neuromorphic chips: per-chip limits (backends/lava/resources.py reads them)

    @property
    def ram_limit_bytes(self) -> int | None:
        """What a program's RAM is checked against: the MCU's SRAM, else the board's memory."""
        return self.ram_bytes if self.ram_bytes is not None else self.memory_bytes


# field -> (type check, description for errors, kinds that require it; "all" = every kind)
_STR, _INT, _NUM = "a string", "an integer", "a number"
_STR_LIST, _NUM_MAP, _MAP = "a list of strings", "a mapping of operation name to number", "a mapping"
FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "name": (_STR, KINDS), "kind": (_STR, KINDS), "isa": (_STR, ("mcu", "linux-aarch64", "neuromorphic")),
    "cpu": (_STR, BUILD_KINDS), "cores": (_INT, ()), "clock_hz": (_INT, BUILD_KINDS),
    "flash_bytes": (_INT, ("mcu",)), "ram_bytes": (_INT, ("mcu",)), "memory_bytes": (_INT, ("linux-aarch64",)),
    "idle_power_w": (_NUM, ()), "active_power_w": (_NUM, ()), "energy_pj": (_NUM_MAP, ()),
    "targets": (_STR_LIST, KINDS), "qemu_machine": (_STR, ()), "qemu_user": (_STR, ()),
    "sources": (_STR_LIST, KINDS), "notes": (_STR_LIST, ()), "figures": (_MAP, ()),
}


def available(kinds: tuple[str, ...] | None = None) -> list[str]:
    """Shipped board names (all kinds, or only ``kinds``; a file whose kind cannot be read is skipped then)."""
    names = sorted(p.stem for p in BOARDS_DIR.glob("*.yaml"))
    if kinds is None:
        return names
    return [n for n in names if _kind(BOARDS_DIR / f"{n}.yaml") in kinds]


def _kind(path: Path) -> str | None:
    try:
        raw = limits.read_yaml(path, "board file")
    except EdgesnnError:
        return None
    return raw.get("kind") if isinstance(raw, dict) else None


def resolve(spec: str | Path) -> Path:
    """A shipped board's name (edgesnn/shipped/boards/NAME.yaml) or a .yaml/.yml path."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise EdgesnnError(f"{path}: no such board file")
        return path
    path = BOARDS_DIR / f"{spec}.yaml"
    if not path.is_file():
        raise EdgesnnError(f"unknown board {spec!r}; available: {', '.join(available())} (or a .yaml file)")
    return path


def load(spec: str | Path) -> Board:
    """The board named ``spec`` or read from a YAML file; a malformed file fails with one line naming the field."""
    path = resolve(spec)
    raw = _read(path)
    kind = raw.get("kind")
    if "kind" in raw and (not isinstance(kind, str) or kind not in KINDS):
        raise EdgesnnError(f"{path}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise EdgesnnError(f"{path}: unknown field {unknown[0]!r}; a board file has {', '.join(FIELDS)}")
    for name, (expected, required_for) in FIELDS.items():
        if raw.get(name) is None:
            if kind in required_for or name in ("name", "kind"):
                why = "" if name in ("name", "kind") else f" (required for kind {kind})"
                raise EdgesnnError(f"{path}: missing field {name!r}{why}")
            continue
        _check_type(path, name, raw[name], expected)
    figures = raw.get("figures") or {}
    for name, figure in figures.items():
        value = figure.get("value") if isinstance(figure, dict) else None
        if not (_number(value) and math.isfinite(value) and value > 0):
            raise EdgesnnError(f"{path}: figure {limits._short(repr(name))} must be a mapping with a positive 'value', "
                               f"got {limits._short(repr(figure), 60)}")
    if kind == "neuromorphic" and "neuro_cores_per_chip" not in figures:
        raise EdgesnnError(f"{path}: a neuromorphic board needs figures.neuro_cores_per_chip (the cores a model must fit)")
    bad = [t for t in raw["targets"] if t not in TARGETS]
    if bad:
        raise EdgesnnError(f"{path}: field 'targets' has unknown target {bad[0]!r}; targets: {', '.join(TARGETS)}")
    values = {k: v for k, v in raw.items() if v is not None}
    values.setdefault("isa", None)
    board = Board(**values)
    return _with_host_figures(board) if board.kind == "host" else board


def load_all(specs: list[str] | None = None) -> list[Board]:
    """Every shipped board (or the named ones / YAML files), in order."""
    return [load(s) for s in (specs or available())]


def as_dict(board: Board) -> dict:
    return asdict(board)


def _read(path: Path) -> dict:
    """The file's YAML mapping: UTF-8, at most limits.MAX_JSON_BYTES, no aliases, bounded depth."""
    try:
        size = path.stat().st_size
        if size > limits.MAX_JSON_BYTES:
            raise EdgesnnError(f"{path}: {size:,} bytes, more than the {limits.MAX_JSON_BYTES:,} a board file may have")
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise EdgesnnError(f"{path}: unreadable board file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise EdgesnnError(f"{path}: not a text (UTF-8) board file (byte {e.start})") from None
    raw = limits.load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise EdgesnnError(f"{path}: a board file is a YAML mapping of fields (name, kind, ...), "
                           f"got {type(raw).__name__}")
    return raw


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_type(path: Path, name: str, value, expected: str) -> None:
    """Counts and sizes (cores, clock, memories) are positive integers; powers and energies finite and >= 0."""
    def amount(v) -> bool:
        return _number(v) and math.isfinite(v) and v >= 0

    ok = {
        _STR: lambda v: isinstance(v, str),
        _INT: lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        _NUM: amount,
        _STR_LIST: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        _NUM_MAP: lambda v: isinstance(v, dict) and all(isinstance(k, str) and amount(x) for k, x in v.items()),
        _MAP: lambda v: isinstance(v, dict),
    }[expected](value)
    if not ok:
        shown = limits._short(repr(value), 40)
        article = {_INT: "a positive ", _NUM: "a finite non-negative "}.get(expected, "")
        what = expected.split(" ", 1)[1] if article else expected
        if expected == _NUM_MAP:
            what = "a mapping of operation name to a finite non-negative number"
        raise EdgesnnError(f"{path}: field {name!r} must be {article}{what}, got {type(value).__name__} {shown}")


def _with_host_figures(board: Board) -> Board:
    """The host's ISA, cores and memory, read from the running machine where the file leaves them null."""
    memory = None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    return replace(board, isa=board.isa or platform.machine() or None, cores=board.cores or os.cpu_count(),
                   memory_bytes=board.memory_bytes or memory)


def check_fits(board: Board, flash: int, ram: int) -> None:
    """Refuse, with needed vs available bytes per memory, a program that does not fit the board."""
    short = []
    if board.flash_bytes is not None and flash > board.flash_bytes:
        short.append(f"flash needs {flash} bytes, has {board.flash_bytes}")
    limit = board.ram_limit_bytes
    if limit is not None and ram > limit:
        short.append(f"RAM needs {ram} bytes, has {limit}")
    if short:
        raise EdgesnnError(f"the model does not fit {board.name}: {'; '.join(short)}")
