"""Recipes: validation errors name the key and the file; `edgesnn run` writes a manifest of hashed
artifacts, skips unchanged stages and redoes changed ones."""

import hashlib
import json

import pytest
from typer.testing import CliRunner

from edgesnn import boards, recipes
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.pipeline import TARGETS

TINY = """name: tiny
data: digits
model: {name: mlp, D: 4}
train: {epochs: 2}
export:
  - {target: ir}
  - {target: tflite}
  - {target: mcu, board: nucleo-f446re}
  - {target: nir}
profile:
  - {export: tflite, board: raspberry-pi-4}
"""


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["digits-sfa-cnn", "mnist5k-qpsnn-4bit-pruned", "mnist5k-bestformer-1bit",
                                  "mnist5k-spikeformer-qsnn", "mnist5k-ibra-bitplane"])
def test_shipped_recipes_are_valid_and_cover_every_target_and_three_boards(name):
    """Every target that reads the IR (onnx-qcdq starts from torch), but NIR for the transformer, whose
    add / mul / reduce NIR cannot express (test_nir)."""
    r = recipes.load(name)
    expressible = set(TARGETS) - {"onnx-qcdq"} - ({"nir"} if r.model.name == "spikeformer" else set())
    assert {e.target for e in r.export} == expressible
    assert len({p.board for p in r.profile}) >= 3


@pytest.mark.parametrize("text,fragment", [
    (TINY.replace("name: tiny", "name: tiny\ncolour: red"), "colour: extra inputs are not permitted"),
    (TINY.replace("{epochs: 2}", "{epochs: two}"), "train.epochs: input should be a valid integer"),
    (TINY.replace("model: {name: mlp, D: 4}\n", ""), "model: field required"),
    (TINY.replace("{target: ir}", "{target: gpu}"), "export.0.target: input should be"),
    (TINY.replace("{target: ir}", "{target: ir, weight_bits: 12}"), "export.0.weight_bits: input should be 1, 2,"),
    (TINY.replace("{export: tflite,", "{export: nope,"), "profile.export: 'nope' is not one of this recipe's exports"),
    (TINY.replace("{export: tflite,", "{export: nir,"), "profile.export: a NIR file runs on no board of its own"),
    ("name: [unclosed", "not valid YAML"),
    (TINY.replace("{target: tflite}", "{target: tflite, spike_code: bit-plane}"),
     "export.1: value error, spike_code: the tflite target runs no spike trains"),
    (TINY.replace("{target: nir}", "{target: lava, lava_mode: graded, spike_code: bit-plane}"),
     "export.3: value error, lava_mode graded and spike_code bit-plane disagree"),
    (TINY.replace("{target: nir}", "{target: lava, spike_code: morse}"),
     "export.3.spike_code: input should be 'rate-burst' or 'bit-plane'"),
    (TINY.replace("data: digits", "data: no/such/folder"), "data: value error, 'no/such/folder' is not a data set"),
    (TINY.replace("data: digits", "data: '.?size=9x'"), "bad data option 'size=9x'"),
])
def test_bad_recipes_name_the_key_and_the_file(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(EdgesnnError, match=str(path)) as e:
        recipes.load(path)
    assert fragment in str(e.value)
    r = edgesnn("run", path, "--out", tmp_path / "out")
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_a_spike_code_is_the_lava_mode_of_a_lava_export(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY.replace("{target: nir}", "{target: lava, spike_code: bit-plane}")
                    .replace("board: nucleo-f446re}", "board: nucleo-f446re, spike_code: rate-burst}"))
    lava, mcu = recipes.load(path).export[3], recipes.load(path).export[2]
    assert (lava.lava_mode, lava.spike_code, mcu.spike_code) == ("bit-plane", "bit-plane", "rate-burst")


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(EdgesnnError, match="unknown recipe 'nope'; available: digits-sfa-cnn, mnist5k-bestformer-1bit, mnist5k-ibra-bitplane"):
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
                                                          "export:nir", "profile:tflite:raspberry-pi-4"}
    nir_verified = json.loads((out / "nir" / "verify.json").read_text())
    assert nir_verified["mismatches"] == 0 and nir_verified["samples"] == 450 and nir_verified["ir"] == "nir/model.ir"
    assert {a["path"] for a in manifest["artifacts"] if a["stage"] == "export:nir"} == {
        "nir/model.nir", "nir/model.ir", "nir/verify.json"}
    for a in manifest["artifacts"]:
        assert hashlib.sha256((out / a["path"]).read_bytes()).hexdigest() == a["sha256"]
    assert manifest["versions"]["torch"].startswith("2.13")
    assert any(row.get("board") == "raspberry-pi-4" and row["fits"] for row in manifest["summary"])
    assert "run  train" in r.output
    again = edgesnn("run", path, "--out", out)
    assert again.exit_code == 0 and "run  " not in again.output and again.output.count("skip ") == 6
    path.write_text(TINY.replace("{target: mcu, board: nucleo-f446re}", "{target: mcu, board: nucleo-f446re, event_driven: none}"))
    third = edgesnn("run", path, "--out", out)
    assert third.exit_code == 0 and "run  export:mcu-nucleo-f446re" in third.output and "skip train" in third.output
    assert not (out / "mcu-nucleo-f446re" / "build").exists()  # the verify's build is not left in the output
    path.write_text(TINY.replace("  - {target: mcu, board: nucleo-f446re}\n", ""))  # a target leaves the recipe
    fourth = edgesnn("run", path, "--out", out)
    assert fourth.exit_code == 0 and fourth.output.count("skip ") == 5 and "run  " not in fourth.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert not (out / "mcu-nucleo-f446re").exists() and "export:mcu-nucleo-f446re" not in manifest["stages"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "ir", "manifest.json", "nir",
                                                   "profile-tflite-raspberry-pi-4.json", "tflite"]


