"""Fork server: import edgesnn (and torch) once, then run each case in a forked child.

Spawning ``edgesnn`` costs seconds of imports; a fork costs milliseconds. The parent imports
``edgesnn.cli`` with torch limited to one thread (so no thread pool exists at fork time) and
reads one JSON request per line on stdin. For each, a child: starts its own process group,
redirects fds 0/1/2 (/dev/null, two files), changes to the case folder, takes the case's
environment, sets RLIMIT_AS and an alarm, then calls ``edgesnn.__main__.main()`` (the real entry
point, which installs the signal handlers) with the case's argv and exits with its status, as
the interpreter would (atexit handlers run, an uncaught exception prints its traceback). With
``"exec": true`` the child instead executes the venv's ``edgesnn``: a genuinely fresh process,
the check that the fork is faithful. The parent answers one JSON line per case: exit status or
signal, peak RSS (``wait4``), wall time, whether it overran and whether anything of its process
group survived it. Run as ``python server.py JOBS``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "edgesnn"  # the venv's entry point, beside its python
GRACE = 5.0  # seconds after the alarm before the parent kills the group itself
# Imported in the parent too, so children do not pay for them on every case (all are pure imports).
PRELOAD = ("edgesnn.cli", "edgesnn.ir.serialize", "edgesnn.limits", "safetensors.torch", "yaml", "pydantic",
           "sklearn.datasets", "sklearn.model_selection", "h5py", "nir", "edgesnn.backends.nir",
           "edgesnn.backends.tflite", "edgesnn.profile", "edgesnn.recipes", "edgesnn.run")


def _exit_status(e: SystemExit) -> int:
    """What the interpreter does with an uncaught SystemExit."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(req: dict, result_fd: int) -> None:
    """Never returns: becomes the case's process, then ``os._exit``."""
    status = 1
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.close(result_fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        tempfile.tempdir = None  # the parent's cached temp dir: use the case's TMPDIR
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        limit = int(req["limit"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(max(1, int(req["timeout"])))
        argv = [os.fsencode(a) if req.get("exec") else a for a in req["argv"]]
        if req.get("exec"):
            os.execve(EXE, [os.fsencode(EXE), *argv], os.environ)
        import edgesnn.__main__ as entry

        sys.argv = ["edgesnn", *argv]
        try:
            entry.main()
            status = 0
        except SystemExit as e:
            status = _exit_status(e)
        except KeyboardInterrupt:
            traceback.print_exc()
            status = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - what the interpreter does with it
            traceback.print_exc()
            status = 1
        try:
            atexit._run_exitfuncs()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a full disk, a closed pipe: the status stands
                pass
    except BaseException:  # noqa: BLE001 - the harness itself failed in the child: say so on stderr
        try:
            os.write(2, ("hostile-server: " + traceback.format_exc()).encode())
        except OSError:
            pass
        status = 125
    finally:
        os._exit(status)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(jobs: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing of the parent's reaches a case's stdout
    import torch

    torch.set_num_threads(1)
    for name in PRELOAD:
        __import__(name)
    try:  # orphans of a case become our children, so they are reaped, not left as zombies
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    vsz = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    results.write(json.dumps({"ready": True, "pid": os.getpid(), "vsz": vsz}) + "\n")

    pending: deque[dict] = deque()
    running: dict[int, tuple[dict, float, bool]] = {}  # pid -> (request, start, killed)
    buf, eof = b"", False
    while not (eof and not pending and not running):
        if not eof:
            ready, _, _ = select.select([0], [], [], 0.01 if (running or pending) else None)
            if ready:
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    eof = True
                buf += chunk
                *lines, buf = buf.split(b"\n")
                pending.extend(json.loads(line) for line in lines if line.strip())
        elif running:
            time.sleep(0.01)
        while pending and len(running) < jobs:
            req = pending.popleft()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(req, results.fileno())
            try:
                os.setpgid(pid, pid)
            except (PermissionError, ProcessLookupError):
                pass  # the child did it first, or already exited
            running[pid] = (req, time.monotonic(), False)
        now = time.monotonic()
        for pid, (req, start, killed) in list(running.items()):
            if not killed and now - start > req["timeout"] + GRACE:
                _kill_group(pid)
                running[pid] = (req, start, True)
        while running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in running:
                continue  # a reaped orphan of an earlier case
            req, start, killed = running.pop(pid)
            seconds = time.monotonic() - start
            survivors = _group_alive(pid)
            if survivors:
                _kill_group(pid)
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            results.write(json.dumps({
                "id": req["id"], "status": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": sig, "timeout": killed or sig == signal.SIGALRM, "maxrss": usage.ru_maxrss * 1024,
                "seconds": round(seconds, 3), "orphans": survivors}) + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
