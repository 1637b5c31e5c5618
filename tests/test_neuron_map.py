"""Issue 19, per-instance neuron mapping: `--neuron-map` by layer path as well as by class, the
`readout` target, each library neuron's own settings read from the instance (real snnTorch and
SpikingJelly, an SDT-V3-style MultiSpike), the checkpoint's record of each layer, and `inspect`.

The library models are trained briefly with the library's own surrogate gradients
(tests/library_nets.py), so that every spike layer fires on part of its inputs; then the mapped
torch model must give the library's outputs exactly, layer by layer, in eval mode on digits."""

import copy
import json

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from spikingjelly.activation_based import neuron as sj
from typer.testing import CliRunner

import library_nets as nets
from edgesnn import checkpoint, data
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.export import export
from edgesnn.models import custom
from edgesnn.neurons import MultiSpike
from edgesnn.recipes import Model

LEAKY = "snntorch.Leaky"
SJ = "spikingjelly.activation_based.neuron"


@pytest.fixture(scope="module")
def ds():
    return data.load("digits")


@pytest.fixture(scope="module")
def snntorch_net(ds):
    torch.manual_seed(0)
    net = nets.snntorch_net(ds.in_shape, ds.num_classes)
    return nets.fit(net, ds.x_train, ds.y_train, lambda out, y: F.cross_entropy(out[1], y))  # (spk, mem)


@pytest.fixture(scope="module")
def spikingjelly_net(ds):
    torch.manual_seed(0)
    net = nets.spikingjelly_net(ds.in_shape, ds.num_classes)
    return nets.fit(net, ds.x_train, ds.y_train, lambda out, y: F.mse_loss(out, F.one_hot(y, 10).float()))


def outputs(net, x, layers) -> dict:
    """Each named layer's output (and input) for one forward pass of ``net`` from rest."""
    seen, hooks = {}, []
    for name in layers:
        hooks.append(net.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o))))
    nets.reset(net)
    with torch.no_grad():
        final = net(x)
    for h in hooks:
        h.remove()
    return {"final": final, **seen}


def mapped(net, neuron_map) -> tuple[torch.nn.Module, list[dict]]:
    m = copy.deepcopy(net)
    return m, custom.map_neurons(m, neuron_map, D=4, trust_code=True)


def fires_sometimes(spikes: torch.Tensor) -> bool:
    return 0.02 < float(spikes.float().mean()) < 0.98


# ---------------------------------------------------------------- paths, classes, instance settings

def test_a_path_overrides_the_class_entry_and_each_instance_keeps_its_threshold(snntorch_net):
    m, records = mapped(snntorch_net, {LEAKY: "sfa", "blocks.1.sn": "sfa:D=3", "head.lif": "readout"})
    assert [(r["layer"], r["key"], r["target"]) for r in records] == [
        ("blocks.0.sn", LEAKY, "sfa:D=1,normalize=true,gain=1.0"),  # threshold 0.5 read: D 1, gain 1 / (2 * 0.5)
        ("blocks.1.sn", "blocks.1.sn", "sfa:D=3,normalize=true,gain=0.5"),  # D given, threshold 1.0 read
        ("head.lif", "head.lif", "readout:scale=1.0")]  # the path wins over the class entry for this instance
    assert all(r["class"] == "snntorch._neurons.leaky.Leaky" for r in records)
    assert records[0]["instance"] == "snnTorch Leaky: threshold=0.5"
    sn0, sn1 = m.blocks[0].sn, m.blocks[1].sn
    assert (type(sn0), sn0.D, sn0.gain, type(sn1), sn1.D, sn1.gain) == (MultiSpike, 1, 1.0, MultiSpike, 3, 0.5)
    assert isinstance(m.head.lif, custom.Readout) and custom.mapped_layers(m) == records
    _, explicit = mapped(snntorch_net, {LEAKY: "sfa:threshold=0.25,normalize=false", "head.lif": "readout:scale=2"})
    assert [r["target"] for r in explicit] == ["sfa:D=1,normalize=false,gain=2.0"] * 2 + ["readout:scale=2.0"]


