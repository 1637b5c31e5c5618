#!/usr/bin/env python
"""Table 5 of scripts/bench.py: simulated samples per second of the IR as Lava processes, per spike code.

Each mode (graded spikes, rate-burst and bit-plane spike trains) runs in Lava's CPU simulator over two
run lengths; their difference gives the steady-state rate without Lava's start-up.

Usage: .venv/bin/python scripts/bench_lava.py [--quick] [--out BENCHMARKS.md] [--json R.json] [--work DIR]
(the same as ``scripts/bench.py --only lava``: rewrites this table's part of the ``bench`` section).
"""

from __future__ import annotations

from bench_common import Settings, Work, median  # first: threads

from edgesnn import data as datasets  # noqa: E402

KEY, NUMBER = "lava", 5
TITLE = "Lava: simulated throughput"


def measure(work: Work, s: Settings) -> dict:
    from edgesnn.backends.lava import verify_lava
    from edgesnn.backends.lava.network import MODES

    x = datasets.to_nhwc(datasets.digits().x_test)
    n1, n2 = s.lava_samples
    out = []
    for name in s.models:
        ckpt = work.checkpoint(name, s.epochs)
        folders = {mode: work.export(ckpt, "lava", lava_mode=mode) for mode in MODES}
        runs = {mode: {n1: [], n2: []} for mode in MODES}
        verdict = {}
        for _ in range(s.lava_repeats):
            for mode in MODES:
                for n in (n1, n2):
                    r = verify_lava(folders[mode], x, n, mode)
                    runs[mode][n].append(r["seconds"])
                    if n == n2:
                        verdict[mode] = r
        rows = []
        for mode in MODES:
            t1, t2 = median(runs[mode][n1]), median(runs[mode][n2])
            # None when start-up jitter exceeded the extra samples' time (possible on a loaded machine)
            steady = (n2 - n1) / (t2 - t1) if t2 > t1 else None
            rows.append({"mode": mode, "timesteps": verdict[mode]["timesteps_per_sample"],
                         "mismatches": verdict[mode]["mismatches"], "samples": verdict[mode]["samples"],
                         "steady_samples_per_s": steady, "total_samples_per_s": n2 / t2,
                         "startup_s": None if steady is None else t2 - n2 / steady, "runs": runs[mode]})
        base = rows[0]["steady_samples_per_s"]
        for w in rows:
            steady = w["steady_samples_per_s"]
            w["vs_graded"] = None if base is None or steady is None else steady / base
        out.append({"model": name, "rows": rows})
    return {"models": out, "samples": [n1, n2], "repeats": s.lava_repeats}


def table(r: dict) -> str:
    n1, n2 = r["samples"]
    lines = [f"| model | mode | timesteps per sample | samples differing from the IR | samples/s, steady state "
             f"(({n2} - {n1}) / (t{n2} - t{n1}), medians) | samples/s over {n2} samples incl. start-up | start-up s "
             f"(estimated) | this / graded |", "|---|---|---|---|---|---|---|---|"]
    noise = "n/a (start-up jitter exceeded the difference)"
    for m in r["models"]:
        for w in m["rows"]:
            steady = noise if w["steady_samples_per_s"] is None else f"{w['steady_samples_per_s']:.1f}"
            startup = "n/a" if w["startup_s"] is None else f"{w['startup_s']:.2f}"
            ratio = "n/a" if w["vs_graded"] is None else f"{w['vs_graded']:.2f}x"
            lines.append(f"| {m['model']} | {w['mode']} | {w['timesteps']} | {w['mismatches']} of {w['samples']} | "
                         f"{steady} | {w['total_samples_per_s']:.1f} | {startup} | {ratio} |")
    return "\n".join(lines)


def text(r: dict, s: Settings) -> str:
    modes = [w["mode"] for w in r["models"][0]["rows"]]
    return (f"The IR as edgesnn's Lava processes in Lava's CPU simulator (`Loihi2SimCfg`, fixed_pt), in a fresh "
            f"subprocess per run (`edgesnn verify LAVA_FOLDER`), graded spikes vs spike trains "
            f"({', '.join(modes[1:])}). Each run length ({r['samples'][0]} and {r['samples'][1]} test samples) is "
            f"timed end to end; the steady-state rate is their difference, which removes Lava's start-up (process "
            f"creation, compilation).")


def headline(r: dict) -> list[tuple[str, str, str]]:
    out = []
    for m in r["models"]:
        graded, rb = m["rows"][0], m["rows"][1]
        # on a loaded machine start-up jitter can hide the steady state: then the rate over the whole run
        ratio = (f"{rb['vs_graded']:.2f}x" if rb["vs_graded"] is not None else
                 f"{rb['total_samples_per_s'] / graded['total_samples_per_s']:.2f}x (incl. start-up)")
        out.append((f"Lava simulation ({m['model']}), steady-state samples/s: rate-burst / graded", ratio,
                    f"rate-burst takes {rb['timesteps']} timesteps per sample, graded 1 (table 5)"))
    return out


def main(argv: list[str] | None = None) -> None:
    import bench

    bench.main(argv, only=KEY)


if __name__ == "__main__":
    main()
