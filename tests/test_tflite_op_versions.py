"""Operator versions: every operator code in a .tflite file carries the version TFLite's versioning
rules (op_version.cc, GetBuiltinOperatorVersion) give it as used, not 1.

The rules' cases are spelled out here from the source, version by version; every operator the
lowering writes, over models covering every lowered op (each model family at int8 and int16
streams, the attention graphs, and a graph of pools, int16 requantizations and rank-5 tensors),
is read back from the file and checked against them; and those files run in LiteRT and TFLite
Micro at these versions."""

import numpy as np
import pytest
import tflite
import torch
from torch import nn

from attention_graphs import attention_graph, attention_inputs
from edgesnn import data, export, pipeline
from edgesnn.backends.tflite import LITERT_REFERENCE, MICRO, export_tflite, lower, run
from edgesnn.backends.tflite.op_versions import RULES, Signature, Spec, opcode_versions, signature, version
from edgesnn.backends.tflite.runtime import micro_available
from edgesnn.ir import graph as g
from edgesnn.ir import load
from edgesnn.ir.fixedpoint import effective_multiplier, quantize_multipliers
from edgesnn.neurons import MultiSpike

OPCODE_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {tflite.TensorType.INT8: "int8", tflite.TensorType.INT16: "int16", tflite.TensorType.INT32: "int32",
              tflite.TensorType.INT64: "int64"}


def sig(op, inputs, outputs, options=None, **extra):
    """A signature from (type, rank) pairs: rank n is a tensor of n dimensions of 2."""
    spec = lambda t: Spec(t[0], (2,) * t[1]) if isinstance(t, tuple) else Spec(t, (1, 4, 4, 2))  # noqa: E731
    return Signature(op, tuple(spec(t) for t in inputs), tuple(spec(t) for t in outputs), options or {}, **extra)