def test_mapped_snntorch_model_equals_the_library_layer_by_layer(snntorch_net, ds):
    layers = ["blocks.0.sn", "blocks.1.sn", "head.lif"]
    lib = outputs(snntorch_net, ds.x_test, layers)
    m, _ = mapped(snntorch_net, {LEAKY: "sfa", "head.lif": "readout"})
    ours = outputs(m, ds.x_test, layers)
    for name in layers[:2]:  # one timestep from rest: the same spikes (snnTorch fires above, edgesnn at, a threshold)
        assert fires_sometimes(lib[name][1]) and torch.equal(lib[name][1], ours[name][1]), name
    spk, mem = lib["final"]  # Leaky(output=True) returns (spk, mem); the readout gives the membrane: the logits
    assert torch.equal(ours["final"], mem) and torch.equal(ours["head.lif"][1], lib["head.lif"][1][1])
    assert float((mem.argmax(1) == ds.y_test).float().mean()) > 0.6  # trained by snnTorch: real logits


def test_snntorch_sequential_maps_by_index(ds):
    torch.manual_seed(1)
    net = nets.fit(nets.snntorch_sequential(ds.in_shape, ds.num_classes), ds.x_train, ds.y_train,
                   lambda out, y: F.cross_entropy(out[1], y), epochs=1)
    lib = outputs(net, ds.x_test, ["2"])
    m, records = mapped(net, {"2": "sfa", "4": "readout"})
    assert [r["target"] for r in records] == ["sfa:D=1,normalize=true,gain=2.0", "readout:scale=1.0"]  # threshold 0.25
    ours = outputs(m, ds.x_test, ["2"])
    assert fires_sometimes(lib["2"][1]) and torch.equal(lib["2"][1], ours["2"][1])
    assert torch.equal(ours["final"], lib["final"][1])  # the Sequential now returns the logits, not (spk, mem)


def test_mapped_spikingjelly_model_equals_the_library_layer_by_layer(spikingjelly_net, ds):
    layers = ["2", "5", "9", "11"]
    lib = outputs(spikingjelly_net, ds.x_test, layers)
    v_out = spikingjelly_net[11].v  # the output LIF's membrane after the step (reset to 0 where it fired)
    m, records = mapped(spikingjelly_net, {f"{SJ}.IFNode": "sfa", f"{SJ}.LIFNode": "sfa", "11": "readout"})
    assert [(r["layer"], r["target"]) for r in records] == [
        ("2", "sfa:D=1,normalize=true,gain=0.5"),  # IF, v_threshold 1: fires at x >= 1
        ("5", "sfa:D=1,normalize=true,gain=0.5"),  # LIF tau 2, v_threshold 0.5: x / 2 >= 0.5
        ("9", "sfa:D=1,normalize=true,gain=0.125"),  # LIF tau 4, soft reset: x / 4 >= 1
        ("11", "readout:scale=0.5")]  # the membrane of a LIF with tau 2 from rest: x / 2
    ours = outputs(m, ds.x_test, layers)
    for name in layers[:3]:
        assert fires_sometimes(lib[name][1]) and torch.equal(lib[name][1], ours[name][1]), name
    x_out, spikes = lib["11"]
    assert 0 < float(spikes.mean()) < 1 and torch.equal(ours["final"], x_out / 2)
    assert torch.equal(ours["final"][spikes == 0], v_out[spikes == 0])  # where it did not fire, the library's v


