"""NIR interchange: edgesnn -> NIR -> edgesnn gives back the same integer program bit for bit; other
tools' reading of the NIR graph (a time-domain simulation of its nodes) agrees with the IR; a
network built and exported by snnTorch imports and deploys; bad files fail as one clear line."""

from __future__ import annotations

import json

import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from edgesnn import checkpoint, data, models
from edgesnn.backends.nir import exact_graph
from edgesnn.backends.nir.simulate import simulate
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load
from edgesnn.quantize import Options, quantize_checkpoint
from edgesnn.train import predict


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def assert_user_error(r, fragment):
    assert r.exit_code == 1, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


@pytest.fixture(scope="module")
def digits():
    ds = data.digits()
    return ds, data.to_nhwc(ds.x_test)


@pytest.fixture(scope="module")
def checkpoints(trained, tmp_path_factory):
    """mlp and cnn from the session zoo, and the cnn compressed with Q-SNN (1-bit weights, 8-bit membranes)."""
    qsnn = tmp_path_factory.mktemp("nir") / "cnn-qsnn"
    quantize_checkpoint(trained["cnn"], "qsnn", qsnn, Options(epochs=1))
    return {"mlp": trained["mlp"], "cnn": trained["cnn"], "cnn-qsnn": qsnn}


def same_graph(a, b) -> None:
    """Every tensor spec, op attribute and op array equal (the metadata may differ: provenance)."""
    assert a.tensors == b.tensors and a.input == b.input and a.outputs == b.outputs
    assert [op.kind for op in a.ops] == [op.kind for op in b.ops]
    for x, y in zip(a.ops, b.ops):
        assert x.attrs() == y.attrs(), x.name
        assert x.arrays().keys() == y.arrays().keys()
        for k, v in x.arrays().items():
            assert v.dtype == y.arrays()[k].dtype and np.array_equal(v, y.arrays()[k]), (x.name, k)


@pytest.mark.parametrize("family", ["mlp", "cnn", "cnn-qsnn"])
def test_round_trip_gives_the_same_integer_program(checkpoints, digits, tmp_path, family):
    """export --target nir, import, export --target ir: the same IR, so 0 differing outputs (not only
    argmaxes) over the whole test split; and the imported float model is the IR's real-valued model."""
    ds, x = digits
    ok(edgesnn("export", checkpoints[family], "--target", "nir", "--out", tmp_path / "nir"))
    assert {p.name for p in (tmp_path / "nir").iterdir()} == {"model.nir", "model.ir"}
    r = ok(edgesnn("import", tmp_path / "nir" / "model.nir", "--out", tmp_path / "ckpt"))
    assert "exact integer program" in r.stdout
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model"] == "nir" and config["nir"]["exact"] and config["data"] == "digits"
    ok(edgesnn("export", tmp_path / "ckpt", "--target", "ir", "--out", tmp_path / "back"))

    original, back = load(tmp_path / "nir" / "model.ir"), load(tmp_path / "back" / "model.ir")
    same_graph(original, back)
    out_a, out_b = original.run(x), back.run(x)
    assert out_a.shape == (450, 10) and int((out_a != out_b).any(axis=1).sum()) == 0
    assert back.meta["source"]["checkpoint"] == str((tmp_path / "ckpt").resolve())

    ok(edgesnn("verify", tmp_path / "back" / "model.ir", "--json", tmp_path / "v.json", "--min-agreement", 0.97))
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["samples"] == 450 and v["agreement"] >= 0.97  # the float model vs its own integer program
    original_torch, _ = checkpoint.load(checkpoints[family])
    imported_torch, _ = checkpoint.load(tmp_path / "ckpt")
    assert (predict(original_torch, ds.x_test) == predict(imported_torch, ds.x_test)).float().mean() >= 0.97


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_other_tools_read_a_faithful_network(checkpoints, digits, tmp_path, family):
    """The NIR nodes alone, run for T = D steps, rank the classes as the IR does on most samples
    (the integer rounding and the timing of spikes inside the window are what they lose)."""
    ds, x = digits
    ok(edgesnn("export", checkpoints[family], "--target", "nir", "--out", tmp_path))
    g = nir.read(tmp_path / "model.nir")
    kinds = [type(n).__name__ for n in g.nodes.values()]
    assert set(kinds) <= {"Input", "Output", "Affine", "Conv2d", "SumPool2d", "Flatten", "IF"}
    assert kinds.count("IF") == (2 if family == "mlp" else 3)
    for n in g.nodes.values():
        if isinstance(n, nir.IF):
            assert (n.r == 1).all() and (n.v_threshold == 1).all() and (n.v_reset == 0).all()
    program = json.loads(g.metadata["edgesnn"])
    assert program["timesteps"] == 4 and set(program["neurons"].values()) == {4}
    ir = load(tmp_path / "model.ir")
    ir_pred = ir.run(x).argmax(1)
    sim_pred = simulate(g, ds.x_test.numpy(), program["timesteps"]).argmax(1)
    assert (sim_pred == ir_pred).mean() >= 0.93
    ok(edgesnn("verify", tmp_path / "model.nir", "--json", tmp_path / "v.json"))  # reports both readings
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["mismatches"] == 0 and v["samples"] == 450 and v["timesteps"] == 4
    assert v["nodes_only"]["argmax_agreement"] == (sim_pred == ir_pred).mean()


