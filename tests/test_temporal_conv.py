"""temporal-conv, the event-camera SNN (QConv2d -> LIF per channel and pixel -> sum pool, twice, then
QLinear -> LI) from the command line on digits-events: train -> export --target ir / tflite / mcu / onnx -> verify,
each bit-exact over the 450 test sequences; the int16-current and CubaLIF variants through the API; the bad
options, one error line each."""

import json

import numpy as np
import pytest
import torch

from edgesnn import data, models
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load as load_ir
from edgesnn.temporal.conv import conv_model
from edgesnn.temporal.export import export
from test_cli import assert_user_error, edgesnn

BOARD = "nucleo-f446re"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("temporal_conv")
    r = edgesnn("train", "--model", "temporal-conv", "--data", "digits-events", "--epochs", 2, "--out", d / "ck")
    assert r.returncode == 0, r.stderr
    r = edgesnn("export", d / "ck", "--target", "ir", "--out", d / "ir")
    assert r.returncode == 0, r.stderr
    return d


def test_trains_and_exports_conv_blocks_with_spatial_state(run):
    config = json.loads((run / "ck" / "config.json").read_text())
    assert config["model"] == "temporal-conv" and config["kwargs"]["channels"] == [8, 16]
    assert config["temporal"] == {"steps": 10, "frame_shape": [1, 12, 12], "readout": "mean"}
    metrics = json.loads((run / "ck" / "metrics.json").read_text())
    assert metrics["loss"][-1] < metrics["loss"][0]
    assert metrics["test_accuracy"] > 0.25  # 2 epochs, 20 classes: chance is 0.05
    graph = load_ir(run / "ir" / "model.ir")
    assert [op.kind for op in graph.ops] == ["conv2d", "lif", "sum_pool2d", "conv2d", "lif", "sum_pool2d",
                                             "reshape", "dense", "li"]
    assert {k: s.shape for k, s in graph.states.items()} == {"l0.v": [12, 12, 8], "l1.v": [6, 6, 16], "l2.v": [20]}
    assert graph.tensors["l0.current"].dtype == "int8" and graph.states["l0.v"].dtype == "int16"


