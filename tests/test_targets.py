"""A target added without editing edgesnn: tests/toy_target.py, registered here, works in export, verify,
profile and a recipe's run (the CLI included); one installed as a package (an entry point in group
edgesnn.targets) adds its own options to the CLI; an unknown or broken target is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesnn import pipeline, targets
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError

import toy_target  # tests/ is on sys.path, as for the other test helpers

TESTS = Path(__file__).resolve().parent


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def toy():
    targets.register(toy_target.TOY)
    yield toy_target.TOY
    targets.unregister("toy")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    pipeline.train_model("mlp", "digits", 1, root / "a")
    pipeline.train_model("mlp", "digits", 1, root / "b", seed=1)
    return root


def test_toy_exports_verifies_and_profiles_through_the_cli(toy, ckpts, tmp_path):
    r = edgesnn("export", ckpts / "a", "--target", "toy", "--out", tmp_path / "toy")
    assert r.exit_code == 0, r.output
    path = tmp_path / "toy" / "model.json"
    assert r.output.strip() == f"wrote {path}"
    doc = json.loads(path.read_text())
    assert bytes(doc["ir_bytes"]) == (tmp_path / "toy" / "model.ir").read_bytes()  # the IR, as integers
    r = edgesnn("verify", path, "--json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert (v["samples"], v["mismatches"], v["passed"], v["data"]) == (450, 0, True, "digits")
    assert [c["result"] for c in v["checks"]] == ["bit-exact"] and "bit-exact with the IR in toy JSON reader" in r.output
    r = edgesnn("profile", path, "--board", "host", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    p = json.loads((tmp_path / "p.json").read_text())
    assert (p["target"], p["fits"], p["target_memory"]) == ("toy", True, {"file_bytes": path.stat().st_size})
    assert p["needed_bytes"]["flash"] == path.stat().st_size


def test_toy_verify_finds_a_file_that_is_not_its_ir(toy, ckpts, tmp_path):
    """model.json of another model beside this model.ir: outputs differ, verify fails in one line (exit 1)."""
    a = pipeline.export_model(ckpts / "a", "toy", tmp_path / "a")
    b = pipeline.export_model(ckpts / "b", "toy", tmp_path / "b")
    (tmp_path / "a" / "model.json").write_bytes(b.read_bytes())
    r = edgesnn("verify", a)
    assert r.exit_code == 1 and "not bit-exact with the IR in toy JSON reader" in r.output
    assert pipeline.verify(a)["mismatches"] > 0
    (tmp_path / "a" / "model.json").write_text('{"format": "edgesnn-toy", "ir_bytes": [1, 2, 300]}')
    with pytest.raises(EdgesnnError, match="model.json: not a toy model file"):
        pipeline.verify(a)


def test_toy_options_are_its_own(toy, ckpts, tmp_path):
    path = pipeline.export_model(ckpts / "a", "toy", tmp_path / "t", toy_indent=2)
    assert path.read_text().startswith('{\n  "format"')
    with pytest.raises(EdgesnnError, match="^toy_indent: must be at least 0, got -1$"):
        pipeline.export_model(ckpts / "a", "toy", tmp_path / "u", toy_indent=-1)
    with pytest.raises(EdgesnnError, match="^--toy-indent: an option of --target toy, not of tflite$"):
        pipeline.export_model(ckpts / "a", "tflite", tmp_path / "u", toy_indent=2)
    with pytest.raises(EdgesnnError, match="^export takes no option 'colour'"):
        pipeline.export_model(ckpts / "a", "toy", tmp_path / "u", colour="red")
    assert not (tmp_path / "u").exists()


def test_toy_in_a_recipe_run(toy, tmp_path):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text("name: toy\ndata: digits\nmodel: {name: mlp, D: 4}\ntrain: {epochs: 1}\n"
                      "export:\n  - {target: toy, toy_indent: 1}\nprofile:\n  - {export: toy, board: host}\n")
    r = edgesnn("run", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    export, prof = m["summary"]
    size = (tmp_path / "run" / "toy" / "model.json").stat().st_size
    assert (export["export"], export["mismatches"], export["passed"], export["bytes"]) == ("toy", 0, True, size)
    assert (prof["board"], prof["fits"]) == ("host", True)
    assert (tmp_path / "run" / "toy" / "model.json").read_text().startswith('{\n "format"')
    assert {a["path"] for a in m["artifacts"]} >= {"toy/model.json", "toy/model.ir", "toy/verify.json",
                                                  "profile-toy-host.json"}
    r = edgesnn("run", recipe, "--out", tmp_path / "run")  # unchanged: every stage skipped
    assert r.exit_code == 0 and r.output.count("skip ") == 3, r.output


def test_registry_lists_and_refuses(toy):
    assert targets.names()[:7] == ("ir", "onnx", "onnx-qcdq", "tflite", "mcu", "lava", "nir")
    assert targets.names()[-1] == "toy" and targets.get("toy") is toy
    with pytest.raises(EdgesnnError, match="^a target named 'toy' is already registered$"):
        targets.register(toy_target.ToyTarget())
    with pytest.raises(EdgesnnError, match=r"^unknown target 'fpga'; available: ir, onnx, .*, nir, toy$"):
        targets.get("fpga")
    assert targets.recognize(Path("x/model.json")) is toy and targets.recognize(Path("x/model.tflite")).name == "tflite"


def test_a_target_without_the_export_its_source_needs_is_refused():
    """A Target's export methods are the interface, not defaults: registering one that leaves out the method
    its ``source`` calls fails at once, never at a user's export."""
    half = type("Half", (targets.Target,), {"name": "half", "help": "no export"})()
    with pytest.raises(TypeError, match=r"^target 'half': source 'ir' needs its own export\(\)"):
        targets.register(half)
    other = type("Other", (targets.Target,), {"name": "other", "source": "fpga"})()
    with pytest.raises(TypeError, match=r"^target 'other': source 'fpga' needs its own export\(\)"):
        targets.register(other)
    assert "half" not in targets.names() and "other" not in targets.names()


