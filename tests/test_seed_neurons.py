"""The seed neurons IBRA-LIF and MPBN: their formulas in torch, MPBN folded exactly into the IR's
thresholds (gamma > 0, < 0, = 0; after a Conv2d and after a residual sum), IBRA-LIF's bit-plane
spikes, and trained models whose IR agrees with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgesnn import checkpoint, data, export, ir, pipeline, spikes
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.export_neurons import threshold
from edgesnn.neurons import IBRALIF, MPBNSpike
from edgesnn.quantize import Options, quantize_checkpoint
from edgesnn.quantize.spec import apply


# ---- IBRA-LIF in torch -----------------------------------------------------------------------
@pytest.mark.parametrize("bits, window", [(1, 1.0), (3, 2.0), (4, 4.0), (7, 5.11)])
def test_ibra_range_alignment_reaches_every_k_bit_integer_in_the_window(bits, window):
    D = 2**bits - 1
    n = IBRALIF(bits, window, normalize=False)
    assert n.D == D and n.N == pytest.approx(D / window)
    u = torch.linspace(-1, window + 1, 20001)
    s = n.integer(u)
    torch.testing.assert_close(s, torch.clamp(torch.floor(u * (D / window) + 0.5), 0, D))
    inside = s[(u >= 0) & (u <= window)]
    assert set(inside.unique().tolist()) == set(range(D + 1))  # aligned: all 2^K levels inside [0, window]
    unaligned = torch.clamp(torch.floor(u + 0.5), 0, D)[(u >= 0) & (u <= window)]
    if D > window + 1:
        assert unaligned.max() < D  # the "spike activation limitation" alignment removes
    torch.testing.assert_close(n(u), s / n.N)  # membrane units
    torch.testing.assert_close(IBRALIF(bits, window)(u), s / D)  # normalized


def test_ibra_gradient_is_straight_through_inside_the_window():
    u = torch.tensor([-0.5, 0.1, 1.0, 3.9, 4.5], requires_grad=True)
    IBRALIF(4, 4.0)(u).sum().backward()
    torch.testing.assert_close(u.grad, torch.tensor([0.0, 0.25, 0.25, 0.25, 0.0]))  # d(s / D)/du = N / D = 1 / window


@pytest.mark.parametrize("bits", range(1, 8))
def test_ibra_binary_conversion_is_k_bit_planes(bits):
    n = IBRALIF(bits, 1.0)
    s = torch.arange(n.D + 1)
    train = n.expand(s)
    assert train.shape == (bits, n.D + 1) and set(np.unique(train).tolist()) <= {0, 1}
    np.testing.assert_array_equal(spikes.decode(train, "bitplane"), s.numpy())
    np.testing.assert_array_equal((train * (1 << np.arange(bits - 1, -1, -1))[:, None]).sum(0), s.numpy())


@pytest.mark.parametrize("kwargs, fragment", [
    ({"bits": 8}, "bits must be an integer from 1 to 7"),
    ({"bits": 0}, "bits must be an integer from 1 to 7"),
    ({"window": 0.0}, "window must be a positive number"),
    ({"window": float("nan")}, "window must be a positive number"),
])
def test_ibra_bad_arguments(kwargs, fragment):
    with pytest.raises(EdgesnnError, match=fragment):
        IBRALIF(**kwargs)


# ---- MPBN folded into the thresholds ---------------------------------------------------------
GAMMA, BETA, MU = [8.0, -8.0, 0.0, 0.0, 4.0], [0.25, 3.25, 2.2, 2.6, -0.5], [0.0, 0.0, 0.0, 0.0, 0.3]


class MembraneNet(nn.Module):
    """u = k/16 on digits' pixel grid (a 1x1 conv of weight 1, or the sum of two of weight 1/2),
    then MPBN; gamma, beta, mu put every threshold >= 1/80 away from the grid."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.a, self.b = nn.Conv2d(1, 5, 1, bias=False), nn.Conv2d(1, 5, 1, bias=False)
        self.sn = MPBNSpike(5, D=4)
        self.fc = nn.Linear(5 * 64, 10)
        with torch.no_grad():
            self.a.weight.fill_(0.5 if residual else 1.0)
            self.b.weight.fill_(0.5)
            bn = self.sn.bn
            bn.weight.copy_(torch.tensor(GAMMA))
            bn.bias.copy_(torch.tensor(BETA))
            bn.running_mean.copy_(torch.tensor(MU))
            bn.running_var.fill_(1.0)
        self.eval()

    def membrane(self, x):
        return self.a(x) + self.b(x) if self.residual else self.a(x)

    def forward(self, x):
        return self.fc(torch.flatten(self.sn(self.membrane(x)), 1))


