"""The ``--report DIR`` page of ``edgesnn profile``: one static HTML file and three PNG plots.

The page is self-contained (inline CSS, relative image paths, no script, nothing fetched from the
network), so the folder can be copied, zipped or opened from disk. It shows the profile's summary
(fit, memory, operations, energy), the per-layer table (each row says whether its operations count
as additions, MACs, or data moves only: a transpose) and three plots:

- ``firing_rate.png``: each layer's firing rate (mean spike count per neuron per inference);
  layers without neurons are marked as such, not drawn as zero.
- ``energy.png``: per layer, the energy in the 45 nm convention split into MAC energy (layers
  that multiply, such as the first) and AC energy (spike-driven layers, one accumulate per SOP),
  and the SNN's total beside the same network run as a float ANN.
- ``memory.png``: needed vs available flash and RAM on the board, with the margin; a board without
  a limit is shown as unlimited.

Every value is read with ``dict.get``: optional keys (``latency_ms_median``, ``energy_board_pj``,
...) are shown when present, and missing ones never break the page.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_path

FIRING_PNG, ENERGY_PNG, MEMORY_PNG = "firing_rate.png", "energy.png", "memory.png"
E_MAC_PJ, E_AC_PJ = 4.6, 0.9  # defaults when a result does not carry its own (see energy.py)

_MAC_COLOR, _AC_COLOR, _ANN_COLOR, _BOARD_COLOR = "#d95f02", "#1b9e77", "#7570b3", "#e7298a"
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


def plot_firing_rates(result: dict, path: Path) -> None:
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
        ax.set_ylabel("spikes per neuron per inference")
    _save(fig, path)


def layer_energy_pj(result: dict, row: dict) -> tuple[float, float]:
    """(MAC energy, AC energy) of one layer in pJ, as energy.py counts them: a layer whose input is
    not spikes (sops None) multiplies, a spike-driven layer accumulates once per SOP."""
    e_mac, e_ac = result.get("e_mac_pj", E_MAC_PJ), result.get("e_ac_pj", E_AC_PJ)
    if row.get("sops") is None:
        return float(row.get("macs") or 0) * e_mac, 0.0
    return 0.0, float(row["sops"]) * e_ac


def _energy_unit(top: float) -> tuple[float, str]:
    for factor, unit in ((1e6, "µJ"), (1e3, "nJ")):
        if top >= factor:
            return factor, unit
    return 1.0, "pJ"


def plot_energy(result: dict, path: Path) -> None:
    layers = result.get("layers") or []
    names = _layer_names(layers)
    split = [layer_energy_pj(result, r) for r in layers]
    mac_total, ac_total = sum(m for m, _ in split), sum(a for _, a in split)
    snn = result.get("energy_45nm_pj", mac_total + ac_total)
    ann = result.get("energy_ann_45nm_pj")
    board = result.get("energy_board_pj")
    fig = _figure(max(9.0, 0.9 * len(names) + 5), 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[max(len(names), 2), 2])

    e_mac, e_ac = result.get("e_mac_pj", E_MAC_PJ), result.get("e_ac_pj", E_AC_PJ)
    left.set_title(f"Energy per layer (45 nm: MAC {_num(e_mac)} pJ, AC {_num(e_ac)} pJ)")
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
        left.set_ylabel(f"energy per inference ({unit})")
        left.legend(loc="upper right", fontsize=8)

    totals = [("SNN", snn), ("ANN", ann)] + ([("board", board)] if board is not None else [])
    factor, unit = _energy_unit(max([v for _, v in totals if v is not None] or [1.0]) or 1.0)
    right.set_title("Total per inference")
    for i, (label, value) in enumerate(totals):
        if value is None:
            right.text(i, 0, "n/a", ha="center", va="bottom", color="#777777")
        elif label == "SNN" and layers:  # the same MAC/AC split as on the left
            mac_part = min(mac_total, value)
            right.bar(i, mac_part / factor, color=_MAC_COLOR, width=0.6)
            right.bar(i, (value - mac_part) / factor, bottom=mac_part / factor, color=_AC_COLOR, width=0.6)
        else:
            color = {"SNN": _AC_COLOR, "ANN": _ANN_COLOR}.get(label, _BOARD_COLOR)
            right.bar(i, value / factor, color=color, width=0.6)
        if value is not None:
            right.text(i, value / factor, _energy(value), ha="center", va="bottom", fontsize=8)
    right.set_xticks(range(len(totals)), ["SNN\n(45 nm)", "ANN\n(45 nm)", "board\nmodel"][:len(totals)])
    right.set_xlim(-0.6, len(totals) - 0.4)
    right.set_ylim(0, max([v for _, v in totals if v is not None] or [1.0]) / factor * 1.15 or 1.0)
    right.set_ylabel(f"energy per inference ({unit})")
    _save(fig, path)


def plot_memory(result: dict, path: Path) -> None:
    need = result.get("needed_bytes") or {}
    have = result.get("available_bytes") or {}
    margin = result.get("margin_bytes") or {}
    kinds = [k for k in ("flash", "ram") if k in need or k in have] or ["flash", "ram"]
    fig = _figure(8.0, 1.4 + 1.3 * len(kinds))
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    board = result.get("board", "the board")
    fig.suptitle(f"Memory needed vs available on {board}")
    for ax, kind in zip(axes, kinds):
        n, h, m = need.get(kind), have.get(kind), margin.get(kind)
        if m is None and n is not None and h is not None:
            m = h - n
        label = "RAM" if kind == "ram" else kind.capitalize()
        top = max(n or 0, h or 0, 1)
        scale, unit = (1024, "KiB") if top >= 4096 else (1, "bytes")  # plotted in this unit: round ticks
        top /= scale
        if h is not None:
            ax.barh(0, h / scale, height=0.6, color=_HAVE_COLOR, edgecolor="#999999", label="available")
        else:  # no limit: a hatched bar running off the right edge
            ax.barh(0, top * 2, height=0.6, color="#f4f4f4", edgecolor="#999999", hatch="//",
                    label="available: unlimited")
            ax.text(top * 1.55, 0, "unlimited →", ha="right", va="center", fontsize=9, color="#555555")
        if n is not None:
            over = h is not None and n > h
            ax.barh(0, n / scale, height=0.35, color=_OVER_COLOR if over else _NEED_COLOR, label="needed")
        ax.set_yticks([0], [label])
        ax.set_ylim(-0.5, 0.9)  # room above the bars for the legend
        ax.set_xlim(0, top * 1.05 if h is not None else top * 1.6)
        ax.set_xlabel(unit)
        needed = "unknown" if n is None else _bytes(n)
        if h is None:
            text = f"needed {needed}; available: unlimited (the board sets no {label} limit)"
        elif n is None:
            text = f"needed unknown; available {_bytes(h)}"
        else:
            pct = f" ({100.0 * n / h:.1f} %)" if h else ""
            text = (f"needed {needed} of {_bytes(h)}{pct}; "
                    + (f"margin {_bytes(m)}" if m is not None and m >= 0 else f"over by {_bytes(-m)}"))
        ax.set_title(text, fontsize=9, loc="left")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8, ncol=2)
    _save(fig, path)


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 1.5em 2em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; }
th { background: #f0f0f0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
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


def _bytes(n) -> str:
    if n is None:
        return "—"
    n = int(n)
    for factor, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= factor:
            return f"{n:,} B ({n / factor:.1f} {unit})"
    return f"{n:,} B"


def _energy(pj) -> str:
    if pj is None:
        return "—"
    factor, unit = _energy_unit(abs(pj))
    return f"{_num(pj / factor)} {unit}"


def _cell(text: str, numeric: bool = False, cls: str | None = None) -> str:
    classes = " ".join(c for c in ("n" if numeric else None, cls) if c)
    return f"<td class=\"{classes}\">{_e(text)}</td>" if classes else f"<td>{_e(text)}</td>"


def _summary_rows(r: dict) -> list[tuple[str, str, bool, str | None]]:
    """(label, text, numeric, css class) of the summary table; optional keys only when present."""
    rows: list[tuple[str, str, bool, str | None]] = []
    fits = r.get("fits")
    rows.append(("Fits on the board", "unknown" if fits is None else ("yes" if fits else "no"), False,
                 None if fits is None else ("yes" if fits else "no")))
    need, have, margin = r.get("needed_bytes") or {}, r.get("available_bytes") or {}, r.get("margin_bytes") or {}
    for kind, label in (("flash", "Flash"), ("ram", "RAM")):
        if kind in need or kind in have:
            avail = "unlimited" if have.get(kind) is None else _bytes(have[kind])
            m = margin.get(kind)
            rows.append((f"{label} needed / available", f"{_bytes(need.get(kind))} / {avail}", True, None))
            rows.append((f"{label} margin", "unlimited" if have.get(kind) is None else _bytes(m), True,
                         "no" if m is not None and m < 0 else None))
    for key, label, fmt in (
        ("params", "Parameters", _num), ("weight_bytes", "Weight bytes", _bytes),
        ("peak_activation_bytes", "Peak activation bytes", _bytes),
        ("neuron_state_bytes", "Neuron state bytes", _bytes),
        ("macs", "MACs per inference (dense equivalent)", _num), ("spike_code", "Spike code (SOPs, energy)", str),
        ("sops", "SOPs per inference (measured)", _num),
        ("energy_45nm_pj", "Energy, SNN, 45 nm convention", _energy),
        ("energy_ann_45nm_pj", "Energy, same network as float ANN, 45 nm", _energy),
        ("energy_board_pj", "Energy, board model", _energy),
        ("latency_ms_median", "Latency, median (ms)", _num), ("peak_rss_bytes", "Peak RSS", _bytes),
    ):
        if key in r:
            rows.append((label, fmt(r[key]), True, None))
    for code, sops in (r.get("sops_by_code") or {}).items():
        energy = (r.get("energy_45nm_pj_by_code") or {}).get(code)
        rows.append((f"SOPs, {code} code", _num(sops) + ("" if energy is None else f" ({_energy(energy)}, 45 nm)"),
                     True, None))
    snn, ann = r.get("energy_45nm_pj"), r.get("energy_ann_45nm_pj")
    if snn and ann:
        rows.append(("ANN / SNN energy ratio", f"{ann / snn:.2f}×", True, None))
    if "e_mac_pj" in r or "e_ac_pj" in r:
        rows.append(("E_MAC / E_AC", f"{_num(r.get('e_mac_pj'))} pJ / {_num(r.get('e_ac_pj'))} pJ", True, None))
    for key, value in sorted((r.get("target_memory") or {}).items()):
        fmt = _bytes if key.endswith("_bytes") else _num
        rows.append((f"Target: {key}", fmt(value) if isinstance(value, (int, float)) else str(value), True, None))
    if "data" in r or "samples" in r:
        rows.append(("Data (samples)", f"{r.get('data', '—')} ({_num(r.get('samples'))})", False, None))
    return rows


_COUNTED = {"additions": "additions (AC, spike-driven)", "MACs": "MACs", "moves data": "moves data (0 ops)"}
_NO_SOPS = {"MACs": "— (multiplies)", "moves data": "— (moves data)"}


def _layer_table(r: dict) -> str:
    layers = r.get("layers") or []
    if not layers:
        return '<p class="none">No conv, dense or activation-product layers in the result.</p>'
    code = r.get("spike_code")
    head = "".join(f"<th>{_e(h)}</th>" for h in ("Layer", "Kind", "MACs", "SOPs", "Timesteps", "Firing rate",
                                                   "Counted as", "Energy (45 nm)"))
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


def render_html(result: dict) -> str:
    """The page's HTML (escaped throughout); images are referenced by their file names."""
    artifact, target, board = (result.get(k, "?") for k in ("artifact", "target", "board"))
    title = f"edgesnn profile: {artifact} · target {target} · board {board}"
    summary = "\n".join(f"<tr><th>{_e(label)}</th>{_cell(text, numeric, cls)}</tr>"
                        for label, text, numeric, cls in _summary_rows(result))
    board_name = result.get("board", "the board")
    figures = [
        (FIRING_PNG, "Bar chart of the firing rate of each layer, in spikes per neuron per inference; "
                     "layers without neurons are marked 'no neurons'.",
         "Firing rate: mean spike count per neuron per inference, measured on the data."),
        (ENERGY_PNG, "Bar charts of the energy per layer, split into MAC energy and AC energy in the 45 nm "
                     "convention, and of the SNN's total energy beside the same network run as an ANN.",
         "Energy per inference in the 45 nm convention: layers reading non-spikes count MACs, "
         "spike-driven layers count one accumulate per synaptic operation; a product of two activations "
         "counts additions when both are spikes, MACs otherwise; a transpose costs none."),
        (MEMORY_PNG, f"Horizontal bar charts of the flash and RAM needed against what {board_name} has, "
                     "with the margin left.",
         "Memory needed (flash: constants and code; RAM: activations) against the board's limits."),
    ]
    figs = "\n".join(
        f'<figure>\n<img src="{_e(src)}" alt="{_e(alt)}">\n<figcaption>{_e(caption)}</figcaption>\n</figure>'
        for src, alt, caption in figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>edgesnn profile</h1>
<p class="sub">Artifact <code>{_e(artifact)}</code> · target <b>{_e(target)}</b> · board <b>{_e(board)}</b></p>
<h2>Summary</h2>
<table>
<tbody>
{summary}
</tbody>
</table>
<h2>Layers</h2>
{_layer_table(result)}
<h2>Plots</h2>
{figs}
</body>
</html>
"""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
