"""scripts/bench.py --quick: the script keeps working and writes real numbers into its own section.

No test here asserts a time: only that every table is there with numbers, and that the outcomes the
project guarantees hold (bit-exact runtimes differ from the IR in no sample, byte counts add up).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgesnn import targets

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
SECTIONS = ("1. Host inference", "2. MCU", "3. LiteRT", "4. Export cost", "5. Lava", "6. Compression")


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each '### ' heading's Markdown table as a list of {column: cell}; '' holds the headline table."""
    out, current, header = {}, "", None
    for line in text.splitlines():
        if line.startswith("### "):
            current, header = line[4:].strip(), None
            continue
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            out.setdefault(current, [])
        elif not set(line) <= set("|- "):
            out[current].append(dict(zip(header, cells, strict=True)))
    return out


def num(cell: str) -> float:
    m = NUMBER.search(cell)
    assert m, f"no number in {cell!r}"
    return float(m.group())


def section(tabs: dict, prefix: str) -> list[dict[str, str]]:
    [name] = [k for k in tabs if k.startswith(prefix)]
    return tabs[name]


def column(row: dict, fragment: str) -> str:
    [key] = [k for k in row if fragment in k]
    return row[key]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "B.md"
    # an existing file with another script's section: bench.py must keep it
    out.write_text("# Benchmarks\n\n## Other\n\n<!-- other:begin -->\nkept table\n<!-- other:end -->\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out),
                        "--json", str(tmp / "B.json")], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    return text, tables(text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]), \
        json.loads((tmp / "B.json").read_text())


def test_section_is_written_beside_other_sections(bench):
    text, tabs, _ = bench
    assert "<!-- other:begin -->\nkept table\n<!-- other:end -->" in text
    assert text.count("<!-- bench:begin -->") == 1 and text.count("<!-- bench:end -->") == 1
    assert "Mode: quick" in text
    assert re.search(r"Machine: .+, \d+ logical CPUs", text)
    assert "snntorch 1.0.0" in text and "ai-edge-litert" in text and "Repeats:" in text
    for name in SECTIONS:
        rows = section(tabs, name)
        assert rows, name
        for row in rows:
            assert any(NUMBER.fullmatch(c.rstrip("x")) for c in row.values()), (name, row)
    headline = tabs[""]
    assert len(headline) >= 10 and all(NUMBER.search(r["ratio"]) for r in headline)


def test_host_inference_compares_trained_networks(bench):
    _, tabs, _ = bench
    rows = section(tabs, "1. Host inference")
    kinds = [r["implementation"] for r in rows]
    assert sum("snnTorch" in k for k in kinds) == 2 and sum("compiled C" in k for k in kinds) == 2
    golden = [r for r in rows if "golden" in r["implementation"]]
    snn = [r for r in rows if "snnTorch" in r["implementation"]]
    for r in rows:
        assert num(column(r, "samples/s")) > 0
    assert {r["timesteps"] for r in snn} == {"4"}
    # both sides really trained: the LIF baseline and the SFA network classify digits
    assert num(snn[0]["accuracy (digits test, 450)"]) >= 0.9
    assert num(golden[0]["accuracy (digits test, 450)"]) >= 0.9
    # the compiled C computes what the golden interpreter computes: the same accuracy
    for r in rows:
        if "compiled C" in r["implementation"]:
            assert r["accuracy (digits test, 450)"] == golden[0]["accuracy (digits test, 450)"]
    for r in snn:
        assert r["vs snnTorch, same batch"] == "1.00x"


def test_mcu_builds_are_bit_exact_and_counted(bench):
    _, tabs, res = bench
    rows = section(tabs, "2. MCU")
    c_rows = [r for r in rows if r["runtime (what runs)"].startswith("edgesnn C")]
    tflm = [r for r in rows if r["runtime (what runs)"].startswith("TFLite Micro")]
    assert len(c_rows) == 2 and len(tflm) == 1
    for r in c_rows:
        assert column(r, "samples differing") == "0 of 450 / 0 of 20"
        assert int(column(r, "instructions per inference")) > 0
        assert num(column(r, "RAM arena")) > 0 and num(column(r, "model bytes in flash")) > 0
    assert column(tflm[0], "samples differing").startswith("0 of 450")
    m = res["mcu"]["models"][0]
    assert m["c"]["none"]["const_bytes"] == m["c"]["all"]["const_bytes"]  # same weights either way
    assert num(column(tflm[0], "model bytes in flash")) == m["tflm"]["file_bytes"]


