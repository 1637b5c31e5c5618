"""Measure edgesnn fit (docs/fit.md, "Measured"): trials per hour on this machine, the speed-up of
two Ray workers over one, DDP fine-tuning time with two processes against one, and the front found
for the digits CNN on each board against the shipped digits-sfa-cnn recipe's deployment there
(whether the fit's chosen point dominates it: no worse in accuracy, energy and memory, better in one).

    .venv/bin/python scripts/fit_results.py --trials 30 --json fit_results.json

Writes the Markdown tables into docs/fit.md (between the fit-results markers; --out another file) and
prints them; --json writes every number. The shipped deployment on a board is scored
exactly as a trial is (the same recipe machinery, energy and memory): the recipe's checkpoint
(trained as the recipe trains it), no compression, the board's first target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgesnn import boards, checkpoint, pipeline  # noqa: E402
from edgesnn import recipes as recipe_files  # noqa: E402
from edgesnn.fit import fit  # noqa: E402
from edgesnn.fit import front, space, trial  # noqa: E402
from markdown_section import replace_section  # noqa: E402

BOARDS = ("nucleo-f446re", "nrf52840", "loihi2")
SHIPPED = "digits-sfa-cnn"


def train_shipped(work: Path) -> Path:
    """The shipped recipe's checkpoint, trained as its train stage trains it."""
    r = recipe_files.load(SHIPPED)
    out = work / "checkpoint"
    if not (out / checkpoint.CONFIG).is_file():
        pipeline.train_model(r.model.name, r.data, r.train.epochs, out, D=r.model.D, lr=r.train.lr,
                             seed=r.train.seed, model_kwargs=r.model.kwargs)
    return out


def shipped_point(ckpt: Path, board_name: str, work: Path, source: str) -> dict:
    """The shipped recipe's deployment on the board, scored as a fit trial is, in the fit's energy
    (``source``: the board's model or the 45 nm convention, whichever the fit compared)."""
    board = boards.load(board_name)
    config = checkpoint.read_config(ckpt)
    target = next(t for t in board.targets if t in space.FIT_TARGETS)
    point = {"method": "none", "D": int(config.get("D", 4)), "target": target}
    if target == "mcu":
        point["event_driven"] = "auto"
    recipe = space.recipe(point, ckpt, config, board_name, 1, 0, f"shipped-{board_name}")
    m = trial.run_child(recipe, work / f"shipped-{board_name}", board_name)
    if "error" in m:
        raise SystemExit(f"shipped deployment on {board_name}: {m['error']}")
    acc, energy, memory = front.objectives(m, source)
    return {"point": point, "accuracy": acc, "energy_uj": energy, "memory_bytes": int(memory), "energy": source}


def dominates(a: dict, b: dict) -> bool:
    ka, kb = (-a["accuracy"], a["energy_uj"], a["memory_bytes"]), (-b["accuracy"], b["energy_uj"], b["memory_bytes"])
    return all(x <= y for x, y in zip(ka, kb)) and ka != kb


def timed_fit(ckpt: Path, board: str, out: Path, trials: int, **kw) -> tuple[dict, float]:
    start = time.monotonic()
    r = fit(ckpt, board, out, trials=trials, **kw)
    return r, time.monotonic() - start


