"""Issue 19, agreement without retraining: models written and trained the snnTorch and SpikingJelly
way (tests/tutorial_nets.py), brought in through the real CLI with `--epochs 0`, exported and
verified on every backend.

The guide docs/bring-your-model.md is what runs here: it shows tutorial_nets.py verbatim, and its
worked examples' training snippets and `edgesnn` commands are read from it and executed (the
SpikingJelly neuron-before-pool case is its example with the factory replaced, as the guide says).
"""

import importlib.util
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import checkpoint, data, ir, pipeline, threads
from edgesnn.cli import app

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "bring-your-model.md"
NETS = Path(__file__).with_name("tutorial_nets.py")
IF = "spikingjelly.activation_based.neuron.IFNode"  # the map's key; the class is defined in a submodule
IF_CLASS = "spikingjelly.activation_based.neuron.integrate_and_fire.IFNode"
IF_READ = "SpikingJelly IFNode: v_threshold=1.0, v_reset=0.0"

# case: (the guide's example, factory renamed in it, the file format, the mapped layers as `inspect` shows them)
CASES = {
    "snntorch": ("snntorch", None, "safetensors", [
        "lif1: snntorch._neurons.leaky.Leaky -> sfa:D=1,normalize=true,gain=0.5 [snntorch.Leaky; snnTorch Leaky: "
        "threshold=1.0]",
        "lif2: snntorch._neurons.leaky.Leaky -> sfa:D=1,normalize=true,gain=0.5 [snntorch.Leaky; snnTorch Leaky: "
        "threshold=1.0]",
        "lif3: snntorch._neurons.leaky.Leaky -> readout:scale=1.0 [lif3; snnTorch Leaky: threshold=1.0]"]),
    "spikingjelly-pool-first": ("spikingjelly", None, "torch", [  # Conv, BN, MaxPool, IFNode: layers 3 and 7
        f"{i}: {IF_CLASS} -> sfa:D=1,normalize=true,gain=0.5 [{IF}; {IF_READ}]" for i in (3, 7)]),
    "spikingjelly-neuron-first": ("spikingjelly", "spikingjelly_neuron_first", "torch", [  # Conv, BN, IFNode, MaxPool
        f"{i}: {IF_CLASS} -> sfa:D=1,normalize=true,gain=0.5 [{IF}; {IF_READ}]" for i in (2, 6)]),
}


def guide_blocks() -> dict[str, str]:
    """The guide's code blocks marked ``<!-- tested: NAME -->``, by NAME."""
    found = re.findall(r"<!-- tested: ([^>]+?) -->\n```\w*\n(.*?)```\n", GUIDE.read_text(), flags=re.S)
    return dict(found)


def guide_commands(block: str) -> list[list[str]]:
    """Each ``edgesnn`` command of a shell block, with its continuation lines, as CLI arguments."""
    lines = block.replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines]
    assert all(c[0] == "edgesnn" for c in commands if c), block
    return [c[1:] for c in commands if c]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture(scope="module")