def test_verify_finds_a_program_that_is_not_the_ir(checkpoints, tmp_path):
    """verify reads the program back and compares every output integer: a changed requantization
    shift (which the weight and bias grid checks cannot see) fails it."""
    ok(edgesnn("export", checkpoints["mlp"], "--target", "nir", "--out", tmp_path))
    g = nir.read(tmp_path / "model.nir")
    program = json.loads(g.metadata["edgesnn"])
    last_shift = [k for k in program["arrays"] if k.endswith(".shift")][-1]
    program["arrays"][last_shift]["values"] = [v - 1 for v in program["arrays"][last_shift]["values"]]
    g.metadata = {"edgesnn": json.dumps(program)}
    nir.write(tmp_path / "edited.nir", g)
    r = edgesnn("verify", tmp_path / "edited.nir", "--ir", tmp_path / "model.ir")
    assert_user_error(r, "edited.nir: its program is not bit-exact with the IR (")
    assert "samples differ" in r.stderr


T = 4


def snntorch_net(beta: float = 0.9):
    """A small spiking CNN as snnTorch users write it; per-neuron beta and threshold arrays, which
    snnTorch 1.0's NIR export needs to give its LIF nodes the shapes of their inputs."""
    import snntorch as snn

    leaky = lambda *shape, **kw: snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape),  # noqa: E731
                                           init_hidden=True, **kw)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), leaky(16, 8, 8), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(16 * 16, 64), leaky(64), torch.nn.Linear(64, 10), leaky(10, output=True))


def snntorch_counts(net, x: torch.Tensor) -> torch.Tensor:
    """Output spikes summed over T steps, the image presented at every step."""
    from snntorch import utils

    utils.reset(net)
    return sum(net(x)[0] for _ in range(T))


@pytest.fixture(scope="module")
def snntorch_nir(digits, tmp_path_factory):
    """An snnTorch network trained briefly on digits (BPTT over T steps), exported with export_to_nir."""
    from snntorch.export_nir import export_to_nir

    ds, _ = digits
    torch.manual_seed(0)
    net = snntorch_net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(6):
        for idx in torch.split(torch.randperm(len(ds.x_train)), 64):
            loss = F.cross_entropy(snntorch_counts(net, ds.x_train[idx]) * 2.0, ds.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        counts = snntorch_counts(net, ds.x_test)
    path = tmp_path_factory.mktemp("snntorch") / "net.nir"
    nir.write(path, export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0]))
    return path, counts


def test_a_snntorch_network_imports_and_deploys(snntorch_nir, digits, tmp_path):
    ds, _ = digits
    path, counts = snntorch_nir
    y = ds.y_test.numpy()
    snn_pred = counts.argmax(1).numpy()
    assert (snn_pred == y).mean() >= 0.85  # the network learned something worth deploying

    r = ok(edgesnn("import", path, "--out", tmp_path / "ckpt", "--timesteps", T, "--data", "digits"))
    assert "LIF" in r.stdout and "read out by its input" in r.stdout  # what was approximated, said
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert not config["nir"]["exact"] and config["nir"]["timesteps"] == T and config["D"] == T
    model, _ = checkpoint.load(tmp_path / "ckpt")
    pred = predict(model, ds.x_test).numpy()
    untied = ((counts == counts.max(1, keepdim=True).values).sum(1) == 1).numpy()
    assert untied.mean() >= 0.8
    assert (pred == snn_pred)[untied].mean() >= 0.97  # the SFA model ranks as snnTorch's spike counts do
    assert (pred == y).mean() >= (snn_pred == y).mean() - 0.02

    ok(edgesnn("export", tmp_path / "ckpt", "--target", "ir", "--out", tmp_path / "ir"))
    ok(edgesnn("verify", tmp_path / "ir" / "model.ir", "--json", tmp_path / "v.json"))
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["samples"] == 450 and v["agreement"] >= 0.98 and v["accuracy"] >= (snn_pred == y).mean() - 0.03
    graph = load(tmp_path / "ir" / "model.ir")
    assert {t.spike_D for t in graph.tensors.values() if t.spike_D} == {T}


def test_float_import_of_an_edgesnn_file_and_edited_weights(checkpoints, tmp_path):
    """Weights changed after export are off the integer grid: refused, unless imported as float."""
    ok(edgesnn("export", checkpoints["mlp"], "--target", "nir", "--out", tmp_path / "nir"))
    g = nir.read(tmp_path / "nir" / "model.nir")
    node = json.loads(g.metadata["edgesnn"])["weights"]["features.5"]["node"]
    g.nodes[node].weight = g.nodes[node].weight * np.float32(1.001)
    nir.write(tmp_path / "edited.nir", g)
    assert_user_error(edgesnn("import", tmp_path / "edited.nir", "--out", tmp_path / "x"),
                      f"node '{node}' has weights off the 8-bit integer grid its edgesnn metadata records")
    assert not (tmp_path / "x").exists()
    r = ok(edgesnn("import", tmp_path / "edited.nir", "--out", tmp_path / "float", "--float"))
    assert "float, 4 timesteps" in r.stdout  # the window the metadata names
    assert not json.loads((tmp_path / "float" / "config.json").read_text())["nir"]["exact"]


