"""Window sums of an int16 stream are int32 (issue 21): the exporter sizes them by their bound, and
the IR, TFLite (LiteRT reference kernels and TFLite Micro), the MCU host build and Lava compute them
bit for bit, or refuse with one line naming the op."""

import numpy as np
import pytest
import torch
from torch import nn

from edgesnn import boards, data, export
from edgesnn.backends.lava import export_lava, verify_lava
from edgesnn.backends.mcu import export_mcu, verify_mcu
from edgesnn.backends.tflite import LITERT_REFERENCE, MICRO, compare, export_tflite
from edgesnn.backends.tflite import flatbuffer as fb
from edgesnn.backends.tflite.validate import validate
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load
from edgesnn.neurons import MultiSpike
from edgesnn.quantize import streams


def conv_bn(c_in, c_out, k=3, padding=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=padding), nn.BatchNorm2d(c_out))


class Readers(nn.Module):
    """A residual int16 stream pooled 2x2 (an int32 window sum read by a neuron and by a 1x1 conv),
    then a global average pool of the next stream (an int32 sum read by the classifier)."""

    def __init__(self):
        super().__init__()
        self.stem, self.sn1, self.conv1 = conv_bn(1, 4), MultiSpike(4), conv_bn(4, 4)
        self.pool = nn.AvgPool2d(2)
        self.sn2, self.conv2, self.mix = MultiSpike(4), conv_bn(4, 4), conv_bn(4, 4, 1, 0)
        self.head = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        u = self.stem(x)
        u = u + self.conv1(self.sn1(u))
        p = self.pool(u)
        v = self.mix(p) + self.conv2(self.sn2(p))
        return self.fc(torch.flatten(self.head(v), 1))


class NeuronReads(nn.Module):
    """A residual int16 stream, average pooled 2x2 into a neuron: what Lava can hold (24 bits)."""

    def __init__(self):
        super().__init__()
        self.stem, self.sn1, self.conv1 = conv_bn(1, 4), MultiSpike(4), conv_bn(4, 4)
        self.pool, self.sn2 = nn.AvgPool2d(2), MultiSpike(4)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x):
        u = self.stem(x)
        u = u + self.conv1(self.sn1(u))
        return self.fc(torch.flatten(self.sn2(self.pool(u)), 1))


class PaddedReader(nn.Module):
    """A padded 3x3 conv reading the window sum: padding a pooled map is no padding of its input."""

    def __init__(self):
        super().__init__()
        self.stem, self.sn1, self.conv1 = conv_bn(1, 4), MultiSpike(4), conv_bn(4, 4)
        self.pool, self.conv2 = nn.AvgPool2d(2), conv_bn(4, 4)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x):
        u = self.stem(x)
        u = u + self.conv1(self.sn1(u))
        return self.fc(torch.flatten(self.conv2(self.pool(u)), 1))


class PoolOut(nn.Module):
    """The output is itself a global average pool of an int16 stream: an int32 model output."""

    def __init__(self):
        super().__init__()
        self.stem, self.sn1, self.conv1 = conv_bn(1, 10), MultiSpike(4), conv_bn(10, 10)
        self.head = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        u = self.stem(x)
        return torch.flatten(self.head(u + self.conv1(self.sn1(u))), 1)


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def _model(cls) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _graph(cls, digits):
    return export.export(_model(cls), digits.x_train[:256], stream_dtype="int16")


def _sums(graph):
    return [op for op in graph.ops if op.kind == "sum_pool2d"]


def test_window_sums_of_an_int16_stream_are_int32_and_exact(digits, tmp_path):
    graph = _graph(Readers, digits)
    sums = _sums(graph)
    assert len(sums) == 2 and all(graph.tensors[op.output].dtype == "int32" for op in sums)
    graph.save(tmp_path / "model.ir")
    graph = load(tmp_path / "model.ir")  # the IR file carries and checks the int32 tensors
    x = data.to_nhwc(digits.x_test)
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)  # was: "window sum outside int16"
    for op in sums:
        (kh, kw), (sh, sw) = op.kernel, op.stride
        src = values[op.inputs[0]].astype(np.int64)
        h, w = graph.tensors[op.output].shape[:2]
        want = sum(src[:, i:i + sh * h:sh, j:j + sw * w:sw] for i in range(kh) for j in range(kw))
        np.testing.assert_array_equal(values[op.output], want)
        assert np.abs(want).max() > 32767  # the sums need int32
    readers = {op.kind for op in graph.ops for s in sums if s.output in op.inputs}
    assert readers == {"requantize", "conv2d", "reshape"}
    with torch.no_grad():
        logits = _model(Readers)(torch.as_tensor(digits.x_test)).numpy()
    real = graph.dequantize(graph.outputs[0], graph.run(x))
    assert np.abs(real - logits).max() < 0.05 * np.abs(logits).max()  # the IR still is the float model