def ray_head(cpus: int):
    """A local Ray head (127.0.0.1) with ``cpus`` worker CPUs in its own process group: (process, address, tmp)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    p = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port),
                          "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
                          "--disable-usage-stats", "--temp-dir", tmp, "--block"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return p, f"127.0.0.1:{port}", tmp


def stop(p) -> None:
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def ddp_seconds(ckpt: Path, work: Path, nproc: int, epochs: int) -> float:
    out = work / f"ddp-{nproc}"
    cmd = [sys.executable, "-m", "edgesnn", "quantize", str(ckpt), "--method", "qpsnn", "--epochs", str(epochs),
           "--out", str(out)] + (["--nproc-per-node", str(nproc)] if nproc > 1 else [])
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30, help="trials per board")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per trial")
    ap.add_argument("--boards", nargs="+", default=list(BOARDS))
    ap.add_argument("--work", type=Path, default=None, help="folder for checkpoints and fits (default: a temporary one)")
    ap.add_argument("--speedup-trials", type=int, default=6, help="trials of each Ray speed-up fit (0: skip)")
    ap.add_argument("--ddp-epochs", type=int, default=5, help="epochs of the DDP timing (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "fit.md", help="Markdown file to write the section into")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fit-results-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = train_shipped(work)
    results = {"machine": {"cpus": os.cpu_count()}, "boards": {}}
    for b in args.boards:
        r, seconds = timed_fit(ckpt, b, work / f"fit-{b}", args.trials, epochs=args.epochs)
        ran = r["completed"] + r["failed"]
        shipped = shipped_point(ckpt, b, work, r["energy"])
        chosen = r["chosen"]
        results["boards"][b] = {
            "trials": ran, "completed": r["completed"], "failed": r["failed"], "seconds": seconds,
            "trials_per_hour": 3600 * ran / seconds if seconds else None, "energy": r["energy"],
            "front": [{k: p[k] for k in ("number", "point", "accuracy", "energy_uj", "memory_bytes", "feasible")}
                      for p in (next(t for t in r["trials"] if t["number"] == n) | _objectives(r, n) for n in r["front"])],
            "chosen": None if chosen is None else {k: chosen[k] for k in ("number", "point", "accuracy", "energy_uj",
                                                                           "memory_bytes")},
            "shipped": shipped, "chosen_dominates_shipped": chosen is not None and dominates(chosen, shipped)}
    if args.speedup_trials:
        times = {}
        for cpus in (1, 2):
            p, address, tmp = ray_head(cpus)
            try:
                _, times[cpus] = timed_fit(ckpt, args.boards[0], work / f"ray-{cpus}", args.speedup_trials,
                                           epochs=args.epochs, ray=address)
            finally:
                stop(p)
                shutil.rmtree(tmp, ignore_errors=True)
        results["ray"] = {"board": args.boards[0], "trials": args.speedup_trials, "seconds_1_worker": times[1],
                          "seconds_2_workers": times[2], "speedup": times[1] / times[2]}
    if args.ddp_epochs:
        one, two = ddp_seconds(ckpt, work, 1, args.ddp_epochs), ddp_seconds(ckpt, work, 2, args.ddp_epochs)
        results["ddp"] = {"epochs": args.ddp_epochs, "seconds_1_process": one, "seconds_2_processes": two,
                          "speedup": one / two}
    text = markdown(results)
    print(text)
    replace_section(args.out, "fit-results", text.strip())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _objectives(r: dict, number: int) -> dict:
    t = next(t for t in r["trials"] if t["number"] == number)
    acc, energy, memory = front.objectives(t["metrics"], r["energy"])
    return {"accuracy": acc, "energy_uj": energy, "memory_bytes": int(memory)}


def markdown(results: dict) -> str:
    lines = ["| board | trials | trials/hour | energy | chosen (acc, uJ, B) | shipped (acc, uJ, B) | chosen dominates |",
             "|---|---:|---:|---|---|---|---|"]
    for b, r in results["boards"].items():
        c, s = r["chosen"], r["shipped"]
        show = lambda p: "-" if p is None else f"{p['accuracy']:.4f}, {p['energy_uj']:.4f}, {p['memory_bytes']}"  # noqa: E731
        lines.append(f"| {b} | {r['trials']} ({r['failed']} failed) | {r['trials_per_hour']:.0f} | {r['energy']} | "
                     f"{show(c)} | {show(s)} | {'yes' if r['chosen_dominates_shipped'] else 'no'} |")
    if "ray" in results:
        x = results["ray"]
        lines += ["", f"Ray, {x['trials']} trials on {x['board']}: 1 worker {x['seconds_1_worker']:.0f} s, 2 workers "
                      f"{x['seconds_2_workers']:.0f} s, speed-up {x['speedup']:.2f}x"]
    if "ddp" in results:
        x = results["ddp"]
        lines += ["", f"DDP quantize, {x['epochs']} epochs: 1 process {x['seconds_1_process']:.0f} s, 2 processes "
                      f"{x['seconds_2_processes']:.0f} s, speed-up {x['speedup']:.2f}x"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
