"""The IR computes what torch computes: exact neuron thresholds (issue 18)."""

import numpy as np
import pytest
import torch
from torch import nn

from edgesnn import export, threads
from edgesnn.data import to_nhwc
from edgesnn.ir.fixedpoint import effective_multiplier, multiply_by_quantized_multiplier, quantize_multipliers
from edgesnn.neurons import MembraneQuant, MultiSpike


def _membrane_model(scale: float, D: int = 4, bits: int = 8) -> nn.Module:
    """Linear(1 -> 1) into a Q-SNN neuron whose membrane grid has step ``scale``."""
    sn = MultiSpike(D, normalize=False)
    sn.membrane = MembraneQuant(bits)
    sn.membrane.scale.fill_(scale)
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    return nn.Sequential(lin, sn).eval()


@pytest.mark.parametrize("scale", [1631878272 / 2**35, 0.0657512, 0.0525189, 0.0442519, 0.5 / 10.5])
def test_qsnn_membrane_fires_at_torchs_counts_for_every_membrane_integer(scale):
    """Requantizing the membrane integer q straight to spikes rounded twice and fired the q just
    below each j + 0.5 at j + 1 (at s = 0.047494: q = 10, 31, 52). The exported neuron now
    gives torch's count for every q the membrane can hold."""
    model = _membrane_model(scale)
    qmax = model[1].membrane.qmax
    q = torch.arange(-qmax, qmax + 1, dtype=torch.float32)
    x = (q * np.float32(scale)).view(-1, 1)  # inputs on the membrane grid: torch's q is exactly q
    graph = export.export(model, x)
    values = graph.run_integer(graph.quantize_input(to_nhwc(x)), keep_all=True)
    membrane = values["1.membrane"].astype(np.int64).ravel()
    with torch.no_grad():
        wanted = model[1].fire(model[1].membrane.levels(torch.as_tensor(membrane, dtype=torch.float32)))
    spikes = values["1"].astype(np.int64).ravel()
    assert np.array_equal(spikes, wanted.numpy().astype(np.int64))
    assert len(np.unique(membrane)) > 200  # the sweep really covers the membrane's levels


def test_straight_requantization_of_that_membrane_would_fire_early():
    """The failure the exporter avoids, as measured in issue 18 (multiplier 1631878272, shift -4)."""
    s = np.float32(1631878272 / 2**35)  # the cnn-qsnn scale of the issue, 0.047494
    mult, shift = quantize_multipliers(effective_multiplier(s, 1.0, 1.0))
    q = np.array([10, 31, 52])
    assert (int(mult[0]), int(shift[0])) == (1631878272, -4)
    ir = multiply_by_quantized_multiplier(q, mult[0], shift[0])
    torch_counts = np.floor(q.astype(np.float32) * s + np.float32(0.5))
    assert np.array_equal(ir, torch_counts + 1)


def test_membrane_quant_forward_is_exactly_q_times_scale():
    m = MembraneQuant(8).eval()
    m.scale.fill_(0.047494)
    u = torch.linspace(-7, 7, 10001)
    q = torch.clamp(torch.round(u / m.scale), -127, 127)
    assert torch.equal(m(u), q * m.scale)


class _ColumnCount(nn.Module):
    """The spike-driven attention's mask neuron with a Q-SNN membrane: col = sum over tokens of k * v."""

    def __init__(self):
        super().__init__()
        self.k, self.v, self.sn = MultiSpike(4), MultiSpike(4), MultiSpike(4)
        self.sn.membrane = MembraneQuant(8)

    def forward(self, x):
        col = (self.k(x) * self.v(x * 0.75)).sum(dim=(2, 3), keepdim=True)
        return torch.flatten(self.sn(col * 0.125), 1)


