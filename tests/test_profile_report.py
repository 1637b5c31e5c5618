"""The profile report: a static HTML page with three PNG plots, looked at in headless Chromium."""

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgesnn import pipeline
from edgesnn.profile import profile
from edgesnn.profile.report import ENERGY_PNG, FIRING_PNG, MEMORY_PNG, render_html, write_report

PNGS = (FIRING_PNG, ENERGY_PNG, MEMORY_PNG)
CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium, installed by scripts/setup.sh
WINDOW = (1200, 1600)


def small_result(**extra) -> dict:
    """A hand-made result: one multiplying layer without neurons' input, one spike-driven layer."""
    return {
        "artifact": "out/<model>.ir", "target": "ir", "board": "nucleo-f446re", "data": "digits", "samples": 2,
        "params": 23, "weight_bytes": 18, "peak_activation_bytes": 7, "neuron_state_bytes": 12,
        "target_memory": {}, "macs": 18, "sops": 6.0, "energy_45nm_pj": 12 * 4.6 + 6 * 0.9,
        "energy_ann_45nm_pj": 18 * 4.6, "e_mac_pj": 4.6, "e_ac_pj": 0.9,
        "layers": [{"name": "A & <first>", "kind": "dense", "macs": 12, "sops": None, "firing_rate": 1.0},
                   {"name": "B", "kind": "dense", "macs": 6, "sops": 6.0, "firing_rate": None}],
        "fits": True, "needed_bytes": {"flash": 18, "ram": 7}, "available_bytes": {"flash": 524288, "ram": None},
        "margin_bytes": {"flash": 524270, "ram": None}, **extra,
    }


def test_page_escapes_text_and_references_the_plots(tmp_path):
    index = write_report(small_result(latency_ms_median=1.5, future_key={"x": 1}), tmp_path / "rep")
    assert index == tmp_path / "rep" / "index.html"
    page = index.read_text()
    for png in PNGS:
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert re.search(rf'<img src="{re.escape(png)}" alt="[^"]+">', page)
    assert "A &amp; &lt;first&gt;" in page and "<first>" not in page
    assert "out/&lt;model&gt;.ir" in page
    assert "unlimited" in page and "no neurons" in page and "Latency" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary folder left behind


def test_missing_optional_keys_and_rewrite_in_place(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    bare = {"board": "host", "layers": []}
    write_report(bare, out)
    assert {p.name for p in out.iterdir()} == {"notes.txt", "index.html", *PNGS}  # nothing of the user's removed
    assert "host" in render_html(bare)
    write_report(small_result(energy_board_pj=42.0, fits=False), out)  # replaces the files atomically
    assert "<th>Energy per inference, board model</th><td class=\"n\">42 pJ</td>" in (out / "index.html").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_page_shows_the_spike_code_its_timesteps_and_both_codes_sops():
    layers = small_result()["layers"]
    layers[1] |= {"timesteps": {"rate-burst": 7, "bit-plane": 3}, "sops_by_code": {"rate-burst": 6.0, "bit-plane": 4.0},
                  "sops": 4.0}
    page = render_html(small_result(layers=layers, spike_code="bit-plane", sops=4.0,
                                    sops_by_code={"rate-burst": 6.0, "bit-plane": 4.0},
                                    energy_45nm_pj_by_code={"rate-burst": 60.6, "bit-plane": 58.8}))
    assert "<th>Timesteps</th>" in page and '<td class="n">3</td>' in page  # B's bit-plane steps
    assert "Spike code counted</th><td class=\"n\">bit-plane" in page
    assert "SOPs per inference, rate-burst code</th><td class=\"n\">6 SOPs" in page
    assert "SOPs per inference, bit-plane code</th><td class=\"n\">4 SOPs" in page
    assert "SNN in the rate-burst code, per inference</th><td class=\"n\">60.6 pJ" in page
    assert "SNN in the bit-plane code, per inference</th><td class=\"n\">58.8 pJ" in page


@pytest.fixture(scope="module")
def cnn_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cnn")
    ckpt = tmp / "cnn.ckpt"
    pipeline.train_model("cnn", "digits", 2, ckpt)
    artifact = pipeline.export_model(ckpt, "ir", tmp / "out")
    return profile(artifact, "nucleo-f446re", "digits")


def _screenshot(page: Path, png: Path, tmp: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", *extra]
    if not extra:
        args.append(f"--screenshot={png}")
    return subprocess.run([*args, page.as_uri()], capture_output=True, text=True, timeout=120, check=True)


def _pixels(png: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(png)[..., :3]


@pytest.mark.slow
def test_report_of_a_trained_cnn_renders_in_chromium(cnn_result, tmp_path):
    assert CHROMIUM.is_file(), "chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    index = write_report(cnn_result, tmp_path / "report")
    page = index.read_text()
    for png in PNGS:
        assert (index.parent / png).stat().st_size > 1000
        assert f'src="{png}"' in page
    names = [layer["name"] for layer in cnn_result["layers"]]
    assert len(names) >= 2
    for name in names:
        assert f"<td>{html.escape(name)}</td>" in page

    # The DOM Chromium built: the three images are there, with their alt text.
    dom = _screenshot(index, tmp_path / "unused.png", tmp_path, ("--dump-dom",)).stdout
    imgs = re.findall(r"<img [^>]*>", dom)
    assert sorted(re.search(r'src="([^"]+)"', t).group(1) for t in imgs) == sorted(PNGS)
    assert all(re.search(r'alt="[^"]+"', t) for t in imgs)

    shot = tmp_path / "page.png"
    _screenshot(index, shot, tmp_path)
    pixels = _pixels(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert pixels.std() > 0.05  # not a blank page
    background = pixels[0, 0]
    assert (np.abs(pixels - background).sum(-1) > 0.1).mean() > 0.02  # a fair share of the page is drawn on

    # The same page without its PNGs renders differently: Chromium really loaded and drew the images.
    bare = tmp_path / "no-images"
    shutil.copytree(index.parent, bare)
    for png in PNGS:
        (bare / png).unlink()
    bare_shot = tmp_path / "page-no-images.png"
    _screenshot(bare / "index.html", bare_shot, tmp_path)
    bare_pixels = _pixels(bare_shot)
    assert bare_pixels.shape == pixels.shape
    differ = np.abs(pixels - bare_pixels).sum(-1) > 0.1
    assert differ.mean() > 0.01
    # The plots lie below the tables: the differences are there, not in the page's title area.
    assert not differ[:100].any()