def test_mpbn_neuron_is_the_threshold_formula():
    m = MPBNSpike(5, D=4).eval()
    with torch.no_grad():
        m.bn.weight.copy_(torch.tensor(GAMMA))
        m.bn.bias.copy_(torch.tensor(BETA))
        m.bn.running_mean.copy_(torch.tensor(MU))
        m.bn.running_var.fill_(1.0)
    u = ((torch.arange(-4000, 4001) + 0.3141) / 2000).view(-1, 1).expand(-1, 5)  # no u on a threshold
    with torch.no_grad():
        s = m.integer(u).numpy()
    sigma = np.sqrt(1.0 + m.bn.eps)
    for level in range(1, 5):
        t = threshold(m, level)
        for c, g in enumerate(GAMMA):
            reached = s[:, c] >= level
            if g > 0:  # u >= mu + (level - 1/2 - beta) sigma / gamma
                expected = u[:, c].numpy() >= MU[c] + (level - 0.5 - BETA[c]) * sigma / g
                np.testing.assert_allclose(t[c], MU[c] + (level - 0.5 - BETA[c]) * sigma / g)
            elif g < 0:  # the comparison turns around
                expected = u[:, c].numpy() <= MU[c] + (level - 0.5 - BETA[c]) * sigma / g
            else:  # constant clamp(round(beta), 0, D)
                expected = np.full(len(u), np.floor(BETA[c] + 0.5) >= level)
                assert np.isnan(t[c])
            np.testing.assert_array_equal(reached, expected, err_msg=f"channel {c} level {level}")


@pytest.mark.parametrize("residual", [False, True], ids=["after-conv", "after-residual-sum"])
@pytest.mark.parametrize("stream_dtype", ["int8", "int16"])
def test_mpbn_folds_exactly_into_the_ir(digits, residual, stream_dtype):
    m = MembraneNet(residual)
    graph = export.export(m, digits.x_train[:512], stream_dtype=stream_dtype)
    convs = [op.groups for op in graph.ops if op.kind == "conv2d"]  # (an int16 stream: computed at int16, narrowed)
    assert convs == ([1, 1, 5] if residual else [1])  # the sum, then a depthwise 1x1; or folded into the conv
    ir_counts = graph.run_integer(graph.quantize_input(data.to_nhwc(digits.x_test)), keep_all=True)["sn"]
    with torch.no_grad():
        torch_counts = m.sn.integer(m.membrane(digits.x_test)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ir_counts, torch_counts)
    assert (ir_counts[..., 2] == 2).all() and (ir_counts[..., 3] == 3).all()  # gamma = 0: clamp(round(beta))
    for c in (0, 1, 4):  # every level of the positive and negative channels is reached
        assert set(np.unique(ir_counts[..., c]).tolist()) >= {0, 1, 2}