def test_an_sdt_v3_multispike_keeps_max_value_and_norm(ds):
    torch.manual_seed(0)
    net = nets.fit(nets.sdt_net(ds.in_shape, ds.num_classes, norm=1), ds.x_train, ds.y_train,
                   lambda out, y: F.cross_entropy(out, y), epochs=1)
    lib = outputs(net, ds.x_test, ["2", "5"])
    m, records = mapped(net, {"library_nets.MultiSpike": "sfa"})
    assert [r["target"] for r in records] == ["sfa:D=4,normalize=true,gain=1.0",  # MultiSpike(): Norm = max_value
                                              "sfa:D=2,normalize=false,gain=1.0"]  # MultiSpike(max_value=2, Norm=1)
    assert records[1]["instance"] == "SDT-V3 MultiSpike: max_value=2, Norm=1"
    ours = outputs(m, ds.x_test, ["2", "5"])
    for name in ("2", "5"):  # SDT-V3 rounds halves to even, edgesnn up: a measure-zero difference
        assert 0 < float((lib[name][1] > 0).float().mean()) < 1 and torch.equal(lib[name][1], ours[name][1])
    assert torch.equal(lib["final"], ours["final"])
    _, explicit = mapped(net, {"library_nets.MultiSpike": "sfa:max_value=3", "5": "sfa:normalize=true"})
    assert [r["target"] for r in explicit] == ["sfa:D=3,normalize=true,gain=1.0", "sfa:D=2,normalize=true,gain=1.0"]


# ---------------------------------------------------------------- readout export

def test_a_scaled_readout_folds_into_the_layer_before(ds):
    """readout:scale=0.5 exports as the dense layer with its weights halved: the same IR, no extra op."""
    torch.manual_seed(0)
    net = nets.spikingjelly_mlp(ds.in_shape, ds.num_classes).eval()
    a, records = mapped(net, {"2": "sfa", "4": "readout"})
    assert records[1]["target"] == "readout:scale=0.5"
    b = copy.deepcopy(net)
    with torch.no_grad():
        b[3].weight *= 0.5
        b[3].bias *= 0.5
    custom.map_neurons(b, {"2": "sfa", "4": "readout:scale=1"})
    with torch.no_grad():
        assert torch.equal(a(ds.x_test), b(ds.x_test)) and fires_sometimes(a[2](a[1](a[0](ds.x_test))))
    ga, gb = export(a, ds.x_train[:256]), export(b, ds.x_train[:256])
    assert [op.kind for op in ga.ops] == [op.kind for op in gb.ops]
    x = data.to_nhwc(ds.x_test)
    assert np.array_equal(ga.run(x), gb.run(x))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("neuron_map, message", [
    ({"blocks.0.snn": "sfa"}, "--neuron-map blocks.0.snn=sfa: the model has no layer 'blocks.0.snn' "
                              "(close names: blocks.0.sn"),
    ({"lif": "sfa"}, "the model has no layer 'lif' (layers to map: blocks.0.sn (snntorch._neurons.leaky.Leaky)"),
    ({"head.lfi": "readout"}, "the model has no layer 'head.lfi' (close names: head.lif"),
    ({"head.fc": "sfa"}, "layer head.fc (torch.nn.modules.linear.Linear) is a layer the exporter reads as it is"),
    ({"blocks.0": "sfa", "blocks.0.sn": "readout"}, "layer blocks.0.sn is inside blocks.0, which blocks.0=sfa replaces"),
    ({"head.lif": "lif"}, "unknown edgesnn neuron 'lif'; available: sfa, readout"),
    ({"head.lif": "readout:D=2"}, "unknown option 'D=2'; readout takes scale=X"),
    ({"head.lif": "sfa:threshold=0.5,gain=2"}, "gain is given twice"),
    ({"head.lif": "sfa:D=2,max_value=3"}, "D is given twice"),
    ({"head.lif": "sfa:threshold=0"}, "threshold must be a positive finite number, got 0.0"),
    ({"head.lif": "readout:scale=nan"}, "scale must be a positive finite number"),
    ({"torch.nn.ReLU": "sfa"}, "the model has no torch.nn.ReLU layer"),
])
def test_bad_maps_are_one_clear_error(snntorch_net, neuron_map, message):
    with pytest.raises(EdgesnnError) as e:
        mapped(snntorch_net, neuron_map)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("make, message", [
    (lambda: snn.Leaky(beta=0.9, graded_spikes_factor=2.0, init_hidden=True), "graded_spikes_factor = 2"),
    (lambda: snn.Leaky(beta=0.9, threshold=torch.tensor([0.5, 1.0]), init_hidden=True),
     "threshold holds 2 values (one per neuron)"),
    (lambda: snn.Leaky(beta=0.9, threshold=-1.0, init_hidden=True), "threshold = -1 <= 0, so the neuron fires"),
    (lambda: sj.LIFNode(tau=2.0, step_mode="m"), "step_mode='m'; edgesnn runs one timestep"),
    (lambda: sj.IFNode(v_threshold=0.5, v_reset=1.0), "fires with no input"),
    (lambda: nets.MultiSpike(max_value=4, Norm=2), "Norm = 2; edgesnn divides the count by max_value (Norm=4)"),
    (lambda: nets.MultiSpike(min_value=-1), "min_value = -1"),
    (lambda: snn.Synaptic(alpha=0.9, beta=0.8, init_hidden=True),  # a neuron no reader knows: never guessed
     "edgesnn does not read this snnTorch neuron's settings; give them: sfa:D=N,threshold=X"),
    (lambda: OddLeaky(beta=0.5), "edgesnn does not read this snnTorch neuron's settings"),
])
def test_instances_edgesnn_cannot_express_are_named(make, message):
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), make())
    with pytest.raises(EdgesnnError) as e:
        custom.map_neurons(net, {"1": "sfa"})
    assert message in str(e.value) and "layer 1 (" in str(e.value), str(e.value)


