"""The integer ONNX file (``export --target onnx``): written from the IR alone, run in onnxruntime,
every output integer equal to the golden interpreter's over the whole digits test split: each model
family at int8 and int16 streams, each compression method, E-SpikeFormer's attention and hand-built
graphs holding every IR op. Each file passes onnx.checker's full check and holds integer ops and
integer tensors only; what the lowering cannot express is refused by name before a file exists."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from typer.testing import CliRunner

import sdt_v3_nets
from attention_graphs import attention_graph, attention_inputs
from edgesnn import data, export, pipeline, threads
from edgesnn.backends.onnx import MAX_DEPTH, compare, export_integer, read_metadata, requant, run
from edgesnn.backends.onnx.builder import Builder
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import load
from edgesnn.ir.fixedpoint import (ADD_LEFT_SHIFT, add_multipliers, effective_multiplier, multiply_by_quantized_multiplier,
                                   multiply_by_quantized_multiplier_16x8, quantize_multipliers)
from edgesnn.models.custom import map_neurons
from edgesnn.quantize import METHODS, Options, quantize_checkpoint
from test_data_folders import digit_images, write_images

INTEGER_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "MatMul", "Cast", "Add", "Sub", "Mul", "Div", "Abs", "Sign", "Clip", "Mod",
               "Transpose", "Pad", "Reshape", "ReduceSum", "Slice", "Max"}


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_integer_file(path, graph: g.Graph) -> onnx.ModelProto:
    """onnx.checker's full check passes; every node an integer op, every tensor (initializers, inputs,
    outputs and every intermediate, by strict shape inference) an integer type; the metadata holds
    the IR's input and output quantization."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True).graph
    values = [*inferred.input, *inferred.output, *inferred.value_info]
    produced = {out for node in model.graph.node for out in node.output}
    assert {v.name for v in values} >= produced  # every value typed
    assert {v.type.tensor_type.elem_type for v in values} <= INTEGER_TYPES
    assert {t.data_type for t in model.graph.initializer} <= INTEGER_TYPES
    assert {n.op_type for n in model.graph.node} <= INTEGER_OPS and {n.domain for n in model.graph.node} == {""}
    meta = read_metadata(path)
    assert meta["edgesnn.format"] == "integer" and meta["edgesnn.layout"] == "NHWC"
    spec = graph.tensors[graph.input]
    described = json.loads(meta["edgesnn.input"])
    assert (np.float32(described["scale"]), described["zero_point"], described["dtype"]) == \
        (np.float32(spec.scale), spec.zero_point, spec.dtype)
    assert [o["name"] for o in json.loads(meta["edgesnn.outputs"])] == graph.outputs
    return model


def every_tensor(graph: g.Graph) -> g.Graph:
    graph.outputs = [op.output for op in graph.ops]
    return graph


def assert_every_tensor_equal(graph: g.Graph, xq: np.ndarray, path) -> None:
    """Every output integer in onnxruntime, and on a few samples in ONNX's reference implementation
    (the spec's own semantics, numpy), equals the golden interpreter's."""
    want = graph.run_integer(xq, keep_all=True)
    for runtime, got in (("onnxruntime", run(path, graph, xq)),
                         ("onnx.reference", ReferenceEvaluator(str(path)).run(None, {graph.input: xq[:16]}))):
        for name, value in zip(graph.outputs, got):
            assert value.dtype == want[name].dtype, name
            bad = int((value != want[name][:len(value)]).sum())
            assert bad == 0, f"{runtime}: {bad} integers of {name} differ from the IR"


# ---------------------------------------------------------------- the requantization itself

