"""What a fit writes from its study: OUT/fit.json (every trial), OUT/front.json (the Pareto front),
OUT/chosen.yaml (the chosen point's recipe, when a point meets every budget) and OUT/report/
(index.html with the front plotted against the budgets). All are recomputed from the study on every
call, with the budgets of this call: a resumed fit with other budgets re-judges the same trials.
"""

from __future__ import annotations

import html
from pathlib import Path

import yaml

from edgesnn import boards
from edgesnn.files import atomic_dir, atomic_path, write_json
from edgesnn.fit import front
from edgesnn.fit.front import Budgets
from edgesnn.limits import read_json

FIT, FRONT, CHOSEN, REPORT = "fit.json", "front.json", "chosen.yaml", "report"
PLOT = "front.png"


def write_results(study, folder: Path, shown: Path, board: boards.Board, budgets: Budgets, source: str,
                  settings: dict) -> dict:
    records, points = [], []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rec = {"number": t.number, "state": t.state.name.lower(), "point": t.user_attrs.get("point"),
               "folder": t.user_attrs.get("folder"), "seconds": _seconds(t)}
        if "error" in t.user_attrs:
            rec["error"] = t.user_attrs["error"]
        m = t.user_attrs.get("metrics")
        if m is not None and t.state.name == "COMPLETE":
            rows = front.limits(m, budgets, source)
            acc, energy, memory = front.objectives(m, source)
            rec.update(metrics=m, limits=rows, feasible=front.feasible(rows))
            points.append({"number": t.number, "accuracy": acc, "energy_uj": energy, "memory_bytes": int(memory),
                           "flash_bytes": m.get("flash_bytes"), "ram_bytes": m.get("ram_bytes"),
                           "point": rec["point"], "folder": rec["folder"], "feasible": rec["feasible"], "limits": rows})
        records.append(rec)
    pareto = front.pareto(points)
    chosen = front.choose(points)
    result = {"board": board.name, "energy": source, "budgets": budgets.__dict__, "settings": settings,
              "trials": records, "completed": len(points), "failed": sum(r["state"] == "fail" for r in records),
              "front": [p["number"] for p in pareto], "chosen": None, "misses": None}
    if chosen is not None:
        result["chosen"] = {**chosen, "recipe": CHOSEN}
        manifest = read_json(folder / chosen["folder"] / "manifest.json", "run manifest")
        with atomic_path(folder / CHOSEN) as tmp:
            tmp.write_text(f"# edgesnn fit's chosen point (trial {chosen['number']}): edgesnn run {CHOSEN} --out DIR "
                           f"reproduces {chosen['folder']}\n" + yaml.safe_dump(manifest["recipe"], sort_keys=False))
    else:
        (folder / CHOSEN).unlink(missing_ok=True)  # an earlier call's, under other budgets
        best = front.closest(points)
        if best is not None:
            result["misses"] = {"number": best["number"], "point": best["point"],
                                "limits": [r for r in best["limits"] if r["miss"] != 0]}
    write_json(folder / FRONT, {"energy": source, "budgets": budgets.__dict__, "front": pareto,
                                "chosen": None if chosen is None else chosen["number"]})
    write_json(folder / FIT, result)
    if points:
        write_report(result, pareto, points, folder / REPORT, board, budgets, source)
    result["out"] = str(shown)
    return result


def _seconds(t) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def write_report(result: dict, pareto: list[dict], points: list[dict], out: Path, board, budgets: Budgets,
                 source: str) -> Path:
    """report/index.html and front.png: accuracy against energy, flash and RAM, every trial drawn (the
    front's in colour), the chosen point ringed, each budget a dashed line."""
    with atomic_dir(out, "index.html") as tmp:
        _plot(pareto, points, tmp / PLOT, budgets, result["chosen"], source)
        (tmp / "index.html").write_text(_page(result, pareto, board, source), encoding="utf-8")
    return out / "index.html"


def _plot(pareto, points, path: Path, budgets: Budgets, chosen, source: str) -> None:
    from edgesnn.profile.report import _figure, _save

    panels = [("energy_uj", f"energy per inference (uJ, {'board' if source == 'board' else '45 nm'})",
               budgets.max_energy_uj)]
    if any(p["flash_bytes"] is not None for p in points):
        panels += [("flash_bytes", "flash (bytes)", budgets.max_flash), ("ram_bytes", "RAM (bytes)", budgets.max_ram)]
    else:
        panels.append(("memory_bytes", "memory (bytes)", None))
    fig = _figure(4.2 * len(panels), 3.6)
    on_front = {p["number"] for p in pareto}
    for i, (key, label, limit) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        pts = [p for p in points if p[key] is not None]
        for feasible, marker in ((True, "o"), (False, "x")):
            for ours, color in ((True, "#d95f02"), (False, "#7f7f7f")):  # the 3-axis front: not a line in 2 axes
                sel = [p for p in pts if p["feasible"] == feasible and (p["number"] in on_front) == ours]
                if sel:
                    ax.scatter([p[key] for p in sel], [p["accuracy"] for p in sel], marker=marker, c=color,
                               label=f"{'on the Pareto front' if ours else 'dominated'}, "
                                     f"{'meets the budgets' if feasible else 'misses a budget'}")
        if chosen is not None and chosen.get(key) is not None:
            ax.scatter([chosen[key]], [chosen["accuracy"]], s=160, facecolors="none", edgecolors="#1b9e77", lw=2,
                       label="chosen")
        if limit is not None:
            ax.axvline(limit, ls="--", color="#d62728", label="budget")
        if budgets.min_accuracy is not None:
            ax.axhline(budgets.min_accuracy, ls="--", color="#d62728")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (IR, test split)")
        if i == 0:
            ax.legend(fontsize=7)
    _save(fig, path)