def test_trained_int16_streams_pool_into_int32(digits):
    torch.manual_seed(0)
    gm = streams.insert(NeuronReads(), 16).train()
    with torch.no_grad():
        gm(torch.as_tensor(digits.x_train[:64]))  # one batch sets every stream's scale
    graph = export.export(gm.eval(), digits.x_train[:256], stream_dtype="int16")
    (pool,) = _sums(graph)
    assert graph.tensors[pool.output].dtype == "int32"
    (neuron,) = [op for op in graph.ops if op.inputs == [pool.output]]
    values = graph.run_integer(graph.quantize_input(data.to_nhwc(digits.x_test)), keep_all=True)
    sums = values[pool.output]
    with torch.no_grad():  # the neuron fires torch's counts of the average, sum * scale / 4, for every sum
        counts = gm.get_submodule("sn2").fire(torch.as_tensor(sums * np.float32(graph.tensors[pool.output].scale / 4)))
    np.testing.assert_array_equal(values[neuron.output], counts.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("model", [Readers, NeuronReads])
def test_tflite_is_bit_exact_with_int32_window_sums(digits, tmp_path, model):
    graph = _graph(model, digits)
    path = export_tflite(graph, tmp_path / "model.tflite")
    r = compare(path, graph, data.to_nhwc(digits.x_test[:200]), runtimes=[LITERT_REFERENCE, MICRO])
    for name in (LITERT_REFERENCE, MICRO):
        assert r["runtimes"][name]["mismatches"] == 0 and r["runtimes"][name]["mismatched_elements"] == 0, r
    assert r["bit_exact"]


def test_tflite_refuses_a_window_sum_reader_it_cannot_fold(digits, tmp_path):
    graph = _graph(PaddedReader, digits)
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'conv2\w*' \(conv2d\) reads the int32 window sum 'pool' "
                       r"with padding \[1, 1, 1, 1\], which does not fold"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


def _slice_model(end, quantized=False) -> bytes:
    """QUANTIZE int16 -> int32, one STRIDED_SLICE of the int32 values: the start of a window sum."""
    consts = [fb.Tensor(k, [4], "int32", data=np.array(v, np.int32)) for k, v in
              (("begin", [0, 0, 0, 0]), ("end", end), ("strides", [1, 2, 2, 1]))]
    scale = ([0.5], [0]) if quantized else (None, None)
    tensors = [fb.Tensor("x", [1, 4, 4, 1], "int16", [0.5], [0]), fb.Tensor("x32", [1, 4, 4, 1], "int32", [0.5], [0]),
               fb.Tensor("plain", [1, 4, 4, 1], "int32", *scale), *consts, fb.Tensor("y", [1, 2, 2, 1], "int32", *scale)]
    shape = fb.Tensor("shape", [4], "int32", data=np.array([1, 4, 4, 1], np.int32))
    ops = [fb.Operator("QUANTIZE", [0], [1]), fb.Operator("RESHAPE", [1, 7], [2], "ReshapeOptions", {"NewShape": [1, 4, 4, 1]}),
           fb.Operator("STRIDED_SLICE", [2, 3, 4, 5], [6], "StridedSliceOptions")]
    return fb.Model(tensors=tensors + [shape], operators=ops, inputs=[0], outputs=[6]).serialize()


def test_the_int32_operators_of_a_window_sum_are_checked_before_a_runtime_reads_them():
    validate(_slice_model([1, 4, 4, 1]), "ok.tflite")
    with pytest.raises(EdgesnnError, match=r"^bad.tflite: operator 2 \(STRIDED_SLICE\): begin \[0, 0, 0, 0\], end "
                       r"\[1, 9, 4, 1\] and strides \[1, 2, 2, 1\] do not fit input \[1, 4, 4, 1\]"):
        validate(_slice_model([1, 9, 4, 1]), "bad.tflite")  # a read past the input
    with pytest.raises(EdgesnnError, match=r"operator 2 \(STRIDED_SLICE\): int32 tensors it adds or slices carry no "
                       r"quantization"):
        validate(_slice_model([1, 4, 4, 1], quantized=True), "bad.tflite")


@pytest.mark.slow
def test_mcu_host_build_is_bit_exact_with_int32_window_sums(digits, tmp_path):
    graph = _graph(Readers, digits)
    x = data.to_nhwc(digits.x_test[:100])
    export_mcu(graph, boards.load("nucleo-f446re"), tmp_path / "mcu", "none", x[:32])
    res = verify_mcu(tmp_path / "mcu", x, trust_code=True)
    assert res["runs"]["host"]["mismatches"] == 0 and res["runs"]["host"]["mismatched_elements"] == 0


def test_an_int32_model_output_is_read_as_int32_from_the_mcu_build(digits, tmp_path):
    graph = _graph(PoolOut, digits)
    assert graph.tensors[graph.outputs[0]].dtype == "int32"
    x = data.to_nhwc(digits.x_test[:50])
    export_mcu(graph, boards.load("nucleo-f446re"), tmp_path / "mcu", "none", x[:32])
    res = verify_mcu(tmp_path / "mcu", x, trust_code=True)
    assert res["runs"]["host"]["mismatches"] == 0 and res["runs"]["host"]["mismatched_elements"] == 0


@pytest.mark.slow
def test_lava_is_bit_exact_with_an_int32_window_sum_and_refuses_what_24_bits_cannot_hold(digits, tmp_path):
    x = data.to_nhwc(digits.x_test[:8])
    graph = _graph(NeuronReads, digits)
    export_lava(graph, tmp_path / "lava", "graded", x)
    res = verify_lava(tmp_path / "lava", x, samples=4)
    assert res["samples"] == 4 and res["mismatches"] == 0 and res["mismatched_elements"] == 0
    graph = _graph(Readers, digits)  # its 1x1 conv reads sums up to 4 x 32767: beyond the 24-bit state
    with pytest.raises(EdgesnnError, match=r"^lava: IR op 'mix\w*' \(conv2d\) can accumulate .*24-bit"):
        export_lava(graph, tmp_path / "refused", "graded", x)
    assert not (tmp_path / "refused").exists()
