"""The QCDQ ONNX file (export --target onnx-qcdq): Brevitas QCDQ export of the torch model, run with
onnxruntime, against torch. The integer ONNX file (the default) is tested in test_onnx_integer.py."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from brevitas.inject import ExtendedInjector
from brevitas.nn import QuantConv2d, QuantLinear
from brevitas.proxy import WeightQuantProxyFromInjector
from onnx import numpy_helper
from torch import nn

from edgesnn import models, neurons, train
from edgesnn.backends.onnx import file_format
from edgesnn.from_torch.qcdq import compare_qcdq, export_qcdq, run_qcdq
from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike

EPOCHS = {"mlp": 3, "cnn": 2, "resnet": 3, "spikeformer": 3}
# What the spiking models may turn into: plain ONNX arithmetic, nothing custom.
PLAIN_OPS = {"Add", "Sub", "Mul", "Div", "Floor", "Round", "Clip", "Abs", "Sign", "Cast", "GreaterOrEqual", "Conv",
             "Gemm", "MatMul", "BatchNormalization", "AveragePool", "ReduceMean", "ReduceSum", "Reshape", "Flatten",
             "Concat", "Expand", "Gather", "Shape", "Slice", "Squeeze", "Unsqueeze", "Tile", "Identity", "Constant",
             "QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two and does not spin on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(EPOCHS))
def exported(request, digits, tmp_path_factory):
    """One briefly trained model per family, exported once."""
    name = request.param
    torch.manual_seed(0)
    model = models.build(name, models.default_kwargs(name, digits.in_shape, digits.num_classes, D=4))
    train.train(model, digits, EPOCHS[name])
    folder = tmp_path_factory.mktemp(f"onnx-{name}")
    path = export_qcdq(model, digits.x_train[:64], folder / "model.onnx")
    return name, model, path


def test_model_families_agree_with_torch(exported, digits):
    name, model, path = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data file, no temp folder
    assert file_format(path) == "qcdq"  # verify compares it with torch, not with an IR
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert {n.op_type for n in graph.node} <= PLAIN_OPS, name
    assert "Floor" in {n.op_type for n in graph.node}  # the spiking neurons are there, as plain ops
    assert isinstance(ort.InferenceSession(str(path)).get_inputs()[0].shape[0], str)  # dynamic batch

    r = compare_qcdq(model, path, digits.x_test)
    assert r["samples"] == len(digits.x_test) == 450
    assert r["agreement"] >= 0.99 and r["mismatches"] <= 4, r
    assert r["max_abs_diff"] < 1e-3, r  # the same function, not just the same argmax
    assert r["runtime"] == f"onnxruntime {ort.__version__}"
    onnx_accuracy = float((run_qcdq(path, digits.x_test.numpy()).argmax(1) == digits.y_test.numpy()).mean())
    assert onnx_accuracy >= 0.5, (name, onnx_accuracy)  # a real classifier, so agreement means something


# --- Brevitas layers with a custom odd-level weight quantizer ---------------------------------


class OddLevels(nn.Module):
    """2**bits levels q * scale_c, q odd in [-(2**bits - 1), 2**bits - 1], scale per output channel.

    Returns (value, scale, zero_point, bit_width) with bit_width = ``container_bits`` (the width
    of the integers q; bits + 1 is the honest one). Straight-through gradient while training.
    """

    def __init__(self, bits: int, container_bits: int):
        super().__init__()
        self.bits, self.container_bits = bits, container_bits

    def integers(self, w: torch.Tensor):
        qmax = 2**self.bits - 1
        scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / qmax).view(-1, *[1] * (w.dim() - 1))
        return torch.clamp(2 * torch.floor(w.detach() / (2 * scale)) + 1, -qmax, qmax), scale

    def forward(self, w: torch.Tensor):
        q, scale = self.integers(w)
        value = q * scale
        if self.training and torch.is_grad_enabled():
            value = w + (value - w).detach()
        return value, scale, torch.zeros((), dtype=w.dtype), torch.tensor(float(self.container_bits))


def odd_injector(bits: int, container_bits: int | None = None, rounding: str = "ODD"):
    return type(f"OddLevels{bits}", (ExtendedInjector,), {
        "proxy_class": WeightQuantProxyFromInjector,
        "tensor_quant": OddLevels,
        "bits": bits,
        "container_bits": bits + 1 if container_bits is None else container_bits,
        "signed": True,
        "narrow_range": True,
        "float_to_int_impl_type": rounding,
    })


def quant_model(bits: int, **quant) -> nn.Module:
    q = odd_injector(bits, **quant)
    return nn.Sequential(
        QuantConv2d(1, 8, 3, padding=1, bias=False, weight_quant=q), nn.BatchNorm2d(8), MultiSpike(4),
        nn.AvgPool2d(2), nn.Flatten(),
        QuantLinear(8 * 4 * 4, 32, bias=True, weight_quant=q), nn.BatchNorm1d(32), MultiSpike(4),
        QuantLinear(32, 10, bias=True, weight_quant=q),
    )


def quant_layers(model):
    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


@pytest.fixture(scope="module")
def odd3(digits):
    torch.manual_seed(0)
    model = quant_model(3)
    train.train(model, digits, 2)
    return model.eval()


def quantize_linear_outputs(path, tmp_path, x):
    """The integers every QuantizeLinear node produces in onnxruntime, with that node's float input."""
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    for n in nodes:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT8, None))
    probe = tmp_path / "probe.onnx"
    onnx.save(proto, str(probe))
    sess = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    outs = sess.run([n.output[0] for n in nodes], {sess.get_inputs()[0].name: x})
    return [(inits.get(n.input[0]), q) for n, q in zip(nodes, outs)]