@pytest.mark.parametrize("board", ["../../outside", "/tmp/x/../y", "a/b", "..", ".hidden", ""])
def test_recipe_paths_cannot_leave_the_output_folder(tmp_path, board):
    path = tmp_path / "r.yaml"
    path.write_text(TINY.replace("{target: mcu, board: nucleo-f446re}", f"{{target: mcu, board: '{board}'}}"))
    with pytest.raises(EdgesnnError, match=r"export\.2\.board: value error, .* is not a board name") as e:
        recipes.load(path)
    assert str(path) in str(e.value)


def test_a_board_file_names_its_folder_by_its_stem(tmp_path):
    path = tmp_path / "r.yaml"
    board = boards.BOARDS_DIR / "nucleo-f446re.yaml"
    path.write_text(TINY.replace("{target: mcu, board: nucleo-f446re}", f"{{target: mcu, board: '{board}'}}")
                    .replace("{export: tflite, board: raspberry-pi-4}", f"{{export: mcu-nucleo-f446re, board: '{board}'}}"))
    r = recipes.load(path)
    assert [e.folder() for e in r.export] == ["ir", "tflite", "mcu-nucleo-f446re", "nir"]
    assert [p.file() for p in r.profile] == ["profile-mcu-nucleo-f446re-nucleo-f446re.json"]


def test_an_export_listed_twice_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY.replace("  - {target: ir}\n", "  - {target: ir}\n  - {target: ir}\n"))
    with pytest.raises(EdgesnnError, match="export: listed twice: ir"):
        recipes.load(path)


def test_a_second_run_into_a_folder_in_use_is_refused_and_touches_nothing(tmp_path):
    """The first run holds a lock on DIR (taken here as a run takes it); the second must not clear
    the first one's work folder."""
    import fcntl
    import os

    path = tmp_path / "r.yaml"
    path.write_text(TINY)
    out, work = tmp_path / "out", tmp_path / ".out.edgesnn-work"
    out.mkdir()
    (work / "stage-1").mkdir(parents=True)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = edgesnn("run", path, "--out", out)
    finally:
        os.close(fd)
    assert r.exit_code == 1 and f"{out}: another edgesnn run is writing to this folder" in r.output
    assert (work / "stage-1").is_dir() and not any(out.iterdir())


def test_run_refuses_a_folder_that_is_not_its_own(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    r = edgesnn("run", path, "--out", mine)
    assert r.exit_code == 1 and "not an edgesnn run folder (no manifest.json) and not empty" in r.output
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("artifact_path", ["../outside.txt", "/etc/passwd", ".edgesnn-work/x", "ir/../../x"])
def test_a_manifest_naming_paths_outside_the_folder_is_refused(tmp_path, artifact_path):
    path = tmp_path / "r.yaml"
    path.write_text(TINY)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside.txt").write_text("keep me")
    (out / "manifest.json").write_text(json.dumps({"stages": {"x": "k"}, "artifacts": [
        {"path": artifact_path, "sha256": "0" * 64, "stage": "x"}]}))
    r = edgesnn("run", path, "--out", out)
    assert r.exit_code == 1 and "names paths outside" in r.output
    assert (tmp_path / "outside.txt").read_text() == "keep me"


def test_a_recipe_names_a_data_folder(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    path = tmp_path / "r.yaml"
    path.write_text(TINY.replace("data: digits", f"data: '{tmp_path / 'imgs'}?size=8x8&channels=1'"))
    assert recipes.load(path).data == f"{tmp_path / 'imgs'}?size=8x8&channels=1"
