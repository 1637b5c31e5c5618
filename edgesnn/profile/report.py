"""The ``--report DIR`` page of ``edgesnn profile``: one static HTML file and three PNG plots.

The page is self-contained (inline CSS, relative image paths, no script, nothing fetched from the
network), so the folder can be copied, zipped or opened from disk. Every number carries its unit
and says where it comes from (a third column), under human labels, never the result's JSON keys.
Its sections keep apart what must not be read as one:

- the fit on the board (flash and RAM in bytes, or a neuromorphic chip's neuro cores) and
  ``memory.png``: each row's unit is picked for its magnitude (KiB, MiB, GiB), and a need under
  2 % of the limit (a few KiB of a 4 GiB board) is drawn on a log axis so its bar stays visible;
- the energy in the SNN papers' 45 nm convention (``energy.png``: per layer, MAC energy of layers
  that multiply and AC energy of spike-driven layers, and the SNN's total beside the same network
  as a float ANN), a convention that compares networks, not chips;
- the energy of the board's own model, stated as the estimate it is: host latency x the board's
  power (a CPU board: the latency is the machine's that ran profile, not the board's), QEMU
  instructions x energy per cycle (an MCU), or the Loihi 2 per-operation model (beside the same
  model's figure in the Lava folder's loihi2.json, said to be counted on other samples);
- the per-layer table (each row says whether its operations count as additions, MACs, or data
  moves only) and ``firing_rate.png`` (layers without neurons marked as such, not drawn as zero).

Every value is read with ``dict.get``: optional keys (``latency_ms_median``, ``energy_board_pj``,
...) are shown when present, and missing ones never break the page.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path
from edgesnn.profile.energy import CONVENTION as CONVENTION_45NM
from edgesnn.profile.energy import E_AC_PJ, E_MAC_PJ  # defaults when a result does not carry its own
from edgesnn.profile.energy import SOURCE as SOURCE_45NM

FIRING_PNG, ENERGY_PNG, MEMORY_PNG = "firing_rate.png", "energy.png", "memory.png"

_MAC_COLOR, _AC_COLOR, _ANN_COLOR = "#d95f02", "#1b9e77", "#7570b3"
_NEED_COLOR, _OVER_COLOR, _HAVE_COLOR = "#386cb0", "#d62728", "#d9d9d9"


def write_report(result: dict, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` and its PNGs for a :func:`edgesnn.profile.profile` result;
    returns the path of index.html.

    A new folder appears whole (built beside it, then renamed into place). An existing folder is
    never emptied: each file in it is replaced atomically, the images first and the page last, so
    the page never points at a missing image."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgesnnError(f"--report {out_dir}: exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.is_dir():
        _write_into(result, out_dir, atomic=True)
        return out_dir / "index.html"
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        _write_into(result, tmp, atomic=False)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a made folder gets the usual mode
        try:
            os.rename(tmp, out_dir)
        except OSError:  # created meanwhile by someone else: fall back to replacing file by file
            if not out_dir.is_dir():
                raise
            _write_into(result, out_dir, atomic=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "index.html"


def _write_into(result: dict, folder: Path, atomic: bool) -> None:
    plots = _plots()
    files = [(name, lambda path, draw=draw: draw(result, path)) for name, draw in plots]
    page = render_html(result)
    files.append(("index.html", lambda path: path.write_text(page, encoding="utf-8")))
    for name, write in files:
        if atomic:
            with atomic_path(folder / name) as tmp:
                write(tmp)
        else:
            write(folder / name)


def _plots():
    try:
        import matplotlib  # noqa: F401  (the plot extra)
    except ImportError as e:
        raise EdgesnnError("--report needs matplotlib: pip install 'edgesnn[plot]'") from e
    return [(FIRING_PNG, plot_firing_rates), (ENERGY_PNG, plot_energy), (MEMORY_PNG, plot_memory)]


# ----------------------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    """A figure drawn by Agg without pyplot (no global backend switch, no GUI, no shared state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    # format given explicitly: the atomic temporary path ends in .tmp
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def _layer_names(layers: list[dict]) -> list[str]:
    return [str(r.get("name", f"layer {i}")) for i, r in enumerate(layers)]


def _layer_axis(ax, names: list[str]) -> None:
    tilt = len(names) > 4
    ax.set_xticks(range(len(names)), names, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.6, len(names) - 0.4)


def _no_layers(ax) -> None:
    ax.text(0.5, 0.5, "no conv, dense or activation-product layers in the result", ha="center", va="center",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_firing_rates(result: dict, path: Path):
    """Draws and saves the plot; returns the figure (its axes can be inspected)."""
    layers = result.get("layers") or []
    names = _layer_names(layers)
    fig = _figure(max(6.0, 0.9 * len(names) + 2), 4.0)
    ax = fig.add_subplot()
    ax.set_title("Per-layer firing rate")
    if not layers:
        _no_layers(ax)
    else:
        rates = [r.get("firing_rate") for r in layers]
        top = max([v for v in rates if v is not None] or [1.0]) or 1.0
        for i, v in enumerate(rates):
            if v is None:  # no neuron in this layer: say so, do not draw a zero
                ax.text(i, top * 0.02, "no neurons", ha="center", va="bottom", rotation=90, color="#777777",
                        fontsize=9, style="italic")
            else:
                ax.bar(i, v, color=_AC_COLOR, width=0.7)
                ax.text(i, v, _num(v, 3), ha="center", va="bottom", fontsize=8)
        _layer_axis(ax, names)
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel(f"spikes per neuron {_per(result)}")
    _save(fig, path)
    return fig


def _per(result: dict) -> str:
    """What a plotted figure is counted over: a model over sequences' unsuffixed figures are per timestep."""
    return "per timestep" if result.get("steps") else "per inference"


def layer_energy_pj(result: dict, row: dict) -> tuple[float, float]:
    """(MAC energy, AC energy) of one layer in pJ, as energy.py counts them: a layer whose input is
    not spikes (sops None) multiplies, a spike-driven layer accumulates once per SOP."""
    e_mac, e_ac = result.get("e_mac_pj", E_MAC_PJ), result.get("e_ac_pj", E_AC_PJ)
    if row.get("sops") is None:
        return float(row.get("macs") or 0) * e_mac, 0.0
    return 0.0, float(row["sops"]) * e_ac


def _energy_unit(top: float) -> tuple[float, str]:
    for factor, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if top >= factor:
            return factor, unit
    return 1.0, "pJ"


def plot_energy(result: dict, path: Path):
    """The 45 nm convention only: a board's energy is another model and is not drawn on this scale."""
    layers = result.get("layers") or []
    names = _layer_names(layers)
    split = [layer_energy_pj(result, r) for r in layers]
    mac_total = sum(m for m, _ in split)
    snn = result.get("energy_45nm_pj", mac_total + sum(a for _, a in split))
    ann = result.get("energy_ann_45nm_pj")
    fig = _figure(max(9.0, 0.9 * len(names) + 5), 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[max(len(names), 2), 2])

    e_mac, e_ac = result.get("e_mac_pj", E_MAC_PJ), result.get("e_ac_pj", E_AC_PJ)
    left.set_title(f"Energy per layer (45 nm convention: MAC {_num(e_mac)} pJ, AC {_num(e_ac)} pJ)")
    if not layers:
        _no_layers(left)
    else:
        factor, unit = _energy_unit(max(m + a for m, a in split) or 1.0)
        x = range(len(layers))
        left.bar(x, [m / factor for m, _ in split], color=_MAC_COLOR, width=0.7, label="MAC energy (multiplies)")
        left.bar(x, [a / factor for _, a in split], bottom=[m / factor for m, _ in split], color=_AC_COLOR,
                 width=0.7, label="AC energy (spike-driven)")
        for i, (m, a) in enumerate(split):
            left.text(i, (m + a) / factor, _energy(m + a), ha="center", va="bottom", fontsize=8)
        _layer_axis(left, names)
        left.set_ylim(0, max(m + a for m, a in split) / factor * 1.3 or 1.0)
        left.set_ylabel(f"energy {_per(result)} ({unit})")
        left.legend(loc="upper right", fontsize=8)

    totals = [("SNN", snn), ("ANN", ann)]
    factor, unit = _energy_unit(max([v for _, v in totals if v is not None] or [1.0]) or 1.0)
    right.set_title(f"Total {_per(result)} (45 nm)")
    for i, (label, value) in enumerate(totals):
        if value is None:
            right.text(i, 0, "n/a", ha="center", va="bottom", color="#777777")
            continue
        if label == "SNN" and layers:  # the same MAC/AC split as on the left
            mac_part = min(mac_total, value)
            right.bar(i, mac_part / factor, color=_MAC_COLOR, width=0.6)
            right.bar(i, (value - mac_part) / factor, bottom=mac_part / factor, color=_AC_COLOR, width=0.6)
        else:
            right.bar(i, value / factor, color=_AC_COLOR if label == "SNN" else _ANN_COLOR, width=0.6)
        right.text(i, value / factor, _energy(value), ha="center", va="bottom", fontsize=8)
    right.set_xticks(range(len(totals)), ["SNN", "same network\nas float ANN"])
    right.set_xlim(-0.6, len(totals) - 0.4)
    right.set_ylim(0, max([v for _, v in totals if v is not None] or [1.0]) / factor * 1.15 or 1.0)
    right.set_ylabel(f"energy {_per(result)} ({unit})")
    _save(fig, path)
    return fig


_LOG_BELOW = 0.02  # a needed bar under 2 % of a linear axis is hard to see: such a row is drawn on a log axis
_BINARY = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def memory_axis(need: int | None, have: int | None) -> tuple[str, float, str]:
    """How a needed-vs-available row is drawn: ("linear", bytes per unit, unit) with the unit picked
    for the larger value (KiB, MiB, ...: short round ticks, no "x1e6" offset), or ("log", 1, "bytes")
    when the needed bar would be under 2 % of a linear axis (a few KiB of a 4 GiB board)."""
    if need and have and need < _LOG_BELOW * have:
        return "log", 1.0, "bytes"
    top = max(need or 0, have or 0, 1)
    for factor, unit in _BINARY:
        if top >= 4 * factor:
            return "linear", float(factor), unit
    return "linear", 1.0, "bytes"


def _log_ticks(ax, top: float) -> None:
    """Ticks at 1 B, 1 KiB, 1 MiB, ... on a log axis from 1 byte."""
    import matplotlib.ticker

    ticks = [1 << (10 * k) for k in range(6) if (1 << (10 * k)) <= top * 2]
    ax.set_xticks(ticks, ["1 B" if t == 1 else f"1 {_unit_of(t)}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _unit_of(power: int) -> str:
    return next(unit for factor, unit in _BINARY if factor == power)


def _bar_row(ax, n, h, label: str, unit_word: str, scale: tuple[str, float, str]) -> None:
    """One needed-vs-available bar: grey available, blue needed (red when over), hatched when unlimited."""
    mode, factor, unit = scale
    base = 1.0 if mode == "log" else 0.0  # a log axis starts at 1 byte
    top = max(n or 0, h or 0, 1) / factor
    if h is not None:
        ax.barh(0, h / factor - base, left=base, height=0.6, color=_HAVE_COLOR, edgecolor="#999999",
                label="available")
    else:  # no limit: a hatched bar running off the right edge
        ax.barh(0, top * 2 - base, left=base, height=0.6, color="#f4f4f4", edgecolor="#999999", hatch="//",
                label="available: unlimited")
        ax.text(top * 1.55, 0, "unlimited →", ha="right", va="center", fontsize=9, color="#555555")
    if n is not None:
        over = h is not None and n > h
        ax.barh(0, n / factor - base, left=base, height=0.35, color=_OVER_COLOR if over else _NEED_COLOR,
                label="needed")
    ax.set_yticks([0], [label])
    ax.set_ylim(-0.5, 0.9)  # room above the bars for the legend
    right = top * 1.05 if h is not None else top * 1.6
    if mode == "log":
        ax.set_xscale("log")
        ax.set_xlim(base, right * 2)
        _log_ticks(ax, right)
        ax.set_xlabel(f"{unit_word}, log scale")
    else:
        ax.set_xlim(0, right)
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        ax.set_xlabel(unit if unit_word == "bytes" else unit_word)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8, ncol=2)


def _fit_text(n, h, fmt) -> str:
    """'2.5 KiB of 4.0 GiB (0.000060 %); 4.0 GiB left' for a plot title or a caption."""
    if n is None:
        return "needed unknown" + ("; available unlimited" if h is None else f"; available {fmt(h)}")
    if h is None:
        return f"{fmt(n)} needed; available unlimited"
    left = h - n
    return (f"{fmt(n)} of {fmt(h)} ({_pct(n, h)}); "
            + (f"{fmt(left)} left" if left >= 0 else f"over by {fmt(-left)}"))


def _pct(part, whole) -> str:
    """'18.7 %', and two significant digits below 0.1 % ('0.000060 %'), never '0.0 %' for a nonzero part."""
    if not whole:
        return "— %"
    p = 100.0 * part / whole
    if p == 0 or abs(p) >= 0.1:
        return f"{p:.1f} %"
    return f"{p:.{1 - math.floor(math.log10(abs(p)))}f} %"


def memory_rows(result: dict) -> list[tuple[str, int | None, int | None, str]]:
    """(label, needed, available, unit word) of each row memory.png draws: neuro cores on a
    neuromorphic chip, else flash and RAM in bytes."""
    if "needed_cores" in result or "available_cores" in result:
        return [("Neuro cores", result.get("needed_cores"), result.get("available_cores"), "cores")]
    need, have = result.get("needed_bytes") or {}, result.get("available_bytes") or {}
    kinds = [k for k in ("flash", "ram") if k in need or k in have] or ["flash", "ram"]
    return [("RAM" if k == "ram" else "Flash", need.get(k), have.get(k), "bytes") for k in kinds]


def plot_memory(result: dict, path: Path):
    rows = memory_rows(result)
    board = result.get("board", "the board")
    fig = _figure(8.0, 1.4 + 1.3 * len(rows))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    what = "Neuro cores" if rows[0][3] == "cores" else "Memory"
    fig.suptitle(f"{what} needed vs available on {board}")
    for ax, (label, n, h, unit_word) in zip(axes, rows):
        if unit_word == "cores":
            import matplotlib.ticker

            _bar_row(ax, n, h, label, "neuro cores (one layer per core)", ("linear", 1.0, "cores"))
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, steps=[1, 2, 4, 8, 10]))
            ax.set_title(_fit_text(n, h, lambda v: f"{v:,} cores"), fontsize=9, loc="left")
        else:
            _bar_row(ax, n, h, label, "bytes", memory_axis(n, h))
            ax.set_title(f"{label}: " + _fit_text(n, h, _short_bytes), fontsize=9, loc="left")
    _save(fig, path)
    return fig


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 1.5em 2em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.sub { color: #555; margin-top: 0; }
.note { color: #444; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; }
th { background: #f0f0f0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.src { color: #555; font-size: 0.9em; max-width: 40em; }
.yes { color: #1a7f37; font-weight: bold; }
.no { color: #c62828; font-weight: bold; }
.none { color: #888; font-style: italic; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1e12:
            return f"{value:.{digits}e}"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def _count(value, unit: str) -> str:
    """A count with its unit: '53,002 parameters', '1 core'."""
    if value is None:
        return "—"
    return f"{_num(value)} {unit[:-1] if value == 1 and unit.endswith('s') else unit}"


def _short_bytes(n) -> str:
    """'2.5 KiB', '4.0 GiB', '512 B': the unit per magnitude."""
    if n is None:
        return "—"
    for factor, unit in _BINARY:
        if abs(n) >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n):,} B"


def _bytes(n) -> str:
    """'2,560 B (2.5 KiB)': exact bytes and the readable unit."""
    if n is None:
        return "—"
    n = int(n)
    return f"{n:,} B" if abs(n) < 1024 else f"{n:,} B ({_short_bytes(n)})"


def _bits(n) -> str:
    return "—" if n is None else f"{int(n):,} bits ({_short_bytes(int(n) // 8)})"


def _energy(pj) -> str:
    if pj is None:
        return "—"
    factor, unit = _energy_unit(abs(pj))
    return f"{_num(pj / factor)} {unit}"


def _cell(text: str, numeric: bool = False, cls: str | None = None) -> str:
    classes = " ".join(c for c in ("n" if numeric else None, cls) if c)
    return f"<td class=\"{classes}\">{_e(text)}</td>" if classes else f"<td>{_e(text)}</td>"


Row = tuple[str, str, str, str | None]  # (label, value with its unit, where it comes from, css class of the value)


def _facts(rows: list[Row]) -> str:
    """A three-column table: quantity, value (with its unit), source."""
    if not rows:
        return ""
    body = "\n".join(f"<tr><th>{_e(label)}</th>{_cell(value, True, cls)}<td class=\"src\">{_e(source)}</td></tr>"
                     for label, value, source, cls in rows)
    return ("<table class=\"facts\">\n<thead><tr><th>Quantity</th><th>Value</th><th>Where it comes from</th></tr>"
            f"</thead>\n<tbody>\n{body}\n</tbody>\n</table>")


def _need_source(r: dict, kind: str) -> str:
    """What profile counted as the needed flash or RAM (the order of edgesnn.profile._fit)."""
    t = r.get("target_memory") or {}
    if kind == "flash":
        if "flash" in t:
            return "the MCU build's .text + .data (arm-none-eabi-size)"
        if "file_bytes" in t:
            return "the size of the .tflite file"
        return "the IR's weights"
    if "ram" in t:
        return "the MCU build's .data + .bss (arm-none-eabi-size)"
    if "tflm_arena_bytes" in t:
        return "the tensor arena TFLite Micro allocated for the model, here"
    if "arena_bytes" in t:
        return "the MCU project's static activation arena"
    return "the IR's peak activations"


def _fit_rows(r: dict) -> list[Row]:
    board = r.get("board", "the board")
    fits = r.get("fits")
    rows: list[Row] = [("Fits on the board", "unknown" if fits is None else ("yes" if fits else "no"),
                        "needed vs available below", None if fits is None else ("yes" if fits else "no"))]
    if "needed_cores" in r or "available_cores" in r:
        n, h = r.get("needed_cores"), r.get("available_cores")
        made = ("loihi2.json of the Lava folder (written by export)" if "cores" in (r.get("target_memory") or {})
                else "edgesnn's Loihi 2 resource model, run by profile")
        rows.append(("Neuro cores needed", _count(n, "cores"),
                     f"{made}: one layer per core, each layer max(neurons / neurons per core, memory / memory "
                     "per core) cores", None))
        rows.append(("Neuro cores available", _count(h, "cores"), f"the {board} board file (cores per chip)", None))
        if n is not None and h is not None:
            rows.append(("Neuro cores used", f"{n:,} of {h:,} cores ({_pct(n, h)})", "needed / available",
                         "no" if n > h else None))
        return rows
    need, have, margin = r.get("needed_bytes") or {}, r.get("available_bytes") or {}, r.get("margin_bytes") or {}
    for kind, label in (("flash", "Flash"), ("ram", "RAM")):
        if kind not in need and kind not in have:
            continue
        n, h = need.get(kind), have.get(kind)
        m = margin.get(kind, None if n is None or h is None else h - n)
        rows.append((f"{label} needed", _bytes(n), _need_source(r, kind), None))
        rows.append((f"{label} available", "unlimited" if h is None else _bytes(h),
                     f"the {board} board file" + (" sets no limit" if h is None else ""), None))
        if h is not None and n is not None:
            rows.append((f"{label} used", f"{_short_bytes(n)} of {_short_bytes(h)} ({_pct(n, h)})",
                         "needed / available", "no" if n > h else None))
            rows.append((f"{label} margin", _bytes(m), "available − needed",
                         "no" if m is not None and m < 0 else None))
    return rows


def _temporal_rows(r: dict) -> list[Row]:
    """A temporal profile's figures, each per timestep and per sequence (T x), and the states."""
    t = r["steps"]
    on_data = f"the golden interpreter over {_num(r.get('samples'))} test sequences, step by step"
    rows: list[Row] = [(f"State {s['name']}", _bytes(s["bytes"]), f"{s['shape']} {s['dtype']}, held to {s['bits']} bits",
                        None) for s in r.get("states") or []]
    rows.append(("State on the target", _bytes(r.get("target_state_bytes")), str(r.get("target_state_note")), None))
    for key, label, fmt, source in (
        ("macs", "MACs", lambda v: _count(v, "MACs"), "the IR's layer shapes, every step"),
        ("sops", "SOPs", lambda v: _count(v, "SOPs"), f"{on_data}: spikes x fan-out"),
        ("energy_45nm_pj", "Energy (45 nm)", _energy, "MACs x E_MAC + SOPs x E_AC"),
        ("energy_board_pj", f"Energy on {r.get('board')}", _energy, str(r.get("energy_board_note"))),
    ):
        for per, suffix in (("per timestep", "_per_step"), (f"per sequence (T = {t})", "_per_sequence")):
            value = r.get(key + suffix)
            rows.append((f"{label} {per}", "—" if value is None else fmt(value), source, None))
    if "latency_ms_per_step" in r:
        for per, key in (("per timestep", "latency_ms_per_step"), (f"per sequence (T = {t})", "latency_ms_per_sequence")):
            rows.append((f"Latency {per}, median", f"{_num(r[key])} ms", str(r.get("latency_method")), None))
    elif "latency_note" in r:
        rows.append(("Latency per timestep", "—", r["latency_note"], None))
    return rows


def _model_rows(r: dict) -> list[Row]:
    data, samples, code = r.get("data"), r.get("samples"), r.get("spike_code")
    on_data = f"measured with the golden interpreter on {data if data is not None else 'the data'}" + (
        "" if samples is None else f" ({_num(samples)} samples)")
    rows: list[Row] = []
    for key, label, fmt, source in (
        ("params", "Parameters", lambda v: _count(v, "parameters"), "the IR's weights and biases"),
        ("weight_bytes", "Weights", _bytes, "the IR's weights at their bit width"),
        ("peak_activation_bytes", "Peak activations", _bytes, "the IR: the largest set of tensors alive at once"),
        ("neuron_state_bytes", "Neuron state", _bytes, "the IR: membrane state of every neuron"),
        ("macs", "MACs per inference (dense equivalent)", lambda v: _count(v, "MACs"),
         "the IR's layer shapes: every multiply-accumulate a dense run does"),
        ("sops", "SOPs per inference", lambda v: _count(v, "SOPs"),
         f"{on_data}, in the {code or 'default'} spike code"),
    ):
        if key in r:
            rows.append((label, fmt(r[key]), source, None))
    if code is not None:
        rows.append(("Spike code counted", str(code), "the artifact's own, or --spike-code", None))
    for c, sops in (r.get("sops_by_code") or {}).items():
        rows.append((f"SOPs per inference, {c} code", _count(sops, "SOPs"), on_data, None))
    if "data" in r or "samples" in r:
        rows.append(("Data", f"{data if data is not None else '—'}: {_count(samples, 'samples')}",
                     "the test split of --data, or of the data set the artifact records", None))
    return rows


_TARGET = {  # target_memory key -> (label, formatter, source)
    "file_bytes": ("model.tflite file", _bytes, "its size on disk"),
    "tflm_arena_bytes": ("TFLite Micro tensor arena", _bytes, "allocated by TFLite Micro for the model, here"),
    "arena_bytes": ("Static activation arena", _bytes, "the MCU project (project.json)"),
    "const_bytes": ("Model constants", _bytes, "the MCU project (project.json)"),
    "text": (".text section (code and constants, flash)", _bytes, "arm-none-eabi-size of the QEMU build"),
    "data": (".data section (initialised data: flash, copied to RAM)", _bytes, "arm-none-eabi-size of the QEMU build"),
    "bss": (".bss section (zeroed RAM)", _bytes, "arm-none-eabi-size of the QEMU build"),
    "flash": ("Flash used (.text + .data)", _bytes, "arm-none-eabi-size of the QEMU build"),
    "ram": ("RAM used (.data + .bss)", _bytes, "arm-none-eabi-size of the QEMU build"),
    "library_text_bytes": ("Model library .text (code and constants)", _bytes,
                           "arm-none-eabi-size of libedgesnn_model.a (the model alone, no harness)"),
    "library_data_bytes": ("Model library .data", _bytes, "arm-none-eabi-size of libedgesnn_model.a"),
    "library_bss_bytes": ("Model library .bss (the arena)", _bytes, "arm-none-eabi-size of libedgesnn_model.a"),
    "library_flash_bytes": ("Model library flash (.text + .data)", _bytes, "arm-none-eabi-size of libedgesnn_model.a"),
    "library_ram_bytes": ("Model library RAM (.data + .bss)", _bytes, "arm-none-eabi-size of libedgesnn_model.a"),
    "cores": ("Loihi 2 neuro cores", lambda v: _count(v, "cores"), "loihi2.json of the Lava folder (export)"),
    "chips": ("Loihi 2 chips", lambda v: _count(v, "chips"), "loihi2.json of the Lava folder (export)"),
    "neurons": ("Neurons (compartments)", lambda v: _count(v, "neurons"), "loihi2.json of the Lava folder (export)"),
    "synaptic_memory_bits": ("Synaptic memory", _bits,
                             "loihi2.json: weights at their bit width + bias + multiplier per channel"),
    "state_slots": ("Loihi 2 24-bit state slots", lambda v: _count(v, "slots"),
                    "loihi2.json: one per neuron, plus a current's and a recurrent source's elements"),
    "ir_state_slots": ("Loihi 2 state slots holding the IR's states", lambda v: _count(v, "slots"),
                       "loihi2.json: one per state element, whatever its width up to 24 bits"),
    "sizes_note": ("Section sizes", str, "profile"),
}
_TARGET_ELSEWHERE = {"energy_uj_per_inference", "energy_uj_per_step",  # shown in the board energy section,
                     "energy_uj_per_sequence"}  # beside profile's own


def _target_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    for key, value in (r.get("target_memory") or {}).items():
        if key in _TARGET_ELSEWHERE:
            continue
        label, fmt, source = _TARGET.get(key) or (key.replace("_", " ").capitalize(), None, "the artifact")
        if fmt is None:  # a key this page does not know: its unit from its name, else said to be unknown
            fmt = (_bytes if key.endswith("_bytes") else _bits if key.endswith("_bits")
                   else (lambda v: f"{_num(v)} (unit not recorded)") if isinstance(value, (int, float)) else str)
        rows.append((label, fmt(value), source, None))
    return rows


def _energy_45nm_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    code, e_mac, e_ac = r.get("spike_code"), r.get("e_mac_pj", E_MAC_PJ), r.get("e_ac_pj", E_AC_PJ)
    if "energy_45nm_pj" in r:
        rows.append(("SNN, per inference", _energy(r["energy_45nm_pj"]),
                     f"MACs of layers reading non-spikes × {_num(e_mac)} pJ + SOPs ({code or 'default'} code) "
                     f"× {_num(e_ac)} pJ", None))
    if "energy_ann_45nm_pj" in r:
        rows.append(("Same network as a float ANN, per inference", _energy(r["energy_ann_45nm_pj"]),
                     f"all MACs × {_num(e_mac)} pJ", None))
    snn, ann = r.get("energy_45nm_pj"), r.get("energy_ann_45nm_pj")
    if snn and ann:
        rows.append(("ANN / SNN energy ratio", f"{ann / snn:.2f}× (ratio)", "the two rows above", None))
    for c, pj in (r.get("energy_45nm_pj_by_code") or {}).items():
        rows.append((f"SNN in the {c} code, per inference", _energy(pj),
                     f"its SOPs × {_num(e_ac)} pJ + MACs × {_num(e_mac)} pJ", None))
    if "e_mac_pj" in r or "e_ac_pj" in r:
        rows.append(("Energy per MAC / per accumulate (AC)", f"{_num(e_mac)} pJ / {_num(e_ac)} pJ", SOURCE_45NM, None))
    return rows


def _loihi_sequence_rows(r: dict, note: str | None) -> list[Row]:
    """Loihi 2's energy of a model over sequences per timestep and per sequence, and which layers are estimates."""
    rows: list[Row] = []
    t, memory = r.get("steps"), r.get("target_memory") or {}
    for per, suffix in (("per timestep", "_per_step"), (f"per sequence (T = {t})", "_per_sequence")):
        pj = r.get("energy_board_pj" + suffix)
        rows.append((f"Loihi 2 energy {per}, per-op model on the profiled sequences",
                     "not available" if pj is None else _energy(pj), note or "edgesnn's Loihi 2 resource model",
                     "none" if pj is None else None))
        uj = memory.get("energy_uj" + suffix)
        if uj is not None:
            rows.append((f"Loihi 2 energy {per}, loihi2.json of the Lava folder", _energy(uj * 1e6),
                         "the same per-op model, counted by export on the first test sequences", None))
    for row in (r.get("loihi2") or {}).get("layers") or []:
        if row["mapping"] == "loihi-cuba":
            rows.append((f"Layer {row['name']} ({row['op']})", "Loihi's CUBA neuron",
                         "Lava's bit-accurate LIF runs its arithmetic exactly", None))
        elif row["mapping"] == "estimate":
            rows.append((f"Layer {row['name']} ({row['op']})", "estimate",
                         f"{row['neuron_model']}, not Loihi's CUBA neuron: {row['why']}", None))
    return rows


def _board_energy(r: dict) -> tuple[list[Row], str]:
    """Rows and a one-line statement of what the board energy is (a different model from 45 nm)."""
    board, pj, note = r.get("board", "the board"), r.get("energy_board_pj"), r.get("energy_board_note")
    rows: list[Row] = []
    value = "not available" if pj is None else _energy(pj)
    if "needed_cores" in r or "available_cores" in r:  # a neuromorphic chip: edgesnn's per-operation model
        what = (f"An estimate from a per-operation model: synaptic operations and neuron updates that profile "
                f"counted on the test split of {r.get('data') or 'the data'}, times {board}'s energy per operation "
                "(its board file: Loihi 1 figures, Davies et al. 2018, used as proxies: an order of magnitude).")
        if r.get("steps"):  # a model over sequences: per timestep and per sequence, and each layer's neuron model
            return _loihi_sequence_rows(r, note), what
        rows.append(("Loihi 2 energy per inference, per-op model on the profiled data", value,
                     note or "edgesnn's Loihi 2 resource model", "none" if pj is None else None))
        uj = (r.get("target_memory") or {}).get("energy_uj_per_inference")
        if uj is not None:
            rows.append(("Loihi 2 energy per inference, loihi2.json of the Lava folder", _energy(uj * 1e6),
                         "the same per-op model, counted by export on its calibration samples: it differs from "
                         "the row above only by the samples counted", None))
    elif "instructions_per_inference" in r:  # an MCU on QEMU
        what = ("An estimate: instructions counted on QEMU times the board file's energy per cycle, one "
                "instruction per cycle assumed (a real core stalls on memory, so it takes more cycles).")
        rows.append(("Instructions per inference", _count(r["instructions_per_inference"], "instructions"),
                     "counted on QEMU (the emulated Cortex-M core)", None))
        rows.append(("Energy per inference, board model", value, note or "—", "none" if pj is None else None))
    elif r.get("energy_board_method") == "power-sensor" and pj is not None:  # measured on the board itself
        where = r.get("energy_board_host") or r.get("measured_on") or "the board"
        what = (f"A measurement on {board} ({where}): its power sensor's mean power times the median latency, "
                "both measured on the board by edgesnn profile --measure.")
        rows.append((f"Energy per inference on {board}, measured", value,
                     f"power sensor {r.get('power_sensor', '?')}: {_num(r.get('power_w_mean'))} W × "
                     f"{_num(r['latency_ms_median'])} ms, on {board}", None))
    elif "latency_ms_median" in r and pj is not None:  # a CPU board: latency x power
        lat = r["latency_ms_median"]
        watts = pj / (lat * 1e9) if lat else None
        where = r.get("energy_board_host") or r.get("measured_on") or "the machine that ran edgesnn profile --measure"
        if r.get("latency_board_ms") is not None:  # on the board, no sensor read
            what = (f"An estimate: the latency measured on {board} ({where}) times {board}'s active power from its "
                    "board file (no power sensor was read there).")
            source = f"board latency × board power: {_num(lat)} ms × {_num(watts)} W"
        else:
            what = (f"An estimate, not a measurement on {board}: the latency measured on {where} times {board}'s "
                    f"active power from its board file. The latency is {board}'s only if that is where profile ran; "
                    "a different CPU runs the same model at a different speed.")
            source = f"host latency × board power: {_num(lat)} ms × {_num(watts)} W"
        rows.append((f"Energy per inference, estimate for {board}", value, source, None))
        rows.append((f"Active power of {board}", f"{_num(watts)} W", f"the {board} board file", None))
    else:
        what = ("No board energy: " + (note or "the result has none") + ".") if pj is None else (note or "")
        if pj is not None:
            rows.append(("Energy per inference, board model", value, note or "—", None))
    if "energy_mj_per_inference_measured" in r:
        rows.append(("Energy per inference, measured here", _energy(r["energy_mj_per_inference_measured"] * 1e9),
                     f"power sensor {r.get('power_sensor', '?')}: mean {_num(r.get('power_w_mean'))} W × the median "
                     "latency, on this machine", None))
    return rows, what


def _measured_rows(r: dict) -> list[Row]:
    where = r.get("measured_on") or "the machine that ran edgesnn profile --measure"
    rows: list[Row] = []
    if "latency_ms_median" in r:
        runs = r.get("latency_ms_runs") or []
        rows.append(("Latency per inference, median", f"{_num(r['latency_ms_median'])} ms",
                     f"measured on {where}" + (f", median of {len(runs)} timed passes" if runs else ""), None))
    if "peak_rss_bytes" in r:
        rows.append(("Peak resident memory of the runtime", _bytes(r["peak_rss_bytes"]),
                     f"the runtime's own process on {where} (getrusage)", None))
    if "power_sensor" in r:
        rows.append(("Power sensor", str(r["power_sensor"]), r.get("power_note") or f"read on {where}", None))
    return rows


_COUNTED = {"additions": "additions (AC, spike-driven)", "MACs": "MACs", "moves data": "moves data (0 ops)"}
_NO_SOPS = {"MACs": "— (multiplies)", "moves data": "— (moves data)"}


def _layer_table(r: dict) -> str:
    layers = r.get("layers") or []
    if not layers:
        return '<p class="none">No conv, dense or activation-product layers in the result.</p>'
    code = r.get("spike_code")
    head = "".join(f"<th>{_e(h)}</th>" for h in (
        "Layer", "Kind", "MACs per inference", f"SOPs per inference ({code or 'default'} code)", "Timesteps",
        "Firing rate (spikes per neuron per inference)", "Counted as", "Energy per inference (45 nm)"))
    body = []
    for i, row in enumerate(layers):
        mac_e, ac_e = layer_energy_pj(r, row)
        spiking = row.get("sops") is not None
        counted = row.get("counted_as") or ("additions" if spiking else "MACs")  # results written before the key
        steps = (row.get("timesteps") or {}).get(code)
        cells = [
            _cell(row.get("name", f"layer {i}")), _cell(row.get("kind", "")), _cell(_num(row.get("macs")), True),
            _cell(_num(row.get("sops")) if spiking else _NO_SOPS.get(counted, "—"), True,
                  None if spiking else "none"),
            _cell(_num(steps) if steps is not None else "—", True, None if steps is not None else "none"),
            _cell(_num(row.get("firing_rate")) if row.get("firing_rate") is not None else "no neurons", True,
                  None if row.get("firing_rate") is not None else "none"),
            _cell(_COUNTED.get(counted, counted)), _cell(_energy(mac_e + ac_e), True),
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _figure_html(src: str, alt: str, caption: str) -> str:
    return f'<figure>\n<img src="{_e(src)}" alt="{_e(alt)}">\n<figcaption>{_e(caption)}</figcaption>\n</figure>'


def _memory_caption(r: dict) -> tuple[str, str]:
    """(alt, caption) of memory.png: what each row shows, in words, and on which axis."""
    board = r.get("board", "the board")
    parts = []
    for label, n, h, unit_word in memory_rows(r):
        if unit_word == "cores":
            parts.append(f"{label}: " + _fit_text(n, h, lambda v: f"{v:,} cores"))
        else:
            mode, _, unit = memory_axis(n, h)
            axis = "log axis from 1 byte" if mode == "log" else f"linear axis in {unit}"
            parts.append(f"{label}: " + _fit_text(n, h, _short_bytes) + f" ({axis})")
    alt = f"Horizontal bars of what the artifact needs against what {board} has. " + "; ".join(parts) + "."
    if memory_rows(r)[0][3] == "cores":
        caption = ("Neuro cores needed against the chip's cores (one layer per core; a layer needing more neurons "
                   "or memory than one core has takes several). ")
    else:
        caption = ("Memory needed (flash: constants and code; RAM: activations) against the board's limits; a row "
                   "whose need is under 2 % of the limit is drawn on a log axis so its bar stays visible. ")
    return alt, caption + "; ".join(parts) + "."


def render_html(result: dict) -> str:
    """The page's HTML (escaped throughout); images are referenced by their file names."""
    r = result
    artifact, target, board = (r.get(k, "?") for k in ("artifact", "target", "board"))
    title = f"edgesnn profile: {artifact} · target {target} · board {board}"
    board_rows, board_what = _board_energy(r)
    measured = _measured_rows(r)
    mem_alt, mem_caption = _memory_caption(r)
    target_rows = _target_rows(r)
    sections = [
        f"<h2>Fit on {_e(board)}</h2>\n{_facts(_fit_rows(r))}\n{_figure_html(MEMORY_PNG, mem_alt, mem_caption)}",
        f"<h2>Model (from the IR and the data)</h2>\n{_facts(_model_rows(r))}",
    ]
    if r.get("steps"):  # a model over sequences (edgesnn.profile.temporal): per timestep and per sequence
        sections.append(f"<h2>Over time: per timestep and per sequence of T = {_e(r['steps'])} steps</h2>\n"
                        f"{_facts(_temporal_rows(r))}")
    if target_rows:
        sections.append(f"<h2>Target artifact ({_e(target)})</h2>\n{_facts(target_rows)}")
    sections.append(
        "<h2>Energy in the SNN papers' 45 nm convention</h2>\n"
        f"<p class=\"note\">{_e(SOURCE_45NM)}. A convention: {_e(CONVENTION_45NM)}.</p>\n"
        f"{_facts(_energy_45nm_rows(r))}\n"
        + _figure_html(ENERGY_PNG, "Bar charts of the energy per layer in the 45 nm convention, split into MAC "
                                   "energy and AC energy, and of the SNN's total beside the same network run as "
                                   "a float ANN.",
                       "Energy per inference in the 45 nm convention only: layers reading non-spikes count MACs, "
                       "spike-driven layers count one accumulate per synaptic operation; a product of two "
                       "activations counts additions when both are spikes, MACs otherwise; a transpose costs none."))
    kind = ("measured on the board" if r.get("energy_board_method") == "power-sensor"
            else "the board model, an estimate")
    sections.append(f"<h2>Energy on {_e(board)}: {kind}</h2>\n"
                    f"<p class=\"note\">{_e(board_what)} Not comparable with the 45 nm convention above: another "
                    f"model, other operations, other figures.</p>\n{_facts(board_rows)}")
    if measured:
        here = f"on {_e(board)}" if r.get("latency_board_ms") is not None else "on this machine"
        sections.append(f"<h2>Measured {here} (--measure)</h2>\n{_facts(measured)}")
    sections.append(
        f"<h2>Layers</h2>\n{_layer_table(r)}\n"
        + _figure_html(FIRING_PNG, "Bar chart of the firing rate of each layer, in spikes per neuron per "
                                   "inference; layers without neurons are marked 'no neurons'.",
                       "Firing rate: mean spike count per neuron per inference, measured on the data."))
    fits = r.get("fits")
    verdict = "fit unknown" if fits is None else ("fits" if fits else "does not fit")
    body = "\n".join(sections)
    if r.get("steps"):  # a model over sequences: every unsuffixed figure (the static sections') is per timestep
        body = body.replace("per inference", "per timestep")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>edgesnn profile</h1>
<p class="sub">Artifact <code>{_e(artifact)}</code> · target <b>{_e(target)}</b> · board <b>{_e(board)}</b> ·
<b>{_e(verdict)}</b></p>
{body}
</body>
</html>
"""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