# op_version.cc's cases for the operators the lowering writes, as (signature, version), read from
# google-ai-edge/LiteRT tflite/tools/versioning/op_version.cc at 22f0209bb81f981d629f1576209945657ef91b62.
SOURCE_CASES = [
    # CONV_2D: quantized_bias_type 8 (16x8 only), grouped 6, int16 x int16 4, int8 3, int4 filter 7,
    # float hybrid per-channel 5, hybrid 2, else 1 -- the 16x8 kernels (int8 filter) fall through to 1.
    (sig("CONV_2D", ["int8", "int8", "int32"], ["int8"]), 3),
    (sig("CONV_2D", ["int16", "int8", "int64"], ["int16"]), 1),
    (sig("CONV_2D", ["int16", "int8", "int64"], ["int16"], {"QuantizedBiasType": 9}), 8),
    (sig("CONV_2D", ["int8", "int8", "int32"], ["int8"], {"QuantizedBiasType": 9}), 3),
    (sig("CONV_2D", ["int8", "int8", "int32"], ["int8"], grouped=True), 6),
    (sig("CONV_2D", ["int16", "int16", "int64"], ["int16", "int16"]), 4),
    (sig("CONV_2D", ["int8", "int4", "int32"], ["int8"]), 7),
    (sig("CONV_2D", ["float32", "int8", "float32"], ["float32"], per_channel=True), 5),
    (sig("CONV_2D", ["float32", "int8", "float32"], ["float32"]), 2),
    (sig("CONV_2D", ["float32", "float32", "float32"], ["float32"]), 1),
    # DEPTHWISE_CONV_2D: int16 x int16 5, hybrid per-channel 6, hybrid 4, int8 3, int4 7, dilation 2, else 1
    (sig("DEPTHWISE_CONV_2D", ["int8", "int8", "int32"], ["int8"]), 3),
    (sig("DEPTHWISE_CONV_2D", ["int16", "int8", "int64"], ["int16"]), 1),
    (sig("DEPTHWISE_CONV_2D", ["int16", "int8", "int64"], ["int16"], {"DilationHFactor": 2}), 2),
    (sig("DEPTHWISE_CONV_2D", ["int8", "int8", "int32"], ["int8"], {"DilationWFactor": 2}), 3),
    (sig("DEPTHWISE_CONV_2D", ["int16", "int16", "int64"], ["int16", "int16"]), 5),
    (sig("DEPTHWISE_CONV_2D", ["float32", "int8", "float32"], ["float32"], per_channel=True), 6),
    (sig("DEPTHWISE_CONV_2D", ["float32", "int8", "float32"], ["float32"]), 4),
    (sig("DEPTHWISE_CONV_2D", ["int8", "int4", "int32"], ["int8"]), 7),
    # MUL: int16 unquantized or uint32 7, complex64 6, int64 5, int16 4, rescale >= 1 3, int8 2, else 1
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.5, 0.25, 0.5)), 2),
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.5, 0.25, 0.125)), 3),
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.5, 0.25, 0.25)), 2),
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.5, 0.25, 0.0625)), 3),
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.1, 0.3, 0.1 * 0.3)), 3),
    (sig("MUL", ["int8", "int8"], ["int8"], input_quantized=True, mul_scales=(0.5, 0.0, 0.0625)), 2),
    (sig("MUL", ["int16", "int16"], ["int16"], input_quantized=True, mul_scales=(1.0, 1.0, 1.0)), 4),
    (sig("MUL", ["int16", "int16"], ["int16"]), 7),
    (sig("MUL", ["uint32", "uint32"], ["uint32"]), 7),
    (sig("MUL", ["complex64", "complex64"], ["complex64"]), 6),
    (sig("MUL", ["int64", "int64"], ["int64"]), 5),
    (sig("MUL", ["float32", "float32"], ["float32"]), 1),
    # MAX_POOL_2D: int16 3, int8 2, else 1
    (sig("MAX_POOL_2D", ["int8"], ["int8"]), 2),
    (sig("MAX_POOL_2D", ["int16"], ["int16"]), 3),
    (sig("MAX_POOL_2D", ["float32"], ["float32"]), 1),
    # TRANSPOSE: int4 7, rank > 5 6, int16 5, rank > 4 4, bool 3, int8 2, else 1
    (sig("TRANSPOSE", [("int8", 4), ("int32", 1)], [("int8", 4)]), 2),
    (sig("TRANSPOSE", [("int8", 5), ("int32", 1)], [("int8", 5)]), 4),
    (sig("TRANSPOSE", [("int8", 6), ("int32", 1)], [("int8", 6)]), 6),
    (sig("TRANSPOSE", [("int16", 4), ("int32", 1)], [("int16", 4)]), 5),
    (sig("TRANSPOSE", [("int16", 5), ("int32", 1)], [("int16", 5)]), 5),
    (sig("TRANSPOSE", [("int16", 6), ("int32", 1)], [("int16", 6)]), 6),
    (sig("TRANSPOSE", [("bool", 4), ("int32", 1)], [("bool", 4)]), 3),
    (sig("TRANSPOSE", [("int4", 4), ("int32", 1)], [("int4", 4)]), 7),
    (sig("TRANSPOSE", [("float32", 4), ("int32", 1)], [("float32", 4)]), 1),
    # QUANTIZE: int4 4, per-channel output 3, int16 output 2, else 1
    (sig("QUANTIZE", ["int8"], ["int8"]), 1),
    (sig("QUANTIZE", ["int16"], ["int8"]), 1),
    (sig("QUANTIZE", ["int8"], ["int16"]), 2),
    (sig("QUANTIZE", ["int16"], ["int32"]), 1),
    (sig("QUANTIZE", ["int32"], ["int8"]), 1),
    (sig("QUANTIZE", ["int16"], ["int16"]), 2),
    (sig("QUANTIZE", ["float32"], ["int8"], per_channel=True), 3),
    (sig("QUANTIZE", ["int8"], ["int4"]), 4),
    # MAXIMUM and MINIMUM: int16 4, broadcast with rank > 4 3, int8 2, else 1
    (sig("MAXIMUM", [("int8", 4), ("int8", 1)], [("int8", 4)]), 2),
    (sig("MAXIMUM", [("int8", 5), ("int8", 1)], [("int8", 5)]), 3),
    (sig("MAXIMUM", [("int8", 5), ("int8", 5)], [("int8", 5)]), 2),
    (sig("MINIMUM", [("int8", 5), ("int8", 1)], [("int8", 5)]), 3),
    (sig("MINIMUM", [("int16", 4), ("int16", 1)], [("int16", 4)]), 4),
    (sig("MINIMUM", [("int16", 5), ("int16", 1)], [("int16", 5)]), 4),
    (sig("MINIMUM", [("float32", 5), ("float32", 1)], [("float32", 5)]), 3),
    (sig("MINIMUM", [("float32", 4), ("float32", 4)], [("float32", 4)]), 1),
    # ADD: int16 unquantized 5, int64 4, int16 with pot_scale_int16 false 3, int8 2, else 1
    (sig("ADD", ["int8", "int8"], ["int8"], {"PotScaleInt16": False}, input_quantized=True), 2),
    (sig("ADD", ["int16", "int16"], ["int16"], {"PotScaleInt16": False}, input_quantized=True), 3),
    (sig("ADD", ["int16", "int16"], ["int16"], {}, input_quantized=True), 1),  # schema default: pot_scale_int16 true
    (sig("ADD", ["int16", "int16"], ["int16"], {"PotScaleInt16": False}), 5),
    (sig("ADD", ["int64", "int64"], ["int64"]), 4),
    (sig("ADD", ["int32", "int32"], ["int32"]), 1),
    (sig("ADD", ["float32", "float32"], ["float32"]), 1),
    # BATCH_MATMUL: int16 3, int8 2, hybrid with asymmetric inputs 4, else 1
    (sig("BATCH_MATMUL", ["int8", "int8"], ["int8"]), 2),
    (sig("BATCH_MATMUL", ["int16", "int16"], ["int16"]), 3),
    (sig("BATCH_MATMUL", ["float32", "int8"], ["float32"], {"AsymmetricQuantizeInputs": True}), 4),
    (sig("BATCH_MATMUL", ["float32", "int8"], ["float32"]), 1),
    # PAD: bool 5, rank > 4 4, int16 3, int8 2, else 1
    (sig("PAD", [("int8", 4), ("int32", 2)], [("int8", 4)]), 2),
    (sig("PAD", [("int16", 4), ("int32", 2)], [("int16", 4)]), 3),
    (sig("PAD", [("int8", 5), ("int32", 2)], [("int8", 5)]), 4),
    (sig("PAD", [("bool", 4), ("int32", 2)], [("bool", 4)]), 5),
    (sig("PAD", [("float32", 4), ("int32", 2)], [("float32", 4)]), 1),
    # STRIDED_SLICE: offset 8, uint32 7, ellipsis or new axis mask 6, string 5, rank > 4 4, bool 3, int8 2, else 1
    (sig("STRIDED_SLICE", [("int32", 4)] * 4, [("int32", 4)]), 1),
    (sig("STRIDED_SLICE", [("int32", 5)] * 4, [("int32", 5)]), 4),
    (sig("STRIDED_SLICE", [("int8", 4)] * 4, [("int8", 4)]), 2),
    (sig("STRIDED_SLICE", [("int8", 4)] * 4, [("int8", 4)], {"Offset": True}), 8),
    (sig("STRIDED_SLICE", [("uint32", 4)] * 4, [("uint32", 4)]), 7),
    (sig("STRIDED_SLICE", [("int32", 4)] * 4, [("int32", 4)], {"EllipsisMask": 1}), 6),
    (sig("STRIDED_SLICE", [("int32", 4)] * 4, [("int32", 4)], {"NewAxisMask": 2}), 6),
    (sig("STRIDED_SLICE", [("string", 5)] * 4, [("string", 5)]), 5),
    (sig("STRIDED_SLICE", [("bool", 4)] * 4, [("bool", 4)]), 3),
    # RESHAPE: no case, the default 1
    (sig("RESHAPE", [("int8", 5), ("int32", 1)], [("int8", 4)]), 1),
    (sig("RESHAPE", [("int16", 4), ("int32", 1)], [("int16", 2)]), 1),
]


