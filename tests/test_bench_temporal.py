"""scripts/bench_temporal.py --quick: its section is written beside other sections, with real numbers: both
networks trained (accuracies above chance for 20 classes), every edgesnn artifact bit-exact with the IR
(the same accuracy), positive throughputs, and an instruction count per step from QEMU's Cortex-M4. No
time is asserted. About 15 s."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def num(cell: str) -> float:
    m = NUMBER.search(cell)
    assert m, f"no number in {cell!r}"
    return float(m.group().replace(",", ""))


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``text``, each a list of {column: cell}."""
    out, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            out.append([])
        elif not set(line) <= set("|- "):
            out[-1].append(dict(zip(header, cells, strict=True)))
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_temporal")
    out = tmp / "B.md"
    out.write_text("# Benchmarks\n\n<!-- other:begin -->\nkept table\n<!-- other:end -->\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_temporal.py"), "--quick", "--out", str(out),
                        "--json", str(tmp / "r.json")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    return text, json.loads((tmp / "r.json").read_text())


def section_tables(text: str) -> tuple[list[dict], list[dict]]:
    """The host table (8 rows) and the MCU table (2 rows) of the one bench-temporal section."""
    assert text.count("<!-- bench-temporal:begin -->") == 1 and text.count("<!-- bench-temporal:end -->") == 1
    body = text.split("<!-- bench-temporal:begin -->")[1].split("<!-- bench-temporal:end -->")[0]
    host, mcu = tables(body)
    assert len(host) == 8 and len(mcu) == 2
    return host, mcu


def test_the_section_is_written_beside_other_sections(bench):
    text, r = bench
    assert "<!-- other:begin -->\nkept table\n<!-- other:end -->" in text
    section_tables(text)
    body = text.split("<!-- bench-temporal:begin -->")[1]
    assert "Mode: quick" in body and "snntorch 1.0.0" in body and "T = 10" in body
    assert re.search(r"load average \(1, 5, 15 min\) [\d.]+, [\d.]+, [\d.]+ at the start", body)
    assert len(r["machine"]["load_average_start"]) == 3 and len(r["load_timing"]) == 2


def test_both_networks_are_trained_and_every_artifact_is_the_ir(bench):
    text, r = bench
    host, _ = section_tables(text)
    acc = r["accuracy"]
    assert 0.2 < acc["snntorch"] <= 1 and 0.2 < acc["golden"] <= 1  # 20 classes: chance is 0.05
    assert acc["golden"] == acc["edgesnn_torch"] == acc["litert"] == acc["c_none"] == acc["c_all"]
    assert r["mismatches"] == {"litert": 0, "c_none": 0, "c_all": 0}
    assert f"edgesnn {acc['golden']:.4f}" in text and f"snnTorch {acc['snntorch']:.4f}" in text
    for row in host:
        assert num(row["sequences/s (median)"]) > 0
        assert 0.2 < num(row["test accuracy"]) <= 1
        if "edgesnn" in row["implementation"] and "golden" not in row["implementation"]:
            assert row["sequences differing from the IR"] == "0 of 450"
        if "snnTorch" in row["implementation"]:
            assert row["vs snnTorch, same batch"] == "1.00x"
    assert {row["batch"].split(",")[0] for row in host} == {"1", "64"}
    assert all(v > 0 for v in r["sps"].values()) and len(r["sps"]) == 8


def test_qemu_counts_instructions_per_step(bench):
    text, r = bench
    _, mcu = section_tables(text)
    for mode, row in zip(("none", "all"), mcu):
        m = r["mcu"][mode]
        assert m["machine"] == "mps2-an386" and m["mismatches"] == 0 and m["steps"] == 2 * r["T"]
        assert 1_000 < m["instructions_per_step"] < 1_000_000
        assert num(row["Cortex-M4 instructions per step"]) == m["instructions_per_step"]
        assert num(row["per sequence (x T)"]) == m["instructions_per_step"] * r["T"]
        assert row["sequences differing from the IR (every step)"] == "0"
    # spike-driven kernels skip the zeros of the binary events and spikes: fewer instructions than dense
    assert r["mcu"]["all"]["instructions_per_step"] < r["mcu"]["none"]["instructions_per_step"]
