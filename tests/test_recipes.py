"""Recipes: validation errors name the key and the file; `edgesnn run` writes a manifest of hashed
artifacts, skips unchanged stages and redoes changed ones."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from edgesnn import recipes
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError

TINY = """name: tiny
data: digits
model: {name: mlp, D: 4}
train: {epochs: 2}
export:
  - {target: ir}
  - {target: tflite}
  - {target: mcu, board: nucleo-f446re}
profile:
  - {export: tflite, board: raspberry-pi-4}
"""


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["digits-sfa-cnn", "digits-qpsnn-4bit-pruned", "digits-bestformer-1bit",
                                  "digits-spikeformer-qsnn"])
def test_shipped_recipes_are_valid_and_cover_every_target_and_three_boards(name):
    r = recipes.load(name)
    assert {e.target for e in r.export} == {"ir", "tflite", "mcu", "lava", "onnx"}
    assert len({p.board for p in r.profile}) >= 3


@pytest.mark.parametrize("text,fragment", [
    (TINY.replace("name: tiny", "name: tiny\ncolour: red"), "colour: extra inputs are not permitted"),
    (TINY.replace("{epochs: 2}", "{epochs: two}"), "train.epochs: input should be a valid integer"),
    (TINY.replace("model: {name: mlp, D: 4}\n", ""), "model: field required"),
    (TINY.replace("{target: ir}", "{target: gpu}"), "export.0.target: input should be"),
    (TINY.replace("{export: tflite,", "{export: nope,"), "profile.export: 'nope' is not one of this recipe's exports"),
    ("name: [unclosed", "not valid YAML"),
])
def test_bad_recipes_name_the_key_and_the_file(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(EdgesnnError, match=str(path)) as e:
        recipes.load(path)
    assert fragment in str(e.value)
    r = edgesnn("run", path, "--out", tmp_path / "out")
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(EdgesnnError, match="unknown recipe 'nope'; available: digits-bestformer-1bit"):
        recipes.load("nope")


@pytest.mark.slow
def test_run_writes_a_manifest_and_skips_unchanged_stages(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    out = tmp_path / "out"
    r = edgesnn("run", path, "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["stage"] for a in manifest["artifacts"]} == {"train", "export:ir", "export:tflite", "export:mcu-nucleo-f446re",
                                                          "profile:tflite:raspberry-pi-4"}
    for a in manifest["artifacts"]:
        assert hashlib.sha256((out / a["path"]).read_bytes()).hexdigest() == a["sha256"]
    assert manifest["versions"]["torch"].startswith("2.13")
    assert any(row.get("board") == "raspberry-pi-4" and row["fits"] for row in manifest["summary"])
    assert "run  train" in r.output
    again = edgesnn("run", path, "--out", out)
    assert again.exit_code == 0 and "run  " not in again.output and again.output.count("skip ") == 5
    path.write_text(TINY.replace("{target: mcu, board: nucleo-f446re}", "{target: mcu, board: nucleo-f446re, event_driven: none}"))
    third = edgesnn("run", path, "--out", out)
    assert third.exit_code == 0 and "run  export:mcu-nucleo-f446re" in third.output and "skip train" in third.output