class QuickLeaky(snn.Leaky):
    """A user's Leaky with its own defaults: the same step, read as a Leaky."""

    def __init__(self):
        super().__init__(beta=0.5, threshold=0.125, init_hidden=True)


class OddLeaky(snn.Leaky):
    """A Leaky with a step of its own: not read as a Leaky."""

    def fire(self, mem):
        return super().fire(2 * mem)


def test_a_library_subclass_is_read_only_if_it_keeps_the_step():
    net = torch.nn.Sequential(QuickLeaky(), OddLeaky(beta=0.5), snn.Synaptic(alpha=0.9, beta=0.8))
    records = custom.map_neurons(net, {"0": "sfa", "1": "sfa:D=1,threshold=0.5", "2": "sfa:D=2,threshold=1"})
    assert [r["target"] for r in records] == ["sfa:D=1,normalize=true,gain=4.0", "sfa:D=1,normalize=true,gain=1.0",
                                              "sfa:D=2,normalize=true,gain=0.5"]
    assert [r["instance"] for r in records] == ["snnTorch Leaky: threshold=0.125", None, None]


def test_the_cli_names_a_bad_path_before_anything_is_written(tmp_path):
    r = CliRunner().invoke(app, ["train", "--model", "library_nets:snntorch_net", "--neuron-map", f"{LEAKY}=sfa",
                                 "--neuron-map", "head.lfi=readout", "--epochs", "1", "--out", str(tmp_path / "ck")])
    assert r.exit_code == 1 and "close names: head.lif" in r.output and not (tmp_path / "ck").exists(), r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_recipe_takes_layer_paths():
    assert Model(name="library_nets:snntorch_net", neuron_map={"head.lif": "readout", "8": "sfa"}).neuron_map
    with pytest.raises(ValidationError, match="unknown option 'D=2'"):
        Model(name="library_nets:snntorch_net", neuron_map={"head.lif": "readout:D=2"})


# ---------------------------------------------------------------- the checkpoint and inspect