def test_the_program_applies_only_to_the_imported_weights(checkpoints, tmp_path):
    ok(edgesnn("export", checkpoints["cnn"], "--target", "nir", "--out", tmp_path / "nir"))
    ok(edgesnn("import", tmp_path / "nir" / "model.nir", "--out", tmp_path / "ckpt"))
    model, config = checkpoint.load(tmp_path / "ckpt")
    same_graph(exact_graph(model, config, {}), load(tmp_path / "nir" / "model.ir"))
    with torch.no_grad():
        next(model.parameters())[0].add_(1e-3)  # fine-tuned: the ordinary SFA export takes over
    assert exact_graph(model, config, {}) is None


def test_export_refuses_what_nir_cannot_express(trained, tmp_path):
    # the first op that breaks the chain: the stem's second conv (its first neuron reads the accumulator)
    assert_user_error(edgesnn("export", trained["resnet"], "--target", "nir", "--out", tmp_path / "out"),
                      "op 'blocks.0.sn1' (conv2d) reads ['input'], not only the previous op's output; "
                      "NIR export takes a chain of conv2d, dense")
    assert not (tmp_path / "out").exists()


def _graph(*middle, in_shape=(1, 8, 8)):
    nodes = {"input": nir.Input(input_type=np.array(in_shape))}
    nodes.update(middle)
    nodes["output"] = nir.Output(output_type=np.array([10]))
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


def _affine(n_in=64, n_out=10):
    return nir.Affine(weight=np.full((n_out, n_in), 0.01, np.float32), bias=np.zeros(n_out, np.float32))


def test_unsupported_nodes_are_named_with_their_type(tmp_path):
    li = nir.LI(tau=np.ones(10), r=np.ones(10), v_leak=np.zeros(10))
    nir.write(tmp_path / "li.nir", _graph(("flat", nir.Flatten(input_type={"input": np.array([1, 8, 8])})),
                                          ("fc", _affine()), ("leaky_integrator", li)))
    assert_user_error(edgesnn("import", tmp_path / "li.nir", "--out", tmp_path / "x", "--timesteps", 4),
                      "node 'leaky_integrator' has type LI, which edgesnn cannot import; supported: Affine")
    with h5py.File(tmp_path / "li.nir", "r+") as f:  # a type nir itself does not know
        group = f["node"]["nodes"]["leaky_integrator"]
        del group["type"]
        group.create_dataset("type", data="Spiky", dtype=h5py.string_dtype())
    assert_user_error(edgesnn("import", tmp_path / "li.nir", "--out", tmp_path / "x", "--timesteps", 4),
                      "node 'leaky_integrator' has type 'Spiky', which nir")
    assert not (tmp_path / "x").exists()


def test_import_errors(tmp_path):
    (tmp_path / "notes.nir").write_text("not a graph")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    nir.write(tmp_path / "flat.nir", _graph(("fc", _affine()), in_shape=(64,)))
    nir.write(tmp_path / "wide.nir", _graph(("fc", _affine(32)), in_shape=(32,)))
    split = _graph(("fc", _affine()), in_shape=(64,))
    split.nodes["fc2"] = _affine()
    split.edges.append(("input", "fc2"))
    nir.write(tmp_path / "split.nir", split)
    cases = [
        (["missing.nir", "--timesteps", 4], "missing.nir: no such file"),
        (["notes.nir", "--timesteps", 4], "notes.nir: not a NIR file"),
        (["other.h5", "--timesteps", 4], "other.h5: not a NIR file (an HDF5 file without a NIR graph)"),
        (["flat.nir"], "has no edgesnn metadata: pass --timesteps T"),
        (["flat.nir", "--timesteps", 0], "--timesteps must be between 1 and 127, got 0"),
        (["wide.nir", "--timesteps", 4], "the graph's input has shape [32], the data set's samples [1, 8, 8]"),
        (["split.nir", "--timesteps", 4], "node 'input' feeds 2 nodes"),
    ]
    for args, fragment in cases:
        assert_user_error(edgesnn("import", tmp_path / args[0], *args[1:], "--out", tmp_path / "x"), fragment)
        assert not (tmp_path / "x").exists()


def test_a_flat_input_graph_imports(tmp_path, digits):
    """A graph taking the flattened image (64 values) gets a flatten in front."""
    nir.write(tmp_path / "flat.nir", _graph(("fc", _affine()), in_shape=(64,)))
    ok(edgesnn("import", tmp_path / "flat.nir", "--out", tmp_path / "ckpt", "--timesteps", 2))
    model, _ = checkpoint.load(tmp_path / "ckpt")
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear"]


def test_the_nir_model_is_built_by_import_only():
    with pytest.raises(EdgesnnError, match="built from a NIR graph by `edgesnn import"):
        models.build("nir", models.default_kwargs("nir", (1, 8, 8), 10, 4))
