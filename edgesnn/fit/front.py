"""Budgets, the Pareto front of accuracy vs energy vs memory, the chosen point, and by how much the
closest trial misses the budgets when no trial meets them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgesnn import boards
from edgesnn.errors import EdgesnnError

ENERGY_SOURCES = ("board", "45nm")


@dataclass(frozen=True)
class Budgets:
    """Limits a deployment must meet; None: no limit. :func:`with_board` fills flash and RAM from the board."""

    max_flash: int | None = None  # bytes
    max_ram: int | None = None  # bytes
    max_energy_uj: float | None = None  # per inference, in the fit's energy (see energy_source)
    max_latency_ms: float | None = None  # per inference
    min_accuracy: float | None = None  # of the IR over the test split, 0..1

    def check(self) -> None:
        for name, v in asdict(self).items():
            if v is not None and not v > 0:
                raise EdgesnnError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.min_accuracy is not None and self.min_accuracy > 1:
            raise EdgesnnError(f"--min-accuracy is a fraction in (0, 1], got {self.min_accuracy}")

    def with_board(self, board: boards.Board) -> Budgets:
        """The board's flash and RAM where no limit was given (its cores are always a limit: see :func:`limits`)."""
        return Budgets(self.max_flash if self.max_flash is not None else board.flash_bytes,
                       self.max_ram if self.max_ram is not None else board.ram_limit_bytes,
                       self.max_energy_uj, self.max_latency_ms, self.min_accuracy)


def energy_source(board: boards.Board, targets) -> str:
    """The energy the fit compares: the board's own model where it has one for every searched target
    (Loihi 2's per-operation figures; an MCU's energy per cycle on the mcu target), else the 45 nm
    convention every artifact has."""
    if board.kind == "neuromorphic":
        return "board"
    if board.kind == "mcu" and (board.energy_pj or {}).get("cycle") and board.qemu_machine and set(targets) == {"mcu"}:
        return "board"
    return "45nm"


def energy_uj(m: dict, source: str) -> float:
    value = m["energy_board_uj"] if source == "board" else m["energy_45nm_uj"]
    if value is None:
        raise EdgesnnError("the trial's profile has no board energy")
    return float(value)


def objectives(m: dict, source: str) -> tuple[float, float, float]:
    """(accuracy to maximize, energy in uJ and memory in bytes to minimize)."""
    return float(m["accuracy"]), energy_uj(m, source), float(m["memory_bytes"])


def limits(m: dict, budgets: Budgets, source: str) -> list[dict]:
    """Each limit on a trial: its value, the limit, and the miss (> 0: by how much it is exceeded)."""
    rows = []

    def add(name, value, limit, at_most=True, unit=""):
        if limit is None:
            return
        if value is None:
            rows.append({"budget": name, "value": None, "limit": limit, "miss": None, "unit": unit})
            return
        miss = (value - limit) if at_most else (limit - value)
        rows.append({"budget": name, "value": value, "limit": limit, "miss": max(0.0, float(miss)), "unit": unit})

    add("flash", m.get("flash_bytes"), budgets.max_flash, unit="B")
    add("ram", m.get("ram_bytes"), budgets.max_ram, unit="B")
    if m.get("available_cores") is not None:
        add("cores", m.get("cores"), m["available_cores"], unit="cores")
    add("energy", energy_uj(m, source), budgets.max_energy_uj, unit="uJ")
    add("latency", m.get("latency_ms"), budgets.max_latency_ms, unit="ms")
    add("accuracy", m["accuracy"], budgets.min_accuracy, at_most=False)
    rows.append({"budget": "verified", "value": bool(m["verified"]), "limit": True,
                 "miss": 0.0 if m["verified"] else 1.0, "unit": ""})
    return rows


def violations(rows: list[dict]) -> list[float]:
    """Optuna's constraint values (<= 0: met): each miss relative to its limit; an unknown value misses by 1."""
    out = []
    for r in rows:
        if r["miss"] is None:
            out.append(1.0)
        elif r["budget"] == "verified":
            out.append(r["miss"])
        else:
            out.append(r["miss"] / abs(r["limit"]))
    return out


def feasible(rows: list[dict]) -> bool:
    return all(r["miss"] == 0 for r in rows)


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point dominates (accuracy up, energy and memory down), by accuracy then energy."""

    def dominates(a, b):
        ka, kb = (-a["accuracy"], a["energy_uj"], a["memory_bytes"]), (-b["accuracy"], b["energy_uj"], b["memory_bytes"])
        return all(x <= y for x, y in zip(ka, kb)) and ka != kb

    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (-p["accuracy"], p["energy_uj"], p["memory_bytes"], p["number"]))


def choose(points: list[dict]) -> dict | None:
    """The most accurate point that meets every budget (then the least energy, memory, trial number)."""
    ok = [p for p in points if p["feasible"]]
    return min(ok, key=lambda p: (-p["accuracy"], p["energy_uj"], p["memory_bytes"], p["number"])) if ok else None


def closest(points: list[dict]) -> dict | None:
    """With nothing feasible: the point whose misses, each relative to its limit, add up least."""
    return min(points, key=lambda p: (sum(violations(p["limits"])), -p["accuracy"], p["number"])) if points else None
