"""Issue 17: no code from a file runs unless the user asks for it (--trust-code, or --model naming
the same factory), a factory cannot reach another module through attributes, an MCU project's
Makefile needs the same opt-in, and a checkpoint is checked (types, size, tensors, NaN) before its
model is allocated. The malicious checkpoint of the issue (``torch:os.system``) is tried on every
entry point: the file it would create never appears."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgesnn import checkpoint, limits, pipeline
from edgesnn.cli import app
from edgesnn.data import Dataset
from edgesnn.errors import EdgesnnError
from edgesnn.models import custom
from edgesnn.models.mlp import SpikingMLP
from edgesnn.train import train

NETS = '''"""A user's models, in every spelling a factory can have."""
import os
import subprocess
from pathlib import Path

from edgesnn.models.mlp import SpikingMLP

Path(__file__).with_name("imported-trust_nets").touch()  # proves the module was (or was not) imported


def net(in_shape, num_classes, hidden=(16,)):
    return SpikingMLP(in_shape, num_classes, hidden=list(hidden))


class Net(SpikingMLP):
    def __init__(self, in_shape, num_classes, hidden=(16,)):
        super().__init__(in_shape, num_classes, hidden=list(hidden))

    @classmethod
    def create(cls, in_shape, num_classes, hidden=(16,)):
        return cls(in_shape, num_classes, hidden)


class Spike(SpikingMLP):
    """A class of this module a neuron map may name."""


run = subprocess.run  # an attribute of this module, defined in subprocess
'''
PKG_INIT = '''from pathlib import Path

from trust_pkg.nets import net

Path(__file__).parent.with_name("imported-trust_pkg").touch()
'''
PKG_NETS = '''from edgesnn.models.mlp import SpikingMLP


def net(in_shape, num_classes, hidden=(16,)):
    return SpikingMLP(in_shape, num_classes, hidden=list(hidden))
