"""Run cases through the fork server and check what each one did.

For each case: write its files into a fresh folder (the artifact under test, a previous valid
output where the command writes one, a ``victim.txt`` no command may touch), snapshot the
folder, run the command, snapshot again, and check:

- the exit status is 1 or 2, or 0 where the case allows it (a mutation that may leave the file
  valid) or requires it (a valid file);
- status 1: exactly one line of stderr starts with ``error:``; status 0: none does;
- no ``Traceback`` in stdout or stderr;
- not killed by a signal, not over the time limit, peak RSS under the address-space limit,
  nothing of the process group left running;
- nothing changed in the folder outside the command's outputs (and its scratch folders), no
  leftovers in its TMPDIR;
- a failed command left each previous output byte for byte as it was (``verify``'s --json
  report may be replaced by a complete new one: it exits 1 when the artifact differs, after
  writing the report of that); a successful one wrote each output well formed (JSON strictly
  parsable; a checkpoint, IR or run folder complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hostile.cases import VICTIM, Case

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)  # the venv's python (tests and scripts run in it)
SERVER = Path(__file__).with_name("server.py")
LIMIT = 4 << 30  # RLIMIT_AS of every case: torch and every backend import and run under it
TIMEOUT = 60.0
CACHES = ("torchinductor_",)  # caches third-party libraries keep in TMPDIR on purpose: not leftovers


@dataclass
class Outcome:
    case: Case
    status: int | None
    signal: int | None
    timeout: bool
    maxrss: int
    seconds: float
    stdout: str
    stderr: str
    problems: list[str] = field(default_factory=list)
    exec_mode: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def category(self) -> str:
        """A short label to group failures by: the first problem's kind and the exception type."""
        if not self.problems:
            return "ok"
        first = self.problems[0].split(":")[0]
        exc = exception_line(self.stderr + self.stdout)
        return f"{first}: {exc.split(':')[0]}" if exc else first

    def record(self) -> dict:
        c = self.case
        return {"id": c.id, "kind": c.kind, "attack": c.attack, "mutation": c.mutation, "argv": c.argv,
                "status": self.status, "signal": self.signal, "timeout": self.timeout, "maxrss": self.maxrss,
                "seconds": self.seconds, "problems": self.problems, "category": self.category(),
                "stderr_first_line": first_line(self.stderr), "exception": exception_line(self.stderr + self.stdout),
                "reproduce": c.reproduce, "exec": self.exec_mode}


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")[:300]


def exception_line(text: str) -> str:
    """The ``Type: message`` line that ends the last traceback in ``text`` (empty if none)."""
    if "Traceback" not in text:
        return ""
    tail = text[text.rindex("Traceback"):].splitlines()
    for line in tail[1:]:
        if line and not line.startswith((" ", "\t", "Traceback")):
            return line[:300]
    return tail[-1][:300] if tail else ""