def test_ir_verify_is_bit_exact(run):
    r = edgesnn("verify", run / "ir" / "model.ir", "--json", run / "v.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((run / "v.json").read_text())
    assert v["samples"] == 450 and v["mismatches"] == 0 and v["mismatched_elements"] == 0 and v["passed"]
    metrics = json.loads((run / "ck" / "metrics.json").read_text())
    assert v["accuracy"] == v["torch_accuracy"] == metrics["test_accuracy"]


def test_tflite_and_mcu_are_bit_exact(run):
    r = edgesnn("export", run / "ck", "--target", "tflite", "--out", run / "tfl")
    assert r.returncode == 0, r.stderr
    r = edgesnn("verify", run / "tfl" / "model.tflite", "--json", run / "tv.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((run / "tv.json").read_text())
    assert v["samples"] == 450 and v["passed"] and {"litert-reference", "tflite-micro"} <= set(v["exact_in"])
    assert v["runtimes"]["tflite-micro"]["mismatched_step_elements"] == 0
    r = edgesnn("export", run / "ck", "--target", "mcu", "--board", BOARD, "--out", run / "mcu")
    assert r.returncode == 0, r.stderr
    r = edgesnn("verify", run / "mcu", "--data", "digits-events", "--trust-code", "--json", run / "mv.json")
    assert r.returncode == 0, r.stderr
    host = json.loads((run / "mv.json").read_text())["runs"]["host"]
    assert host["mismatches"] == 0 and host["mismatched_elements"] == 0 and host["stats"]["samples"] == 4500


def test_onnx_is_bit_exact(run):
    r = edgesnn("export", run / "ck", "--target", "onnx", "--out", run / "onnx")
    assert r.returncode == 0, r.stderr
    r = edgesnn("verify", run / "onnx" / "model.onnx", "--samples", 100, "--json", run / "ov.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((run / "ov.json").read_text())
    assert v["samples"] == 100 and v["mismatches"] == 0 and v["mismatched_step_elements"] == 0, v


@pytest.mark.parametrize("kw", [dict(neuron="cuba_lif", reset="zero", conv_current="state", channels=[4]),
                                dict(neuron="lif", beta=1.0, bits=8, levels=16, channels=[3, 5], pool=3)])
def test_every_step_equals_torch(kw):
    """int16 currents and CubaLIF with reset to zero; IF with an 8-bit membrane, int8 currents and pool 3."""
    ds = data.load("digits-events", temporal=True)
    model = conv_model(ds.frame_shape, ds.num_classes, seed=3, **kw)
    model.calibrate(ds.x_train)
    x = ds.x_test[:48]
    graph = export(model, ds.steps)
    (out,) = graph.outputs
    ir = graph.run_sequence(data.to_nhwc(x), keep_steps=True)
    want = model.integers(torch.as_tensor(x), keep_steps=True)
    np.testing.assert_array_equal(ir[out], want["readout"])
    np.testing.assert_array_equal(ir[f"{out}@steps"], want["steps"])
    assert np.abs(want["steps"]).sum() > 0 and len(np.unique(want["readout"])) > 10


def test_bad_channels_is_one_line(tmp_path):
    r = edgesnn("train", "--model", "temporal-conv", "--data", "digits-events", "--epochs", 1, "--out", tmp_path / "ck",
                "--model-kwargs", '{"channels": 0}')
    assert_user_error(r, "channels must be a list of 1 to 8 integers in 1..1024 (one conv block each), got 0")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": []}, "channels must be a list of 1 to 8 integers"),
    ({"channels": [4, 4, 4, 4]}, "frames (1, 12, 12) are too small for 4 blocks pooled 2x2: a block gets 1x1"),
    ({"neuron": "rlif"}, "neuron must be one of lif, cuba_lif, got 'rlif'"),
    ({"pool": 0}, "pool must be an integer in 1..11"),
    ({"kernel": 2}, "kernel must be a positive odd integer"),
    ({"conv_current": "int4"}, "conv_current must be one of int8, state, got 'int4'"),
    ({"frame_shape": [144]}, "temporal-conv takes (C, H, W) frames, got (144,)"),
])
def test_bad_kwargs(kwargs, message):
    with pytest.raises(EdgesnnError) as e:
        models.build("temporal-conv", {"frame_shape": [1, 12, 12], "classes": 20, **kwargs})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_learned_beta_is_the_decay_that_deploys():
    """learn_beta: BPTT moves beta; the exported decay is round(4096 (1 - beta)) of the trained value, and the
    IR equals torch at every step (the last optimizer step came after the last forward: export re-derives it)."""
    from edgesnn.temporal.train import train

    ds = data.load("digits-events", temporal=True)
    model = conv_model(ds.frame_shape, ds.num_classes, channels=[4], beta=0.8, learn_beta=True, seed=1)
    (lif,) = model.conv_neurons
    train(model, ds.x_train[:256], ds.y_train[:256], epochs=1)
    beta = float(lif.beta.detach())
    graph = export(model, ds.steps)
    d = int(graph.ops[1].decay_v[0])
    assert abs(beta - 0.8) > 1e-3 and d == round(4096 * (1 - beta)) and d != 819
    (out,) = graph.outputs
    x = ds.x_test[:48]
    ir = graph.run_sequence(data.to_nhwc(x), keep_steps=True)
    want = model.integers(torch.as_tensor(x), keep_steps=True)
    np.testing.assert_array_equal(ir[f"{out}@steps"], want["steps"])
    with pytest.raises(EdgesnnError, match="learn_beta must be true or false, got 1"):
        conv_model(ds.frame_shape, ds.num_classes, learn_beta=1)
