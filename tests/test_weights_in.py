"""Trained weights in, no training: `train --model module:factory --weights FILE --epochs 0` turns a
model trained with plain torch into an edgesnn checkpoint without changing a weight or a BatchNorm
statistic; a file that does not fit, or is not a state dict, is one error line and nothing is written."""

import json
import os
import pickle
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import snntorch
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgesnn import checkpoint, data, ir, pipeline, threads, weights
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.files import sha256_file

NETS = Path(__file__).with_name("byo_nets.py")
FUZZ_EXAMPLES = int(os.environ.get("EDGESNN_FUZZ_EXAMPLES", "60"))
MODEL = "byo_nets:bn_net"
MAP = "byo_nets.RoundSpike=sfa:D=4"
EPOCHS = 4


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _torch_train(model: torch.nn.Module, ds, epochs: int) -> float:
    """The user's own training loop (plain torch, Adam), then the eval accuracy on the test split."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.split(torch.randperm(len(ds.x_train)), 64):
            loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(ds.x_test).argmax(1) == ds.y_test).float().mean())


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's folder: their model file, a model trained in it with plain torch, its state dict
    saved both ways, and the torch model's own test accuracy."""
    folder = tmp_path_factory.mktemp("user")
    shutil.copy(NETS, folder / "byo_nets.py")
    sys.path.insert(0, str(folder))
    import byo_nets

    ds = data.digits()
    torch.manual_seed(1)
    net = byo_nets.bn_net(ds.in_shape, ds.num_classes)
    with threads.pinned(1):  # the same model on any machine (edgesnn/threads.py), and fast on a loaded one
        accuracy = _torch_train(net, ds, EPOCHS)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "w.safetensors"))
    torch.save(state, folder / "w.pt")
    torch.save({"state_dict": state, "epoch": EPOCHS, "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict()},
               folder / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, folder / "ddp.pt")
    torch.save(net, folder / "whole.pt")  # the whole module: a pickle of objects
    yield {"folder": folder, "state": state, "accuracy": accuracy, "net": net}
    sys.path.remove(str(folder))


@pytest.fixture
def cwd(user, monkeypatch):
    monkeypatch.chdir(user["folder"])
    return user["folder"]


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().numpy().tobytes()


def _assert_same_bits(written: dict, source: dict) -> None:
    assert set(written) == set(source)
    for k, t in source.items():
        assert written[k].dtype == t.dtype and written[k].shape == t.shape, k
        assert _bits(written[k]) == _bits(t), k  # bit for bit, -0.0 and NaN payloads included


def test_trained_weights_come_in_unchanged_and_the_ir_agrees(user, cwd):
    r = edgesnn("train", "--model", MODEL, "--neuron-map", MAP, "--weights", "w.safetensors", "--epochs", 0, "--out", "ck")
    assert r.exit_code == 0, r.output
    assert "(weights w.safetensors, not trained)" in r.output
    _assert_same_bits(load_file(str(cwd / "ck" / checkpoint.WEIGHTS)), user["state"])  # BatchNorm statistics included
    metrics = json.loads((cwd / "ck" / checkpoint.METRICS).read_text())
    assert metrics["epochs"] == 0 and "train_loss" not in metrics
    assert metrics["test_accuracy"] == user["accuracy"] and user["accuracy"] > 0.9  # eval mode, the same model
    assert metrics["weights"] == {"file": "w.safetensors", "sha256": sha256_file(cwd / "w.safetensors"),
                                  "format": "safetensors", "entry": None, "strip_prefix": [], "tensors": 14}
    model, config = checkpoint.load(cwd / "ck", trust_code=True)  # rebuilt from the factory, kwargs and map
    assert config["model"] == MODEL and config["neuron_map"] == {"byo_nets.RoundSpike": "sfa:D=4"}
    _assert_same_bits(model.state_dict(), user["state"])
    with torch.no_grad():  # the rebuilt, mapped model computes exactly what the user's did
        x = data.digits().x_test
        assert torch.equal(model(x), user["net"](x))
    ir = pipeline.export_model(cwd / "ck", "ir", cwd / "ir", trust_code=True)
    v = pipeline.verify(ir, "digits", trust_code=True)
    assert v["samples"] == 450 and v["torch_accuracy"] == pytest.approx(user["accuracy"], abs=1e-6)  # float64 there
    # Conv -> BN -> spike -> pool, float weights rounded to int8 at export with no retraining: measured 447/450
    assert v["agreement"] >= 0.99, v


@pytest.mark.parametrize("file,extra,entry", [
    ("w.pt", [], None),
    ("wrapped.pt", [], "state_dict"),  # a training script's checkpoint: the one state dict it holds
    ("ddp.pt", ["--strip-prefix", "module."], None),
])
def test_torch_files_come_in_the_same(user, cwd, file, extra, entry):
    out = f"ck-{file}"
    r = edgesnn("train", "--model", MODEL, "--neuron-map", MAP, "--weights", file, *extra, "--epochs", 0, "--out", out,
                "--lr", 0)  # no training: no learning rate to check
    assert r.exit_code == 0, r.output
    _assert_same_bits(load_file(str(cwd / out / checkpoint.WEIGHTS)), user["state"])
    source = json.loads((cwd / out / checkpoint.METRICS).read_text())["weights"]
    assert source["format"] == "torch" and source["entry"] == entry and source["strip_prefix"] == extra[1:]


def test_from_python_and_missing_batch_counters(user, tmp_path):
    """The same from Python; a file without BatchNorm's num_batches_tracked (many scripts drop it) loads."""
    state = {k: v for k, v in user["state"].items() if not k.endswith("num_batches_tracked")}
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    metrics = pipeline.train_model(MODEL, "digits", 0, tmp_path / "ck", neuron_map={"byo_nets.RoundSpike": "sfa:D=4"},
                                   weights=tmp_path / "w.safetensors", strip_prefix=["model."])
    assert metrics["test_accuracy"] == user["accuracy"]
    written = load_file(str(tmp_path / "ck" / checkpoint.WEIGHTS))
    _assert_same_bits({k: v for k, v in written.items() if k in state}, state)
    assert all(int(written[k]) == 0 for k in written if k.endswith("num_batches_tracked"))


def test_fine_tuning_starts_from_the_weights(user, cwd):
    r = edgesnn("train", "--model", MODEL, "--neuron-map", MAP, "--weights", "w.pt", "--epochs", 1, "--lr", 1e-9,
                "--out", "tuned")
    assert r.exit_code == 0, r.output
    written = load_file(str(cwd / "tuned" / checkpoint.WEIGHTS))
    for k in ("0.weight", "3.weight", "8.weight"):  # a step of 1e-9 from the file's weights, not from a random start
        assert torch.allclose(written[k], user["state"][k], atol=1e-6) and not torch.equal(written[k], user["state"][k])
    metrics = json.loads((cwd / "tuned" / checkpoint.METRICS).read_text())
    assert metrics["epochs"] == 1 and metrics["weights"]["file"] == "w.pt" and metrics["test_accuracy"] > 0.85


def test_quantize_fine_tunes_the_brought_in_checkpoint(user, cwd):
    """The checkpoint is like any other: int8 quantization-aware fine-tuning, then an exact IR."""
    from edgesnn.quantize import Options, quantize_checkpoint

    pipeline.train_model(MODEL, "digits", 0, cwd / "ck-q", neuron_map={"byo_nets.RoundSpike": "sfa:D=4"},
                         weights=cwd / "w.safetensors")
    quantize_checkpoint(cwd / "ck-q", "int8", cwd / "q", Options(epochs=1), trust_code=True)
    v = pipeline.verify(pipeline.export_model(cwd / "q", "ir", cwd / "q-ir", trust_code=True), "digits", trust_code=True)
    assert v["mismatches"] == 0 and v["torch_accuracy"] > 0.9, v


def test_neuron_state_loads_before_the_map_replaces_the_neuron(user, cwd):
    """A neuron with state of its own (beta, as snnTorch's Leaky has): the file is the factory's model's
    state dict, so it holds that state; edgesnn's neuron then replaces the instance."""
    import byo_nets

    net = byo_nets.leaky_bn_net([1, 8, 8], 10)
    net.load_state_dict({**user["state"], "2.beta": torch.tensor(0.5), "5.beta": torch.tensor(0.5)})
    save_file(net.state_dict(), str(cwd / "leaky.safetensors"))
    args = ["--model", "byo_nets:leaky_bn_net", "--neuron-map", "byo_nets.LeakySpike=sfa:D=4", "--epochs", 0]
    r = edgesnn("train", *args, "--weights", "leaky.safetensors", "--out", "leaky")
    assert r.exit_code == 0, r.output
    assert json.loads((cwd / "leaky" / checkpoint.METRICS).read_text())["test_accuracy"] == user["accuracy"]
    _assert_same_bits(load_file(str(cwd / "leaky" / checkpoint.WEIGHTS)), user["state"])  # no beta: the neuron is edgesnn's
    _assert_same_bits(checkpoint.load(cwd / "leaky", trust_code=True)[0].state_dict(), user["state"])
    r = edgesnn("train", *args, "--weights", "w.safetensors", "--out", "leaky2")  # saved without the neurons' state
    assert r.exit_code == 1 and "w.safetensors: does not match --model byo_nets:leaky_bn_net: 2 missing key(s): " \
                                "2.beta, 5.beta" in r.output and not (cwd / "leaky2").exists()


def test_the_map_reads_a_trained_threshold(tmp_path):
    """snnTorch's Leaky with a learned threshold: the map reads the file's value, not the factory's."""
    from edgesnn.neurons import MultiSpike

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), snntorch.Leaky(beta=0.9, learn_threshold=True))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["2.threshold"] = torch.tensor(0.75)
    save_file(state, str(tmp_path / "leaky.safetensors"))
    model, source = weights.build_loaded("byo_nets:leaky_linear", {}, {"snntorch.Leaky": "sfa"}, 4, True,
                                         tmp_path / "leaky.safetensors")
    neuron = model[2]
    assert isinstance(neuron, MultiSpike) and neuron.D == 1 and neuron.gain == 1 / (2 * 0.75)
    assert torch.equal(model[1].weight, state["1.weight"]) and source["tensors"] == len(state)
    pipeline.train_model("byo_nets:leaky_linear", "digits", 0, tmp_path / "ck", neuron_map={"snntorch.Leaky": "sfa"},
                         weights=tmp_path / "leaky.safetensors")
    reloaded, _ = checkpoint.load(tmp_path / "ck", trust_code=True)  # the checkpoint keeps the trained threshold
    assert reloaded[2].gain == 1 / (2 * 0.75) and torch.equal(reloaded[1].weight, state["1.weight"])


