"""Every child process edgesnn starts (Lava simulations, measured runs, make, QEMU) starts here.

Each runs in a session of its own, so it and everything it starts (Lava forks one process per model,
make its compilers) form one process group; that group is killed with SIGKILL when the call ends for
any reason: an error, a timeout, or the SystemExit that SIGINT and SIGTERM raise (edgesnn/__main__.py).
A terminal's Ctrl-C reaches edgesnn alone, which then ends the group; no child outlives the command.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path
from collections.abc import Iterator


@contextlib.contextmanager
def popen(cmd: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen`` in a new session; on leaving the block its whole group is killed and reaped."""
    p = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    with p:  # closes the pipes and waits for the child when the block ends
        try:
            yield p
        finally:
            kill_group(p)


def resident_peak(pid: int) -> int:
    """A running process's resident high-water mark in bytes (its VmHWM), 0 once it has exited.
    Polled by the parent: a child's rusage would count the pages it was forked with."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(m.group(1)) * 1024 if m else 0


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL to the child's process group (what is left of it: a finished child's stray descendants)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)


def run(cmd: list[str], timeout: float | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in its own process group: on a timeout
    (``subprocess.TimeoutExpired``, raised after the group is killed) or any exception, nothing is left."""
    with popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