class Server:
    """The fork server process (tests/hostile/server.py), ``jobs`` cases at a time."""

    def __init__(self, jobs: int = 2, log: Path | None = None):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.log = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([str(PYTHON), str(SERVER), str(jobs)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=REPO)
        hello = self.proc.stdout.readline()
        if not hello:
            raise RuntimeError("the hostile-input fork server did not start (see its log)")
        self.info = json.loads(hello)
        self.jobs = jobs

    def submit(self, req: dict) -> None:
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()

    def result(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (status {self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=TIMEOUT + 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


# ---------------------------------------------------------------- case folders


def materialize(case: Case, folder: Path) -> None:
    """Write the case's files (in order: later entries override earlier ones)."""
    for rel, src in case.files:
        dst = folder / rel
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
        else:
            dst.write_bytes(src)
    (folder / VICTIM).write_bytes(b"no command may touch this file\n")


def snapshot(root: Path) -> dict[str, tuple]:
    """relative path -> (type, size, sha256 or link target) of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            elif p.is_file():
                out[rel] = ("file", p.stat().st_size, _sha(p))
            else:
                out[rel] = ("other",)
    return out


def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _under(rel: str, prefixes) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


# ---------------------------------------------------------------- checks


def check(case: Case, res: dict, out: str, err: str, before: dict, after: dict, tmp_left: list[str],
          limit: int = LIMIT) -> list[str]:
    problems = []
    status = res["status"]
    if res["timeout"]:
        problems.append(f"timeout: over {case.timeout:.0f} s")
    elif res["signal"] is not None:
        problems.append(f"killed: signal {res['signal']}")
    if res.get("orphans"):
        problems.append("orphans: processes of the command outlived it")
    if res["maxrss"] >= limit:
        problems.append(f"memory: peak RSS {res['maxrss']:,} B at the {limit:,} B limit")
    if "Traceback" in out or "Traceback" in err:
        problems.append("traceback")
    elif status is not None and "hostile-server:" in err:
        problems.append("harness: " + first_line(err))
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    if status is not None:
        if status == 0:
            if case.zero == "never":
                problems.append("accepted: exit 0 on a file that must be refused")
            if error_lines:
                problems.append("messages: exit 0 with an error line")
        elif case.zero == "required":
            problems.append(f"refused: exit {status} on a valid file ({first_line(err)})")
        elif status == 1:
            if len(error_lines) != 1:
                problems.append(f"messages: {len(error_lines)} lines start with 'error:' (want 1)")
            elif case.expect and case.expect not in error_lines[0]:
                problems.append(f"messages: error line lacks {case.expect!r}")
        elif status != 2:
            problems.append(f"status: exit {status} (want 1 or 2)")
    # the folder: only outputs and scratch may change
    for rel in sorted(set(before) | set(after)):
        if _under(rel, case.outputs) or _under(rel, case.scratch):
            continue
        if before.get(rel) != after.get(rel):
            what = "removed" if rel not in after else "created" if rel not in before else "changed"
            problems.append(f"outside: {rel!r} {what}")
            break
    if tmp_left:
        problems.append(f"leftovers: {len(tmp_left)} entries left in TMPDIR ({tmp_left[0]!r})")
    for rel in case.outputs:
        old = {k: v for k, v in before.items() if _under(k, [rel])}
        new = {k: v for k, v in after.items() if _under(k, [rel])}
        if status == 0:
            bad = _output_problem(case, rel, new, res)
            if bad:
                problems.append(f"output: {rel}: {bad}")
        elif old != new and not case.run_output:
            # verify exits 1 when the artifact differs from what it came from, after writing that
            # report: a complete new report is its output, a damaged or missing one is not
            if not (case.argv[:1] == ["verify"] and rel.endswith(".json") and _output_problem(case, rel, new, res) is None):
                problems.append(f"output: {rel!r}, a previous output, changed on a failed command")
    return problems


def _output_problem(case: Case, rel: str, entries: dict, res: dict) -> str | None:
    folder = Path(res["cwd"])
    p = folder / rel
    if rel.endswith(".json"):
        if not p.is_file():
            return "missing"
        try:
            obj = json.loads(p.read_text(), parse_constant=_bad_constant)
        except (ValueError, UnicodeDecodeError) as e:
            return f"not valid JSON ({e})"
        if obj == case.previous_json:
            return "not rewritten"
        return None
    if case.run_output:
        return run_folder_problem(p)
    for name in case.output_files:
        if not (p / name).is_file():
            return f"no {name}"
    return None


def _bad_constant(name):
    raise ValueError(f"bare {name}")


def run_folder_problem(folder: Path) -> str | None:
    """A run folder is consistent: its manifest lists each file in it (but itself) with its sha256."""
    try:
        m = json.loads((folder / "manifest.json").read_text(), parse_constant=_bad_constant)
        listed = {a["path"]: a["sha256"] for a in m["artifacts"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"manifest unreadable ({e})"
    for rel, sha in listed.items():
        f = folder / rel
        if not f.is_file() or _sha(f) != sha:
            return f"manifest lists {rel} but the file is {'missing' if not f.is_file() else 'different'}"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    extra = sorted(present - set(listed))
    return f"unlisted file {extra[0]}" if extra else None


# ---------------------------------------------------------------- running


class Runner:
    """Materialize, run and check cases; ``root`` holds one folder per case while it runs (kept
    for failures when ``keep``)."""

    def __init__(self, server: Server, root: Path, keep: bool = False, limit: int = LIMIT):
        self.server, self.root, self.keep, self.limit = server, Path(root), keep, limit
        self.root.mkdir(parents=True, exist_ok=True)

    def run(self, cases, exec_mode: bool = False, on_outcome=None) -> list[Outcome]:
        """Outcomes of ``cases`` (an iterable: generated lazily), in completion order."""
        inflight: dict[str, tuple[Case, dict, dict]] = {}
        outcomes = []
        it = iter(cases)
        exhausted = False
        while True:
            while not exhausted and len(inflight) < 2 * self.server.jobs:
                case = next(it, None)
                if case is None:
                    exhausted = True
                    break
                req, before = self._prepare(case, exec_mode)
                inflight[req["id"]] = (case, req, before)
                self.server.submit(req)
            if not inflight:
                break
            res = self.server.result()
            case, req, before = inflight.pop(res["id"])
            outcome = self._finish(case, req, res, before, exec_mode)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        return outcomes

    def _prepare(self, case: Case, exec_mode: bool) -> tuple[dict, dict]:
        base = self.root / f"{case.id}{'-exec' if exec_mode else ''}"
        if base.exists():
            shutil.rmtree(base)
        work, tmp = base / "work", base / "tmp"
        work.mkdir(parents=True)
        tmp.mkdir()
        materialize(case, work)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
        env.update({"TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "COLUMNS": "120", **case.env})
        env.pop("EDGESNN_MEMORY_LIMIT", None)
        req = {"id": f"{case.id}{'-exec' if exec_mode else ''}", "argv": case.argv, "cwd": str(work),
               "env": env, "limit": self.limit, "timeout": case.timeout, "exec": exec_mode,
               "stdout": str(base / "stdout"), "stderr": str(base / "stderr")}
        return req, snapshot(work)

    def _finish(self, case: Case, req: dict, res: dict, before: dict, exec_mode: bool) -> Outcome:
        base = Path(req["cwd"]).parent
        out = (base / "stdout").read_text(errors="replace") if (base / "stdout").exists() else ""
        err = (base / "stderr").read_text(errors="replace") if (base / "stderr").exists() else ""
        after = snapshot(base / "work")
        tmp_left = sorted(n for n in os.listdir(base / "tmp") if not n.startswith(CACHES))
        res = {**res, "cwd": req["cwd"]}
        problems = check(case, res, out, err, before, after, tmp_left, self.limit)
        outcome = Outcome(case, res["status"], res["signal"], res["timeout"], res["maxrss"], res["seconds"],
                          out, err, problems, exec_mode)
        if outcome.ok or not self.keep:
            shutil.rmtree(base, ignore_errors=True)
        return outcome


def describe(o: Outcome) -> str:
    """A failure, for an assertion message or a log: what ran, what happened, how to reproduce."""
    c = o.case
    return (f"[{c.id}] {c.kind}/{c.attack}: {c.mutation}\n  edgesnn {' '.join(map(repr, c.argv))}\n"
            f"  status {o.status} signal {o.signal} {o.seconds:.1f} s peak {o.maxrss / 2**20:.0f} MiB\n"
            f"  problems: {'; '.join(o.problems)}\n"
            f"  stderr: {exception_line(o.stderr + o.stdout) or first_line(o.stderr)}\n"
            f"  reproduce: {c.reproduce}")


def python_path() -> None:
    """Make ``import hostile`` work from scripts (tests/ on sys.path)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