def test_a_recipe_brings_weights(user, cwd):
    """model.weights in a recipe, train.epochs 0: the file's sha256 is in the train stage's key; the export
    keeps the float weights at up to 16 bits (export.weight_bits 16, two int8 planes)."""
    (cwd / "mine.yaml").write_text(f"""name: mine
model: {{name: "{MODEL}", neuron_map: {{byo_nets.RoundSpike: "sfa:D=4"}}, weights: ddp.pt, strip_prefix: [module.]}}
train: {{epochs: 0}}
export: [{{target: ir, weight_bits: 16, stream_dtype: int16}}]
""")
    r = edgesnn("run", "mine.yaml", "--out", "run", "--model", MODEL)
    assert r.exit_code == 0, r.output
    _assert_same_bits(load_file(str(cwd / "run" / "checkpoint" / checkpoint.WEIGHTS)), user["state"])
    verified = json.loads((cwd / "run" / "ir" / "verify.json").read_text())
    assert verified["samples"] == 450 and verified["agreement"] >= 0.995, verified
    assert any(".planes" in name for name in ir.load(cwd / "run" / "ir" / "model.ir").tensors)
    r = edgesnn("run", "mine.yaml", "--out", "run", "--model", MODEL)
    assert r.exit_code == 0 and "skip train" in r.output, r.output
    shutil.copy(cwd / "w.pt", cwd / "ddp.pt")  # another file under the same name (no prefix to strip): train runs again
    try:
        r = edgesnn("run", "mine.yaml", "--out", "run", "--model", MODEL)
        assert r.exit_code == 0 and "run  train" in r.output, r.output
    finally:
        torch.save({f"module.{k}": v for k, v in user["state"].items()}, cwd / "ddp.pt")
    (cwd / "bad.yaml").write_text("name: bad\nmodel: {name: cnn}\ntrain: {epochs: 0}\nexport: [{target: ir}]\n")
    r = edgesnn("run", "bad.yaml", "--out", "bad")
    assert r.exit_code == 1 and "train.epochs 0 needs model.weights" in r.output and not (cwd / "bad").exists()


