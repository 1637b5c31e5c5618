"""One trial of ``edgesnn fit``: ``edgesnn run`` of the point's recipe into its own run folder, then
its numbers read back from what the run wrote (its manifest summary and profile report).

A trial runs in a child process (``python -m edgesnn.fit.worker``), here or on a Ray worker, so a
trial that crashes (a segfault, running out of memory, a kill) costs that trial only: the search
records it as failed and goes on. The run folder machinery (edgesnn.run) makes each trial's folder
kill-safe; a trial's folder is named by its recipe's hash, so a fit killed mid-trial resumes that
trial's stages where they stopped, and a point proposed twice costs nothing the second time.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from edgesnn import boards, proc
from edgesnn.errors import EdgesnnError
from edgesnn.limits import read_json
from edgesnn.recipes import Recipe

TRIALS = "trials"


def key(recipe: Recipe) -> str:
    """A trial folder's name: the hash of its recipe (the name left out)."""
    text = json.dumps(recipe.model_dump(exclude={"name"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_child(recipe: Recipe, folder: Path, board_spec: str, trust_code=False, timeout: float | None = None,
              threads: int = 1) -> dict:
    """Run the trial in a child process; its metrics, or ``{"error": line}`` when it failed or crashed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgesnn-trial-", dir=folder.parent) as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"recipe": recipe.model_dump(), "folder": str(folder), "board": board_spec,
                                    "trust_code": trust_code if isinstance(trust_code, bool) else sorted(trust_code),
                                    "result": str(result), "threads": threads}))
        try:  # its own process group, killed whole when this ends (edgesnn.proc); and it dies with the fit
            with proc.popen([sys.executable, "-m", "edgesnn.fit.worker", str(spec)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent) as p:
                _, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"the trial ran longer than --trial-timeout {timeout:g} s and was stopped"}
        if result.is_file():
            return json.loads(result.read_text())
        lines = [ln for ln in (stderr or "").splitlines() if ln.strip()]
        why = lines[-1][:300] if lines else ""
        code = p.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return {"error": f"the trial's process crashed ({how})" + (f": {why}" if why else "")}


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that started it ends (a fit killed with SIGKILL
    can end nothing itself). Linux's PR_SET_PDEATHSIG; elsewhere nothing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_here(recipe: Recipe, folder: Path, board_spec: str, trust_code=False) -> dict:
    """Run the trial in this process (the worker's body): its metrics; a user error is ``{"error": line}``."""
    from edgesnn.run import run_recipe

    try:
        manifest = run_recipe(recipe, Path(folder), trust_code=trust_code)
        return metrics(manifest, Path(folder), boards.load(board_spec))
    except EdgesnnError as e:
        return {"error": str(e)}


def metrics(manifest: dict, folder: Path, board: boards.Board) -> dict:
    """Accuracy (the IR's, over the whole test split), memory, energy, latency and fit of a finished trial."""
    rows = manifest["summary"]
    ir = next(r for r in rows if r["export"] == "ir" and "board" not in r)
    exports = [r for r in rows if "board" not in r]
    prof_row = next(r for r in rows if "board" in r)
    target_row = next(r for r in exports if r["export"] == prof_row["export"])
    profile_file = next(p for p in manifest["recipe"]["profile"])
    report = read_json(folder / f"profile-{profile_file['export']}-{Path(profile_file['board']).stem}.json",
                       "profile result")
    need = {k: int(v) for k, v in (report.get("needed_bytes") or {}).items() if v is not None}
    memory = sum(need.values()) if need else int(target_row["bytes"])
    instructions = report.get("instructions_per_inference")
    latency = instructions / board.clock_hz * 1e3 if instructions and board.clock_hz else None
    return {
        "accuracy": float(ir["accuracy"]), "samples": int(ir["samples"]),
        "verified": all(r.get("passed") is not False for r in exports),
        "verify": {r["export"]: {"mismatches": r["mismatches"], "samples": r["samples"], "passed": r.get("passed")}
                   for r in exports},
        "fits": bool(report["fits"]), "flash_bytes": need.get("flash"), "ram_bytes": need.get("ram"),
        "memory_bytes": memory, "export_bytes": int(target_row["bytes"]),
        "cores": report.get("needed_cores"), "available_cores": report.get("available_cores"),
        "energy_45nm_uj": report["energy_45nm_pj"] / 1e6,
        "energy_board_uj": None if report.get("energy_board_pj") is None else report["energy_board_pj"] / 1e6,
        "latency_ms": latency,
        "artifacts": sorted({a["path"].split("/")[0] for a in manifest["artifacts"]}),
    }