def _requantize_model(multiplier, shift, wide: bool) -> bytes:
    b = Builder(reserved=["x", "y"])
    f = requant.single_rounding_16x8 if wide else requant.double_rounding
    b.node("Identity", [f(b, "x", multiplier, shift, "r")], "out", out="y")
    graph = helper.make_graph(b.nodes, "r", [helper.make_tensor_value_info("x", TensorProto.INT64, ["n", len(multiplier)])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, ["n", len(multiplier)])],
                              initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_double_rounding_in_onnx_ops_is_fixedpoints():
    """Every shift TFLite derives (-31..30), multipliers at the ends (0, 2**30: every odd input a tie
    of the high multiply, 2**31 - 1) and random ones; inputs at the int32 ends the left shift allows,
    around every rounding tie, and random."""
    rng = np.random.default_rng(0)
    shift = np.arange(-31, 31)
    multiplier = np.where(shift % 3 == 0, 1 << 30, rng.integers(1 << 30, 1 << 31, shift.size))
    multiplier[[0, 5, 9]] = [0, (1 << 31) - 1, (1 << 31) - 1]
    left = np.maximum(shift, 0)
    lo, hi = -(2 ** (31 - left)), 2 ** (31 - left) - 1
    rows = [lo, hi, lo + 1, hi - 1, np.zeros_like(lo), np.ones_like(lo), -np.ones_like(lo)]
    rows += [np.clip(np.full_like(lo, v), lo, hi) for v in range(-1030, 1031)]  # dense: every small tie
    rows += [rng.integers(lo, hi + 1) for _ in range(3000)]
    x = np.stack(rows).astype(np.int64)
    got = _run(_requantize_model(multiplier, shift, wide=False), x)
    np.testing.assert_array_equal(got, multiply_by_quantized_multiplier(x, multiplier, shift))


def test_16x8_single_rounding_in_onnx_ops_is_fixedpoints():
    rng = np.random.default_rng(1)
    shift = np.arange(-31, 15)
    multiplier = rng.integers(1 << 30, 1 << 31, shift.size)
    multiplier[[0, 3, 7]] = [0, 0x7FFF0000, (1 << 31) - 1]  # the reduced multiplier's saturation
    bound = 2**47 - 1
    rows = [np.full(shift.size, v) for v in (-bound, bound, 0, 1, -1)]
    rows += [np.full(shift.size, v) for v in range(-2000, 2001)]
    rows += [rng.integers(-bound, bound, shift.size) for _ in range(3000)]
    x = np.stack(rows).astype(np.int64)
    got = _run(_requantize_model(multiplier, shift, wide=True), x)
    np.testing.assert_array_equal(got, multiply_by_quantized_multiplier_16x8(x, multiplier, shift))


# ---------------------------------------------------------------- every IR op, hand-built

def _mult(s_in, s_w, s_out):
    return quantize_multipliers(effective_multiplier(s_in, s_w, s_out))


