"""edgesnn fit: the search over compressions on a board's budgets, its front and chosen recipe (which
`edgesnn run` reproduces byte for byte), a fit killed mid-trial resuming, budgets nothing meets, and a
crashing trial recorded as failed while the search goes on. A tiny CNN on digits, 1 epoch per trial,
on a small board file whose one target is the IR (no compiler in the loop)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesnn import pipeline
from edgesnn.errors import EdgesnnError
from edgesnn.cli import app
from edgesnn.limits import read_json

BOARD = """name: tiny-mcu
kind: mcu
isa: Armv7E-M (Thumb-2)
cpu: cortex-m4
clock_hz: 64000000
flash_bytes: {flash}
ram_bytes: 65536
targets: [ir]
sources: ["a test board"]
"""
SMALL = {"channels": [8, 16], "hidden": 32}
EDGESNN = [sys.executable, "-m", "edgesnn"]


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "cnn"
    pipeline.train_model("cnn", "digits", 2, out, model_kwargs=SMALL)
    return out


@pytest.fixture
def board(tmp_path):
    path = tmp_path / "tiny-mcu.yaml"
    path.write_text(BOARD.format(flash=8000))
    return path


def artifacts(run: Path) -> dict:
    """sha256 of every artifact but the reports that hold timings (verify, profile)."""
    m = read_json(run / "manifest.json", "manifest")
    return {a["path"]: a["sha256"] for a in m["artifacts"]
            if not a["path"].endswith("verify.json") and not a["path"].startswith("profile-")}


def test_fit_front_and_chosen_recipe_reproduced(ckpt, board, tmp_path):
    out = tmp_path / "f"
    r = edgesnn("fit", ckpt, "--board", board, "--out", out, "--trials", 2, "--method", "qpsnn", "--method", "qsnn",
                "--D", 2, "--D", 4, "--seed", 2, "--json", tmp_path / "fit.json")  # seed 2: both trials verify
    assert r.exit_code == 0, r.output
    fit = read_json(out / "fit.json", "fit")
    given = read_json(tmp_path / "fit.json", "fit")
    assert given.pop("out") == str(out) and given == fit
    assert [t["state"] for t in fit["trials"]] == ["complete"] * 2 and fit["failed"] == 0
    for t in fit["trials"]:  # every trial's artifacts verified against the IR, each in its own run folder
        verify = read_json(out / t["folder"] / "ir" / "verify.json", "verify")
        assert verify["samples"] == 450 and t["metrics"]["verify"]["ir"]["mismatches"] == verify["mismatches"]
        assert t["metrics"]["verified"] == verify["passed"]
        assert not t["feasible"] or t["metrics"]["verified"]  # a trial failing verification meets no budget
    budget = next(x for x in fit["trials"][0]["limits"] if x["budget"] == "flash")
    assert budget["limit"] == 8000  # the board's flash, by default
    chosen = fit["chosen"]
    ok = [t for t in fit["trials"] if t["feasible"]]
    assert chosen["accuracy"] == max(t["metrics"]["accuracy"] for t in ok)
    last = r.output.strip().splitlines()[-1]
    assert chosen["number"] in fit["front"] and last.startswith(f"chosen: trial {chosen['number']}")
    front = read_json(out / "front.json", "front")
    assert [p["number"] for p in front["front"]] == fit["front"] and front["chosen"] == chosen["number"]
    page = (out / "report" / "index.html").read_text()
    assert "front.png" in page and "flash 8000" in page and (out / "report" / "front.png").stat().st_size > 1000
    rerun = tmp_path / "rerun"
    r = edgesnn("run", out / "chosen.yaml", "--out", rerun, "-q")
    assert r.exit_code == 0, r.output
    assert artifacts(rerun) == artifacts(out / chosen["folder"])  # byte for byte


def test_nothing_fits_says_by_how_much(ckpt, board, tmp_path):
    """Budgets nothing meets: a report (exit 0) naming the closest trial's misses. A resumed fit with new
    budgets re-judges its trials without running any (the study already holds --trials)."""
    out = tmp_path / "f"
    search = ["--method", "qpsnn", "--D", 4]
    r = edgesnn("fit", ckpt, "--board", board, "--out", out, "--trials", 3, "--timeout", 0.001, *search)
    assert r.exit_code == 0, r.output  # --timeout: after the first trial, no other starts
    assert (out / "chosen.yaml").exists() == (read_json(out / "fit.json", "fit")["chosen"] is not None)
    r = edgesnn("fit", ckpt, "--board", board, "--out", out, "--trials", 1, *search, "--max-flash", 100,
                "--min-accuracy", 0.999)
    assert r.exit_code == 0, r.output  # a report, not an error
    fit = read_json(out / "fit.json", "fit")
    assert len(fit["trials"]) == 1 and fit["chosen"] is None and not (out / "chosen.yaml").exists()
    closest = fit["trials"][0]
    flash = closest["metrics"]["flash_bytes"]
    missed = {x["budget"]: x for x in fit["misses"]["limits"]}
    assert missed["flash"]["miss"] == flash - 100
    assert missed["accuracy"]["miss"] == pytest.approx(0.999 - closest["metrics"]["accuracy"])
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("no trial meets every budget: the closest, trial 0") and f"flash {flash} vs at most 100 B" in last
    assert f"misses by {flash - 100}" in last
    r = edgesnn("fit", ckpt, "--board", board, "--out", out, "--trials", 1, "--method", "qsnn", "--D", 4)
    assert r.exit_code == 1 and "holds a fit of another space" in r.output  # another search is refused


def test_bad_budget_and_unknown_method_are_one_line(ckpt, board, tmp_path):
    r = edgesnn("fit", ckpt, "--board", board, "--out", tmp_path / "f", "--max-ram", -1)
    assert r.exit_code == 1 and r.output.strip() == "error: --max-ram must be positive, got -1"
    r = edgesnn("fit", ckpt, "--board", board, "--out", tmp_path / "f", "--method", "magic")
    assert r.exit_code == 1 and "error: --method: unknown 'magic'" in r.output
    r = edgesnn("fit", ckpt, "--board", board, "--out", tmp_path / "f", "--target", "lava")
    assert r.exit_code == 1 and r.output.strip() == "error: --target: board tiny-mcu runs ir, not lava"
    assert not (tmp_path / "f").exists()


def test_killed_fit_resumes(ckpt, board, tmp_path):
    """SIGKILL once the first trial's run folder has its checkpoint; the rerun marks that trial
    interrupted, runs its point again first (its folder's finished stages kept) and completes."""
    out = tmp_path / "f"
    args = [*EDGESNN, "fit", str(ckpt), "--board", str(board), "--out", str(out), "--trials", "1", "--method",
            "qpsnn", "--D", "4"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while not list((out / "trials").glob("*/checkpoint/config.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the fit and its trial's process
    p.wait()
    [first] = [p for p in (out / "trials").iterdir() if not p.name.startswith(".")]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fit = read_json(out / "fit.json", "fit")
    states = [t["state"] for t in fit["trials"]]
    assert states[0] == "fail" and fit["trials"][0]["error"].startswith("interrupted")
    assert states[1:] == ["complete"]  # the interrupted trial is not counted: --trials 1 runs its point again
    assert fit["trials"][1]["point"] == fit["trials"][0]["point"] and fit["trials"][1]["folder"] == f"trials/{first.name}"
    manifest = read_json(first / "manifest.json", "manifest")
    assert manifest["summary"]  # the resumed run finished
    assert [p.name for p in (out / "trials").iterdir()] == [first.name]  # the killed trial's scratch is gone


CRASHNET = '''
import os, signal, sys
import torch
from torch import nn
from edgesnn.neurons import MultiSpike


class CrashSpike(MultiSpike):
    """Dies (SIGKILL) when a trial's worker trains it: a trial that crashes (tracing and eval pass)."""

    def forward(self, u):
        if self.training and isinstance(u, torch.Tensor) and sys.argv[0].endswith(os.path.join("fit", "worker.py")):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(u)


def Net(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), CrashSpike(4), nn.Linear(32, num_classes))
'''


def test_crashing_trial_is_failed_and_the_search_goes_on(board, tmp_path, monkeypatch):
    (tmp_path / "crashnet.py").write_text(CRASHNET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = edgesnn("train", "--model", "crashnet:Net", "--epochs", 1, "--out", "ck")
    assert r.exit_code == 0, r.output
    r = edgesnn("fit", "ck", "--board", board, "--out", "f", "--trials", 3, "--method", "none", "--method", "qsnn",
                "--seed", 3, "--trust-code")
    assert r.exit_code == 0, r.output
    fit = read_json(tmp_path / "f" / "fit.json", "fit")
    assert [t["point"]["method"] for t in fit["trials"]] == ["qsnn", "qsnn", "none"]  # what seed 3 draws
    assert [t["state"] for t in fit["trials"]] == ["fail", "fail", "complete"]  # on after the crashes
    failed = [t for t in fit["trials"] if t["state"] == "fail"]
    assert all(t["error"] == "the trial's process crashed (killed by signal 9)" for t in failed)
    assert (fit["completed"], fit["failed"]) == (1, 2) and fit["trials"][2]["metrics"]["samples"] == 450


def test_space_has_per_layer_bits_and_stream_dtype(ckpt, board, tmp_path):
    """The inner weight layers (neither first nor last) are searched one width each (the digits CNN has two), the
    stream dtype int8 or int16; a point's recipe carries both, as quantize.layer_bits / stream_dtype, or, with no
    compression, as each export's stream_dtype."""
    from edgesnn import boards
    from edgesnn.fit import space
    from edgesnn.ir import serialize
    from edgesnn.run import run_recipe

    sp = space.build(ckpt, boards.load(str(board)), ["none", "qsnn", "ternary"], D=[4])
    assert sp.layers == (("features.4",), ("head.0",)) and sp.stream_dtypes == ("int8", "int16")
    assert space.groups([f"l{i}" for i in range(7)]) == (("l0", "l1", "l2"), ("l3", "l4"), ("l5", "l6"))
    config = read_json(ckpt / "config.json", "config")
    point = {"method": "qpsnn", "D": 4, "target": "ir", "stream_dtype": "int16",
             "weight_bits": {"features.4": 3, "head.0": 6}, "prune": 0.25}
    r = space.recipe(point, ckpt, config, str(board), 1, 0, "fit")
    q = r.quantize
    assert (q.weight_bits, q.layer_bits, q.stream_dtype, q.prune) == (3, {"head.0": 6}, "int16", 0.25)
    assert [e.stream_dtype for e in r.export] == [None]  # the compressed checkpoint's dtype
    point["weight_bits"] = {"features.4": 4, "head.0": 4}  # one width: no layer_bits
    assert space.recipe(point, ckpt, config, str(board), 1, 0, "fit").quantize.layer_bits == {}
    r = space.recipe({"method": "none", "D": 4, "target": "ir", "stream_dtype": "int16"}, ckpt, config, str(board),
                     1, 0, "fit")
    assert r.quantize is None and [(e.target, e.stream_dtype) for e in r.export] == [("ir", "int16")]
    r16 = space.recipe({"method": "none", "D": 4, "target": "tflite", "stream_dtype": "int8", "weight_bits": 16}, ckpt,
                       config, str(board), 1, 0, "fit")  # the float layers as two int8 planes, in every export
    assert [(e.target, e.weight_bits) for e in r16.export] == [("ir", 16), ("tflite", 16)]
    manifest = run_recipe(r, tmp_path / "none16")  # the float checkpoint exported with int16 streams
    graph = serialize.load(tmp_path / "none16" / "ir" / "model.ir")
    assert [graph.tensors[o].dtype for o in graph.outputs] == ["int16"] and manifest["summary"][0]["samples"] == 450
    with pytest.raises(EdgesnnError, match="--stream-dtype: unknown 'int4'; fit searches int8, int16"):
        space.build(ckpt, boards.load(str(board)), ["none"], D=[4], stream_dtypes=["int4"])


def test_per_layer_bits_and_int16_streams_reach_the_trial_and_reproduce(ckpt, tmp_path):
    """A qsnn trial with its own bits per inner layer and int16 streams: the point is in fit.json and the table, its
    run's recipe and compressed checkpoint hold those bits and dtype, the IR's streams are int16, and the chosen
    recipe rebuilds the trial byte for byte with edgesnn run."""
    from edgesnn.fit import fit
    from edgesnn.fit.results import front_rows
    from edgesnn.ir import serialize

    board = tmp_path / "big-mcu.yaml"
    board.write_text(BOARD.format(flash=10**6))
    out = tmp_path / "f"
    r = fit(ckpt, str(board), out, trials=1, methods=["qsnn"], D=[4], stream_dtypes=["int16"], seed=15)
    [t] = r["trials"]
    assert t["state"] == "complete" and t["point"] == {  # what seed 15 draws
        "method": "qsnn", "D": 4, "target": "ir", "stream_dtype": "int16",
        "weight_bits": {"features.4": 1, "head.0": 2}, "membrane_bits": 8}
    assert front_rows(r)[0][2] == "D=4 stream_dtype=int16 weight_bits=features.4:1,head.0:2 membrane_bits=8"
    run = out / t["folder"]
    recipe = read_json(run / "manifest.json", "manifest")["recipe"]
    assert {k: recipe["quantize"][k] for k in ("method", "weight_bits", "layer_bits", "stream_dtype")} == {
        "method": "qsnn", "weight_bits": 1, "layer_bits": {"head.0": 2}, "stream_dtype": "int16"}
    spec = read_json(run / "compressed" / "config.json", "config")["quantization"]
    assert spec["stream_dtype"] == "int16" and spec["membrane_bits"] == 8
    assert {n: (w["quantizer"], w["bits"]) for n, w in spec["weights"].items()} == {
        "features.0": ("uniform", 8), "features.4": ("qsnn", 1), "head.0": ("qsnn", 2), "classifier": ("uniform", 8)}
    graph = serialize.load(run / "ir" / "model.ir")
    assert [graph.tensors[o].dtype for o in graph.outputs] == ["int16"]
    assert t["metrics"]["verified"] and r["chosen"]["number"] == 0
    rerun = tmp_path / "rerun"
    result = edgesnn("run", out / "chosen.yaml", "--out", rerun, "-q")
    assert result.exit_code == 0, result.output
    assert artifacts(rerun) == artifacts(run)  # byte for byte


def test_recipe_layer_bits_and_stream_dtype_errors(ckpt, tmp_path):
    """layer_bits on a method that does not take it, an export dtype the compression did not train, a layer that is
    not an inner weight layer: each one line."""
    from edgesnn import recipes
    from edgesnn.quantize import Options, quantize_checkpoint

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nmodel: {name: cnn}\nquantize: {method: ternary, layer_bits: {head.0: 2}}\n"
                   "export: [{target: ir}]\n")
    with pytest.raises(EdgesnnError, match="quantize: value error, layer_bits applies to the qsnn and qpsnn methods, "
                                           "not ternary$"):
        recipes.load(bad)
    bad.write_text("name: b\nmodel: {name: cnn}\nquantize: {method: qsnn}\n"
                   "export: [{target: ir, stream_dtype: int16}]\n")
    with pytest.raises(EdgesnnError, match="export ir: stream_dtype int16, but the compression trains its streams as "
                                           "int8"):
        recipes.load(bad)
    with pytest.raises(EdgesnnError, match="layer_bits: 'classifier' is not an inner weight layer of this model .*: "
                                           "features.4, head.0$"):
        quantize_checkpoint(ckpt, "qpsnn", tmp_path / "q", Options(layer_bits={"classifier": 2}, epochs=1))
    assert not (tmp_path / "q").exists()