def test_litert_reference_kernels_are_bit_exact(bench):
    _, tabs, _ = bench
    rows = {r["runtime"]: r for r in section(tabs, "3. LiteRT")}
    [ref] = [r for k, r in rows.items() if "reference kernels" in k]
    [xnn] = [r for k, r in rows.items() if "XNNPACK" in k]
    [ort] = [r for k, r in rows.items() if k.startswith("onnxruntime")]
    assert ref["samples differing from the IR (every output integer)"] == "0 of 450 (0 integers)"
    assert ref["argmax differing from the IR"] == "0 of 450"
    golden = next(r for r in section(tabs, "1. Host inference") if "golden" in r["implementation"])
    assert ref["accuracy"] == golden["accuracy (digits test, 450)"]  # bit-exact: the IR's accuracy
    for r in (ref, xnn, ort):
        assert num(column(r, "latency us")) > 0 and 0.9 <= num(r["accuracy"]) <= 1
    assert re.fullmatch(r"\d+ of 450", ort["argmax differing from torch"])


def test_export_cost_covers_every_target_and_size(bench):
    _, tabs, res = bench
    rows = section(tabs, "4. Export cost")
    # every target the registry lists that exports from the IR: timed, or refused with its reason (NIR holds
    # no attention ops)
    listed = [t.name for t in targets.all_targets() if t.source == "ir"]
    assert [r["target"] for r in rows] == [n for n in listed if n != "nir"]
    assert list(res["export"]["refused"]) == ["nir"] and "NIR export takes a chain" in res["export"]["refused"]["nir"]
    params = res["export"]["params"]
    assert params == sorted(params) and len(params) == 3
    for r in rows:
        secs = [float(v) for k, v in r.items() if k.startswith("s at ")]
        assert len(secs) == 3 and all(v > 0 for v in secs)
        assert int(column(r, "artifact bytes")) > 0


def test_lava_is_bit_exact_in_every_mode(bench):
    _, tabs, res = bench
    rows = section(tabs, "5. Lava")
    samples = res["lava"]["samples"][1]
    assert [r["mode"] for r in rows] == ["graded", "rate-burst", "bit-plane"]
    assert [r["timesteps per sample"] for r in rows] == ["1", "4", "3"]  # D = 4: 4 rate steps, 3 bit planes
    for r in rows:
        assert r["samples differing from the IR"] == f"0 of {samples}"
        assert NUMBER.fullmatch(column(r, "incl. start-up"))
        assert NUMBER.fullmatch(column(r, "steady state")) or column(r, "steady state").startswith("n/a")


def test_compression_bytes_against_the_bound(bench):
    _, tabs, res = bench
    rows = section(tabs, "6. Compression")
    recipes = sorted(p.stem for p in (ROOT / "edgesnn" / "shipped" / "recipes").glob("*.yaml"))
    assert [r["what"] for r in rows[:len(recipes)]] == [f"recipe `{name}`" for name in recipes]
    assert "ternary" in rows[-1]["compression"]
    assert {r["data"] for r in rows} == {"digits", "mnist5k-14"}  # each recipe's own data; the demo stays on digits
    for r, j in zip(rows, res["compression"]["rows"], strict=True):
        weights, actual = int(r["weights"]), int(r["IR weight bytes (packed)"])
        bound = float(r["bound sum(bits x weights) / 8"])
        layers = int(r["weight layers (bits x count)"].split(":")[0])
        assert bound <= actual < bound + layers  # packing rounds each tensor up to whole bytes, nothing more
        assert int(r["float32 bytes of these weights"]) == 4 * weights
        assert num(r["float32 / IR"]) == pytest.approx(4 * weights / actual, abs=0.01)
        assert sum(n for n in j["bits"].values()) == layers
    by_method = {r["compression"]: r for r in rows}
    assert num(by_method["bestformer"]["float32 / IR"]) > 20  # 1-bit hidden layers
    assert num(by_method["none (8-bit post-training)"]["float32 / IR"]) == 4.0


# ---- the split: one module per table, each rewriting its own part of the section ---------------------------

KEYS = ("host", "mcu", "litert", "export", "lava", "compression")  # table order


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def parts(text: str) -> dict[str, str]:
    """Each table's part of the bench section, between its own markers."""
    return {k: text.split(f"<!-- bench-{k}:begin -->\n")[1].split(f"\n<!-- bench-{k}:end -->")[0] for k in KEYS}


def headline_rows(text: str) -> list[str]:
    lines = text.split("<!-- bench:begin -->")[1].splitlines()
    first = lines.index("| compared | ratio | how to read it |") + 2
    return lines[first:lines.index("", first)]


@pytest.fixture(scope="module")
def bench_module():
    """scripts/bench.py imported here (it pins threads in os.environ: restored after)."""
    saved = dict(os.environ)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench as module
    finally:
        sys.path.remove(str(ROOT / "scripts"))
        os.environ.clear()
        os.environ.update(saved)
    return module


def test_each_table_sits_between_its_own_markers_in_table_order(bench):
    text, _, _ = bench
    body = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    positions = [body.index(f"<!-- bench-{k}:begin -->") for k in KEYS]
    assert positions == sorted(positions)
    for number, (k, part) in enumerate(parts(text).items(), 1):
        assert body.count(f"<!-- bench-{k}:begin -->") == 1 and body.count(f"<!-- bench-{k}:end -->") == 1
        assert part.startswith(f"### {number}. ") and part.endswith("|\n")  # a blank line ends the table
    # the headline rows name their table, in table order
    tables_named = [int(re.search(r"\(table (\d)\) \|$", row).group(1)) for row in headline_rows(text)]
    assert tables_named == sorted(tables_named) and set(tables_named) == set(range(1, 7))