def op_zoo(stream: str, seed: int) -> g.Graph:
    """Every IR op with weights or arithmetic on a ``stream`` (int8 or int16) input with a zero point:
    convolutions (padded, asymmetric, strided, grouped, depthwise with two outputs per channel) into
    spikes and into the stream, overlapping window sums (int8 -> int16, and the stream's into int16 /
    int32 read by a convolution), max pools of spikes and of the stream, a mixed-dtype add, a product,
    requantizations down and up (a left shift), a reduce_sum, a reshape, a transpose and a dense layer.
    Scales keep real values near 1, so that every tensor varies."""
    rng = np.random.default_rng(seed)
    t: dict[str, g.TensorSpec] = {}
    ops: list[g.Op] = []
    wide = {"int8": "int16", "int16": "int32"}[stream]
    s_in = 1 / 74 if stream == "int8" else 1 / 1732  # real std ~1 for inputs spread over int8 / +-3000
    t["input"] = g.TensorSpec([8, 8, 4], stream, s_in, -3 if stream == "int8" else 7)
    stream_scale = 3 / 64 if stream == "int8" else 3 / 8192
    lo, hi = g.dtype_range(stream)

    def conv(name, src, out, o, kernel, stride, padding, groups, clamp, in_std=1.0):
        cg = t[src].shape[-1] // groups
        w = rng.integers(-100, 101, (o, kernel, kernel, cg)).astype(np.int8)
        ws = np.full(o, 1 / (58 * np.sqrt(kernel * kernel * cg) * in_std), np.float32)
        m, s = _mult(t[src].scale, ws, t[out].scale)
        ops.append(g.Conv2D(name, [src], out, multiplier=m, shift=s, clamp=clamp, weight=w, weight_scale=ws,
                            bias=rng.integers(-50, 50, o).astype(np.int32), stride=stride, padding=padding, groups=groups))

    t["spikes"] = g.TensorSpec([8, 8, 8], "int8", 0.5, 0, spike_D=4)
    conv("c1", "input", "spikes", 8, 3, [1, 1], [1, 1, 1, 1], 1, [0, 4])
    t["stream"] = g.TensorSpec([4, 4, 8], stream, stream_scale, 5 if stream == "int8" else 0)
    conv("c2", "input", "stream", 8, 3, [2, 2], [0, 1, 1, 0], 2, [lo, hi])
    t["dw"] = g.TensorSpec([8, 8, 16], "int8", 0.5, 0, spike_D=4)
    conv("depthwise", "spikes", "dw", 16, 3, [1, 1], [1, 1, 1, 1], 8, [0, 4], in_std=0.7)
    t["dw_sum"] = g.TensorSpec([3, 3, 16], "int16", 0.5, 0)
    ops.append(g.SumPool2D("overlapping_sum", ["dw"], "dw_sum", kernel=[3, 3], stride=[2, 2]))
    t["spike_max"] = g.TensorSpec([4, 4, 8], "int8", 0.5, 0, spike_D=4)
    ops.append(g.MaxPool2D("spike_max", ["spikes"], "spike_max"))
    t["stream_max"] = g.TensorSpec([2, 2, 8], stream, stream_scale, t["stream"].zero_point)
    ops.append(g.MaxPool2D("stream_max", ["stream"], "stream_max"))
    t["sum"] = g.TensorSpec([4, 4, 8], stream, stream_scale * 2, -4 if stream == "int8" else 0)
    m, s = add_multipliers(t["stream"].scale, t["spike_max"].scale, t["sum"].scale, ADD_LEFT_SHIFT[stream])
    ops.append(g.Add("residual", ["stream", "spike_max"], "sum", left_shift=ADD_LEFT_SHIFT[stream], multiplier=m,
                     shift=s, clamp=[lo, hi]))
    t["narrow"] = g.TensorSpec([4, 4, 8], "int8", 0.05, -2)
    m, s = _mult(t["sum"].scale, 1.0, t["narrow"].scale)
    ops.append(g.Requantize("narrow", ["sum"], "narrow", multiplier=m, shift=s, clamp=[-128, 127]))
    t["masked"] = g.TensorSpec([4, 4, 8], "int8", 0.1, 1)
    m, s = _mult(t["narrow"].scale, t["spike_max"].scale, t["masked"].scale)
    ops.append(g.Mul("mask", ["narrow", "spike_max"], "masked", multiplier=m, shift=s, clamp=[-20, 127]))
    t["up"] = g.TensorSpec([4, 4, 8], "int16", 0.1 / 3.7, 0)  # real multiplier 3.7: a left shift
    m, s = _mult(t["masked"].scale, 1.0, t["up"].scale)
    ops.append(g.Requantize("up", ["masked"], "up", multiplier=m, shift=s, clamp=list(g.dtype_range("int16"))))
    t["mean"] = g.TensorSpec([1, 1, 8], "int8", 0.02, 3)
    m, s = _mult(t["sum"].scale, 1 / 16, t["mean"].scale)
    ops.append(g.ReduceSum("mean", ["sum"], "mean", scale=1 / 16, multiplier=m, shift=s, clamp=[-128, 127]))
    t["pooled"] = g.TensorSpec([2, 2, 8], wide, t["sum"].scale, 0)  # the stream's window sums
    ops.append(g.SumPool2D("stream_sum", ["sum"], "pooled", kernel=[2, 2], stride=[2, 2]))
    t["wide_conv"] = g.TensorSpec([1, 1, 8], "int8", 0.25, -1)
    conv("wide_conv", "pooled", "wide_conv", 8, 2, [1, 1], [0, 0, 0, 0], 1, [-128, 127], in_std=2.0)
    t["chw"] = g.TensorSpec([16, 3, 3], "int16", 0.5, 0)
    ops.append(g.Transpose("to_chw", ["dw_sum"], "chw", perm=[2, 0, 1]))
    t["flat"] = g.TensorSpec([144], "int16", 0.5, 0)
    ops.append(g.Reshape("flatten", ["chw"], "flat"))
    t["scores"] = g.TensorSpec([10], stream, 0.05, -7 if stream == "int8" else 0)
    w = rng.integers(-100, 101, (10, 144)).astype(np.int8)
    ws = np.full(10, 1 / (58 * 12 * 2.0), np.float32)
    m, s = _mult(t["flat"].scale, ws, t["scores"].scale)
    ops.append(g.Dense("fc", ["flat"], "scores", multiplier=m, shift=s, clamp=[lo, hi], weight=w, weight_scale=ws,
                       bias=rng.integers(-50, 50, 10).astype(np.int32)))
    return g.Graph(t, ops, "input", ["scores"])


