#!/usr/bin/env python
"""Hostile-input fuzzing of the edgesnn CLI: the long run of tests/test_hostile.py's generators.

    .venv/bin/python scripts/fuzz_cli.py --cases 10000 --seed 1 --jobs 2 --summary fuzz.json
    .venv/bin/python scripts/fuzz_cli.py --seed 1 --case 417 --kind npz --attack bomb --keep   # one case
    .venv/bin/python scripts/fuzz_cli.py --targeted                                          # the named attacks
    .venv/bin/python scripts/fuzz_cli.py --rerun fuzz.json               # the failures of an earlier run, again
    .venv/bin/python scripts/fuzz_cli.py --sweep                                  # every JSON/YAML field, wrong types

Each case is a damaged or hostile file (tests/hostile/cases.py) and the real command that reads
it, run by a fork server (tests/hostile/server.py) under an address-space limit and a time
limit, and checked as tests/hostile/harness.py says. Failures are printed as they happen, with
the command that reproduces each; the summary JSON holds the counts by kind, attack and outcome
and every failure. ``--keep`` keeps the folder of each failing case (under --work) to rerun by
hand: ``cd WORK/ID/work && TMPDIR=../tmp ../../../.venv/bin/edgesnn ARGS``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hostile import artifacts, cases, harness, targeted  # noqa: E402

SLOW = 10.0  # seconds: a case slower than this is listed in the summary (a failure only past its timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=None, help="number of cases (default 1000; --sweep: all of them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--kinds", default=",".join(cases.KINDS), help="comma-separated file kinds")
    ap.add_argument("--attacks", default=None, help="comma-separated attack classes (default: all)")
    ap.add_argument("--case", type=int, default=None, help="run only this case index (with --kind/--attack)")
    ap.add_argument("--kind", default=None)
    ap.add_argument("--attack", default=None)
    ap.add_argument("--targeted", action="store_true", help="run the named attacks of issue 17 instead")
    ap.add_argument("--sweep", action="store_true", help="instead: every field of every JSON/YAML kind set to each "
                                                         "wrong type (about 5,600 cases; --cases bounds it)")
    ap.add_argument("--exec", action="store_true", help="run each case in a fresh `edgesnn` process, not a fork")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit-gib", type=float, default=harness.LIMIT / 2**30, help="RLIMIT_AS of each case")
    ap.add_argument("--base", type=Path, default=None, help="folder of the valid base artifacts (built if absent)")
    ap.add_argument("--work", type=Path, default=None, help="folder for case folders (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the folder of every failing case")
    ap.add_argument("--summary", type=Path, default=None, help="write the summary JSON here")
    ap.add_argument("--verbose", action="store_true", help="print every case's outcome")
    ap.add_argument("--log", type=Path, default=None, help="append every case's outcome here (JSON lines)")
    ap.add_argument("--rerun", type=Path, default=None, help="run again the failing cases of an earlier summary JSON")
    ap.add_argument("--report", type=Path, default=None, help="only print the failures of an earlier summary JSON, "
                                                              "grouped (kind, command, what went wrong)")
    args = ap.parse_args(argv)
    if args.report:
        return report(json.loads(args.report.read_text()))

    work = args.work or Path(tempfile.mkdtemp(prefix="edgesnn-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    base_dir = args.base or work / "base"
    t0 = time.time()
    base = cases.Base(artifacts.ensure(base_dir))
    print(f"base artifacts in {base_dir} ({time.time() - t0:.0f} s)", flush=True)
    kinds = args.kinds.split(",")
    attacks = args.attacks.split(",") if args.attacks else None
    if args.rerun:
        todo = [_regenerate(f, base, Path(base_dir)) for f in json.loads(args.rerun.read_text())["failures"]]
        total = len(todo)
    elif args.targeted:
        todo = targeted.all_cases(base, Path(base_dir) / "targeted-cache")
        total = len(todo)
    elif args.sweep and args.case is not None:
        todo, total = [cases.sweep_case(args.kind, args.case, base)], 1
    elif args.sweep:
        sweep_kinds = [k for k in kinds if k in cases.SWEEP_KINDS]
        total = sum(cases.sweep_size(k, base) for k in sweep_kinds)
        total = min(total, args.cases) if args.cases is not None else total
        todo = cases.sweep_cases(base, sweep_kinds, start=args.start, limit=total)
    elif args.case is not None:
        todo = [cases.generate(args.seed, args.case, kinds, attacks, kind=args.kind, attack=args.attack, base=base)]
        total = 1
    else:
        total = args.cases if args.cases is not None else 1000
        todo = cases.generate_many(args.seed, total, base, kinds, attacks, start=args.start)

    counts = collections.Counter()
    by = collections.defaultdict(collections.Counter)
    failures, slow, peak, peak_case = [], [], 0, ""
    done = 0

    def on_outcome(o: harness.Outcome) -> None:
        nonlocal done, peak, peak_case
        done += 1
        c = o.case
        status = "timeout" if o.timeout else f"signal {o.signal}" if o.signal is not None else f"exit {o.status}"
        counts[status] += 1
        by[f"{c.kind}/{c.attack}"]["cases"] += 1
        by[f"{c.kind}/{c.attack}"][status] += 1
        if o.maxrss > peak:
            peak, peak_case = o.maxrss, f"{c.id} {c.kind}/{c.attack}: {c.mutation} ({' '.join(c.argv)})"
        if o.seconds > SLOW:
            slow.append({"seconds": o.seconds, "id": c.id, "kind": c.kind, "attack": c.attack, "mutation": c.mutation,
                         "argv": c.argv, "status": o.status, "reproduce": c.reproduce})
        if log:
            log.write(json.dumps(o.record()) + "\n")
            log.flush()
        if args.verbose:
            err = harness.exception_line(o.stderr + o.stdout) or harness.first_line(o.stderr)
            print(f"{'ok  ' if o.ok else 'FAIL'} [{c.id}] {c.kind}/{c.attack} {status} {o.seconds:.1f}s "
                  f"{c.mutation[:70]!r} :: {' '.join(c.argv)[:60]!r} :: {err[:110]}", flush=True)
        if not o.ok:
            by[f"{c.kind}/{c.attack}"]["failed"] += 1
            failures.append(o.record())
            print("FAIL " + harness.describe(o), flush=True)
        if done % 100 == 0 or done == total:
            print(f"{done}/{total} cases, {len(failures)} failing, {time.time() - t0:.0f} s", flush=True)

    log = open(args.log, "a") if args.log else None
    server = harness.Server(args.jobs, log=work / "server.log")
    try:
        runner = harness.Runner(server, work / "cases", keep=args.keep or args.case is not None,
                                limit=int(args.limit_gib * 2**30))
        t1 = time.time()
        runner.run(todo, exec_mode=args.exec, on_outcome=on_outcome)
        elapsed = time.time() - t1
    finally:
        server.close()
        if log:
            log.close()

    categories = collections.Counter(f["category"] for f in failures)
    summary = {
        "seed": None if (args.rerun or args.targeted) else args.seed, "rerun": str(args.rerun) if args.rerun else None,
        "cases": done, "server_vsz_bytes": server.info.get("vsz"), "start": args.start, "kinds": kinds, "attacks": attacks,
        "targeted": args.targeted, "sweep": args.sweep, "exec": args.exec, "jobs": args.jobs, "limit_bytes": int(args.limit_gib * 2**30),
        "seconds": round(elapsed, 1), "cases_per_second": round(done / max(elapsed, 1e-9), 2),
        "failing": len(failures), "outcomes": dict(counts), "failure_categories": dict(categories.most_common()),
        "by_kind_attack": {k: dict(v) for k, v in sorted(by.items())},
        "peak_rss_bytes": peak, "peak_rss_case": peak_case,
        "slow_cases": sorted(slow, key=lambda r: -r["seconds"]),  # not failures: worth a look
        "failures": failures,
    }
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{done} cases in {elapsed:.0f} s ({summary['cases_per_second']} per second): {len(failures)} failing; "
          f"outcomes {dict(counts)}; peak RSS {peak / 2**20:.0f} MiB ({peak_case}); {len(slow)} cases over {SLOW:.0f} s")
    for cat, n in categories.most_common():
        print(f"  {n:5d}  {cat}")
    if args.keep and failures:
        print(f"failing case folders kept under {work / 'cases'}")
    return 1 if failures else 0


def _regenerate(failure: dict, base, base_dir: Path):
    """The case a summary's failure record names (generated, swept or targeted)."""
    cid = failure["id"]
    if cid.startswith("t-"):
        return next(c for c in targeted.all_cases(base, base_dir / "targeted-cache") if c.id == cid)
    if cid.startswith("w-"):
        return cases.sweep_case(failure["kind"], int(cid.rsplit("-", 1)[1]), base)
    seed, index = cid[1:].split("-")
    return cases.generate(int(seed), int(index), kind=failure["kind"], attack=failure["attack"], base=base)


def report(summary: dict) -> int:
    """Failures grouped by (kind, command, problem, exception type and message start), largest first."""
    groups = collections.defaultdict(list)
    for f in summary["failures"]:
        what = re.sub(r"-?\d+", "N", f["exception"] or f["problems"][0])  # numbers differ case by case
        groups[(f["kind"], f["argv"][0], f["category"], what[:70])].append(f)
    print(f"{summary['failing']} failing of {summary['cases']} cases")
    for (kind, cmd, category, what), fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(fs):4d}  {kind:10s} {cmd:8s} {what}\n      e.g. {fs[0]['mutation'][:90]}\n"
              f"      {fs[0]['reproduce']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