def test_litert_row_of_onnxruntime_times_the_integer_onnx_file(bench):
    text, tabs, res = bench
    [ort] = [r for r in section(tabs, "3. LiteRT") if r["runtime"].startswith("onnxruntime")]
    assert "integer ONNX from the IR" in ort["what runs"]
    assert ort["samples differing from the IR (every output integer)"] == "0 of 450 (0 integers)"  # bit-exact
    assert "onnxruntime on the integer ONNX file written from the same IR" in parts(text)["litert"]


def test_splicing_each_table_into_a_section_of_one_rebuilds_the_whole_section(bench, bench_module):
    """Tables measured one at a time, each spliced in, give the section one run writes, but for the
    first line and each spliced table's note."""
    _, _, res = bench
    s = bench_module.QUICK
    whole = bench_module.document(res, s, None)
    one = {k: v for k, v in res.items() if k not in KEYS or k == "lava"}
    body = bench_module.document(one, s, "lava")
    assert bench_module.refusal(body, "host", s, ROOT / "B.md") is None
    for key in ("compression", "host", "litert", "mcu", "export"):  # out of table order on purpose
        body = bench_module.splice(body, key, res, s)
        assert body.count(f"<!-- bench-{key}:begin -->") == 1
    notes = re.findall(r"\n\*Measured alone by `scripts/bench_(\w+)\.py --quick` on .+\*\n", body)
    assert sorted(notes) == sorted(["compression", "host", "litert", "mcu", "export"])
    stripped = re.sub(r"\n\*Measured alone by .+\*\n", "", body)
    assert stripped.split("\n", 1)[1] == whole.split("\n", 1)[1]
    assert stripped.startswith("Regenerated by `scripts/bench_lava.py --quick`")
    assert whole.startswith("Regenerated by `scripts/bench.py --quick`")


def test_one_module_rewrites_only_its_table_and_headline_rows(bench, tmp_path):
    text, _, _ = bench
    out = tmp_path / "B.md"
    out.write_text(text)
    r = run_script("bench_litert.py", "--quick", "--out", out, "--json", tmp_path / "L.json")
    assert r.returncode == 0, r.stderr[-3000:]
    new = out.read_text()
    before, after = parts(text), parts(new)
    assert {k: v for k, v in after.items() if k != "litert"} == {k: v for k, v in before.items() if k != "litert"}
    assert re.match(r"### 3\. LiteRT vs onnxruntime\n\n\*Measured alone by `scripts/bench_litert\.py --quick` on "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d UTC in \d+ s \(.+, \d+ usable CPUs, load average", after["litert"])
    old_rows, new_rows = headline_rows(text), headline_rows(new)
    keep = [row for row in old_rows if not row.endswith("(table 3) |")]
    assert [row for row in new_rows if not row.endswith("(table 3) |")] == keep
    assert len(new_rows) == len(old_rows) and sum(row.endswith("(table 3) |") for row in new_rows) == 1
    # outside the litert part and its headline row, the file is unchanged (the other section included)
    strip = lambda t: t.replace(parts(t)["litert"], "").replace(  # noqa: E731
        next(row for row in headline_rows(t) if row.endswith("(table 3) |")), "")
    assert strip(new) == strip(text)
    rows = {row["runtime"]: row for row in tables(after["litert"])["3. LiteRT vs onnxruntime"]}
    [ref] = [row for k, row in rows.items() if "reference kernels" in k]
    assert ref["samples differing from the IR (every output integer)"] == "0 of 450 (0 integers)"
    res = json.loads((tmp_path / "L.json").read_text())
    assert [k for k in KEYS if k in res] == ["litert"] and res["settings"]["mode"] == "quick"


@pytest.mark.parametrize("script, args, edit, message", [
    ("bench_litert.py", [], lambda t: t,
     "its bench section is from a quick run; a full run of one table would mix the two (write it elsewhere with "
     "--out, or run --quick)"),
    ("bench.py", ["--only", "mcu", "--quick"], lambda t: re.sub(r"<!-- bench-\w+:(begin|end) -->\n", "", t),
     "its bench section has no per-table markers (written before the comparisons were split); run "
     "scripts/bench.py once to rewrite the whole section"),
])
def test_one_module_refuses_a_section_it_would_make_inconsistent(bench, tmp_path, script, args, edit, message):
    text, _, _ = bench
    out = tmp_path / "B.md"
    out.write_text(edit(text))
    before = out.read_bytes()
    r = run_script(script, *args, "--out", out)
    assert r.returncode == 1
    assert r.stderr == f"error: {out}: {message}\n"
    assert r.stdout == "" and out.read_bytes() == before