# ---------------------------------------------------------------- bad input: one line, exit 1, nothing written

def _save(name: str, obj, folder: Path) -> str:
    path = folder / name
    if name.endswith(".safetensors"):
        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return name


def _edit(**changes):
    """The trained state dict with entries replaced (a value None drops the key)."""
    return lambda s: {k: v for k, v in {**s, **changes}.items() if v is not None}


class _Thing:
    pass


BAD = [
    ("whole-model", lambda s, d: "whole.pt", [],
     "whole.pt: pickles Python objects (torch.nn.modules.container.Sequential), not only tensors; edgesnn never "
     "unpickles objects: save model.state_dict() instead"),
    ("object-pickle", lambda s, d: (d / "obj.pkl").write_bytes(pickle.dumps(_Thing(), protocol=2)) and "obj.pkl", [],
     f"obj.pkl: pickles Python objects ({__name__}._Thing)"),
    ("plain-pickle", lambda s, d: (d / "p.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=5)) and "p.pkl", [],
     "p.pkl: a pickle that torch.load(weights_only=True) cannot read (Unsupported operand 149), not a state dict file; "
     "save model.state_dict()"),
    ("ddp-prefix", lambda s, d: "ddp.pt", [],
     "ddp.pt: does not match --model byo_nets:bn_net: 12 missing key(s): 0.weight, 1.weight, 1.bias, 1.running_mean, "
     "1.running_var, ... (+7 more); 14 unexpected key(s): module.0.weight, module.1.weight, module.1.bias, "
     "module.1.running_mean, module.1.running_var, ... (+9 more); every key in the file starts with 'module.': "
     "pass --strip-prefix module."),
    ("wrong-prefix", lambda s, d: "ddp.pt", ["--strip-prefix", "model."],
     "14 unexpected key(s): module.0.weight"),
    ("missing-key", lambda s, d: _save("m.safetensors", _edit(**{"4.weight": None})(s), d), [],
     "m.safetensors: does not match --model byo_nets:bn_net: 1 missing key(s): 4.weight"),
    ("missing-after-strip", lambda s, d: _save("ms.pt", {f"module.{k}": v for k, v in s.items() if k != "8.bias"}, d),
     ["--strip-prefix", "module."], "ms.pt: does not match --model byo_nets:bn_net: 1 missing key(s): 8.bias"),
    ("unexpected-key", lambda s, d: _save("u.safetensors", _edit(**{"head.weight": torch.zeros(3)})(s), d), [],
     "u.safetensors: does not match --model byo_nets:bn_net: 1 unexpected key(s): head.weight"),
    ("shape", lambda s, d: _save("sh.pt", _edit(**{"8.weight": torch.zeros(10, 64), "1.bias": torch.zeros(4)})(s), d), [],
     "sh.pt: does not match --model byo_nets:bn_net: 2 tensor(s) of another shape: 1.bias [4] in the file, [8] in the "
     "model, 8.weight [10, 64] in the file, [10, 256] in the model"),
    ("int-into-float", lambda s, d: _save("i.pt", _edit(**{"8.bias": torch.zeros(10, dtype=torch.int64)})(s), d), [],
     "i.pt: does not match --model byo_nets:bn_net: 1 tensor(s) of another kind: 8.bias (int64 in the file, float32 in "
     "the model)"),
    ("nan", lambda s, d: _save("nan.safetensors", _edit(**{"3.weight": s["3.weight"].clone().index_fill_(0, torch.tensor([2]), float("nan"))})(s), d),
     [], "nan.safetensors: tensor '3.weight' holds NaN"),
    ("inf-statistic", lambda s, d: _save("inf.pt", _edit(**{"4.running_var": torch.full((16,), float("inf"))})(s), d), [],
     "inf.pt: tensor '4.running_var' holds Inf"),
    ("non-tensor", lambda s, d: _save("nt.pt", {**s, "epoch": 3}, d), [],
     "nt.pt: entry 'epoch' holds int, not a tensor; a state dict maps parameter names to tensors"),
    ("two-state-dicts", lambda s, d: _save("two.pt", {"model": s, "ema": s, "epoch": 3}, d), [],
     "two.pt: holds 2 state dicts (model, ema); save the one to deploy on its own, e.g. torch.save(ckpt['model'], 'w.pt')"),
    ("torchscript", lambda s, d: _torchscript(d / "ts.pt"), [],
     "ts.pt: a TorchScript archive (torch.jit.save), which runs code when loaded, not a state dict; save model.state_dict()"),
    ("a-list", lambda s, d: _save("list.pt", list(s.values()), d), [], "list.pt: holds list, not a state dict"),
    ("truncated-safetensors", lambda s, d: (d / "t.safetensors").write_bytes((d / "w.safetensors").read_bytes()[:-100])
     and "t.safetensors", [], "t.safetensors: corrupt or truncated safetensors file (tensor "),
    ("truncated-torch", lambda s, d: (d / "t.pt").write_bytes((d / "w.pt").read_bytes()[:-200]) and "t.pt", [],
     "t.pt: corrupt or truncated torch file (not a readable zip archive"),
    ("corrupt-torch-record", lambda s, d: _corrupt_pickle(d / "w.pt", d / "c.pt"), [], "c.pt: corrupt or truncated torch file"),
    ("garbage", lambda s, d: (d / "g.bin").write_bytes(b"\x00garbage" * 10) and "g.bin", [],
     "g.bin: not a safetensors or torch state dict file"),
    ("no-file", lambda s, d: "none.safetensors", [], "none.safetensors: no such weights file"),
    ("stride-0-view", lambda s, d: _save("v.pt", _edit(**{"8.weight": torch.zeros(1).expand(400_000_000)})(s), d), [],
     "v.pt: its tensors needs"),
    ("empty-prefix", lambda s, d: "w.pt", ["--strip-prefix", ""], "--strip-prefix: a prefix must be a non-empty string"),
    ("prefix-collision", lambda s, d: _save("col.pt", {**s, "module.0.weight": s["0.weight"]}, d), ["--strip-prefix", "module."],
     "col.pt: key 'module.0.weight' without --strip-prefix module. is another key's too"),
]


def _torchscript(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script: deprecated, still what users have
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    return path.name


def _corrupt_pickle(path: Path, out: Path) -> str:
    """The archive intact, its data.pkl replaced by bytes that are no pickle torch can read."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, b"\x80\x02}q\x00(X" + bytes(range(40)) if info.filename.endswith("data.pkl") else body)
    return out.name


@pytest.mark.parametrize("name,make,extra,fragment", [pytest.param(*c, id=c[0]) for c in BAD])
def test_bad_weights_are_one_line_and_nothing_is_written(user, cwd, monkeypatch, name, make, extra, fragment):
    monkeypatch.setenv("EDGESNN_MEMORY_LIMIT", "1G")
    file = make(user["state"], cwd)
    r = edgesnn("train", "--model", MODEL, "--neuron-map", MAP, "--weights", file, *extra, "--epochs", 0, "--out", "bad")
    assert r.exit_code == 1, r.output
    assert fragment in r.output, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output
    assert not (cwd / "bad").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--model", MODEL, "--neuron-map", MAP, "--epochs", 0],
     "--epochs must be at least 1, got 0, unless --weights FILE brings trained weights"),
    (["--model", "cnn", "--epochs", 0], "--epochs must be at least 1, got 0, unless --weights FILE"),
    (["--model", MODEL, "--neuron-map", MAP, "--strip-prefix", "module."], "--strip-prefix applies to the keys of --weights"),
    (["--model", "byo_nets:failing_net", "--weights", "w.pt", "--epochs", 0],
     "--model byo_nets:failing_net: the factory failed with ValueError: no such width"),
    (["--model", MODEL, "--weights", "w.pt", "--epochs", 0],  # the spikes left unmapped: refused before anything is written
     "cannot map 2 layer(s) onto edgesnn: 2 (byo_nets.RoundSpike), 5 (byo_nets.RoundSpike)"),
    (["--model", "cnn", "--weights", "w.pt", "--epochs", 0], "w.pt: does not match --model cnn: "),
])
def test_bad_options_are_one_line(cwd, args, fragment):
    r = edgesnn("train", *args, "--out", "bad")
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output, r.output
    assert not (cwd / "bad").exists()


def test_sizes_are_checked_before_reading(user, cwd, monkeypatch):
    """The budget applies to what a file declares, before a tensor is read."""
    monkeypatch.setenv("EDGESNN_MEMORY_LIMIT", "10K")  # the trained model's 16 KB of tensors do not fit
    for file in ("w.safetensors", "w.pt"):
        with pytest.raises(EdgesnnError, match=rf"{file}: reading its tensors needs [\d,]+ bytes, more than the 10,240"):
            weights.read_state_dict(cwd / file)


@pytest.fixture(scope="module")
def files(user):
    """The trained state dict's bytes in each format edgesnn reads (torch's legacy format too)."""
    legacy = user["folder"] / "legacy.pt"
    torch.save(user["state"], legacy, _use_new_zipfile_serialization=False)
    return {name: (user["folder"] / name).read_bytes() for name in ("w.safetensors", "w.pt", "legacy.pt")}


@settings(deadline=None, max_examples=FUZZ_EXAMPLES, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_garbled_weight_files_are_one_line_or_a_state_dict(files, tmp_path_factory, data):
    """Bytes garbled or cut anywhere in each format: a state dict of tensors, or one error line naming the file."""
    name = data.draw(st.sampled_from(sorted(files)))
    raw = bytearray(files[name])
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(bytes(raw))
    try:
        state = weights.read_state_dict(path)
    except EdgesnnError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        return
    assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
