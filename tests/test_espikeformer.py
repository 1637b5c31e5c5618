"""The published E-SpikeFormer's structure end to end (issue 20), on tests/sdt_v3_nets.py: a model
written as the SDT-V3 code base writes it (its own MultiSpike, shapes read in forward, token
reshapes, spike-driven linear attention, Conv1d MLPs, a flatten(2).mean(2) head), at reduced width
on 3x32x32 input. Data: sklearn's digits written as PNG files, read at 32x32 RGB.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sdt_v3_nets
from edgesnn import boards, export, threads
from edgesnn import data as datasets
from edgesnn.backends.lava import export_lava
from edgesnn.backends.lava.network import run_in_subprocess
from edgesnn.backends.mcu import export_mcu, verify_mcu
from edgesnn.backends.nir import export_nir
from edgesnn.backends.tflite import LITERT_REFERENCE, MICRO, export_tflite, run
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.ir.serialize import load, save
from edgesnn.models.custom import map_neurons
from test_data_folders import digit_images, write_images

NEURONS = {"sdt_v3_nets.MultiSpike": "sfa"}


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits32") / "digits"
    write_images(root, digit_images(None))
    return f"{root}?size=32&channels=3"


@pytest.fixture(scope="module")
def ds(data_spec):
    return datasets.load(data_spec)


def untrained(seed: int = 0) -> nn.Module:
    """The model as built, neurons mapped, with BatchNorm statistics drawn so every neuron fires
    some of the time (an untrained model's identity statistics leave the deep layers silent)."""
    torch.manual_seed(seed)
    model = sdt_v3_nets.espikeformer()
    map_neurons(model, NEURONS, 4, trust_code=True)
    return sdt_v3_nets.with_firing_statistics(model).eval()


@pytest.fixture(scope="module", params=["int8", "int16"])
def graph(request, ds, tmp_path_factory):
    with threads.pinned(1):
        g = export.export(untrained(), ds.x_train, stream_dtype=request.param)
    path = tmp_path_factory.mktemp(f"ir-{request.param}") / "model.ir"
    save(g, path)
    return load(path)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def test_the_ir_holds_the_attention_as_products_and_transposes(graph, ds):
    kinds = [op.kind for op in graph.ops]
    assert kinds.count("batch_matmul") == 4  # (q k^T) and (.. v), in each of the two attention blocks
    assert kinds.count("transpose") == 8  # q, k, v into heads and the heads back: one transpose each
    for op in graph.ops:
        if op.kind == "batch_matmul":
            a, b = (graph.tensors[i] for i in op.inputs)
            assert a.zero_point == b.zero_point == 0 and a.dtype == b.dtype == graph.tensors[op.output].dtype
    values = graph.run_integer(graph.quantize_input(_nhwc(ds.x_test[:64])), keep_all=True)
    for op in graph.ops:  # no op is degenerate on the data: products and attention spikes vary
        if op.kind == "batch_matmul":
            assert values[op.output].std() > 0, op.name
    for block in ("block3", "block4"):  # the attention's own neuron takes several counts
        assert len(np.unique(values[f"{block}.0.attn.attn_spike"])) >= 3


def test_every_target_is_bit_exact_with_the_ir(graph, ds, tmp_path):
    x = _nhwc(ds.x_test)
    xq = graph.quantize_input(x)
    want = graph.run_integer(xq)[graph.outputs[0]]
    tfl = export_tflite(graph, tmp_path / "model.tflite")
    for runtime in (LITERT_REFERENCE, MICRO):
        got = run(tfl, xq, runtime).outputs[0].reshape(want.shape)
        assert int((got != want).sum()) == 0, runtime
    project = tmp_path / "mcu"
    export_mcu(graph, boards.load("nucleo-f446re"), project, "all", _nhwc(ds.x_train[:64]))
    res = verify_mcu(project, x, trust_code=True)
    assert res["samples"] == len(x) and res["mismatches"] == 0
    assert res["runs"]["host"]["mismatched_elements"] == 0
    export_lava(graph, tmp_path / "lava", "graded", _nhwc(ds.x_train[:64]))  # Lava's simulator: 32 samples
    got = run_in_subprocess(tmp_path / "lava" / "model.ir", xq[:32], "graded", 600)
    np.testing.assert_array_equal(got, want[:32].reshape(32, -1))


def test_cortex_m4_on_qemu_is_bit_exact(ds, tmp_path):
    with threads.pinned(1):
        g = export.export(untrained(1), ds.x_train, stream_dtype="int16")
    project = tmp_path / "mcu"
    export_mcu(g, boards.load("nucleo-f446re"), project, "all", _nhwc(ds.x_train[:64]))
    res = verify_mcu(project, _nhwc(ds.x_test[:4]), qemu=True, trust_code=True)
    arm = res["runs"]["arm"]
    assert arm["machine"] == "mps2-an386" and arm["samples"] == 4 and arm["mismatched_elements"] == 0
    assert res["mismatches"] == 0


def test_nir_refuses_the_attention_by_name(graph, tmp_path):
    with pytest.raises(EdgesnnError) as e:
        export_nir(graph, tmp_path / "model.nir")
    assert "no NIR form" in str(e.value)
    assert not (tmp_path / "model.nir").exists()


def test_a_product_beyond_int32_is_refused_naming_the_layer(ds):
    """Two int16 streams (not spikes) multiplied over 8 channels can reach 8 * 32768^2 = 2^33: no
    accumulator of the targets' holds that, so the exporter refuses it, naming the line."""

    class Streams(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 16, 16)
            self.b = nn.Conv2d(3, 8, 16, 16)

        def forward(self, x):
            return (self.a(x).flatten(2).transpose(-1, -2) @ self.b(x).flatten(2)).flatten(1)

    with pytest.raises(EdgesnnError) as e:
        export.export(Streams().eval(), ds.x_train[:16], stream_dtype="int16")
    msg = str(e.value)
    assert "the integer product reaches 8,589,934,592" in msg and "beyond int32" in msg and "\n" not in msg
    assert "test_espikeformer.py:" in msg and "return (self.a(x).flatten(2)" in msg


def test_a_product_past_int16_is_requantized_once_into_its_neuron(ds):
    """Spike counts over 2,048 terms: sums up to 32,768 pass int16, so the product is requantized
    from its accumulator straight into the neuron that reads it, at exactly torch's counts."""

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2048, 16, 16)
            self.spike = sdt_v3_nets.MultiSpike()
            self.out = sdt_v3_nets.MultiSpike()
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            s = self.spike(self.conv(x)).flatten(2)  # (B, 2048, 4)
            return self.head(self.out((s.transpose(-1, -2) @ s) * 0.005).flatten(1))

    torch.manual_seed(0)
    model = Wide()
    map_neurons(model, NEURONS, 4, trust_code=True)
    with torch.no_grad():  # spikes that depend on the image, so the sums spread over several counts
        model.conv.weight.mul_(20)
        model.conv.bias.uniform_(-1.0, 1.0)
    g = export.export(model.eval(), ds.x_train[:64])
    (product,) = [op for op in g.ops if op.kind == "batch_matmul"]
    assert g.tensors[product.output].dtype == "int16" and product.clamp == [0, 4]
    values = g.run_integer(g.quantize_input(_nhwc(ds.x_test[:64])), keep_all=True)
    counts = values[product.output]
    assert len(np.unique(counts)) >= 3
    with torch.no_grad():  # torch's counts of the neuron, from the IR's spikes (HWC -> (B, C, tokens))
        s = torch.as_tensor(values["spike"].reshape(64, 4, 2048).transpose(0, 2, 1) / 4, dtype=torch.float32)
        want = model.out((s.transpose(-1, -2) @ s) * 0.005) * 4
    np.testing.assert_array_equal(counts.reshape(want.shape), want.round().numpy().astype(np.int16))