'''
MODULES = ("trust_nets", "trust_pkg", "trust_pkg.nets")


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(r, *fragments, progress: bool = False):
    """Exit 1 and one line, ``error: ...``, holding every fragment; no traceback. ``progress``: a
    run's stage lines may come first (the stage started before it failed)."""
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.strip().splitlines()
    assert (progress or len(lines) == 1) and lines[-1].startswith("error: "), r.stderr
    assert sum(line.startswith("error") for line in lines) == 1, r.stderr
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def _forget_user_modules():
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's folder: their modules and a checkpoint trained from trust_nets:net."""
    root = tmp_path_factory.mktemp("user")
    (root / "trust_nets.py").write_text(NETS)
    (root / "trust_pkg").mkdir()
    (root / "trust_pkg" / "__init__.py").write_text(PKG_INIT)
    (root / "trust_pkg" / "nets.py").write_text(PKG_NETS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.syspath_prepend(str(root))
        pipeline.train_model("trust_nets:net", "digits", 1, root / "ck")
    _forget_user_modules()
    return root


@pytest.fixture
def here(user, monkeypatch):
    """In the user's folder, with none of their modules imported yet."""
    _forget_user_modules()
    for marker in user.glob("imported-*"):
        marker.unlink()
    monkeypatch.chdir(user)
    monkeypatch.syspath_prepend(str(user))
    yield user
    _forget_user_modules()


def imported(root: Path, module: str) -> bool:
    return (root / f"imported-{module.split('.')[0]}").exists()


def with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of the checkpoint ``src`` whose config.json has ``changes``."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


# ---------------------------------------------------------------- every spelling of a factory

SPELLINGS = [("trust_nets:net", "trust_nets", "net"),  # module:function
             ("trust_nets:Net", "trust_nets", "Net"),  # module:Class
             ("trust_nets:Net.create", "trust_nets", "Net.create"),  # module:a.b (a classmethod)
             ("trust_pkg:net", "trust_pkg", "net"),  # re-exported by a package from its submodule
             ("trust_pkg.nets:net", "trust_pkg.nets", "net")]  # a package's submodule


@pytest.mark.parametrize("spec,module,factory", SPELLINGS)
def test_every_spelling_of_a_factory_needs_the_opt_in(here, tmp_path, spec, module, factory):
    ck = with_config(here / "ck", tmp_path / "ck", model=spec)
    r = edgesnn("export", ck, "--out", tmp_path / "o")
    refused(r, f"{ck / 'config.json'}: names user code, the factory {factory} of module {module} ({spec})",
            "pass --trust-code if you trust it")
    assert not imported(here, module) and module not in sys.modules and not (tmp_path / "o").exists()
    r = edgesnn("inspect", ck)  # shows what it would import, imports nothing
    assert r.exit_code == 0, r.output
    assert f"imports factory {factory} from module {module} ({spec})" in r.stdout and "features.0.weight" in r.stdout
    assert not imported(here, module) and module not in sys.modules
    r = edgesnn("export", ck, "--out", tmp_path / "o", "--trust-code")
    assert r.exit_code == 0, r.output
    assert imported(here, module) and (tmp_path / "o" / "model.ir").is_file()


def test_the_python_api_needs_trust_code_too(here):
    with pytest.raises(EdgesnnError, match=r"names user code, the factory net of module trust_nets"):
        checkpoint.load(here / "ck")
    assert not imported(here, "trust_nets")
    with pytest.raises(EdgesnnError, match="names user code"):
        checkpoint.load(here / "ck", trust_code={"trust_pkg:net"})  # another factory's trust is not this one's
    model, config = checkpoint.load(here / "ck", trust_code={"trust_nets:net"})  # exactly the name the user gave
    assert config["model"] == "trust_nets:net" and isinstance(model, SpikingMLP)


def test_inspect_shows_the_config_and_tensors_of_a_user_checkpoint_without_importing_it(here, tmp_path):
    ck = with_config(here / "ck", tmp_path / "ck", neuron_map={"trust_nets.Spike": "sfa:D=4"})
    r = edgesnn("inspect", ck, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert not imported(here, "trust_nets") and "trust_nets" not in sys.modules
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["built"] is False and d["config"]["kwargs"] == {"in_shape": [1, 8, 8], "num_classes": 10}
    assert [(c["kind"], c["module"], c["object"]) for c in d["imports"]] == [
        ("factory", "trust_nets", "net"), ("neuron class", "trust_nets", "Spike")]
    shapes = {t["name"]: (t["dtype"], t["shape"]) for t in d["tensors"]}
    assert shapes["features.0.weight"] == ("F32", [16, 64]) and shapes["classifier.weight"] == ("F32", [10, 16])
    assert "neuron map {'trust_nets.Spike': 'sfa:D=4'}" in r.stdout


def test_a_neuron_class_is_user_code_too(here, tmp_path):
    ck = with_config(here / "ck", tmp_path / "ck", neuron_map={"trust_pkg.nets.SpikingMLP": "sfa"})
    r = edgesnn("export", ck, "--out", tmp_path / "o")
    refused(r, "names user code, the factory net of module trust_nets")
    with pytest.raises(EdgesnnError, match=r"the neuron class SpikingMLP of module trust_pkg.nets \(trust_pkg.nets.SpikingMLP\)"):
        checkpoint.load(ck, trust_code={"trust_nets:net"})  # the factory trusted, another module's class not
    assert not imported(here, "trust_pkg")
    with pytest.raises(EdgesnnError, match="defined in edgesnn.models.mlp, not in trust_pkg.nets"):
        checkpoint.load(ck, trust_code=True)  # trusted, but not a class trust_pkg.nets defines
    assert custom.trusts({"trust_nets:net"}, "trust_nets.Spike")  # a class of the trusted factory's own module
    assert not custom.trusts({"trust_nets:net"}, "trust_nets_evil.Spike") and not custom.trusts("trust_nets:net", "t")


# ---------------------------------------------------------------- reaching another module through attributes

REACH = ["torch:os.system", "numpy:os.system", "edgesnn.models:custom.importlib.import_module",
         "edgesnn.models:custom.os.system", "trust_nets:os.system", "trust_nets:subprocess.run",
         "trust_nets:run", "trust_nets:Net.__init__", "trust_nets:Net.__init__.__globals__", "os:system",
         "subprocess:run", "builtins:exec"]


@pytest.mark.parametrize("spec", REACH)
def test_a_factory_cannot_reach_another_module_even_when_trusted(here, tmp_path, spec):
    marker = tmp_path / "PWNED"
    with pytest.raises(EdgesnnError) as e:
        custom.load_factory(spec, trust_code=True)
    assert "\n" not in str(e.value)
    assert any(s in str(e.value) for s in ("is a module, not something", "is defined in subprocess", "private attribute",
                                           "standard-library module", "module numpy has no attribute")), str(e.value)
    ck = with_config(here / "ck", tmp_path / "ck", model=spec, kwargs={"command": f"touch {marker}"})
    refused(edgesnn("export", ck, "--out", tmp_path / "o", "--trust-code"), str(ck / "config.json"))
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_neuron_class_cannot_reach_another_module(here):
    for name in ("trust_nets.os.PathLike", "torch.os.PathLike", "trust_nets.subprocess.Popen"):
        with pytest.raises(EdgesnnError, match="is a module, not something"):
            custom.resolve_class(name, trust_code=True)
    with pytest.raises(EdgesnnError, match="os is a standard-library module"):
        custom.resolve_class("os.PathLike", trust_code=True)
    assert custom.resolve_class("trust_nets.Spike", trust_code={"trust_nets.Spike"}).__name__ == "Spike"


# ---------------------------------------------------------------- the issue's checkpoint, on every entry point

@pytest.fixture(scope="module")
def evil(trained, tmp_path_factory):
    """A checkpoint whose config.json says torch:os.system(command="touch PWNED"), and an IR, .onnx
    (integer, with its IR, and QCDQ) and .tflite (with its IR) exported from it before it was
    tampered with, so they name it."""
    root = tmp_path_factory.mktemp("evil")
    ck = shutil.copytree(trained["mlp"], root / "ck")
    art = {t: pipeline.export_model(ck, t, root / t) for t in ("ir", "onnx", "onnx-qcdq", "tflite")}
    config = json.loads((ck / "config.json").read_text())
    config.update(model="torch:os.system", kwargs={"command": f"touch {root / 'PWNED'}"})
    (ck / "config.json").write_text(json.dumps(config))
    return {"root": root, "ck": ck, "marker": root / "PWNED", **art}


REFUSAL = "names user code, the factory os.system of module torch (torch:os.system)"
REACHED = "torch.os is a module, not something torch defines"


@pytest.mark.parametrize("trust", [[], ["--trust-code"]], ids=["untrusted", "trusted"])
@pytest.mark.parametrize("command", [
    lambda e, o: ["export", e["ck"], "--out", o],
    lambda e, o: ["export", e["ck"], "--target", "tflite", "--out", o],
    lambda e, o: ["verify", e["ir"], "--json", o],  # the IR names the checkpoint
    lambda e, o: ["verify", e["ir"].with_name("x.ir"), "--checkpoint", e["ck"], "--json", o],
    lambda e, o: ["verify", e["onnx-qcdq"], "--json", o],  # the QCDQ file names the checkpoint, compared with torch
    lambda e, o: ["quantize", e["ck"], "--method", "qsnn", "--epochs", 1, "--out", o],
], ids=["export", "export-tflite", "verify-ir", "verify-checkpoint-option", "verify-onnx-qcdq", "quantize"])
def test_the_issue_checkpoint_runs_nothing_on_any_entry_point(evil, tmp_path, command, trust):
    args = command(evil, tmp_path / "out")
    if args[1] == evil["ir"].with_name("x.ir"):
        shutil.copy(evil["ir"], args[1])
    r = edgesnn(*args, *trust)
    refused(r, str(evil["ck"] / "config.json"), REACHED if trust else REFUSAL)
    assert not evil["marker"].exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    lambda e, o: ["inspect", e["ck"], "--json", o],  # shows what it would import
    lambda e, o: ["verify", e["tflite"], "--json", o],  # compared with its IR: the checkpoint is not loaded
    lambda e, o: ["verify", e["onnx"], "--json", o],  # the integer ONNX file too
    lambda e, o: ["profile", e["ir"], "--board", "host", "--json", o],  # the IR alone
], ids=["inspect", "verify-tflite", "verify-onnx", "profile-ir"])
def test_entry_points_that_never_load_the_checkpoint_still_work(evil, tmp_path, args):
    r = edgesnn(*args(evil, tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    assert not evil["marker"].exists() and (tmp_path / "r.json").is_file()


@pytest.mark.parametrize("args,fragment", [
    ([], "recipe 'evil': model: names user code, the factory os.system of module torch (torch:os.system)"),
    (["--trust-code"], REACHED),
    (["--model", "torch:os.system"], REACHED),
], ids=["untrusted", "trusted", "model-option"])
def test_a_recipe_naming_the_issue_factory_runs_nothing(evil, tmp_path, args, fragment):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f'name: evil\nmodel: {{name: "torch:os.system", kwargs: {{command: "touch {evil["marker"]}"}}}}\n'
                      "train: {epochs: 1}\nexport: [{target: ir}]\n")
    r = edgesnn("run", recipe, "--out", tmp_path / "out", *args)
    refused(r, fragment, progress=bool(args))
    assert not evil["marker"].exists() and not (tmp_path / "out" / "checkpoint").exists()
    if not args:
        assert "or name it with --model torch:os.system" in r.stderr
        assert not (tmp_path / "out").exists()  # refused before anything is written
    refused(edgesnn("train", "--model", "torch:os.system", "--out", tmp_path / "t"), REACHED)
    assert not evil["marker"].exists()


def test_the_issue_checkpoint_in_a_real_process(evil, tmp_path):
    """The real executable, not the in-process runner: inspect shows the factory, export refuses it."""
    exe = Path(sys.executable).with_name("edgesnn")
    for args, status, fragment in [(["inspect", evil["ck"]], 0, "imports factory os.system from module torch"),
                                   (["export", evil["ck"], "--out", tmp_path / "o"], 1, REFUSAL),
                                   (["export", evil["ck"], "--out", tmp_path / "o", "--trust-code"], 1, REACHED)]:
        p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
        assert p.returncode == status and fragment in p.stdout + p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not evil["marker"].exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- recipes

def test_a_recipe_factory_runs_with_model_naming_it_and_keeps_the_recipe_map(here, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text('name: mine\nmodel: {name: "trust_nets:net", kwargs: {hidden: [8]}, '
                      'neuron_map: {trust_nets.Spike: "sfa"}}\ntrain: {epochs: 1}\nexport: [{target: ir}]\n')
    refused(edgesnn("run", recipe, "--out", tmp_path / "out"),
            "recipe 'mine': model: names user code, the factory net of module trust_nets (trust_nets:net)",
            "pass --trust-code if you trust it", "or name it with --model trust_nets:net")
    assert not imported(here, "trust_nets") and not (tmp_path / "out").exists()
    refused(edgesnn("run", recipe, "--out", tmp_path / "out", "--model", "trust_pkg:net", "--neuron-map",
                    "trust_nets.Spike=sfa"), "--neuron-map trust_nets.Spike=sfa: the model has no trust_nets.Spike layer",
            progress=True)
    r = edgesnn("run", recipe, "--out", tmp_path / "out2", "--model", "trust_nets:net")  # the same factory
    assert r.exit_code == 1 and "the model has no trust_nets.Spike layer" in r.output  # the recipe's map is kept
    recipe.write_text(recipe.read_text().replace(', neuron_map: {trust_nets.Spike: "sfa"}', ""))
    r = edgesnn("run", recipe, "--out", tmp_path / "out3", "--model", "trust_nets:net")
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "out3" / "checkpoint" / "config.json").read_text())
    assert config["model"] == "trust_nets:net" and config["kwargs"]["hidden"] == [8]  # the recipe's kwargs kept


WRAPPED = """import torch.nn as nn

from tutorial_nets import SnnTorchNet


class Wrapped(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.net = SnnTorchNet(in_shape, num_classes)

    def forward(self, x):
        return self.net(x)
"""


def test_a_recipe_map_key_naming_a_layer_needs_no_trust_beyond_the_factory(tmp_path, monkeypatch):
    """``net.lif3`` reads like a class path (module ``net``), but it is a layer of the model: once
    ``--model`` trusts the factory, the run builds the model and imports nothing for that key. A
    key that is no layer still needs the opt-in."""
    (tmp_path / "wrapped_nets.py").write_text(WRAPPED)
    shutil.copy(Path(__file__).with_name("tutorial_nets.py"), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text('name: mine\nmodel: {name: "wrapped_nets:Wrapped", neuron_map: {net.lif1: sfa, net.lif2: sfa, '
                      'net.lif3: readout}}\ntrain: {epochs: 1}\nexport: [{target: ir}]\n')
    r = edgesnn("run", recipe, "--out", tmp_path / "out", "--model", "wrapped_nets:Wrapped")
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "out" / "checkpoint" / "config.json").read_text())
    assert config["model"] == "wrapped_nets:Wrapped"
    recipe.write_text(recipe.read_text().replace("net.lif1: sfa, net.lif2: sfa", "snntorch.Leaky: sfa"))
    refused(edgesnn("run", recipe, "--out", tmp_path / "out2", "--model", "wrapped_nets:Wrapped"),
            "names user code, the neuron class Leaky of module snntorch (snntorch.Leaky)")
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------- MCU projects: the Makefile

@pytest.fixture(scope="module")
def project(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("mcu")
    return pipeline.export_model(trained["mlp"], "mcu", root / "mcu", board="rp2040")


def test_a_projects_makefile_runs_only_with_the_opt_in(project, tmp_path):
    marker = tmp_path / "MADE"
    mine = shutil.copytree(project, tmp_path / "downloaded")
    (mine / "Makefile").write_text(f"host:\n\ttouch {marker}\n\techo no binary >&2; false\narm:\n\ttouch {marker}\n")
    for args in (["verify", mine], ["verify", mine, "--qemu"], ["profile", mine, "--board", "rp2040"],
                 ["profile", mine, "--board", "host", "--measure"]):
        refused(edgesnn(*args), f"{mine}: this would run the folder's Makefile", "pass --trust-code if you trust it")
        assert not marker.exists()
    refused(edgesnn("verify", mine, "--trust-code"), "the host build failed")  # asked for: make ran
    assert marker.exists()
    with pytest.raises(EdgesnnError, match="this would run the folder's Makefile"):
        pipeline.verify(project, "digits")  # the Python API: trust_code=True to build
    assert pipeline.verify(project, "digits", samples=20, trust_code=True)["mismatches"] == 0


# ---------------------------------------------------------------- checkpoints: format, types, size, NaN

def _header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_a_safetensors_file_whose_first_byte_is_0x80_is_accepted(trained, tmp_path):
    """Its header length is 128 mod 256 (here with a second byte 2..5, as a pickle's protocol)."""
    ck = shutil.copytree(trained["mlp"], tmp_path / "ck")
    state = load_file(str(ck / "model.safetensors"))
    for pad in range(0, 2048):
        save_file(state, str(ck / "model.safetensors"), metadata={"format": "edgesnn-checkpoint", "pad": "x" * pad})
        n = _header_length(ck / "model.safetensors")
        if n % 256 == 128 and 2 <= n // 256 <= 5:
            break
    head = (ck / "model.safetensors").read_bytes()[:2]
    assert head[0] == 0x80 and 2 <= head[1] <= 5  # what the old first-byte test called a pickle
    model, config = checkpoint.load(ck)
    assert config["model"] == "mlp" and torch.equal(model.state_dict()["classifier.weight"], state["classifier.weight"])
    r = edgesnn("export", ck, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output


def test_pickles_and_torch_save_files_are_still_refused(trained, tmp_path):
    ck = shutil.copytree(trained["mlp"], tmp_path / "ck")
    torch.save({"w": torch.zeros(2)}, ck / "model.safetensors")  # a zip archive
    with pytest.raises(EdgesnnError, match="model.safetensors is a pickle/torch.save file, not safetensors"):
        checkpoint.load(ck)
    (ck / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a protocol-4 pickle
    with pytest.raises(EdgesnnError, match="is a pickle/torch.save file"):
        checkpoint.load(ck)


def _kwargs(**changes):
    return lambda cfg: {"kwargs": {**cfg["kwargs"], **changes}}


CONFIGS = [
    ("model-int", lambda cfg: {"model": 5}, "config.json: 'model' must be a model name or module:factory, got 5"),
    ("model-list", lambda cfg: {"model": ["mlp"]}, "'model' must be a model name or module:factory, got ['mlp']"),
    ("model-newline", lambda cfg: {"model": "a:b\n"}, "is not module:factory"),
    ("kwargs-str", lambda cfg: {"kwargs": "x"}, "'kwargs' must be a mapping of constructor arguments, got"),
    ("D-str", lambda cfg: {"D": "x"}, "'D' must be an integer from 1 to 127, got"),
    ("D-zero", lambda cfg: {"D": 0}, "'D' must be an integer from 1 to 127, got 0"),
    ("neuron-map-int", lambda cfg: {"neuron_map": 3}, "'neuron_map' must map class paths (module.Class)"),
    ("quantization-list", lambda cfg: {"quantization": [1]}, "invalid quantization spec (a mapping expected, got [1])"),
    ("spec-method-int", lambda cfg: {"quantization": {"method": 3}}, "invalid quantization spec (method must be a string"),
    ("data-int", lambda cfg: {"data": 5}, "'data' must be a data set name, got 5"),
    ("input-shape", lambda cfg: {"input_shape": [1, 0, 8]}, "'input_shape': every dimension must be >= 1"),
    ("num-classes", lambda cfg: {"num_classes": -3}, "'num_classes' must be an integer >= 1, got -3"),
    ("kwargs-in-shape", _kwargs(in_shape=[1, -8, 8]), "kwargs.in_shape: shape must be a list"),
    ("kwargs-classes", _kwargs(num_classes=0), "kwargs.num_classes must be a positive integer, got 0"),
    ("kwargs-D", _kwargs(D=True), "kwargs.D must be a positive integer, got True"),
    ("hidden-negative", _kwargs(hidden=[-5]), "cannot build model 'mlp'"),
    ("classes-2^40", _kwargs(num_classes=2 ** 40), "more than the"),
    ("classes-2^70", _kwargs(num_classes=2 ** 70), "cannot build model 'mlp'"),
    ("wide-layer", _kwargs(hidden=[2 ** 21, 64]), "weights do not match config.json (size mismatch for features.0.weight"),
    ("spec-huge-width", lambda cfg: {"quantization": {"method": "qsnn", "widths": {"features.0": {"out": 2 ** 40}}}},
     "more than the"),
]


@pytest.mark.parametrize("case,edit,fragment", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_config_of_the_wrong_shape_or_size_is_one_line(trained, tmp_path, case, edit, fragment):
    cfg = json.loads((trained["mlp"] / "config.json").read_text())
    ck = with_config(trained["mlp"], tmp_path / "ck", **edit(cfg))
    refused(edgesnn("export", ck, "--out", tmp_path / "o"), fragment)
    refused(edgesnn("inspect", ck), fragment.split(" (")[0] if "weights" in fragment else fragment)
    assert not (tmp_path / "o").exists()


def test_the_memory_budget_refuses_a_model_before_building_it(trained, tmp_path, monkeypatch):
    ck = with_config(trained["mlp"], tmp_path / "ck",
                     kwargs={**json.loads((trained["mlp"] / "config.json").read_text())["kwargs"], "hidden": [2 ** 21]})
    monkeypatch.setenv(limits.MEMORY_ENV, "64M")
    refused(edgesnn("export", ck, "--out", tmp_path / "o"), f"{ck}: the model config.json describes (with its weights) needs",
            "more than the 67,108,864 allowed (set EDGESNN_MEMORY_LIMIT to change the limit)")


def test_a_wide_layer_is_refused_before_it_is_allocated(trained, tmp_path):
    """The real CLI in a child process: its peak memory stays that of an idle edgesnn."""
    cfg = json.loads((trained["mlp"] / "config.json").read_text())
    ck = with_config(trained["mlp"], tmp_path / "ck", kwargs={**cfg["kwargs"], "hidden": [2 ** 21, 64]})
    code = ("import resource\nfrom typer.testing import CliRunner\nfrom edgesnn.cli import app\n"
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\nbefore = peak()\n"
            f"r = CliRunner().invoke(app, ['export', {str(ck)!r}, '--out', {str(tmp_path / 'o')!r}])\n"
            "print(r.exit_code, peak() - before)\nprint(r.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    status, grown = p.stdout.split("\n")[0].split()
    assert status == "1" and "size mismatch for features.0.weight" in p.stdout, p.stdout + p.stderr
    assert int(grown) < 2 ** 21 * 64 * 4 // 2  # the first layer alone is 512 MiB: it was never allocated
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tensor,value,kind", [("features.0.weight", float("nan"), "NaN"),
                                               ("features.1.running_var", float("inf"), "Inf"),
                                               ("classifier.bias", float("-inf"), "Inf")])
def test_nan_or_inf_weights_are_named(trained, tmp_path, tensor, value, kind):
    ck = shutil.copytree(trained["mlp"], tmp_path / "ck")
    state = load_file(str(ck / "model.safetensors"))
    state[tensor][0] = value
    save_file(state, str(ck / "model.safetensors"))
    for target in ("ir", "tflite"):
        refused(edgesnn("export", ck, "--target", target, "--out", tmp_path / "o"),
                f"{ck / 'model.safetensors'}: tensor '{tensor}' holds {kind}")
    assert not (tmp_path / "o").exists()


def test_json_never_holds_nan_and_a_diverged_training_writes_nothing(tmp_path):
    with pytest.raises(EdgesnnError, match=r"r.json: runs.1.accuracy is nan, which JSON cannot hold; nothing written"):
        checkpoint.write_json(tmp_path / "r.json", {"runs": [{"accuracy": 1.0}, {"accuracy": float("nan")}]})
    assert not list(tmp_path.iterdir())
    x = torch.rand(32, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    y = torch.arange(32) % 10
    ds = Dataset("nan", x, y, x[:8], y[:8])
    with pytest.raises(EdgesnnError, match=r"training diverged: the loss is nan in epoch 1"):
        train(SpikingMLP((1, 8, 8), 10, hidden=[8]), ds, 1)
    with pytest.raises(EdgesnnError, match=r"the model to save: tensor 'w' holds NaN"):
        checkpoint.save(_Holding(torch.tensor([float("nan")])), {"model": "mlp", "kwargs": {}}, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


class _Holding(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)