@pytest.mark.parametrize("case,want", SOURCE_CASES, ids=lambda c: c.op if isinstance(c, Signature) else str(c))
def test_the_table_gives_op_version_cc_versions(case, want):
    assert version(case) == want


def test_every_operator_of_the_table_has_source_cases():
    assert {case.op for case, _ in SOURCE_CASES} == set(RULES)


def expected_version(op: str, types: list[str], ranks: list[int], out_type: str, mul_rescale: float | None) -> int:
    """What op_version.cc gives each operator as edgesnn writes it (types: its inputs'), written out here."""
    a = types[0]
    broadcast_over_4 = len(ranks) >= 2 and ranks[0] != ranks[1] and max(ranks) > 4
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {"int8": 3, "int16": 1}[a]  # int16: the 16x8 kernels, an int8 filter
    if op == "QUANTIZE":
        return 2 if out_type == "int16" else 1
    if op == "ADD":
        return {"int8": 2, "int16": 3, "int32": 1}[a]  # int16: pot_scale_int16 false; int32: a window sum's
    if op == "MUL":
        return 3 if mul_rescale >= 1.0 else 2
    if op == "MAX_POOL_2D":
        return {"int8": 2, "int16": 3}[a]
    if op == "TRANSPOSE":
        return 5 if a == "int16" else 4 if ranks[0] > 4 else 2
    if op in ("MAXIMUM", "MINIMUM"):
        return 4 if a == "int16" else 3 if broadcast_over_4 else 2
    if op == "BATCH_MATMUL":
        return {"int8": 2, "int16": 3}[a]
    if op == "PAD":
        return 4 if ranks[0] > 4 else {"int8": 2, "int16": 3}[a]
    if op == "STRIDED_SLICE":
        return 4 if ranks[0] > 4 else 2 if a == "int8" else 1
    assert op == "RESHAPE", op
    return 1


