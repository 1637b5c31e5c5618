"""Bring-your-own model: `--model module:factory` and `--neuron-map CLASS=sfa:D=N`, from the CLI and
from a recipe; what cannot be mapped is named layer by layer, and the checkpoint rebuilds the
user's model without pickle."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import checkpoint
from edgesnn.cli import app
from edgesnn.neurons import MultiSpike

NETS = Path(__file__).with_name("byo_nets.py")
MAP = "byo_nets.ThirdPartySpike=sfa:D=4"


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """The user's working folder, holding their model file (importable as byo_nets)."""
    shutil.copy(NETS, tmp_path / "byo_nets.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_user_model_trains_exports_and_verifies_bit_exact_in_tflite(user_folder):
    r = edgesnn("train", "--model", "byo_nets:conv_net", "--neuron-map", MAP, "--epochs", "4", "--out", "ck")
    assert r.exit_code == 0, r.output
    model, config = checkpoint.load(user_folder / "ck", trust_code=True)  # rebuilt from module:factory, no pickle
    assert config["model"] == "byo_nets:conv_net" and config["neuron_map"] == {"byo_nets.ThirdPartySpike": "sfa:D=4"}
    assert config["kwargs"] == {"in_shape": [1, 8, 8], "num_classes": 10}  # what the factory asks the data for
    assert sum(isinstance(m, MultiSpike) for m in model.modules()) == 2
    assert json.loads((user_folder / "ck" / "metrics.json").read_text())["test_accuracy"] > 0.5
    r = edgesnn("export", "ck", "--target", "tflite", "--out", "tfl")  # the checkpoint names user code
    assert r.exit_code == 1 and "pass --trust-code if you trust it" in r.output and not (user_folder / "tfl").exists()
    r = edgesnn("export", "ck", "--target", "tflite", "--out", "tfl", "--trust-code")
    assert r.exit_code == 0, r.output
    r = edgesnn("verify", "tfl/model.tflite", "--json", "v.json")
    assert r.exit_code == 0, r.output
    v = json.loads((user_folder / "v.json").read_text())
    assert v["bit_exact"] and v["runtimes"]["litert-reference"]["mismatches"] == 0


def test_recipe_names_a_user_model(user_folder):
    (user_folder / "mine.yaml").write_text(f"""name: mine
model: {{name: "byo_nets:conv_net", kwargs: {{width: 8}}, neuron_map: {{byo_nets.ThirdPartySpike: "sfa:D=3"}}}}
train: {{epochs: 2}}
export: [{{target: ir}}]
""")
    r = edgesnn("run", "mine.yaml", "--out", "out")  # the recipe names user code: refused before anything is written
    assert r.exit_code == 1 and "--model byo_nets:conv_net" in r.output and not (user_folder / "out").exists()
    r = edgesnn("run", "mine.yaml", "--out", "out", "--model", "byo_nets:conv_net")  # the same factory: trusted
    assert r.exit_code == 0, r.output
    _, config = checkpoint.load(user_folder / "out" / "checkpoint", trust_code={"byo_nets:conv_net"})
    assert config["kwargs"]["width"] == 8 and config["neuron_map"] == {"byo_nets.ThirdPartySpike": "sfa:D=3"}
    verify = json.loads((user_folder / "out" / "ir" / "verify.json").read_text())
    assert verify["samples"] == 450 and verify["agreement"] >= 0.9


@pytest.mark.parametrize("args,fragment", [
    (["--model", "byo_nets:conv_net"],
     "cannot map 2 layer(s) onto edgesnn: 2 (byo_nets.ThirdPartySpike), 6 (byo_nets.ThirdPartySpike)"),
    (["--model", "byo_nets:gelu_net", "--neuron-map", MAP],
     "cannot map 2 layer(s) onto edgesnn: 2 (torch.nn.modules.activation.GELU), "
     "3 (torch.nn.modules.normalization.LayerNorm)"),
    (["--model", "byo_nets:not_a_module"], "the factory returned str, not a torch.nn.Module"),
    (["--model", "byo_nets:nothing"], "module byo_nets has no attribute 'nothing'"),
    (["--model", "os:system"], "os is a standard-library module, not a model"),
    (["--model", "no_such_module:net"], "cannot import no_such_module"),
    (["--model", "byo_nets"], "unknown model 'byo_nets'; choose one of: mlp, cnn"),
    (["--model", "byo_nets:"], "a user model is named as module:factory"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "byo_nets.ThirdPartySpike=lif"], "unknown edgesnn neuron 'lif'"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "byo_nets.ThirdPartySpike=sfa:D=0"], "D (the largest integer"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "byo_nets.ThirdPartySpike=sfa:T=4"], "unknown option 'T=4'"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "byo_nets.ThirdPartySpike"], "expected CLASS=TARGET"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "byo_nets.Nope=sfa"], "cannot find the class 'byo_nets.Nope'"),
    (["--model", "byo_nets:conv_net", "--neuron-map", "torch.nn.ReLU=sfa"], "the model has no torch.nn.ReLU layer"),
    (["--model", "cnn", "--neuron-map", MAP], "--neuron-map applies to a user model"),
])
def test_user_model_errors_name_the_layer_or_option(user_folder, args, fragment):
    r = edgesnn("train", *args, "--epochs", "1", "--out", "ck")
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output, r.output
    assert not (user_folder / "ck").exists()


def test_run_takes_a_user_model_over_the_recipe_and_refuses_a_map_without_one(user_folder):
    r = edgesnn("run", "--model", "byo_nets:gelu_net", "--neuron-map", MAP, "--out", "out")
    assert r.exit_code == 1 and "2 (torch.nn.modules.activation.GELU)" in r.output
    assert not (user_folder / "out" / "checkpoint").exists()
    r = edgesnn("run", "--neuron-map", MAP, "--out", "out2")
    assert r.exit_code == 1 and "--neuron-map needs --model" in r.output and not (user_folder / "out2").exists()


def test_a_tampered_checkpoint_cannot_name_a_standard_library_callable(user_folder, trained):
    ck = user_folder / "ck"
    shutil.copytree(trained["mlp"], ck)
    config = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**config, "model": "subprocess:run", "kwargs": {"args": ["true"]}}))
    r = edgesnn("export", ck, "--out", "x")
    assert r.exit_code == 1 and "subprocess is a standard-library module" in r.output
    assert not (user_folder / "x").exists()


def test_mapped_model_agrees_with_its_ir(user_folder):
    from edgesnn import pipeline

    pipeline.train_model("byo_nets:conv_net", "digits", 3, user_folder / "ck", neuron_map={"byo_nets.ThirdPartySpike": "sfa"})
    ir = pipeline.export_model(user_folder / "ck", "ir", user_folder / "ir", trust_code=True)
    r = pipeline.verify(ir, "digits", trust_code=True)
    assert r["samples"] == 450 and r["agreement"] >= 0.95
    assert np.isfinite(r["accuracy"])