def test_mpbn_on_a_flattened_sum_is_one_clear_error(digits):
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 8), nn.Linear(64, 8)
            self.sn = MPBNSpike(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = torch.flatten(x, 1)
            return self.fc(self.sn(self.a(x) + self.b(x)))

    with pytest.raises(EdgesnnError) as e:
        export.export(Flat().eval(), digits.x_train[:64])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("layer 'sn' (MPBNSpike): its membrane is a flattened (features,) value that no "
                              "Linear produces")


@pytest.mark.parametrize("neuron, fragment", [
    ({"kind": "ibra", "bits": "four", "window": 4.0, "normalize": True},
     "neuron 'features.2': 'bits' must be a number"),
    ({"kind": "ibra", "bits": 9, "window": 4.0, "normalize": True}, "bits must be an integer from 1 to 7"),
    ({"kind": "mpbn", "channels": 16, "D": 4, "normalize": "yes"}, "'normalize' must be true or false"),
    ({"kind": "mpbn", "channels": 2.5, "D": 4, "normalize": True}, "'channels' must be an integer"),
])
def test_a_hand_edited_neuron_spec_is_one_error(neuron, fragment):
    from edgesnn import models

    model = models.build("cnn", models.default_kwargs("cnn", (1, 8, 8), 10, 4))
    with pytest.raises(EdgesnnError, match=fragment):
        apply(model, {"neurons": {"features.2": neuron}})


# ---- trained models: fine-tuned, exported, verified ------------------------------------------
@pytest.fixture(scope="module")
def float_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed-neurons")
    pipeline.train_model("cnn", "digits", 10, root / "cnn", model_kwargs={"channels": [16, 32], "hidden": 64})
    pipeline.train_model("resnet", "digits", 10, root / "resnet", model_kwargs={"channels": [8, 16]})
    return root


@pytest.mark.parametrize("method, model, stream_dtype", [
    ("ibra", "cnn", "int8"), ("mpbn", "cnn", "int8"), ("mpbn", "resnet", "int8"),
])
def test_seed_method_deploys_and_the_ir_agrees_with_torch(float_models, tmp_path, method, model, stream_dtype):
    out = tmp_path / method
    metrics = quantize_checkpoint(float_models / model, method, out, Options(epochs=3))
    assert metrics["test_accuracy"] >= 0.75
    loaded, config = checkpoint.load(out)  # the spec rebuilds the neurons before the weights load
    kind = IBRALIF if method == "ibra" else MPBNSpike
    neurons = [m for m in loaded.modules() if isinstance(m, kind)]
    assert neurons and len(neurons) == len(config["quantization"]["neurons"])
    assert config["quantization"]["stream_dtype"] == stream_dtype  # quantize's default
    path = pipeline.export_model(out, "ir", out / "ir")
    r = pipeline.verify(path, "digits")
    assert r["samples"] == 450 and r["agreement"] >= 0.995, r
    graph = ir.load(path)
    D = 15 if method == "ibra" else 4
    spike_tensors = [name for name, t in graph.tensors.items() if t.spike_D == D]
    assert len(spike_tensors) >= len(neurons)
    if method == "ibra":  # the IR's counts, sent as 4 bit-plane steps, decode to themselves
        values = graph.run_integer(graph.quantize_input(data.to_nhwc(data.digits().x_test[:64])), keep_all=True)
        for name in spike_tensors:
            counts = values[name].astype(np.int64)
            train = neurons[0].expand(counts)
            assert train.shape == (4, *counts.shape)
            np.testing.assert_array_equal(spikes.decode(train, "bitplane"), counts)
        assert max(values[name].max() for name in spike_tensors) > 4  # beyond a D = 4 neuron's range
        lava = pipeline.export_model(out, "lava", out / "lava", spike_code="bit-plane")  # real spike trains
        r = pipeline.verify(lava, "digits", samples=20, spike_code="bit-plane")
        assert r["samples"] == 20 and r["mismatches"] == 0 and r["mode"] == "bit-plane", r


# ---- the command line -----------------------------------------------------------------------
def test_quantize_ibra_from_the_command_line(float_models, tmp_path):
    r = CliRunner().invoke(app, ["quantize", str(float_models / "cnn"), "--method", "ibra", "--spike-bits", "3",
                                 "--epochs", "1", "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    _, config = checkpoint.load(tmp_path / "q")
    assert {n["bits"] for n in config["quantization"]["neurons"].values()} == {3}
    assert {n["window"] for n in config["quantization"]["neurons"].values()} == {4.0}


@pytest.mark.parametrize("args, fragment", [
    (["--method", "ibra", "--spike-bits", "8"], "--spike-bits must be between 1 and 7 (int8 spike counts), got 8"),
    (["--method", "mpbn", "--spike-bits", "3"], "--spike-bits applies to the ibra method, not mpbn"),
])
def test_quantize_option_errors(float_models, tmp_path, args, fragment):
    r = CliRunner().invoke(app, ["quantize", str(float_models / "cnn"), *args, "--out", str(tmp_path / "q")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip().splitlines() == [f"error: {fragment}"]
    assert not (tmp_path / "q").exists()