def file_operators(data: bytes):
    """(opcode versions, [(opcode, input types, input ranks, output type, MUL rescale)]) read from the file."""
    model = tflite.Model.GetRootAs(data, 0)
    sub = model.Subgraphs(0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    versions = {OPCODE_NAMES[c.BuiltinCode()]: c.Version() for c in codes}
    rows = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        ins = [sub.Tensors(op.Inputs(k)) for k in range(op.InputsLength())]
        out = sub.Tensors(op.Outputs(0))
        name = OPCODE_NAMES[codes[op.OpcodeIndex()].BuiltinCode()]
        rescale = None
        if name == "MUL":
            s = [np.float32(t.Quantization().Scale(0)) for t in (ins[0], ins[1], out)]
            rescale = float(s[0] * s[1] / s[2])
        rows.append((name, [TYPE_NAMES[t.Type()] for t in ins], [t.ShapeLength() for t in ins], TYPE_NAMES[out.Type()],
                     rescale))
    return versions, rows


def _requant(s_in, s_w, s_out):
    return quantize_multipliers(effective_multiplier(s_in, s_w, s_out))


def pools_graph() -> g.Graph:
    """What the model families do not write: MAX_POOL_2D at int8 and int16, int16 -> int16 QUANTIZE
    with an int16 clamp, TRANSPOSE of rank-5 int16 and int8 tensors, MAXIMUM / MINIMUM on rank 5, an
    int16 window sum (the 16x8 DEPTHWISE_CONV_2D) and an int8 BATCH_MATMUL."""
    t = {"input": g.TensorSpec([8, 8, 8], "int8", 0.05, 3), "p8": g.TensorSpec([4, 4, 8], "int8", 0.05, 3),
         "w16": g.TensorSpec([4, 4, 8], "int16", 0.01, 0), "p16": g.TensorSpec([2, 2, 8], "int16", 0.01, 0),
         "n16": g.TensorSpec([2, 2, 8], "int16", 0.02, 0), "r16": g.TensorSpec([2, 2, 2, 4], "int16", 0.02, 0),
         "t16": g.TensorSpec([2, 4, 2, 2], "int16", 0.02, 0), "r8": g.TensorSpec([2, 4, 2, 2], "int8", 0.1, 0),
         "output": g.TensorSpec([2, 2, 4, 2], "int8", 0.1, 0), "sum16": g.TensorSpec([2, 2, 8], "int16", 0.05, 0),
         "x8": g.TensorSpec([4, 4, 8], "int8", 0.05, 0), "tokens": g.TensorSpec([16, 8], "int8", 0.05, 0),
         "gram": g.TensorSpec([16, 16], "int8", 0.5, 0)}
    ops = [g.MaxPool2D("pool8", ["input"], "p8", kernel=[2, 2], stride=[2, 2])]
    m, s = _requant(0.05, 1.0, 0.01)
    ops.append(g.Requantize("widen", ["p8"], "w16", multiplier=m, shift=s, clamp=[-32768, 32767]))
    ops.append(g.MaxPool2D("pool16", ["w16"], "p16", kernel=[2, 2], stride=[2, 2]))
    m, s = _requant(0.01, 1.0, 0.02)
    ops.append(g.Requantize("halve", ["p16"], "n16", multiplier=m, shift=s, clamp=[-200, 300]))
    ops.append(g.Reshape("split", ["n16"], "r16"))
    ops.append(g.Transpose("swap16", ["r16"], "t16", perm=[0, 3, 1, 2]))
    m, s = _requant(0.02, 1.0, 0.1)
    ops.append(g.Requantize("narrow", ["t16"], "r8", multiplier=m, shift=s, clamp=[-20, 30]))
    ops.append(g.Transpose("swap8", ["r8"], "output", perm=[2, 0, 1, 3]))
    ops.append(g.SumPool2D("sum16", ["p8"], "sum16", kernel=[2, 2], stride=[2, 2]))
    m, s = _requant(0.05, 1.0, 0.05)
    ops += [g.Requantize("center", ["p8"], "x8", multiplier=m, shift=s, clamp=[-128, 127]),
            g.Reshape("tokens", ["x8"], "tokens")]
    m, s = _requant(0.05, 0.05, 0.5)
    ops.append(g.BatchMatMul("gram", ["tokens", "tokens"], "gram", adj_y=True, multiplier=m, shift=s, clamp=[-128, 127]))
    return g.Graph(t, ops, "input", ["output"])


class PooledStream(nn.Module):
    """A residual int16 stream average pooled 2x2 into a neuron: an int32 window sum (QUANTIZE into
    int32, STRIDED_SLICE, int32 ADD, QUANTIZE back)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.sn1, self.conv1 = MultiSpike(4), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.pool, self.sn2, self.fc = nn.AvgPool2d(2), MultiSpike(4), nn.Linear(4 * 16, 10)

    def forward(self, x):
        u = self.stem(x)
        u = u + self.conv1(self.sn1(u))
        return self.fc(torch.flatten(self.sn2(self.pool(u)), 1))


def pooled_stream_graph() -> g.Graph:
    torch.manual_seed(0)
    return export.export(PooledStream().eval(), data.digits().x_train[:256], stream_dtype="int16")


_COVERING: dict = {}


def covering_graphs(trained, tmp_path_factory) -> dict[str, g.Graph]:
    """Every model family at int8 and int16 streams (what export writes), the attention graphs and
    :func:`pools_graph`: together, every operator and tensor type the lowering writes. Built once
    per test session (tests/test_tflite_runtime_214.py runs them too)."""
    key = tuple(sorted(str(p) for p in trained.values()))
    if key not in _COVERING:
        graphs, root = {}, tmp_path_factory.mktemp("covering")
        for family in ("mlp", "cnn", "resnet", "spikeformer"):
            for stream in ("int8", "int16"):
                out = root / f"{family}-{stream}"
                graphs[f"{family}-{stream}"] = load(pipeline.export_model(trained[family], "ir", out, stream_dtype=stream))
        for stream in ("int8", "int16"):
            for adj_y in (True, False):
                graphs[f"attention-{stream}-{'adj' if adj_y else 'transposed'}"] = attention_graph(stream, 0, adj_y)
        graphs["pools"] = pools_graph()
        graphs["pooled-stream"] = pooled_stream_graph()
        _COVERING[key] = graphs
    return _COVERING[key]


@pytest.mark.slow
def test_every_operator_written_has_the_version_of_the_rules(trained, tmp_path_factory):
    seen = {}
    for name, graph in covering_graphs(trained, tmp_path_factory).items():
        model = lower(graph)
        data = model.serialize()
        versions, rows = file_operators(data)
        assert versions == opcode_versions(model.operators, model.tensors), name  # the table, written
        assert len(rows) == len(model.operators)
        for (op, types, ranks, out_type, rescale), written in zip(rows, model.operators):
            want = expected_version(op, types, ranks, out_type, rescale)
            table = version(signature(written.opcode, written.inputs, written.outputs, written.fields, model.tensors))
            assert table == want, (name, op, types, ranks, out_type)
            assert versions[op] >= want  # an operator code has the highest version its operators need
            seen.setdefault((op, types[0], out_type), set()).add(want)
        for op, v in versions.items():
            assert v == max(expected_version(*row) for row in rows if row[0] == op), (name, op)
    assert {op for op, _, _ in seen} == set(RULES)  # every operator the lowering writes, and only those
    # each version a rule gives an edgesnn file shows up at least once
    got = {(op, v) for (op, _, _), vs in seen.items() for v in vs}
    assert got >= {("CONV_2D", 3), ("CONV_2D", 1), ("DEPTHWISE_CONV_2D", 3), ("DEPTHWISE_CONV_2D", 1),
                   ("QUANTIZE", 1), ("QUANTIZE", 2), ("ADD", 2), ("ADD", 3), ("MUL", 3), ("MAX_POOL_2D", 2),
                   ("MAX_POOL_2D", 3), ("TRANSPOSE", 2), ("TRANSPOSE", 4), ("TRANSPOSE", 5), ("MAXIMUM", 2),
                   ("MAXIMUM", 3), ("MAXIMUM", 4), ("MINIMUM", 2), ("MINIMUM", 3), ("MINIMUM", 4),
                   ("BATCH_MATMUL", 2), ("BATCH_MATMUL", 3), ("PAD", 2), ("PAD", 3), ("RESHAPE", 1),
                   ("STRIDED_SLICE", 1), ("ADD", 1)}


RUNTIMES = [LITERT_REFERENCE, pytest.param(MICRO, marks=pytest.mark.skipif(
    not micro_available(), reason="tflite-micro has x86_64 Linux wheels only"))]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_files_at_these_versions_run_bit_exact(tmp_path, runtime):
    """The runtimes load the higher versions (TRANSPOSE 4 and 5, MINIMUM 3 and 4, MAX_POOL_2D 3, ...)."""
    for name, graph in {"pools": pools_graph(), "attention": attention_graph("int16", 1, True)}.items():
        graph.outputs = [op.output for op in graph.ops]  # every tensor compared
        path = export_tflite(graph, tmp_path / f"{name}.tflite")
        xq = attention_inputs(graph, 32, seed=5)
        want = graph.run_integer(xq, keep_all=True)
        for out, got in zip(graph.outputs, run(path, xq, runtime).outputs):
            assert np.array_equal(got.reshape(want[out].shape), want[out]), (name, out)
        versions, _ = file_operators(path.read_bytes())
        assert max(versions.values()) >= 4