def zoo_inputs(graph: g.Graph, n: int = 128, seed: int = 0) -> np.ndarray:
    spec = graph.tensors[graph.input]
    lo, hi = (-128, 127) if spec.dtype == "int8" else (-3000, 3000)
    return np.random.default_rng(seed).integers(lo, hi + 1, (n, *spec.shape)).astype(g.DTYPES[spec.dtype])


@pytest.mark.parametrize("stream", ["int8", "int16"])
def test_every_ir_op_is_exact(tmp_path, stream):
    kinds = set()
    for seed in (0, 1):
        graph = every_tensor(op_zoo(stream, seed))
        xq = zoo_inputs(graph, seed=10 + seed)
        values = graph.run_integer(xq, keep_all=True)
        for op in graph.ops:  # every op does something on these inputs
            assert len(np.unique(values[op.output])) > 2, op.name
        path = export_integer(graph, tmp_path / f"zoo{seed}.onnx")
        assert_integer_file(path, graph)
        assert_every_tensor_equal(graph, xq, path)
        kinds |= {op.kind for op in graph.ops}
    assert kinds == set(g.OP_TYPES) - {"batch_matmul"}  # products: the attention graphs below
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    width = np.dtype(stream).itemsize  # one ConvInteger per byte of an input integer
    assert ops.count("ConvInteger") == 2 * width + 1 + 2 * width  # c1, c2 on the input; depthwise on spikes; wide_conv
    assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops  # the int16 dense layer: its two bytes


