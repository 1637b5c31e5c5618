"""Boards: one YAML file per board in boards/ (memory, clock, the QEMU machine that emulates its
core, and where the figures come from). ``--board`` takes a board name or a path to a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from edgesnn.errors import EdgesnnError

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
KINDS = ("mcu", "linux-aarch64")


@dataclass(frozen=True)
class Board:
    name: str
    kind: str  # "mcu" (bare metal, Cortex-M) or "linux-aarch64"
    cpu: str  # gcc's -mcpu
    clock_hz: int
    flash_bytes: int | None  # None: no flash limit (a Linux board)
    ram_bytes: int
    qemu_machine: str | None = None  # qemu-system-arm -M for an MCU's core
    sources: list[str] = field(default_factory=list)


def available() -> list[str]:
    """Boards a target can be built for (boards/loihi2.yaml, a neuromorphic chip's limits, is not one)."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.yaml") if _kind(p) in KINDS)


def _kind(path: Path) -> str | None:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return raw.get("kind") if isinstance(raw, dict) else None


def load(spec: str | Path) -> Board:
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml"):
        path = BOARDS_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise EdgesnnError(f"unknown board {spec!r}; available: {', '.join(available())} (or a .yaml file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise EdgesnnError(f"{path}: unreadable board file ({str(e).splitlines()[0]})") from None
    names = {f.name for f in fields(Board)}
    if not isinstance(raw, dict) or not {"name", "kind", "cpu", "clock_hz", "ram_bytes"} <= set(raw) or set(raw) - names:
        raise EdgesnnError(f"{path}: a board file needs name, kind, cpu, clock_hz, ram_bytes (and may have "
                           f"{', '.join(sorted(names - {'name', 'kind', 'cpu', 'clock_hz', 'ram_bytes'}))})")
    board = Board(**raw)
    if board.kind not in KINDS:
        raise EdgesnnError(f"{path}: kind must be one of {', '.join(KINDS)}, got {board.kind!r}")
    return board


def check_fits(board: Board, flash: int, ram: int) -> None:
    """Refuse, with needed vs available bytes per memory, a program that does not fit the board."""
    short = []
    if board.flash_bytes is not None and flash > board.flash_bytes:
        short.append(f"flash needs {flash} bytes, has {board.flash_bytes}")
    if ram > board.ram_bytes:
        short.append(f"RAM needs {ram} bytes, has {board.ram_bytes}")
    if short:
        raise EdgesnnError(f"the model does not fit {board.name}: {'; '.join(short)}")
