"""The CLI end to end on digits, and every bad input as one clear line with a non-zero exit."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch


def edgesnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgesnn", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_user_error(r, fragment):
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    r = edgesnn("train", "--model", "cnn", "--data", "digits", "--epochs", 30, "--out", d / "cnn")
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.slow
def test_train_export_verify_inspect(trained):
    ckpt = trained / "cnn"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "config.json", "metrics.json"}
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"] == "cnn" and config["D"] == 4 and config["neuron"] == "multispike"
    torch_acc = json.loads((ckpt / "metrics.json").read_text())["test_accuracy"]
    assert torch_acc >= 0.95

    r = edgesnn("export", ckpt, "--target", "ir", "--out", trained / "out")
    assert r.returncode == 0, r.stderr
    assert (trained / "out" / "model.ir").is_file()

    r = edgesnn("verify", trained / "out" / "model.ir", "--data", "digits", "--json", trained / "r.json")
    assert r.returncode == 0, r.stderr
    res = json.loads((trained / "r.json").read_text())
    assert res["samples"] == 450
    assert res["torch_accuracy"] == pytest.approx(torch_acc)
    assert res["mismatches"] <= 0.005 * res["samples"]  # argmax agreement >= 99.5 %
    assert res["accuracy"] >= res["torch_accuracy"] - 0.005  # drop <= 0.5 points

    r = edgesnn("inspect", trained / "out" / "model.ir", "--json", trained / "i.json")
    assert r.returncode == 0 and "conv2d" in r.stdout and "int8" in r.stdout
    info = json.loads((trained / "i.json").read_text())
    # (32*9 + 32) + (64*32*9 + 64) + (128*256 + 128) + (10*128 + 10) weights and biases
    assert info["params"] == 320 + 18496 + 32896 + 1290
    assert info["bytes"] > info["params"]  # int8 weights + int32 biases + requantization params

    r = edgesnn("inspect", ckpt)
    assert r.returncode == 0 and "Conv2d" in r.stdout and "MultiSpike" in r.stdout


@pytest.mark.slow
def test_demo_is_the_default_recipe(tmp_path):
    out = tmp_path / "demo"
    r = edgesnn("demo", "--out", out)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "digits-sfa-cnn"
    verified = {row["export"]: row for row in manifest["summary"] if "board" not in row}
    assert set(verified) == {"ir", "tflite", "mcu-nucleo-f446re", "lava", "onnx", "nir"}
    assert all(row["mismatches"] == 0 for name, row in verified.items() if name != "ir")
    ir = json.loads((out / "ir" / "verify.json").read_text())
    assert ir["torch_accuracy"] >= 0.95 and ir["mismatches"] <= 0.005 * ir["samples"]
    assert ir["checkpoint"] == "checkpoint" and ir["artifact"] == "ir/model.ir"  # paths relative to the run folder
    assert json.loads((out / "tflite" / "verify.json").read_text())["bit_exact"]
    assert json.loads((out / "nir" / "verify.json").read_text())["nodes_only"]["argmax_agreement"] >= 0.93
    assert "samples differing" in r.stdout and "run  train" in r.stderr


def test_missing_checkpoint(tmp_path):
    r = edgesnn("export", tmp_path / "nope", "--out", tmp_path / "out")
    assert_user_error(r, "no such checkpoint folder")
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((trained / "cnn" / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x07" * 64)
    r = edgesnn("export", bad, "--out", tmp_path / "out")
    assert_user_error(r, "corrupt or unreadable safetensors")
    assert not (tmp_path / "out").exists()


def test_pickle_checkpoint_is_refused(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    r = edgesnn("export", tmp_path / "model.pt", "--out", tmp_path / "out")
    assert_user_error(r, "pickle")
    assert not (tmp_path / "out").exists()


def test_unknown_target(trained, tmp_path):
    r = edgesnn("export", trained / "cnn", "--target", "fpga", "--out", tmp_path / "out")
    assert_user_error(r, "unknown target 'fpga'")
    assert not (tmp_path / "out").exists()


def test_nonpositive_D(tmp_path):
    r = edgesnn("train", "--model", "mlp", "--epochs", 1, "--D", 0, "--out", tmp_path / "m")
    assert_user_error(r, "positive integer")
    assert not (tmp_path / "m").exists()


def test_unknown_model(tmp_path):
    r = edgesnn("train", "--model", "vgg", "--epochs", 1, "--out", tmp_path / "m")
    assert_user_error(r, "unknown model 'vgg'")


@pytest.mark.slow
def test_wrong_input_shape(trained, tmp_path):
    edgesnn("export", trained / "cnn", "--out", trained / "out")
    np.savez(tmp_path / "small.npz", x=np.zeros((20, 1, 6, 6), np.float32), y=np.arange(20) % 10)
    r = edgesnn("verify", trained / "out" / "model.ir", "--data", tmp_path / "small.npz", "--json", tmp_path / "r.json")
    assert_user_error(r, "samples of shape (1, 6, 6), but the model of")
    assert not (tmp_path / "r.json").exists()


def test_corrupt_ir(tmp_path):
    (tmp_path / "model.ir").write_bytes(b"garbage")
    r = edgesnn("verify", tmp_path / "model.ir")
    assert_user_error(r, "not an edgesnn IR file")
    r = edgesnn("inspect", tmp_path / "model.ir")
    assert_user_error(r, "not an edgesnn IR file")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    r = edgesnn("train", "--model", "mlp", "--data", tmp_path / "obj.npz", "--epochs", 1, "--out", tmp_path / "m")
    assert_user_error(r, "pickled objects")


def test_bad_export_options(trained, tmp_path):
    r = edgesnn("export", trained / "cnn", "--weight-bits", 9, "--out", tmp_path / "out")
    assert_user_error(r, "weight bits must be between 1 and 8, or 16 (two int8 planes), got 9")
    r = edgesnn("export", trained / "cnn", "--stream-dtype", "int4", "--out", tmp_path / "out")
    assert_user_error(r, "stream dtype must be one of int8, int16, got 'int4'")
    assert not (tmp_path / "out").exists()
