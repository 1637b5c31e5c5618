"""The search of ``edgesnn fit``: an Optuna multi-objective study (TPE with the budgets as
constraints) whose SQLite storage is OUT/study.db, so a killed fit resumes where it stopped.

The study only lives on this machine: trials are asked and told here, and run elsewhere (child
processes here, or Ray tasks on a cluster: edgesnn.fit.ray_pool), each in its own run folder
OUT/trials/KEY (edgesnn.fit.trial). A trial that was running when a fit was killed is marked
failed ("interrupted") and its point asked again first, so its folder's finished stages are kept.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import shutil
import time
from pathlib import Path

from edgesnn import boards, checkpoint
from edgesnn.errors import EdgesnnError
from edgesnn.files import output_lock, sha256_file, user_entries
from edgesnn.fit import front, space, trial
from edgesnn.fit.front import Budgets

STUDY, STUDY_NAME = "study.db", "edgesnn-fit"
OWN = (STUDY, "trials", "fit.json", "front.json", "chosen.yaml", "report")  # what a fit folder may hold
DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, energy (uJ), memory (bytes)


def fit(ckpt: Path, board_spec: str, out: Path, budgets: Budgets = Budgets(), trials: int = 20,
        timeout: float | None = None, epochs: int = 1, seed: int = 0, methods=None, targets=None, D=None,
        ray: str | None = None, jobs: int = 1, trial_timeout: float | None = None, trust_code=False,
        threads: int = 1, on_trial=None, stream_dtypes=None) -> dict:
    """Search, then write OUT/fit.json (every trial), front.json, chosen.yaml and report/; returns fit.json's content.

    ``trials``: how many trials the study holds when the search stops (a resumed fit runs the rest);
    ``timeout``: seconds after which no new trial starts (the first always does). ``ray``: a Ray
    cluster's address or ``auto``; else ``jobs`` child processes here. ``on_trial(number, record)``
    is called as each ends. ``methods``, ``targets``, ``D`` and ``stream_dtypes`` narrow the search."""
    budgets.check()
    if trials < 1:
        raise EdgesnnError(f"--trials must be at least 1, got {trials}")
    if epochs < 1:
        raise EdgesnnError(f"--epochs must be at least 1, got {epochs}")
    if jobs < 1:
        raise EdgesnnError(f"--jobs must be at least 1, got {jobs}")
    for name, v in (("--timeout", timeout), ("--trial-timeout", trial_timeout)):
        if v is not None and not v > 0:
            raise EdgesnnError(f"{name} must be positive, got {v}")
    ckpt = Path(ckpt).resolve()
    board = boards.load(board_spec)
    checkpoint.read_config(ckpt)  # a bad checkpoint before a cluster is joined
    if ray is not None:  # an unreachable cluster before any work
        from edgesnn.fit.ray_pool import RayPool

        pool = RayPool(ray)
    else:
        pool = LocalPool(jobs)
    try:
        return _fit(ckpt, board, board_spec, Path(out), budgets, trials, timeout, epochs, seed, methods, targets, D,
                    pool, trial_timeout, trust_code, threads, on_trial, stream_dtypes)
    finally:
        pool.close()


def _fit(ckpt, board, board_spec, out, budgets, trials, timeout, epochs, seed, methods, targets, D, pool,
         trial_timeout, trust_code, threads, on_trial, stream_dtypes) -> dict:
    config = checkpoint.read_config(ckpt)
    budgets = budgets.with_board(board)
    sp = space.build(ckpt, board, methods, targets, D, trust_code, stream_dtypes)
    source = front.energy_source(board, sp.targets)
    if budgets.max_latency_ms is not None and not (board.kind == "mcu" and board.qemu_machine and board.clock_hz
                                                   and set(sp.targets) == {"mcu"}):
        raise EdgesnnError(f"--max-latency-ms: fit estimates latency on an MCU board QEMU emulates, on the mcu target "
                           f"(--target mcu): instructions per inference / clock; {board.name} with "
                           f"{', '.join(sp.targets)} has no such estimate")
    settings = {"checkpoint": _checkpoint_hash(ckpt), "board": board.name, "space": sp.as_dict(), "epochs": epochs,
                "seed": seed, "energy": source}
    with output_lock(out, "fit") as real:
        stray = [e for e in user_entries(real) if e not in OWN]
        if stray:
            raise EdgesnnError(f"{out}: not an edgesnn fit folder ({stray[0]} is not a fit's); choose a new or empty "
                               "folder for --out")
        study = _study(real, settings, seed, budgets, source)
        for scratch in (real / trial.TRIALS).glob(".edgesnn-trial-*"):  # a killed fit's (we hold the lock)
            shutil.rmtree(scratch, ignore_errors=True)
        _search(study, sp, ckpt, config, board_spec, real, budgets, source, trials, timeout, epochs, seed, pool,
                trial_timeout, trust_code, threads, on_trial)
        from edgesnn.fit.results import write_results

        return write_results(study, real, out, board, budgets, source, settings)


class LocalPool:
    """Trials in ``jobs`` child processes on this machine."""

    def __init__(self, jobs: int):
        self.jobs, self.executor = jobs, cf.ThreadPoolExecutor(jobs)
        self.where = f"{jobs} local process{'es' if jobs > 1 else ''}"

    def submit(self, recipe, folder, board_spec, trust_code, timeout, threads) -> cf.Future:
        return self.executor.submit(trial.run_child, recipe, folder, board_spec, trust_code, timeout, threads)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _checkpoint_hash(ckpt: Path) -> str:
    h = hashlib.sha256()
    for name in (checkpoint.WEIGHTS, checkpoint.CONFIG):
        h.update(sha256_file(ckpt / name).encode())
    return h.hexdigest()


def _study(folder: Path, settings: dict, seed: int, budgets: Budgets, source: str):
    """The study in folder/study.db, new or resumed (the same checkpoint, board and space only)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)  # budgets: Trial.set_constraint
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / STUDY}")
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=list(DIRECTIONS), sampler=sampler,
                                load_if_exists=True)
    old = study.user_attrs.get("settings")
    if old is None:
        study.set_user_attr("settings", settings)
    elif old != settings:
        what = next(k for k in settings if old.get(k) != settings[k])
        raise EdgesnnError(f"{folder}: holds a fit of another {what} ({old.get(what)!r}); resume it with the same "
                           "checkpoint, board and search options, or choose another --out")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # only a fit holding this folder's lock runs trials: a running one was stopped with its fit
        storage.set_trial_user_attr(t._trial_id, "error", "interrupted: the fit was stopped during this trial")
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
    return study