def _page(result: dict, pareto: list[dict], board, source: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{p['number']}</td><td>{e(describe(p['point']))}</td><td>{p['accuracy']:.4f}</td>"
        f"<td>{p['energy_uj']:.4f}</td><td>{p['memory_bytes']}</td><td>{_blank(p['flash_bytes'])}</td>"
        f"<td>{_blank(p['ram_bytes'])}</td><td>{'yes' if p['feasible'] else 'no'}</td></tr>"
        for p in pareto)
    budgets = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["budgets"].items() if v is not None) or "none"
    if result["chosen"] is not None:
        verdict = (f"<p>Chosen: trial {result['chosen']['number']}, {e(describe(result['chosen']['point']))}; its "
                   f"recipe is <code>{CHOSEN}</code> (<code>edgesnn run {CHOSEN} --out DIR</code>).</p>")
    else:
        verdict = "<p><b>No trial meets every budget.</b> " + e(misses_text(result)) + "</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgesnn fit: {e(board.name)}</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{padding:2px 8px;text-align:right}"
            "</style></head><body>"
            f"<h1>edgesnn fit on {e(board.name)}</h1><p>{result['completed']} trials completed, {result['failed']} "
            f"failed. Budgets: {e(budgets)}. Energy: {'the board' if source == 'board' else 'the 45 nm convention'}'s, "
            "per inference. Accuracy: the IR's (what every exported artifact is verified equal to) over the test "
            f"split.</p>{verdict}<img src='{PLOT}' alt='accuracy against energy and memory, with the budgets'>"
            "<h2>Pareto front</h2><table><tr><th>trial</th><th>point</th><th>accuracy</th><th>energy (uJ)</th>"
            f"<th>memory (B)</th><th>flash (B)</th><th>RAM (B)</th><th>meets budgets</th></tr>{rows}</table>"
            "</body></html>\n")


def _blank(v) -> str:
    return "" if v is None else str(v)


def describe(point: dict | None) -> str:
    """A point as ``key=value`` words; per-layer weight bits as ``layer:bits,...``."""
    if not point:
        return "-"
    return " ".join(f"{k}={_value(v)}" for k, v in point.items())


def _value(v) -> str:
    return ",".join(f"{k}:{b}" for k, b in v.items()) if isinstance(v, dict) else str(v)




def misses_text(result: dict) -> str:
    """By how much the closest trial misses each budget, as one sentence."""
    m = result.get("misses")
    if m is None:
        return "no trial completed"
    parts = []
    for r in m["limits"]:
        if r["budget"] == "verified":
            parts.append("its artifacts fail verification")
        elif r["value"] is None:
            parts.append(f"{r['budget']} unknown (limit {r['limit']} {r['unit']})".rstrip())
        else:
            pct = 100 * r["miss"] / abs(r["limit"])
            parts.append(f"{r['budget']} {_num(r['value'])} vs {'at least' if r['budget'] == 'accuracy' else 'at most'} "
                         f"{_num(r['limit'])}{(' ' + r['unit']) if r['unit'] else ''} (misses by {_num(r['miss'])}, "
                         f"{pct:.1f}%)")
    return f"the closest, trial {m['number']} ({describe(m['point'])}), misses: " + "; ".join(parts)


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


FRONT_COLUMNS = ("trial", "method", "settings", "target", "accuracy", "energy uJ", "memory B", "meets budgets")


def front_rows(result: dict) -> list[tuple[str, ...]]:
    """The front as table rows (strings, FRONT_COLUMNS), the chosen point marked."""
    by_number = {t["number"]: t for t in result["trials"]}
    chosen = (result.get("chosen") or {}).get("number")
    rows = []
    for n in result["front"]:
        t = by_number[n]
        p, (acc, energy, memory) = t["point"], _objectives(t, result["energy"])
        settings = describe({k: v for k, v in p.items() if k not in ("method", "target")})
        rows.append((f"{n}{' *' if n == chosen else ''}", p["method"], settings, p["target"], f"{acc:.4f}",
                     f"{energy:.4f}", str(int(memory)), "yes" if t["feasible"] else "no"))
    return rows


def _objectives(t: dict, source: str):
    return front.objectives(t["metrics"], source)


def summary(result: dict) -> str:
    """The fit's last line: the chosen point and its recipe, or by how much the closest trial misses."""
    c = result.get("chosen")
    if c is not None:
        return (f"chosen: trial {c['number']} ({describe(c['point'])}), accuracy {c['accuracy']:.4f}, energy "
                f"{c['energy_uj']:.4f} uJ, memory {c['memory_bytes']} B; wrote {Path(result['out']) / CHOSEN}")
    return f"no trial meets every budget: {misses_text(result)}"