@pytest.mark.parametrize("seed", range(6))
def test_qsnn_membrane_of_a_column_sum_fires_at_torchs_counts(seed):
    """Requantized straight from the sums, the membrane's multiplier (0.125 / 16 over its step)
    rounded first at 1/8 of a membrane step: the sum 64 (u = 0.5, q = 24.48) gave q = 25 and fired
    early; 37-167 of 24000 spikes differed on four of these seeds. The sums are now exact in int16
    (times 2^k) and mapped to torch's count steps."""
    torch.manual_seed(seed)
    model = _ColumnCount().eval()
    x = torch.randint(0, 5, (3000, 8, 7, 7)).float() * torch.rand(3000, 8, 1, 1)
    x = torch.clamp(torch.round(x * 8) / 8, max=127 / 32)
    x[:, 0, 0, 0] = 127 / 32  # input scale 1/32: the IR's input integers are exactly x
    with torch.no_grad():
        col = (model.k(x) * model.v(x * 0.75)).sum(dim=(2, 3)) * 0.125
    model.sn.membrane.scale.fill_(float(col.abs().max()) / 127 * (1 + seed / 7))
    graph = export.export(model, x[:512])
    values = graph.run_integer(graph.quantize_input(to_nhwc(x)), keep_all=True)
    with torch.no_grad():
        wanted = (model(x) * 4).numpy()
    assert np.array_equal(values["sn"].reshape(wanted.shape), wanted)
    assert len(np.unique(values["sn.membrane"])) > 60 and (wanted > 0).mean() > 0.2


# ---- whole models on mnist5k-14 (issue 18: >= 99.5 % of the test samples agree) -----------------

MNIST = "mnist5k-14"
REQUIRED = 0.995


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every test here on one thread, as the CLI computes and as this module runs within the whole suite (an
    earlier in-process CLI command leaves torch at one thread): the same models alone or in the suite, and on
    any machine. Run alone on a loaded 2-core machine, two threads took 236 s for the qsnn spikeformer, one 80 s."""
    with threads.pinned(1):
        yield


@pytest.fixture(scope="module")
def mnist_float(tmp_path_factory):
    from edgesnn import pipeline

    root = tmp_path_factory.mktemp("fidelity")
    for model in ("cnn", "resnet"):
        pipeline.train_model(model, MNIST, 6, root / model)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model,method,opts,stream", [
    ("cnn", "qsnn", dict(weight_bits=2), "int8"),  # the early-firing membrane of the issue
    ("cnn", "qsnn", dict(weight_bits=2), "int16"),
    ("cnn", "int8", {}, "int8"),
    ("resnet", "qsnn", dict(weight_bits=2), None),  # default int8 streams, trained on their grid (StreamQuant)
    ("resnet", "int8", {}, None),  # neurons read a power-of-two stream scale: exact counts
    ("resnet", "qpsnn", dict(weight_bits=4, prune=0.5), None),
    ("resnet", "ternary", {}, None),  # ternary neurons read the stem's stream
])
def test_ir_agrees_with_torch_on_mnist5k(mnist_float, tmp_path, model, method, opts, stream):
    from edgesnn import pipeline
    from edgesnn.quantize import Options, quantize_checkpoint

    ckpt = tmp_path / "q"
    quantize_checkpoint(mnist_float / model, method, ckpt, Options(epochs=3, stream_dtype=stream, **opts),
                        data_spec=MNIST)
    assert pipeline.default_stream_dtype(ckpt) == (stream or "int8")
    r = pipeline.verify(pipeline.export_model(ckpt, "ir", tmp_path / "ir"), MNIST)
    assert r["samples"] == 1250
    assert r["agreement"] >= REQUIRED, r


@pytest.mark.slow
def test_qsnn_spikeformer_at_int16_streams_agrees_with_torch(tmp_path):
    """The spike-driven transformer with Q-SNN membranes and int16 streams (issue 18's last short
    row: 12 of 1250 off at 15 + 10 epochs, 1 with the attention's exact column sums). Trained
    briefly here (measured: 1 of 1250 off); the column-sum case itself is pinned by
    test_qsnn_membrane_of_a_column_sum_fires_at_torchs_counts."""
    from edgesnn import pipeline
    from edgesnn.quantize import Options, quantize_checkpoint

    pipeline.train_model("spikeformer", MNIST, 3, tmp_path / "float")
    quantize_checkpoint(tmp_path / "float", "qsnn", tmp_path / "q", Options(epochs=2, stream_dtype="int16", weight_bits=2),
                        data_spec=MNIST)
    r = pipeline.verify(pipeline.export_model(tmp_path / "q", "ir", tmp_path / "ir"), MNIST)
    assert r["samples"] == 1250
    assert r["agreement"] >= REQUIRED, r
