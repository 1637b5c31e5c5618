"""A temporal model from the command line on digits-events: train -> checkpoint, export --target ir -> a
temporal model.ir, verify (every output integer of the IR vs torch's integer forward), inspect (states and
steps); the other targets' refusal, and static/temporal mix-ups, each one error line."""

import json

import numpy as np
import pytest

from edgesnn import pipeline, targets
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load as load_ir
from conftest import temporal_dense_copy
from test_cli import assert_user_error, edgesnn


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("temporal")
    r = edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 3, "--out", d / "ck")
    assert r.returncode == 0, r.stderr
    r = edgesnn("export", d / "ck", "--target", "ir", "--out", d / "ir")
    assert r.returncode == 0, r.stderr
    return d


def test_checkpoint_records_the_sequence(run):
    config = json.loads((run / "ck" / "config.json").read_text())
    assert config["model"] == "temporal-dense"
    assert config["temporal"] == {"steps": 10, "frame_shape": [1, 12, 12], "readout": "mean"}
    assert config["input_shape"] == [10, 1, 12, 12] and config["num_classes"] == 20
    assert config["kwargs"]["frame_shape"] == [1, 12, 12] and config["kwargs"]["classes"] == 20
    assert sorted(p.name for p in (run / "ck").iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    metrics = json.loads((run / "ck" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and len(metrics["loss"]) == 3 and metrics["loss"][-1] < metrics["loss"][0]
    assert metrics["test_samples"] == 450 and metrics["test_accuracy"] > 0.3  # 20 classes: chance is 0.05


def test_export_writes_the_temporal_ir(run):
    graph = load_ir(run / "ir" / "model.ir")
    assert graph.stateful and graph.sequence.steps == 10
    assert [op.kind for op in graph.ops] == ["reshape", "dense", "lif", "dense", "li"]
    assert set(graph.states) == {"l0.v", "l1.v"}
    assert graph.meta["source"]["checkpoint"] == str((run / "ck").resolve())


def test_verify_is_bit_exact_over_the_test_sequences(run):
    r = edgesnn("verify", run / "ir" / "model.ir", "--json", run / "verify.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((run / "verify.json").read_text())
    assert v["samples"] == 450 and v["mismatches"] == 0 and v["mismatched_elements"] == 0 and v["passed"]
    (row,) = v["checks"]
    assert row["compares"] == "every output integer" and row["result"] == "bit-exact"
    metrics = json.loads((run / "ck" / "metrics.json").read_text())
    assert v["accuracy"] == v["torch_accuracy"] == metrics["test_accuracy"]
    assert "bit-exact with the IR in torch-integers (450 samples)" in r.stdout


def test_verify_against_another_model_fails(run, temporal_dense, tmp_path):
    """The comparison can fail: the same IR against another trained checkpoint (conftest's, 1 epoch)."""
    other = temporal_dense_copy(temporal_dense, tmp_path)
    r = edgesnn("verify", run / "ir" / "model.ir", "--checkpoint", other)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not bit-exact with the IR in torch-integers" in r.stderr


def test_inspect_shows_states_and_steps(run):
    for path in (run / "ir" / "model.ir", run / "ck"):
        r = pipeline.inspect(path)
        assert r["steps"] == 10 and r["readout"] == {"l1.v_out": "mean"}
        assert r["states"]["l0.v"] == {"shape": [64], "dtype": "int16", "bits": 12, "scale": 1 / 64,
                                       "overflow": "saturate"}
    r = edgesnn("inspect", run / "ir" / "model.ir")
    assert r.returncode == 0, r.stderr
    assert "sequences of 10 steps, read out as l1.v_out: mean" in r.stdout
    assert "l0.v: int16[64] 12-bit, scale 0.015625, overflow saturate" in r.stdout


@pytest.mark.parametrize("target", [t for t in targets.names() if not targets.get(t).stateful])  # onnx-qcdq; the others: test_temporal_*.py
def test_other_targets_refuse_by_name(run, tmp_path, target):
    board = {"board": "nucleo-f446re"} if target == "mcu" else {}
    with pytest.raises(EdgesnnError) as e:
        pipeline.export_model(run / "ck", target, tmp_path / "out", **board)
    assert str(e.value) == f"--target {target} runs no stateful graph (a model over sequences)"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_static_and_temporal_mixups_are_one_line(run, tmp_path):
    assert_user_error(edgesnn("train", "--model", "mlp", "--data", "digits-events", "--epochs", 1, "--out", tmp_path / "a"),
                      "data set 'digits-events' has a time axis")
    assert_user_error(edgesnn("train", "--model", "temporal-dense", "--data", "digits", "--epochs", 1, "--out",
                              tmp_path / "b"), "model 'temporal-dense' runs over sequences (N, T, ...), but data set "
                                               "'digits' has static samples (1, 8, 8)")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert_user_error(edgesnn("verify", run / "ir" / "model.ir", "--data", "digits"), "has static samples")
    np.savez(tmp_path / "short.npz", x=np.zeros((8, 4, 1, 12, 12), np.float32), y=np.arange(8) % 2)
    assert_user_error(edgesnn("verify", run / "ir" / "model.ir", "--data", tmp_path / "short.npz"), "short.npz")


def test_temporal_train_options_that_do_not_apply(tmp_path):
    with pytest.raises(EdgesnnError, match=r"^--epochs must be at least 1, got 0$"):
        pipeline.train_model("temporal-dense", "digits-events", 0, tmp_path / "a")
    with pytest.raises(EdgesnnError, match="takes no --weights, --strip-prefix or --neuron-map"):
        pipeline.train_model("temporal-dense", "digits-events", 1, tmp_path / "b", weights=tmp_path / "w.safetensors")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_model_kwargs_choose_the_neuron_from_the_command_line(tmp_path):
    """--model-kwargs: the constructor's arguments as JSON, recorded in the checkpoint and exported as they say."""
    r = edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1, "--out", tmp_path / "ck",
                "--model-kwargs", '{"neuron": "cuba_lif", "hidden": 16}')
    assert r.returncode == 0, r.stderr
    kwargs = json.loads((tmp_path / "ck" / "config.json").read_text())["kwargs"]
    assert kwargs["neuron"] == "cuba_lif" and kwargs["hidden"] == 16
    graph = load_ir(pipeline.export_model(tmp_path / "ck", "ir", tmp_path / "ir"))
    assert [op.kind for op in graph.ops if op.kind in ("lif", "cuba_lif")] == ["cuba_lif"]
    assert next(op for op in graph.ops if op.kind == "dense").weight.shape[0] == 16


@pytest.mark.parametrize("kwargs, fragment", [
    ("{bad", "--model-kwargs is not JSON: Expecting property name"),
    ("[1, 2]", "--model-kwargs must be a JSON object"),
    ('{"nope": 1}', "model 'temporal-dense' has no option(s) ['nope']"),
    ('{"neuron": "izhikevich"}', "neuron must be one of lif, cuba_lif, rlif"),
])
def test_bad_model_kwargs_are_one_line(tmp_path, kwargs, fragment):
    r = edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1, "--out", tmp_path / "ck",
                "--model-kwargs", kwargs)
    assert_user_error(r, fragment)
    assert not (tmp_path / "ck").exists()