def test_odd_level_weights_are_exported_exactly(odd3, digits, tmp_path):
    path = export_qcdq(odd3, digits.x_train[:8], tmp_path / "q.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 3
    assert ops.count("Clip") >= 3

    quantized = quantize_linear_outputs(path, tmp_path, digits.x_test[:2].numpy())
    by_shape = {q.shape: (w, q) for w, q in quantized}
    for layer in quant_layers(odd3):
        ints, _ = layer.weight_quant.tensor_quant.integers(layer.weight)
        w_onnx, q_onnx = by_shape[tuple(layer.weight.shape)]
        np.testing.assert_array_equal(q_onnx, ints.numpy().astype(np.int8))  # the integers onnxruntime uses
        assert set(np.unique(q_onnx)) <= {-7, -5, -3, -1, 1, 3, 5, 7} and q_onnx.min() == -7 and q_onnx.max() == 7
        with torch.no_grad():
            np.testing.assert_array_equal(w_onnx, layer.quant_weight().value.numpy())  # torch's fake-quant weights

    r = compare_qcdq(odd3, path, digits.x_test)
    assert r["agreement"] == 1.0 and r["mismatches"] == 0, r
    assert r["max_abs_diff"] < 1e-5, r


@pytest.mark.parametrize("bits, rounding", [(1, "ODD"), (2, "ROUND")])
def test_custom_quantizer_is_exact_whatever_its_rounding_mode(bits, rounding, digits, tmp_path):
    """Brevitas re-rounds the float weights for "ROUND" quantizers; the backend must not."""
    torch.manual_seed(1)
    model = quant_model(bits, rounding=rounding)
    train.train(model, digits, 1)
    path = export_qcdq(model, digits.x_train[:8], tmp_path / "q.onnx")
    r = compare_qcdq(model, path, digits.x_test)
    assert r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-5, r


def test_quantizer_declaring_too_few_bits_is_refused(tmp_path):
    model = quant_model(3, container_bits=3).eval()  # odd integers up to 7 do not fit 3-bit [-3, 3]
    with pytest.raises(EdgesnnError, match=r"layer '0'.*\[-7, 7\].*3-bit.*at least 4") as e:
        export_qcdq(model, torch.rand(4, 1, 8, 8), tmp_path / "q.onnx")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


# --- neurons, batch handling, errors ----------------------------------------------------------


class NeuronZoo(nn.Module):
    """MultiSpike (with a quantized membrane when neurons.py has one), multi-step TernarySpike."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.ms = MultiSpike(4, normalize=False)
        self.ternary = neurons.TernarySpike(4)
        self.fc = nn.Linear(4 * 64 * 2, 10)

    def forward(self, x):
        u = self.conv(x)
        s = self.ms(u)
        t = self.ternary(torch.stack([u, u * 0.5])).mean(0)
        return self.fc(torch.flatten(torch.cat([s, t], 1), 1))


def test_neurons_export_to_plain_ops(tmp_path):
    torch.manual_seed(0)
    model = NeuronZoo()
    with torch.no_grad():
        model.ternary.amplitude.copy_(torch.rand(4) + 0.5)
    if hasattr(neurons, "MembraneQuant"):  # Q-SNN membranes: a tensor-valued `if` torch.export cannot trace
        model.ms.membrane = neurons.MembraneQuant(4)
        model.ms.membrane.scale.fill_(0.37)
    model.eval()
    x = torch.randn(64, 1, 8, 8) * 2
    path = export_qcdq(model, x[:2], tmp_path / "n.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= PLAIN_OPS and {"Floor", "Sign"} <= ops
    r = compare_qcdq(model, path, x)
    assert r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-5, r
    assert model.ms.membrane is None or type(model.ms.membrane).__name__ == "MembraneQuant"  # caller's model untouched


class FixedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.reshape(8, 64))  # the batch size is part of the model


def test_fixed_batch_model_runs_in_batches_of_its_size(tmp_path):
    model = FixedBatch().eval()
    x = torch.rand(21, 1, 8, 8)
    path = export_qcdq(model, x[:8], tmp_path / "f.onnx")
    assert ort.InferenceSession(str(path)).get_inputs()[0].shape[0] == 8
    out = run_qcdq(path, x.numpy())
    with torch.no_grad():
        ref = torch.cat([model(torch.cat([c, torch.zeros(8 - len(c), 1, 8, 8)]))[:len(c)] for c in x.split(8)])
    assert out.shape == (21, 10)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc(x) if x.sum() > 0 else -self.fc(x)  # Python control flow on a tensor value


def test_unexportable_model_raises_one_line_and_leaves_nothing(tmp_path, capfd):
    model = DataDependent()
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(EdgesnnError) as e:
        export_qcdq(model, torch.rand(4, 1, 8, 8), target)
    msg = str(e.value)
    assert msg.startswith("cannot export DataDependent to ONNX: DataDependent.forward:") and "data-dependent" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and target.read_bytes() == b"previous"
    assert model.training  # the caller's model was not switched to eval
    out, err = capfd.readouterr()
    assert "def forward" not in out + err  # torch.export's partial-graph dump is silenced


def test_run_onnx_errors(tmp_path):
    with pytest.raises(EdgesnnError, match="no such ONNX file"):
        run_qcdq(tmp_path / "missing.onnx", np.zeros((1, 64), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EdgesnnError, match="onnxruntime cannot load it"):
        run_qcdq(bad, np.zeros((1, 64), np.float32))
    path = export_qcdq(FixedBatch().eval(), torch.rand(8, 1, 8, 8), tmp_path / "f.onnx")
    with pytest.raises(EdgesnnError, match="does not match"):
        run_qcdq(path, np.zeros((3, 1, 4, 4), np.float32))