def eight_bit_weights():
    """scripts/bring_agreement.py's torch model with the exporter's 8-bit weights (one definition for both)."""
    spec = importlib.util.spec_from_file_location("bring_agreement", ROOT / "scripts" / "bring_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))  # the script imports its sibling markdown_section
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module.eight_bit_weights


@pytest.fixture(scope="module", params=list(CASES))
def brought(request, tmp_path_factory, monkeypatch_module):
    """One case run as the guide says: the library's training snippet (one torch thread: the same
    model on any machine, and quick on a loaded one), then every command of the example."""
    case = request.param
    example, renamed, _, _ = CASES[case]
    blocks = guide_blocks()
    snippet, commands = blocks[f"train {example}"], blocks[f"commands {example}"]
    if renamed:
        snippet, commands = (b.replace("spikingjelly_net", renamed) for b in (snippet, commands))
        assert f"nets.{renamed}(" in snippet and f"tutorial_nets:{renamed} " in commands
    folder = tmp_path_factory.mktemp(case)
    shutil.copy(NETS, folder / "tutorial_nets.py")
    monkeypatch_module.chdir(folder)
    monkeypatch_module.syspath_prepend(str(folder))
    outputs = []
    with threads.pinned(1):
        scope = {}
        exec(compile(snippet, f"train_{example}.py", "exec"), scope)
        for args in guide_commands(commands):
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, (args, r.output)
            outputs.append((args, r.output))
    train_args = outputs[0][0]
    assert train_args[0] == "train" and _option(train_args, "--epochs") == "0"
    results = [json.loads((folder / _option(args, "--json")).read_text()) for args, _ in outputs if args[0] == "verify"]
    return {"case": case, "folder": folder, "library_accuracy": scope["accuracy"], "outputs": outputs,
            "ck": folder / _option(train_args, "--out"), "weights": _option(train_args, "--weights"),
            "results": results}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def _result(brought, kind: str) -> dict:
    """The verify JSON of one artifact kind: ir (vs torch), tflite, mcu or lava (vs the IR)."""
    for r in brought["results"]:
        found = ("tflite" if "runtimes" in r else "mcu" if "runs" in r
                 else "lava" if str(r.get("runtime", "")).startswith("lava") else "ir" if "torch_accuracy" in r else None)
        if found == kind:
            return r
    raise AssertionError(f"{brought['case']}: the guide's commands verify no {kind} artifact")


def test_the_guide_shows_the_models_file_verbatim():
    assert guide_blocks()["tests/tutorial_nets.py"] == NETS.read_text()


def test_the_checkpoint_is_the_library_model(brought):
    """The brought-in checkpoint's test accuracy is the library model's own (eval mode, one timestep)."""
    metrics = json.loads((brought["ck"] / checkpoint.METRICS).read_text())
    train_output = brought["outputs"][0][1]
    assert f"(weights {brought['weights']}, not trained)" in train_output
    assert metrics["epochs"] == 0 and metrics["weights"]["format"] == CASES[brought["case"]][2]
    assert brought["library_accuracy"] > 0.85  # trained by the library: a real model
    assert abs(metrics["test_accuracy"] - brought["library_accuracy"]) <= 0.01, (metrics, brought["library_accuracy"])


def test_inspect_shows_each_mapped_layer(brought):
    out = next(o for args, o in brought["outputs"] if args[0] == "inspect")
    for line in CASES[brought["case"]][3]:
        assert line in out, (line, out)


def test_the_ir_agrees_with_torch(brought):
    """The issue's >= 0.995 with no training: the guide exports with --weight-bits 16 (the float
    weights as two int8 planes) and int16 streams. With 8-bit weights these models measure
    0.971-1.000 (docs/bring-your-model.md): the rounding of the float weights (next test)."""
    r = _result(brought, "ir")
    metrics = json.loads((brought["ck"] / checkpoint.METRICS).read_text())
    assert r["samples"] == 450 and r["torch_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert r["agreement"] >= 0.995, r


def test_the_ir_computes_the_model_with_the_exporters_8_bit_weights(brought, eight_bit_weights):
    """Exported with int16 streams (int16 logits: no int8 ties), the IR gives the argmax of the torch
    model whose weights (BatchNorm folded) are rounded as the exporter rounds them; measured: 0 of 450
    for every model and seed in the guide's table."""
    folder = brought["folder"]
    with threads.pinned(1):
        path = pipeline.export_model(brought["ck"], "ir", folder / "ir-int16", stream_dtype="int16", trust_code=True)
        model, _ = checkpoint.load(brought["ck"], trust_code=True)
        x = data.digits().x_test
        ir_pred = ir.load(path).run(data.to_nhwc(x)).argmax(1)
        rounded = eight_bit_weights(model)(x.double()).argmax(1).numpy()
    assert np.mean(ir_pred == rounded) >= 0.995, int((ir_pred != rounded).sum())


def test_every_backend_is_bit_exact_with_the_ir(brought):
    tfl = _result(brought, "tflite")
    assert tfl["bit_exact"] and tfl["samples"] == 450 and tfl["runtimes"]["litert-reference"]["mismatches"] == 0, tfl
    other = _result(brought, "mcu" if brought["case"] == "snntorch" else "lava")
    assert other["samples"] == 450 and other["mismatches"] == 0, other
    assert other.get("runs", {}).get("host", {"mismatches": 0})["mismatches"] == 0


def test_the_guide_has_the_generated_agreement_table():
    text = GUIDE.read_text()
    section = text[text.index("<!-- bring-agreement:begin -->"):text.index("<!-- bring-agreement:end -->")]
    assert "regenerated by `scripts/bring_agreement.py`" in section
    for model in ("snntorch", "spikingjelly-maxpool-first", "spikingjelly-neuron-first"):
        assert len(re.findall(rf"^\| {model} \| \d \|", section, flags=re.M)) == 3, model  # three seeds
