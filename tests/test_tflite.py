"""The TFLite backend: every output integer equals the golden interpreter's, in LiteRT's reference
kernels and in TFLite Micro, over the whole digits test split, for each model family and method."""

import json

import numpy as np
import pytest
import tflite
import torch
from typer.testing import CliRunner

from edgesnn import data, pipeline
from edgesnn.backends.tflite import LITERT_DEFAULT, LITERT_REFERENCE, MICRO, compare, export_tflite, lower
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.export import export
from edgesnn.ir import load
from edgesnn.neurons import MultiSpike
from edgesnn.quantize import Options, quantize_checkpoint

pytestmark = pytest.mark.slow


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_bit_exact(r):
    assert r["samples"] == 450
    for name in (LITERT_REFERENCE, MICRO):
        assert r["runtimes"][name]["mismatches"] == 0, (name, r["runtimes"][name])
        assert r["runtimes"][name]["mismatched_elements"] == 0
    assert r["bit_exact"] and r["mismatches"] == 0
    assert r["arena_bytes"] > 0
    assert isinstance(r["runtimes"][LITERT_DEFAULT]["mismatches"], int)  # XNNPACK: measured, reported


def operators(path):
    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    sub = model.Subgraphs(0)
    codes = [model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())]
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    return model, sub, [names[codes[sub.Operators(i).OpcodeIndex()]] for i in range(sub.OperatorsLength())]


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "spikeformer"])
def test_each_family_is_bit_exact_in_litert_and_tflite_micro(trained, tmp_path, family):
    r = edgesnn("export", trained[family], "--target", "tflite", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    tfl = tmp_path / "model.tflite"
    r = edgesnn("verify", tfl, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert_bit_exact(result)
    assert result["runtime"].startswith("ai-edge-litert") and "reference kernels" in result["runtime"]

    model, sub, ops = operators(tfl)
    graph = load(tmp_path / "model.ir")
    io = [sub.Tensors(sub.Inputs(0)), sub.Tensors(sub.Outputs(0))]
    assert [t.Type() for t in io] == [tflite.TensorType.INT8, tflite.TensorType.INT8]
    float_types = (tflite.TensorType.FLOAT32, tflite.TensorType.FLOAT16)
    assert not any(sub.Tensors(i).Type() in float_types for i in range(sub.TensorsLength()))
    assert not {"DEQUANTIZE", "FULLY_CONNECTED"} & set(ops)
    convs = sum(op.kind in ("conv2d", "dense") for op in graph.ops)
    assert ops.count("CONV_2D") + ops.count("DEPTHWISE_CONV_2D") >= convs


@pytest.mark.parametrize("method,opts,bits", [
    ("qsnn", Options(weight_bits=1, epochs=1), 1),
    ("qsnn", Options(weight_bits=2, membrane_bits=8, epochs=1), 2),
    ("qpsnn", Options(weight_bits=4, prune=0.5, epochs=1), 4),
    ("ternary", Options(epochs=1), 8),
])
def test_compressed_models_are_bit_exact(trained, tmp_path, method, opts, bits):
    quantize_checkpoint(trained["cnn"], method, tmp_path / "q", opts)
    path = pipeline.export_model(tmp_path / "q", "tflite", tmp_path / "out")
    assert_bit_exact(pipeline.verify(path, "digits"))
    graph = load(tmp_path / "out" / "model.ir")
    assert min(op.weight_bits for op in graph.weight_ops()) == bits


def test_weights_in_the_file_are_the_widened_ir_weights(trained, tmp_path):
    """Sub-byte weights are stored as their int8 widening, with the IR's per-channel scales."""
    quantize_checkpoint(trained["cnn"], "qsnn", tmp_path / "q", Options(weight_bits=2, epochs=1))
    graph = export(*_model_and_calibration(tmp_path / "q"))
    model = lower(graph)
    from edgesnn.ir.packing import widen

    for op in graph.weight_ops():
        t = next(t for t in model.tensors if t.name == f"{op.name}.weight")
        want = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int8)
        assert np.array_equal(t.data.reshape(want.shape[0], -1), want.reshape(want.shape[0], -1)) or \
            np.array_equal(t.data.transpose(3, 1, 2, 0), want)
        assert np.array_equal(np.float32(t.scale), np.asarray(op.weight_scale, np.float32))


def _model_and_calibration(ckpt):
    from edgesnn import checkpoint

    model, config = checkpoint.load(ckpt)
    return model, data.load(config["data"]).x_train[:512]


@pytest.mark.parametrize("family", ["resnet", "spikeformer"])
def test_int16_streams_run_in_the_16x8_kernels(trained, tmp_path, family):
    """int16 residual streams: convolutions writing them read int16 (TFLite's 16x8 kernels)."""
    path = pipeline.export_model(trained[family], "tflite", tmp_path, stream_dtype="int16")
    assert_bit_exact(pipeline.verify(path, "digits"))
    graph = load(tmp_path / "model.ir")
    int16_convs = [op for op in graph.ops if op.kind in ("conv2d", "dense") and graph.tensors[op.inputs[0]].dtype == "int16"]
    assert int16_convs and all(graph.tensors[op.output].dtype == "int16" for op in int16_convs)
    model, sub, ops = operators(path)
    assert sub.Tensors(sub.Outputs(0)).Type() == tflite.TensorType.INT16  # the IR's int16 class scores


def test_bestformer_is_bit_exact(trained, tmp_path):
    """1-bit weights, binary attention, reversible blocks (factor-carrying adds) and trained int8 streams."""
    quantize_checkpoint(trained["spikeformer"], "bestformer", tmp_path / "q", Options(epochs=1))
    path = pipeline.export_model(tmp_path / "q", "tflite", tmp_path / "out")
    assert_bit_exact(pipeline.verify(path, "digits"))
    graph = load(tmp_path / "out" / "model.ir")
    assert any(op.kind == "add" and op.input_scales for op in graph.ops)
    assert min(op.weight_bits for op in graph.weight_ops()) == 1


class _Grouped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.sn1 = MultiSpike(4)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.sn2 = MultiSpike(4)
        self.fc = torch.nn.Linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.sn2(self.conv2(self.sn1(self.conv1(x)))), 1))