def test_the_published_configurations_have_their_sizes():
    """Upstream's own counts (SDT-V3 models.py: E-SpikeFormer-S 5.1 M, -M 10.0 M, -L 19.0 M) check
    that tests/sdt_v3_nets.py has their structure; -T (24/48/96/128) is what scale tests export."""
    sizes = {name: sum(p.numel() for p in sdt_v3_nets.espikeformer_config(name).parameters()) / 1e6
             for name in ("t", "s", "m", "l")}
    assert (round(sizes["s"], 1), round(sizes["m"], 1), round(sizes["l"], 1)) == (5.1, 10.0, 19.0)
    assert 2.6 < sizes["t"] < 2.8


def _cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output)
    return r.output


def test_trained_briefly_the_int16_ir_agrees_with_torch(data_spec, tmp_path, monkeypatch):
    """Trained as a user would (edgesnn train on the user's forward, then int8 weights and int16
    streams fine-tuned with edgesnn quantize), the IR at int16 streams agrees with torch on >= 99 %
    of the test split, and the ONNX and TFLite files with what they are checked against."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdt_v3_nets.py").write_text(open(sdt_v3_nets.__file__).read())
    monkeypatch.syspath_prepend(str(tmp_path))
    with threads.pinned(1):
        _cli("train", "--model", "sdt_v3_nets:espikeformer", "--neuron-map", "sdt_v3_nets.MultiSpike=sfa",
             "--data", data_spec, "--epochs", 15, "--out", "float")
        _cli("quantize", "float", "--method", "int8", "--stream-dtype", "int16", "--epochs", 8, "--out", "q",
             "--trust-code")
        _cli("export", "q", "--target", "ir", "--out", "ir", "--trust-code")
        _cli("verify", "ir/model.ir", "--checkpoint", "q", "--data", data_spec, "--trust-code", "--json", "ir.json",
             "--min-agreement", 0.99)
        _cli("export", "q", "--target", "tflite", "--out", "tfl", "--trust-code")
        _cli("verify", "tfl/model.tflite", "--data", data_spec, "--json", "tfl.json")
        _cli("export", "q", "--target", "onnx", "--out", "onnx", "--trust-code")
        _cli("verify", "onnx/model.onnx", "--data", data_spec, "--json", "onnx.json")  # integers vs its model.ir
    ir = json.loads((tmp_path / "ir.json").read_text())
    assert ir["samples"] == len(datasets.load(data_spec).x_test) and ir["agreement"] >= 0.99, ir
    assert ir["torch_accuracy"] >= 0.9 and ir["accuracy"] >= 0.9
    tfl = json.loads((tmp_path / "tfl.json").read_text())
    exact = {name: r["mismatches"] for name, r in tfl["runtimes"].items()}
    assert exact["litert-reference"] == 0 and exact["tflite-micro"] == 0
    assert json.loads((tmp_path / "onnx.json").read_text())["mismatches"] == 0