def test_the_checkpoint_records_each_layer_and_inspect_shows_it(tmp_path):
    ck = tmp_path / "ck"
    r = CliRunner().invoke(app, ["train", "--model", "library_nets:snntorch_net", "--neuron-map", f"{LEAKY}=sfa",
                                 "--neuron-map", "head.lif=readout", "--epochs", "1", "--out", str(ck)])
    assert r.exit_code == 0, r.output
    config = json.loads((ck / "config.json").read_text())
    assert config["neuron_map"] == {LEAKY: "sfa", "head.lif": "readout"}
    assert [(row["layer"], row["key"], row["target"]) for row in config["neuron_layers"]] == [
        ("blocks.0.sn", LEAKY, "sfa:D=1,normalize=true,gain=1.0"), ("blocks.1.sn", LEAKY, "sfa:D=1,normalize=true,gain=0.5"),
        ("head.lif", "head.lif", "readout:scale=1.0")]
    # Rebuilt by layer path: only the factory is imported, so trusting it is enough.
    model, _ = checkpoint.load(ck, trust_code={"library_nets:snntorch_net"})
    assert [(row["layer"], row["target"]) for row in custom.mapped_layers(model)] == \
        [(row["layer"], row["target"]) for row in config["neuron_layers"]]
    assert [c["name"] for c in checkpoint.describe(ck)["imports"]] == ["library_nets:snntorch_net"]
    r = CliRunner().invoke(app, ["inspect", str(ck), "--json", str(tmp_path / "i.json")])
    assert r.exit_code == 0, r.output
    assert ("  blocks.1.sn: snntorch._neurons.leaky.Leaky -> sfa:D=1,normalize=true,gain=0.5 "
            "[snntorch.Leaky; snnTorch Leaky: threshold=1.0]") in r.stdout
    assert "  head.lif: snntorch._neurons.leaky.Leaky -> readout:scale=1.0 [head.lif; snnTorch Leaky: threshold=1.0]" \
        in r.stdout
    assert json.loads((tmp_path / "i.json").read_text())["neuron_layers"] == config["neuron_layers"]


def test_loading_rebuilds_the_saved_neurons_not_what_the_instance_says_now(ds, tmp_path):
    """A threshold learned in training lives in no weight of the mapped model: the record keeps it."""
    model = custom.make_model("library_nets:snntorch_net", {"in_shape": [1, 8, 8], "num_classes": 10}, True)
    model.blocks[0].sn.threshold = torch.tensor(0.25)  # as trained weights would have it (learn_threshold)
    custom.map_neurons(model, {LEAKY: "sfa", "head.lif": "readout"}, trust_code={LEAKY})
    assert model.blocks[0].sn.gain == 2.0
    config = {"model": "library_nets:snntorch_net", "kwargs": {"in_shape": [1, 8, 8], "num_classes": 10},
              "neuron_map": {LEAKY: "sfa", "head.lif": "readout"}, "data": "digits"}
    checkpoint.save(model, config, tmp_path / "ck")
    loaded, _ = checkpoint.load(tmp_path / "ck", trust_code=True)
    assert loaded.blocks[0].sn.gain == 2.0  # the factory's instance says 0.5 (gain 1)
    with torch.no_grad():
        assert torch.equal(loaded(ds.x_test), model(ds.x_test))
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    saved["neuron_layers"][2]["class"] = "somelib.OtherNeuron"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EdgesnnError, match="layer head.lif was a somelib.OtherNeuron when the checkpoint was saved; "
                                           "the factory now builds a snntorch._neurons.leaky.Leaky there"):
        checkpoint.load(tmp_path / "ck", trust_code=True)
    saved["neuron_layers"][2]["layer"] = "library_nets.MultiSpike"  # a record names layers: never a class to import
    (tmp_path / "ck" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EdgesnnError, match="layer library_nets.MultiSpike of the checkpoint's neuron_layers: the "
                                           "factory's model has no such layer"):
        checkpoint.load(tmp_path / "ck", trust_code=True)
    saved["neuron_layers"][2] = {"layer": "head.lif", "class": "x", "key": "head.lif", "target": "readout:scale=-1"}
    (tmp_path / "ck" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(EdgesnnError, match="'neuron_layers' head.lif: scale must be a positive finite number"):
        checkpoint.read_config(tmp_path / "ck")