def _plugin(tmp_path: Path, line: str) -> dict:
    """An installed package on sys.path declaring ``line`` in its entry_points.txt; the child's environment."""
    info = tmp_path / "edgesnn_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgesnn-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edgesnn.targets]\n{line}\n")
    path = os.pathsep.join([str(tmp_path), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "300"}


def _cli(env: dict, *args):
    return subprocess.run([sys.executable, "-m", "edgesnn", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def test_an_installed_plugin_adds_its_target_and_options(ckpts, tmp_path):
    env = _plugin(tmp_path, "toy = toy_target:TOY")
    r = _cli(env, "export", "--help")
    assert r.returncode == 0 and "ir|onnx|onnx-qcdq|tflite|mcu|lava|nir|toy]" in r.stdout
    assert "--toy-indent" in r.stdout and "toy: spaces of indentation in model.json" in r.stdout
    r = _cli(env, "export", ckpts / "a", "--target", "toy", "--toy-indent", "3", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t" / "model.json").read_text().startswith('{\n   "format"')
    r = _cli(env, "verify", tmp_path / "t" / "model.json")
    assert r.returncode == 0 and "bit-exact with the IR in toy JSON reader (450 samples)" in r.stdout, r.stderr


def test_a_broken_plugin_is_one_line_and_the_rest_works(ckpts, tmp_path):
    env = _plugin(tmp_path, "broken = no_such_module_here:TARGET")
    r = _cli(env, "export", ckpts / "a", "--target", "broken", "--out", tmp_path / "o")
    assert r.returncode == 1 and not (tmp_path / "o").exists()
    assert r.stderr.strip().splitlines() == [
        "error: target plugin 'broken' (no_such_module_here:TARGET) failed to load: ModuleNotFoundError: No module "
        "named 'no_such_module_here'"]
    r = _cli(env, "export", ckpts / "a", "--target", "ir", "--out", tmp_path / "ir")
    assert r.returncode == 0 and (tmp_path / "ir" / "model.ir").is_file(), r.stderr


def test_a_target_reads_only_the_ir(toy, ckpts, tmp_path):
    """Exported from the model.ir file alone (no checkpoint), an artifact is the same bytes as from the checkpoint."""
    ir = pipeline.export_model(ckpts / "a", "ir", tmp_path / "ir")
    for name in ("tflite", "toy"):
        direct = pipeline.export_model(ckpts / "a", name, tmp_path / f"{name}-ckpt")
        from_ir = targets.export_ir(name, ir, tmp_path / f"{name}-ir")
        assert from_ir.read_bytes() == direct.read_bytes() and from_ir.name == direct.name
    with pytest.raises(EdgesnnError, match="^--target onnx-qcdq exports the torch model, not an IR"):
        targets.export_ir("onnx-qcdq", ir, tmp_path / "q")
    with pytest.raises(EdgesnnError, match="^--target mcu needs --board"):
        targets.export_ir("mcu", ir, tmp_path / "m")
