"""Every command that needs samples takes them from --data, else from the data set the checkpoint or
artifact records (edgesnn.artifact_data); a relative --data path is recorded absolute.

The CLI tests that leave --data out of ``verify`` and ``profile`` need those options' default to be
None (the recorded data); with a default of "digits" they run on digits and fail."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import boards, data, pipeline
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir
from edgesnn.profile import profile

SAMPLES, TEST = 40, 10  # edgesnn's 75/25 split keeps 10 test samples


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_npz(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    """SAMPLES images of ``shape`` in 3 classes, pixels on the 1/3 grid, one bright pixel naming the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(SAMPLES) % 3
    x = (rng.integers(0, 4, (SAMPLES, *shape)) / 3).astype(np.float32)
    x[np.arange(SAMPLES), 0, y, y] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def rgb6(tmp_path_factory):
    """A CNN on 3x6x6 images (not digits' 1x8x8), trained one epoch, and its .tflite, MCU project and Lava folder."""
    root = tmp_path_factory.mktemp("rgb6")
    npz = write_npz(root / "rgb6.npz", (3, 6, 6))
    pipeline.train_model("cnn", str(npz), 1, root / "ck")
    return {"npz": str(npz.resolve()), "ck": root / "ck",
            "tflite": pipeline.export_model(root / "ck", "tflite", root / "tflite"),
            "mcu": pipeline.export_model(root / "ck", "mcu", root / "mcu", board="nrf52840"),
            "lava": pipeline.export_model(root / "ck", "lava", root / "lava")}


@pytest.fixture(scope="module")
def gray8(tmp_path_factory):
    """An MLP on the user's own 1x8x8 images (digits' shape, not digits) and its IR."""
    root = tmp_path_factory.mktemp("gray8")
    npz = write_npz(root / "gray8.npz", (1, 8, 8), seed=1)
    pipeline.train_model("mlp", str(npz), 1, root / "ck")
    return {"npz": str(npz.resolve()), "ck": root / "ck", "ir": pipeline.export_model(root / "ck", "ir", root / "ir")}


def test_a_tflite_file_on_loihi2_is_profiled_on_its_own_data(rgb6):
    """The Loihi 2 fit and report run the 3x6x6 test split the .tflite's IR records."""
    r = profile(rgb6["tflite"], "loihi2")
    assert (r["data"], r["samples"], r["target"]) == (rgb6["npz"], TEST, "tflite")
    assert r["fits"] and 0 < r["needed_cores"] <= 128 and r["energy_board_pj"] > 0


def test_an_mcu_project_runs_its_own_data_on_qemu(rgb6):
    """The board energy's QEMU run takes the project's recorded data: digits would not fit its input."""
    r = profile(rgb6["mcu"], "nrf52840", trust_code=True)
    assert (r["data"], r["samples"], r["target"]) == (rgb6["npz"], TEST, "mcu")
    assert r["instructions_per_inference"] > 1000
    assert r["energy_board_pj"] == pytest.approx(r["instructions_per_inference"] * boards.load("nrf52840").energy_pj["cycle"])
    v = pipeline.verify(rgb6["mcu"], trust_code=True)
    assert (v["data"], v["samples"], v["mismatches"]) == (rgb6["npz"], TEST, 0)


def test_a_lava_folder_is_profiled_and_verified_on_its_own_data(rgb6):
    r = profile(rgb6["lava"], "loihi2")
    assert (r["data"], r["samples"], r["target"]) == (rgb6["npz"], TEST, "lava")
    assert r["energy_board_pj"] > 0 and r["fits"]
    v = pipeline.verify(rgb6["lava"], samples=4)
    assert (v["data"], v["samples"], v["mismatches"]) == (rgb6["npz"], 4, 0)


def test_given_data_of_another_shape_is_one_line_naming_it(rgb6):
    with pytest.raises(EdgesnnError, match=r"^data digits: input batch has shape \(450, 8, 8, 1\); this model takes "
                                           r"\(batch, 6, 6, 3\)"):
        profile(rgb6["tflite"], "host", "digits")


def test_a_same_shape_model_is_profiled_and_verified_on_its_own_data_not_digits(gray8):
    """digits would fit the input and give 450 samples: the recorded set has 10."""
    r = profile(gray8["ir"], "host")
    assert (r["data"], r["samples"]) == (gray8["npz"], TEST)
    v = pipeline.verify(gray8["ir"])
    assert (v["data"], v["samples"], v["mismatches"]) == (gray8["npz"], TEST, 0)
    assert pipeline.verify(gray8["ir"], "digits")["samples"] == 450  # --data still overrides the record


