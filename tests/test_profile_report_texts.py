"""The profile report's texts as headless Chromium renders them, on real profiles: every number has
its unit and its source, no JSON key shows, the 45 nm convention and the board model stay apart,
the board energy says what it is, and the memory plot's bars are visible (a 4 GiB board's RAM, a
Loihi chip's cores)."""

import platform
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

import pytest

from edgesnn import boards, pipeline
from edgesnn.profile import profile
from edgesnn.profile.report import _energy, plot_memory, write_report

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium, installed by scripts/setup.sh
NEED, HAVE = (0x38, 0x6C, 0xB0), (0xD9, 0xD9, 0xD9)  # report.py's needed and available bar colours
UNITS = (r"(?:B|KiB|MiB|GiB|TiB|bits|pJ|nJ|µJ|mJ|J|ms|W|%|×|cores?|chips?|neurons?|parameters?|MACs?|SOPs?|samples?"
         r"|instructions?)")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Profiles of one trained CNN as four artifacts a reader would look at, each page as Chromium built it:
    a Raspberry Pi 4 (--measure: latency x board power), a 4 GiB Jetson Nano, an MCU build, a Lava folder."""
    assert CHROMIUM.is_file(), "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    tmp = tmp_path_factory.mktemp("texts")
    ckpt = tmp / "cnn.ckpt"
    pipeline.train_model("cnn", "digits", 1, ckpt)
    ir = pipeline.export_model(ckpt, "ir", tmp / "ir")
    runs = {"pi4": (ir, "raspberry-pi-4", {"measure": True}), "jetson": (ir, "jetson-nano", {}),
            "mcu": (pipeline.export_model(ckpt, "mcu", tmp / "mcu", board="nucleo-f446re"), "nucleo-f446re",
                    {"trust_code": True}),
            "loihi": (pipeline.export_model(ckpt, "lava", tmp / "lava"), "loihi2", {})}
    out = {}
    for name, (artifact, board, kw) in runs.items():
        result = profile(artifact, board, "digits", **kw)
        index = write_report(result, tmp / f"report-{name}")
        out[name] = (result, index, Page(_dump_dom(index, tmp)))
    return out


def _dump_dom(index: Path, tmp: Path) -> str:
    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--dump-dom", index.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout


class Page(HTMLParser):
    """The visible text of a DOM: per h2 section, and every three-column table row (label, value, source)."""

    def __init__(self, dom: str):
        super().__init__()
        self.sections: dict[str, str] = {"": ""}
        self.rows: list[tuple[str, str, str, str]] = []  # (section, label, value, source)
        self.alts: list[str] = []
        self._section, self._skip, self._heading, self._cells, self._cell = "", 0, None, None, None
        self.feed(dom)
        self.text = " ".join(self.sections.values())

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "h2":
            self._heading = ""
        elif tag == "tr":
            self._cells = []
        elif tag in ("td", "th") and self._cells is not None:
            self._cell = ""
        elif tag == "img":
            self.alts.append(dict(attrs).get("alt") or "")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag == "h2":
            self._section, self._heading = self._heading.strip(), None
            self.sections[self._section] = ""
        elif tag in ("td", "th") and self._cell is not None:
            self._cells.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr":
            if self._cells and len(self._cells) == 3 and self._cells != ["Quantity", "Value", "Where it comes from"]:
                self.rows.append((self._section, *self._cells))
            self._cells = None

    def handle_data(self, data):
        if self._skip:
            return
        if self._heading is not None:
            self._heading += data
            return
        if self._cell is not None:
            self._cell += data
        self.sections[self._section] += " " + " ".join(data.split())

    def section(self, words: str) -> str:
        found = [text for name, text in self.sections.items() if words in name]
        assert len(found) == 1, (words, list(self.sections))
        return found[0]


def test_every_number_has_its_unit_and_its_source(pages):
    for name, (_, _, page) in pages.items():
        assert len(page.rows) >= 15, (name, page.rows)  # quantity, value, source tables throughout
        for section, label, value, source in page.rows:
            assert source and source != "—", (name, label, value)
            checked = re.sub(r"\d[\d,.]* of (?=\d)", "", value)  # '7 of 128 cores': the unit follows the second
            for number in NUMBER.finditer(checked):
                assert re.match(rf"\s*{UNITS}(?!\w)", checked[number.end():]), (name, section, label, value)


def test_no_json_key_shows_and_no_bare_section_size(pages):
    for name, (result, _, page) in pages.items():
        target = result.get("target_memory") or {}
        keys = {k for k in result if "_" in k} | {k for k in target if "_" in k}
        text = page.text.replace(result["artifact"], "")
        assert not [k for k in keys if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text)], name
        assert not [label for _, label, _, _ in page.rows if label in target or label.startswith("Target:")], name
        assert not re.search(r"\btext \d", text), name
    rows = {label: value for _, label, value, _ in pages["mcu"][2].rows}
    text_size = pages["mcu"][0]["target_memory"]["text"]
    assert rows[".text section (code and constants, flash)"].startswith(f"{text_size:,} B (")


def test_pi_energy_is_an_estimate_from_host_latency_apart_from_45nm(pages):
    result, _, page = pages["pi4"]
    watts = boards.load("raspberry-pi-4").active_power_w
    board_pj, snn_pj = result["energy_board_pj"], result["energy_45nm_pj"]
    assert board_pj == pytest.approx(result["latency_ms_median"] * 1e-3 * watts * 1e12)
    assert "An estimate, not a measurement on raspberry-pi-4" in page.text
    board = page.section("the board model, an estimate")
    assert f"latency measured on {result['measured_on']}" in board  # the host, named (not the Pi)
    assert result["measured_on"] == f"{platform.node()} ({platform.machine()})"
    row = [r for r in page.rows if r[1] == "Energy per inference, estimate for raspberry-pi-4"]
    assert len(row) == 1 and row[0][2] == _energy(board_pj)
    assert row[0][3] == f"host latency × board power: {result['latency_ms_median']:.4g} ms × {watts:.4g} W"
    papers = page.section("45 nm convention")
    assert "Horowitz, ISSCC 2014" in papers and _energy(snn_pj) in papers
    assert _energy(board_pj) not in papers and _energy(snn_pj) not in board  # each energy in its own section
    assert "estimate" not in page.section("45 nm convention").lower()


def test_loihi_shows_its_core_fit_and_labels_both_energies(pages):
    result, index, page = pages["loihi"]
    n, h = result["needed_cores"], result["available_cores"]
    need_px, have_px = _bar_row(index.parent / "memory.png")  # the plot: a bar of n cores on one of h
    assert need_px >= 5 and abs(need_px - have_px * n / h) <= 3, (need_px, have_px, n, h)
    assert "needed unknown" not in page.text
    assert f"{n:,} of {h:,} cores" in page.section("Fit on loihi2")
    assert any(f"Neuro cores: {n:,} cores of {h:,} cores" in alt for alt in page.alts)

    board = page.section("the board model, an estimate")
    energies = {label: (value, source) for section, label, value, source in page.rows if "board model" in section}
    profiled = energies["Loihi 2 energy per inference, per-op model on the profiled data"]
    exported = energies["Loihi 2 energy per inference, loihi2.json of the Lava folder"]
    assert profiled[0] == _energy(result["energy_board_pj"])
    assert exported[0] == _energy(result["target_memory"]["energy_uj_per_inference"] * 1e6)
    assert "calibration samples" in exported[1] and "only by the samples counted" in exported[1]
    assert "Loihi 1 figures" in board
    assert _energy(result["energy_board_pj"]) not in page.section("45 nm convention")


def test_ram_of_a_4_gib_board_is_a_visible_bar_on_a_readable_axis(pages, tmp_path):
    result, index, page = pages["jetson"]
    assert result["available_bytes"]["ram"] == 4 << 30 and result["needed_bytes"]["ram"] < 1 << 20
    bands = _need_bands(index.parent / "memory.png")
    assert len(bands) == 2 and min(bands) >= 40, bands  # flash and RAM: each a bar tens of pixels long
    fig = plot_memory(result, tmp_path / "memory.png")
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_xlabel()  # no 'x1e6'
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels == ["KiB", "bytes, log scale"], labels
    ram = [ax for ax in fig.axes if "RAM" in ax.get_title(loc="left")][0]
    assert [t.get_text() for t in ram.get_xticklabels()] == ["1 B", "1 KiB", "1 MiB", "1 GiB"]
    caption = page.section("Fit on jetson-nano")
    assert f"RAM: {_kib(result['needed_bytes']['ram'])} KiB of 4 GiB" in caption and "log axis from 1 byte" in caption
    assert "4,294,967,296 B (4 GiB)" in caption


def _kib(n: int) -> str:
    return f"{n / 1024:.1f}".removesuffix(".0")


def _runs(mask: np.ndarray) -> np.ndarray:
    """The longest run of True in each row."""
    best = np.zeros(len(mask), int)
    for i, row in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        best[i] = (edges[1::2] - edges[::2]).max() if len(edges) else 0
    return best


def _colour(png: Path, rgb) -> np.ndarray:
    import matplotlib.image

    pixels = (matplotlib.image.imread(png)[..., :3] * 255).round()
    return (np.abs(pixels - np.array(rgb)) <= 3).all(-1)


def _need_bands(png: Path) -> list[int]:
    """The widest needed bar of each band of rows drawing one (the legend's short patch is left out)."""
    runs = _runs(_colour(png, NEED))
    bands, current = [], []
    for i, run in enumerate(runs):
        if run >= 30:
            current.append(run)
        elif current:
            bands.append(max(current))
            current = []
    return bands + ([max(current)] if current else [])


def _bar_row(png: Path) -> tuple[int, int]:
    """(needed, available) bar lengths in pixels on the rows where the needed bar lies on the available one."""
    need, have = _runs(_colour(png, NEED)), _runs(_colour(png, HAVE))
    rows = [i for i in range(len(need)) if need[i] >= 1 and have[i] >= 100]
    assert rows, "no needed bar drawn over the available bar"
    i = rows[len(rows) // 2]
    return int(need[i]), int(need[i] + have[i])