def _counted(study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("interrupted"))


def _search(study, sp, ckpt, config, board_spec, folder, budgets, source, trials, timeout, epochs, seed, pool,
            trial_timeout, trust_code, threads, on_trial) -> None:
    """Ask, run and tell until the study holds ``trials`` trials or ``timeout`` seconds have passed."""
    start = time.monotonic()
    running: dict[cf.Future, tuple] = {}
    budget_left = trials - _counted(study)
    started = 0
    board_ref = str(Path(board_spec).resolve()) if board_spec.endswith((".yaml", ".yml")) else board_spec
    while budget_left > 0 or running:
        can_start = budget_left > 0 and (timeout is None or not started or time.monotonic() - start < timeout)
        if can_start and len(running) < pool.jobs:
            t = study.ask()
            point = space.suggest(t, sp)
            name = f"fit-{Path(board_ref).stem}"
            recipe = space.recipe(point, ckpt, config, board_ref, epochs, seed, name)
            key = trial.key(recipe)
            same = [f for f, (_, k, _) in running.items() if k == key]  # one run per folder: wait for it
            for f in same:
                _told(study, f, *running.pop(f), folder, budgets, source, on_trial)
            t.set_user_attr("point", point)
            t.set_user_attr("folder", f"{trial.TRIALS}/{key}")
            future = pool.submit(recipe, folder / trial.TRIALS / key, board_ref, trust_code, trial_timeout, threads)
            running[future] = (t, key, recipe)
            budget_left, started = budget_left - 1, started + 1
            continue
        if not running:
            break
        done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
        for f in done:
            _told(study, f, *running.pop(f), folder, budgets, source, on_trial)


def _told(study, future, t, key, recipe, folder, budgets, source, on_trial) -> None:
    """Tell the study a finished trial: its objectives and budget misses, or that it failed."""
    import optuna

    try:
        result = future.result()
    except Exception as e:  # noqa: BLE001 - a Ray worker lost, a task that could not start: the trial failed
        result = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"}
    if "error" in result:
        t.set_user_attr("error", result["error"])
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    else:
        rows = front.limits(result, budgets, source)
        t.set_user_attr("metrics", result)
        for row, v in zip(rows, front.violations(rows)):
            t.set_constraint(row["budget"], v)
        study.tell(t, list(front.objectives(result, source)))
    if on_trial:
        on_trial(t.number, {"point": t.user_attrs.get("point"), **result})