def test_cli_verify_and_profile_without_data_use_the_recorded_set(gray8, rgb6, tmp_path):
    """Needs `verify` and `profile` to default --data to None."""
    res = edgesnn("verify", gray8["ir"], "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert (v["data"], v["samples"], v["mismatches"]) == (gray8["npz"], TEST, 0)
    res = edgesnn("profile", gray8["ir"], "--board", "host", "--json", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p.json").read_text())["samples"] == TEST
    res = edgesnn("profile", rgb6["tflite"], "--board", "loihi2", "--json", tmp_path / "t.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "t.json").read_text())["data"] == rgb6["npz"]


def test_an_artifact_without_a_record_asks_for_data(tmp_path):
    one = (np.array([1 << 30], np.int32), np.array([1], np.int32))
    tensors = {"x": g.TensorSpec([1, 1, 4], "int8", 1.0), "xf": g.TensorSpec([4], "int8", 1.0),
               "y": g.TensorSpec([2], "int8", 1.0)}
    dense = g.Dense("d", ["xf"], "y", weight=np.ones((2, 4), np.int8), bias=np.zeros(2, np.int32),
                    weight_scale=np.ones(2, np.float32), multiplier=np.repeat(one[0], 2), shift=np.repeat(one[1], 2))
    g.Graph(tensors, [g.Reshape("flat", ["x"], "xf"), dense], "x", ["y"]).save(tmp_path / "model.ir")
    with pytest.raises(EdgesnnError, match=r"model\.ir: records no data set; pass --data"):
        profile(tmp_path / "model.ir", "host")
    res = edgesnn("profile", tmp_path / "model.ir", "--board", "host")
    assert res.exit_code == 1 and "records no data set; pass --data" in res.output  # needs --data default None


def test_a_recorded_file_that_moved_says_so_and_data_overrides_it(gray8, tmp_path):
    moved = tmp_path / "moved.npz"
    ir = pipeline.export_model(gray8["ck"], "ir", tmp_path / "ir")
    shutil.copy(gray8["npz"], moved)
    graph = load_ir(ir)
    graph.meta["source"] = {**graph.meta["source"], "data": str(tmp_path / "gone.npz")}
    graph.save(ir)
    with pytest.raises(EdgesnnError, match=r"model\.ir: the data set it records cannot be read \(.*gone\.npz: no such "
                                           r"data file\); pass --data"):
        profile(ir, "host")
    assert profile(ir, "host", str(moved))["samples"] == TEST


def test_a_relative_data_path_is_recorded_absolute_for_export_and_verify_elsewhere(tmp_path, monkeypatch):
    work, other = tmp_path / "work", tmp_path / "other"
    write_npz(work / "sets" / "six.npz", (1, 6, 6))
    other.mkdir()
    monkeypatch.chdir(work)
    res = edgesnn("train", "--model", "mlp", "--data", "sets/six.npz", "--epochs", "1", "--out", "ck")
    assert res.exit_code == 0, res.output
    recorded = str((work / "sets" / "six.npz").resolve())
    assert json.loads((work / "ck" / "config.json").read_text())["data"] == recorded
    monkeypatch.chdir(other)
    for target in ("ir", "tflite"):
        res = edgesnn("export", "../work/ck", "--target", target, "--out", target)
        assert res.exit_code == 0, res.output
    v = pipeline.verify(Path("ir/model.ir"))
    assert (v["data"], v["samples"], v["mismatches"]) == (recorded, TEST, 0)
    res = edgesnn("verify", "tflite/model.tflite", "--json", "t.json")  # needs --data default None
    assert res.exit_code == 0, res.output
    assert json.loads((other / "t.json").read_text())["data"] == recorded


def test_recorded_specs(tmp_path, monkeypatch):
    """Paths become absolute with their options; built-in names stay."""
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    base = tmp_path.resolve()
    assert [data.recorded(s) for s in ("digits", "mnist5k", "mnist5k-14")] == ["digits", "mnist5k", "mnist5k-14"]
    assert data.recorded("a/b.npz") == str(base / "a" / "b.npz")
    assert data.recorded("photos?size=32x32&channels=3") == f"{base / 'photos'}?size=32x32&channels=3"
    assert data.recorded("./photos") == str(base / "photos")
    assert data.recorded(str(base / "photos")) == str(base / "photos")