class _GlobalPool(torch.nn.Module):
    """Spikes summed over the whole 8x8 image: up to 256, an int16 window sum."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.sn = MultiSpike(4)
        self.pool = torch.nn.AvgPool2d(8)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.sn(self.conv(x))), 1))


def test_int16_window_sums_and_int16_inputs_of_int8_layers(tmp_path):
    torch.manual_seed(0)
    model = _GlobalPool().eval()
    with torch.no_grad():
        model.conv.weight.mul_(3)  # enough spikes that the pooled sums leave int8
    ds = data.digits()
    graph = export(model, ds.x_train[:256])
    kinds = {op.kind: graph.tensors[op.output].dtype for op in graph.ops}
    assert kinds["sum_pool2d"] == "int16" and kinds["dense"] == "int16"  # then narrowed to int8 exactly
    path = export_tflite(graph, tmp_path / "model.tflite")
    assert_bit_exact(compare(path, graph, data.to_nhwc(ds.x_test)))


def test_an_op_tflite_cannot_express_is_refused_naming_it(tmp_path):
    graph = export(_Grouped().eval(), data.digits().x_train[:64])
    with pytest.raises(EdgesnnError, match="tflite: IR op 'sn2' \\(conv2d\\) is a grouped convolution with 4 channels per group"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


def test_a_multiplier_tflite_would_not_derive_is_refused_before_writing(trained, tmp_path):
    graph = export(*_model_and_calibration(trained["cnn"]))
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    conv.multiplier = conv.multiplier + 1  # no float32 scales give this multiplier
    with pytest.raises(EdgesnnError, match=f"IR op '{conv.name}' \\(conv2d\\) has a requantization multiplier"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


def test_verify_errors_are_one_line(trained, tmp_path):
    pipeline.export_model(trained["mlp"], "tflite", tmp_path)
    (tmp_path / "model.ir").unlink()
    r = edgesnn("verify", tmp_path / "model.tflite")
    assert r.exit_code == 1 and "no IR to compare with" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    pipeline.export_model(trained["mlp"], "ir", tmp_path)
    r = edgesnn("verify", bad, "--ir", tmp_path / "model.ir")
    assert r.exit_code == 1 and "bad.tflite: not a TFLite flatbuffer" in r.output and r.output.count("\n") == 1


def test_a_changed_file_is_caught(trained, tmp_path):
    """verify is not a formality: one flipped weight makes it report differences and exit 1."""
    path = pipeline.export_model(trained["mlp"], "tflite", tmp_path)
    graph = load(tmp_path / "model.ir")
    dense = next(op for op in graph.ops if op.kind == "dense")
    dense.weight = dense.weight.copy()
    dense.weight[0, :] = -dense.weight[0, :]
    export_tflite(graph, path)
    r = compare(path, load(tmp_path / "model.ir"), data.to_nhwc(data.digits().x_test), runtimes=[LITERT_REFERENCE])
    assert r["mismatches"] > 0 and not r["bit_exact"]
    r = edgesnn("verify", path)
    assert r.exit_code == 1 and "not bit-exact with the IR" in r.output


def test_layout_and_shapes(trained, tmp_path):
    path = pipeline.export_model(trained["cnn"], "tflite", tmp_path)
    model, sub, ops = operators(path)
    inp, out = sub.Tensors(sub.Inputs(0)), sub.Tensors(sub.Outputs(0))
    assert list(inp.ShapeAsNumpy()) == [1, 8, 8, 1]  # NHWC, batch 1 as on a device
    assert list(out.ShapeAsNumpy()) == [1, 10]
    graph = load(tmp_path / "model.ir")
    spec = graph.tensors[graph.input]
    q = inp.Quantization()
    assert np.float32(q.Scale(0)) == np.float32(spec.scale) and q.ZeroPoint(0) == spec.zero_point