@pytest.mark.parametrize("adj_y", [True, False])
@pytest.mark.parametrize("stream", ["int8", "int16"])
def test_attention_graphs_are_exact(tmp_path, stream, adj_y):
    """E-SpikeFormer's attention in small: transposes, reshapes of rank 3, int16 products (int64
    MatMul) and int8 ones (MatMulInteger), a factor folded into a product's scale."""
    for seed in (0, 1, 2):
        graph = every_tensor(attention_graph(stream, seed, adj_y))
        path = export_integer(graph, tmp_path / f"attention{seed}.onnx")
        assert_integer_file(path, graph)
        assert_every_tensor_equal(graph, attention_inputs(graph, 64, seed=10 + seed), path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMul") == 2 and ops.count("Transpose") >= 4 + (not adj_y)


def test_int8_products_are_matmulinteger(tmp_path):
    """An int8 x int8 batch_matmul with an output zero point: MatMulInteger on the uint8 operands."""
    rng = np.random.default_rng(3)
    t = {"input": g.TensorSpec([2, 6, 5], "int8", 1.0, 0), "b": g.TensorSpec([2, 5, 6], "int8", 1.0, 0),
         "prod": g.TensorSpec([2, 6, 6], "int8", 4.0, -9)}
    m, s = _mult(1.0, 1.0, 4.0)
    graph = g.Graph(t, [g.Transpose("bT", ["input"], "b", perm=[0, 2, 1]),
                        g.BatchMatMul("gram", ["input", "b"], "prod", multiplier=m, shift=s, clamp=[-9, 127])],
                    "input", ["b", "prod"])
    xq = rng.integers(-128, 128, (64, 2, 6, 5)).astype(np.int8)
    path = export_integer(graph, tmp_path / "gram.onnx")
    assert_every_tensor_equal(graph, xq, path)
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("MatMulInteger") == 1


# ---------------------------------------------------------------- the model zoo, through the CLI

@pytest.mark.parametrize("stream", ["int8", "int16"])
@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "spikeformer"])
def test_each_family_is_exact_over_the_test_split(trained, tmp_path, family, stream):
    r = edgesnn("export", trained[family], "--target", "onnx", "--stream-dtype", stream, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ir", "model.onnx"]
    r = edgesnn("verify", tmp_path / "model.onnx", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["samples"] == 450 and result["data"] == "digits"
    assert result["mismatches"] == result["mismatched_elements"] == 0 and result["bit_exact"], result
    assert result["runtime"].startswith(f"onnxruntime {ort.__version__}")
    graph = load(tmp_path / "model.ir")
    model = assert_integer_file(tmp_path / "model.onnx", graph)
    assert graph.tensors[graph.outputs[0]].dtype == stream
    convs = sum(op.kind in ("conv2d", "dense") for op in graph.ops)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvInteger") + ops.count("MatMulInteger") >= convs


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory, digits):
    """128 training images: quantize fine-tunes one short epoch on them (the arithmetic is tested, not
    the accuracy); verify runs the whole digits test split."""
    path = tmp_path_factory.mktemp("small") / "digits128.npz"
    np.savez(path, x_train=digits.x_train[:128].numpy(), y_train=digits.y_train[:128].numpy(),
             x_test=digits.x_test[:32].numpy(), y_test=digits.y_test[:32].numpy())
    return path


# every method at both stream dtypes on the CNN, and on each other family one that changes its graph
COMPRESSIONS = [(method, stream, "cnn") for method in METHODS for stream in ("int8", "int16")] + [
    ("bestformer", "int16", "spikeformer"), ("qpsnn", "int16", "resnet"), ("ibra", "int8", "mlp"),
    ("mpbn", "int16", "mlp")]


@pytest.mark.parametrize("method,stream,family", COMPRESSIONS)
def test_compressed_models_are_exact(trained, small_digits, tmp_path, method, stream, family):
    quantize_checkpoint(trained[family], method, tmp_path / "q", Options(epochs=1, stream_dtype=stream),
                        data_spec=str(small_digits))
    path = pipeline.export_model(tmp_path / "q", "onnx", tmp_path / "out")
    r = pipeline.verify(path, "digits")
    assert r["samples"] == 450 and r["mismatches"] == r["mismatched_elements"] == 0 and r["bit_exact"], r
    graph = load(tmp_path / "out" / "model.ir")
    assert graph.tensors[graph.outputs[0]].dtype == stream
    assert_integer_file(path, graph)


def test_untrained_espikeformer_is_exact(tmp_path):
    """The published E-SpikeFormer's structure (tests/sdt_v3_nets.py) on 3x32x32 digits, both stream
    dtypes: its IR holds int8 and int16 products, transposes and an int16 reduce_sum."""
    root = tmp_path / "digits"
    write_images(root, digit_images(None))
    ds = data.load(f"{root}?size=32&channels=3")
    torch.manual_seed(0)
    model = sdt_v3_nets.espikeformer()
    map_neurons(model, {"sdt_v3_nets.MultiSpike": "sfa"}, 4, trust_code=True)
    model = sdt_v3_nets.with_firing_statistics(model).eval()
    seen = set()
    for stream in ("int8", "int16"):
        with threads.pinned(1):
            graph = export.export(model, ds.x_train[:256], stream_dtype=stream)
        seen |= {f"{op.kind}:{graph.tensors[op.inputs[0]].dtype}" for op in graph.ops}
        path = export_integer(graph, tmp_path / f"{stream}.onnx")
        assert_integer_file(path, graph)
        r = compare(path, graph, data.to_nhwc(ds.x_test))
        assert r["samples"] == len(ds.x_test) == 450 and r["mismatches"] == r["mismatched_elements"] == 0, r
    assert {"batch_matmul:int8", "batch_matmul:int16", "transpose:int8", "reduce_sum:int16", "conv2d:int16"} <= seen


# ---------------------------------------------------------------- refusals and checks

def _mlp_graph(trained) -> g.Graph:
    from edgesnn import checkpoint

    model, config = checkpoint.load(trained["mlp"])
    return export.export(model, data.load(config["data"]).x_train[:256])


def test_a_sum_longer_than_int32_holds_is_refused_before_writing(tmp_path):
    k = MAX_DEPTH + 1
    t = {"input": g.TensorSpec([k], "int8", 1.0, 0), "out": g.TensorSpec([2], "int8", 1.0, 0)}
    m, s = _mult(1.0, np.full(2, 1e-4, np.float32), 1.0)
    graph = g.Graph(t, [g.Dense("long", ["input"], "out", multiplier=m, shift=s, weight=np.ones((2, k), np.int8),
                                bias=np.zeros(2, np.int32), weight_scale=np.full(2, 1e-4, np.float32))], "input", ["out"])
    with pytest.raises(EdgesnnError, match=rf"^onnx: IR op 'long' \(dense\) sums {k:,} products per output; "
                       rf"onnxruntime's uint8 kernels hold such a sum in int32 only up to {MAX_DEPTH:,} terms$"):
        export_integer(graph, tmp_path / "model.onnx")
    assert not any(tmp_path.iterdir())


def test_an_op_without_a_lowering_is_refused_naming_it(trained, tmp_path):
    graph = _mlp_graph(trained)
    op = graph.ops[1]
    op.kind = "softmax"  # what a later IR version might add
    with pytest.raises(EdgesnnError, match=rf"^onnx: IR op '{op.name}' \(softmax\) has no ONNX lowering$"):
        export_integer(graph, tmp_path / "model.onnx")
    assert not any(tmp_path.iterdir())


def test_the_file_takes_and_gives_the_irs_integers(trained, tmp_path):
    path = pipeline.export_model(trained["cnn"], "onnx", tmp_path)
    graph = load(tmp_path / "model.ir")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape) == (graph.input, "tensor(int8)", ["batch", 8, 8, 1])  # NHWC, any batch
    assert (out.name, out.type, out.shape) == (graph.outputs[0], "tensor(int8)", ["batch", 10])
    x = data.to_nhwc(data.digits().x_test[:5])
    np.testing.assert_array_equal(sess.run(None, {inp.name: graph.quantize_input(x)})[0], graph.run(x))
    meta = read_metadata(path)
    assert meta["edgesnn.data"] == "digits" and meta["edgesnn.checkpoint"] == str(trained["cnn"].resolve())
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 13 and proto.ir_version == 7 and proto.producer_name == "edgesnn"


def test_a_changed_file_is_caught(trained, tmp_path):
    """verify is not a formality: one flipped weight row makes it report differences and exit 1."""
    path = pipeline.export_model(trained["mlp"], "onnx", tmp_path)
    graph = load(tmp_path / "model.ir")
    dense = next(op for op in graph.ops if op.kind == "dense")
    dense.weight = dense.weight.copy()
    dense.weight[0, :] = -dense.weight[0, :]
    export_integer(graph, path)  # model.ir beside it is the original
    r = pipeline.verify(path, "digits")
    assert r["mismatches"] > 0 and not r["bit_exact"] and r["not_bit_exact_in"] == [r["runtime"]]
    r = edgesnn("verify", path)
    assert r.exit_code == 1 and "not bit-exact with the IR" in r.output
