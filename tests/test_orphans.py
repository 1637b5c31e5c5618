"""No orphans: every child process edgesnn starts runs in a process group of its own and is killed as
a group on an error, a timeout or an interrupt. A real ``edgesnn`` process is signalled alone (SIGTERM
to its pid, never to its group) while its Lava simulation runs; afterwards nothing of it is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesnn import pipeline, proc


def processes() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, process group) of every process, from /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = Path(f"/proc/{name}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
            out[int(name)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def descendants(root: int, table: dict) -> set[int]:
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (_, ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def alive_in(groups: set[int]) -> list[int]:
    """Processes of these groups still running (a zombie is dead: only its exit status is left), after
    waiting a bounded time for SIGKILLed processes to be gone."""
    for _ in range(300):
        alive = [pid for pid, (state, _, group) in processes().items() if group in groups and state != "Z"]
        if not alive:
            break
        time.sleep(0.1)
    return alive


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended, after waiting a bounded time for a SIGKILLed process to be gone."""
    for _ in range(300):
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def lava(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("orphans") / "lava"
    pipeline.export_model(trained["mlp"], "lava", out)
    return out


@pytest.mark.parametrize("command", [["verify", "{lava}"], ["profile", "{lava}", "--board", "loihi2", "--measure"]],
                         ids=["verify-lava", "profile-measure-lava"])
def test_sigterm_to_edgesnn_alone_leaves_none_of_its_processes(lava, command):
    """The Lava simulation forks a process per model; SIGTERM goes to the edgesnn process only."""
    args = [a.format(lava=lava) for a in command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "edgesnn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)  # its own group: the test's is never hit
    try:
        deadline = time.monotonic() + 300
        while True:  # until the simulation and its model processes exist
            table = processes()
            kids = descendants(p.pid, table)
            if len(kids) >= 4:
                break
            assert p.poll() is None, f"ended before its Lava processes started: {p.communicate()}"
            assert time.monotonic() < deadline, "no Lava processes appeared"
            time.sleep(0.05)
        groups = {table[k][2] for k in kids} | {p.pid}
        assert groups - {p.pid}, "the simulation runs in edgesnn's own process group"
        os.kill(p.pid, signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr
    assert alive_in(groups) == [], "processes of edgesnn's children outlived it"
    assert all(gone(k) for k in kids)


def test_a_timeout_kills_the_whole_group(tmp_path):
    """A child that started its own child: both end with the timeout, not only the first."""
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run(["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"], timeout=2)
    assert pidfile.is_file()
    assert gone(int(pidfile.read_text()))


def test_an_exception_kills_the_group_and_a_finished_child_leaves_no_stray(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(RuntimeError):
        with proc.popen(["sh", "-c", f"sleep 600 & echo $! > {pidfile}; wait"]) as p:
            for _ in range(300):
                if pidfile.is_file() and pidfile.read_text().strip():
                    break
                time.sleep(0.05)
            raise RuntimeError("the caller failed")
    assert p.returncode is not None and alive_in({p.pid}) == []
    stray = tmp_path / "stray.pid"  # the child ends; what it left in the background does not outlive the call
    r = proc.run(["sh", "-c", f"sleep 600 > /dev/null 2>&1 & echo $! > {stray}"], timeout=60)
    assert r.returncode == 0
    assert gone(int(stray.read_text()))
