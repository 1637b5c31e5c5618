"""Hostile and broken inputs through the real CLI (issue 17): the bounded run of the fuzz suite.

Every case is a damaged or hostile file and the real ``edgesnn`` command that reads it, run by a
fork server (tests/hostile/server.py: edgesnn imported once, each case a forked child calling
the real entry point) under a 4 GiB address-space limit and a time limit. Each must end with
exit 1 and exactly one ``error:`` line (or 2, a usage error; or 0 where the file may still be
valid), no traceback, no signal, nothing written outside its outputs, and any previous output
left intact (tests/hostile/harness.py). Three parts:

- the named attacks of issue 17, one test each (tests/hostile/targeted.py);
- EDGESNN_HOSTILE_CASES (default 200) generated cases over every file kind and attack class,
  seed EDGESNN_HOSTILE_SEED (default 17); scripts/fuzz_cli.py runs the same generators for
  10,000+ cases (docs/fuzzing.md);
- the fork server checked against fresh ``edgesnn`` processes, and the checks themselves
  against outcomes that must fail them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostile import artifacts, cases, harness, targeted

N = int(os.environ.get("EDGESNN_HOSTILE_CASES", "200"))
SEED = int(os.environ.get("EDGESNN_HOSTILE_SEED", "17"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(base artifacts, a runner on a 2-job fork server, the scratch root)."""
    root = tmp_path_factory.mktemp("hostile")
    base = cases.Base(artifacts.ensure(root / "base"))
    server = harness.Server(jobs=2, log=root / "server.log")
    try:
        yield base, harness.Runner(server, root / "cases"), root
    finally:
        server.close()


@pytest.fixture(scope="module")
def named(hostile):
    """Every named attack, run once (two at a time): name -> outcome."""
    base, runner, root = hostile
    todo = targeted.all_cases(base, root / "targeted-cache")
    assert [c.id[2:] for c in todo] == list(targeted.NAMES)
    return {o.case.id[2:]: o for o in runner.run(todo)}


@pytest.mark.parametrize("name", targeted.NAMES)
def test_named_attack(named, name):
    o = named[name]
    assert o.ok, harness.describe(o)


def test_generated_cases(hostile):
    base, runner, _ = hostile
    outcomes = runner.run(cases.generate_many(SEED, N, base))
    assert len(outcomes) == N
    failures = [o for o in outcomes if not o.ok]
    assert not failures, f"{len(failures)} of {N} cases failed:\n" + "\n".join(map(harness.describe, failures[:25]))


# Cases whose outcome a fresh process must reproduce: generated cases of six kinds, a valid file
# accepted, a file name with a newline, and a usage error.
FAITHFUL = [("npz", "bomb"), ("ir", "depth"), ("recipe", "encoding"), ("board", "type"), ("checkpoint", "values"),
            ("lava", "encoding")]


def test_fork_server_matches_a_fresh_process(hostile, named):
    base, runner, _ = hostile
    todo = [cases.generate(SEED, 10_000 + i, kind=k, attack=a, base=base) for i, (k, a) in enumerate(FAITHFUL)]
    todo += [named["safetensors-header-128-inspect"].case, named["newline-file-name-inspect"].case,
             cases.Case(id="usage-error", kind="cli", attack="usage", mutation="an unknown option",
                        argv=["inspect", "--no-such-option"], files=[])]
    forked = {o.case.id: o for o in runner.run(todo)}
    fresh = {o.case.id: o for o in runner.run(todo, exec_mode=True)}
    for cid, f in fresh.items():
        k = forked[cid]
        assert f.ok == k.ok, (harness.describe(f), harness.describe(k))
        assert (f.status, f.signal) == (k.status, k.signal), (harness.describe(f), harness.describe(k))
        assert _error_lines(f.stderr) == _error_lines(k.stderr)
    assert {o.status for o in fresh.values()} == {0, 1, 2}


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- the checks themselves


def _check(tmp: Path, *, status=1, err="error: x: bad\n", out="", before=None, after=None, tmp_left=(),
           zero="ok", signal=None, timeout=False, maxrss=300 << 20, orphans=False, files=None):
    case = cases.Case(id="c", kind="ir", attack="flip", mutation="m", argv=["inspect", "a/model.ir"], files=[],
                      outputs=["r.json"], zero=zero)
    snap = {"a/model.ir": ("file", 1, "h"), "r.json": ("file", 2, "old")}
    res = {"status": status, "signal": signal, "timeout": timeout, "maxrss": maxrss, "orphans": orphans,
           "cwd": str(tmp)}
    for name, content in (files or {}).items():
        (tmp / name).write_text(content)
    return harness.check(case, res, out, err, before or snap, after or snap, list(tmp_left))


def test_checks_pass_a_clean_refusal_and_a_clean_success(tmp_path):
    assert _check(tmp_path) == []
    after = {"a/model.ir": ("file", 1, "h"), "r.json": ("file", 9, "new")}
    assert _check(tmp_path, status=0, err="", after=after, files={"r.json": '{"a": 1}'}) == []
    assert _check(tmp_path, status=2, err="Usage: edgesnn inspect\n") == []


@pytest.mark.parametrize("kw, problem", [
    ({"err": "Traceback (most recent call last):\nValueError: x\n"}, "traceback"),
    ({"err": "error: a\nerror: forged\n"}, "messages"),
    ({"err": "warning only\n"}, "messages"),
    ({"status": 0, "zero": "never", "err": ""}, "accepted"),
    ({"status": 1, "zero": "required"}, "refused"),
    ({"status": 0, "err": "error: x\n"}, "messages"),
    ({"status": 139}, "status"),
    ({"status": None, "signal": 9}, "killed"),
    ({"status": None, "signal": 14, "timeout": True}, "timeout"),
    ({"orphans": True}, "orphans"),
    ({"maxrss": harness.LIMIT}, "memory"),
    ({"after": {"a/model.ir": ("file", 1, "h"), "r.json": ("file", 2, "old"), "PWNED": ("file", 0, "")}}, "outside"),
    ({"after": {"r.json": ("file", 2, "old")}}, "outside"),
    ({"after": {"a/model.ir": ("file", 1, "h"), "r.json": ("file", 3, "half")}}, "output"),
    ({"tmp_left": ["tmpab12"]}, "leftovers"),
    ({"status": 0, "err": "", "after": {"a/model.ir": ("file", 1, "h"), "r.json": ("file", 3, "x")},
      "files": {"r.json": '{"a": NaN}'}}, "output"),
])
def test_checks_catch_each_problem(tmp_path, kw, problem):
    problems = _check(tmp_path, **kw)
    assert any(p.startswith(problem) for p in problems), problems
