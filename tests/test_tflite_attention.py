"""TFLite lowering of the attention ops (transpose, reshape of any rank, batch_matmul): every
integer of every tensor equals the golden interpreter's, in LiteRT's reference kernels and in
TFLite Micro, for int8 and int16 streams and products, both adj_y forms; what TFLite cannot
express is refused by name before a file exists."""

import numpy as np
import pytest
import tflite

from attention_graphs import attention_graph, attention_inputs
from edgesnn.backends.tflite import LITERT_REFERENCE, MICRO, export_tflite, lower, run
from edgesnn.backends.tflite.runtime import micro_available
from edgesnn.backends.tflite.validate import validate
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import effective_multiplier, quantize_multipliers

RUNTIMES = [LITERT_REFERENCE, pytest.param(MICRO, marks=pytest.mark.skipif(
    not micro_available(), reason="tflite-micro has x86_64 Linux wheels only"))]


def every_tensor(graph: g.Graph) -> g.Graph:
    """The graph with every op's result as a model output, so each runtime returns all of them."""
    graph.outputs = [op.output for op in graph.ops]
    return graph


def assert_every_tensor_equal(graph: g.Graph, xq: np.ndarray, path, runtime: str) -> None:
    want = graph.run_integer(xq, keep_all=True)
    got = run(path, xq, runtime).outputs
    assert len(got) == len(graph.outputs)
    for name, value in zip(graph.outputs, got):
        assert value.dtype == want[name].dtype, name
        bad = int((value.reshape(want[name].shape) != want[name]).sum())
        assert bad == 0, f"{runtime}: {bad} integers of {name} differ from the IR"


def opcodes(path) -> list[str]:
    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    sub = model.Subgraphs(0)
    codes = [model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())]
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    return [names[codes[sub.Operators(i).OpcodeIndex()]] for i in range(sub.OperatorsLength())]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("adj_y", [True, False])
@pytest.mark.parametrize("stream", ["int8", "int16"])
def test_attention_graph_is_bit_exact(tmp_path, stream, adj_y, runtime):
    """E-SpikeFormer's attention in small (int16 products, a factor folded into a product's scale)."""
    for seed in (0, 1, 2):
        graph = every_tensor(attention_graph(stream, seed, adj_y))
        path = export_tflite(graph, tmp_path / f"attention{seed}.tflite")
        assert_every_tensor_equal(graph, attention_inputs(graph, 64, seed=10 + seed), path, runtime)
    ops = opcodes(path)
    assert ops.count("BATCH_MATMUL") == 2 and ops.count("TRANSPOSE") == 4 + (not adj_y)
    assert "FULLY_CONNECTED" not in ops and "DEQUANTIZE" not in ops


# -- int8 products on rank-4 tensors ----------------------------------------------------------

H, W, C, T, HEADS, D = 4, 6, 16, 2, 2, 4
N = H * W


def _requant(s_in, s_w, s_out):
    return quantize_multipliers(effective_multiplier(s_in, s_w, s_out))


def heads_graph(seed: int, adj_y: bool) -> g.Graph:
    """int8 products over (T, heads, N, d) tensors (rank 4, rank 5 in TFLite): spikes of a 1x1 conv
    split into timesteps and heads, q @ q^T requantized up (a left shift) and clamped, times v,
    into an int8 output with a zero point; moved back to HWC. adj_y False transposes explicitly."""
    rng = np.random.default_rng(seed)
    t, ops = {}, []
    t["input"] = g.TensorSpec([H, W, C], "int8", 0.05, 3)
    t["s"] = g.TensorSpec([H, W, C], "int8", 1.0, 0, spike_D=3)
    ws = np.full(C, 0.01, np.float32)
    m, s = _requant(0.05, ws, 1.0)
    ops.append(g.Conv2D("spikes", ["input"], "s", multiplier=m, shift=s, clamp=[0, 3],
                        weight=rng.integers(-90, 91, (C, 1, 1, C)).astype(np.int8),
                        bias=rng.integers(-300, 300, C).astype(np.int32), weight_scale=ws))
    t["tokens"] = g.TensorSpec([N, T, HEADS, D], "int8", 1.0, 0, spike_D=3)
    ops.append(g.Reshape("split", ["s"], "tokens"))
    t["q"] = g.TensorSpec([T, HEADS, N, D], "int8", 1.0, 0, spike_D=3)
    ops.append(g.Transpose("to_heads", ["tokens"], "q", perm=[1, 2, 0, 3]))
    k = "q"
    if not adj_y:
        t["qT"] = g.TensorSpec([T, HEADS, D, N], "int8", 1.0, 0, spike_D=3)
        ops.append(g.Transpose("q_T", ["q"], "qT", perm=[0, 1, 3, 2]))
        k = "qT"
    t["qk"] = g.TensorSpec([T, HEADS, N, N], "int8", 1.0, 0)
    m, s = _requant(1.0, 1.0, 1.0 / 3.3)  # sums up to 36, times 3.3: the clamp at 100 bites
    ops.append(g.BatchMatMul("q_qT", ["q", k], "qk", adj_y=adj_y, multiplier=m, shift=s, clamp=[0, 100]))
    v = "q"
    if adj_y:
        t["vT"] = g.TensorSpec([T, HEADS, D, N], "int8", 1.0, 0, spike_D=3)
        ops.append(g.Transpose("v_T", ["q"], "vT", perm=[0, 1, 3, 2]))
        v = "vT"
    t["qkv"] = g.TensorSpec([T, HEADS, N, D], "int8", 2.0, -5)
    m, s = _requant(1.0, 1.0, 2.0 * 45.0)  # a factor 45 folded into the product's scale
    ops.append(g.BatchMatMul("qk_v", ["qk", v], "qkv", adj_y=adj_y, multiplier=m, shift=s, clamp=[-5, 60]))
    t["back"] = g.TensorSpec([N, T, HEADS, D], "int8", 2.0, -5)
    ops.append(g.Transpose("from_heads", ["qkv"], "back", perm=[2, 0, 1, 3]))
    t["output"] = g.TensorSpec([H, W, C], "int8", 2.0, -5)
    ops.append(g.Reshape("to_hwc", ["back"], "output"))
    return g.Graph(t, ops, "input", ["output"])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("adj_y", [True, False])
def test_int8_products_of_rank4_tensors_are_bit_exact(tmp_path, adj_y, runtime):
    for seed in (0, 1):
        graph = every_tensor(heads_graph(seed, adj_y))
        xq = np.random.default_rng(20 + seed).integers(-128, 128, (64, H, W, C)).astype(np.int8)
        values = graph.run_integer(xq, keep_all=True)
        assert values["qk"].max() == 100 and values["qkv"].max() > 0  # the clamp and the product both act
        path = export_tflite(graph, tmp_path / f"heads{seed}.tflite")
        assert_every_tensor_equal(graph, xq, path, runtime)
    ops = opcodes(path)
    assert ops.count("BATCH_MATMUL") == 2 and "MINIMUM" in ops


def test_a_multiplier_tflite_cannot_derive_is_refused(tmp_path):
    graph = attention_graph("int8", 0, True)
    op = next(op for op in graph.ops if op.name == "qk_v")
    op.multiplier = op.multiplier + 1  # no float32 relabeling of qk, v or qkv gives this one
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'qk_v' \(batch_matmul\) has a requantization multiplier "
                       r"\(\d+, shift -?\d+\) that no float32 relabeling of its output or one operand makes TFLite derive"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


def test_a_transpose_beyond_tflite_micro_rank_is_refused(tmp_path):
    shape = [2, 3, 2, 2, 3]
    tensors = {"input": g.TensorSpec(shape, "int8", 0.1, 0), "out": g.TensorSpec([3, 2, 2, 3, 2], "int8", 0.1, 0)}
    graph = g.Graph(tensors, [g.Transpose("swap", ["input"], "out", perm=[4, 3, 2, 1, 0])], "input", ["out"])
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'swap' \(transpose\) permutes a tensor of rank 5; TFLite's "
                       r"TRANSPOSE takes at most 4 axes besides the batch axis"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


def test_a_file_with_a_bad_permutation_or_product_is_refused_before_a_runtime(tmp_path):
    """The validator checks what TRANSPOSE and BATCH_MATMUL trust: the perm and the operands' shapes."""
    graph = attention_graph("int8", 0, False)
    model = lower(graph)
    perm = next(t for t in model.tensors if t.name == "k_T.perm")
    perm.data = np.array([0, 1, 1, 3], np.int32)
    with pytest.raises(EdgesnnError, match=r"operator \d+ \(TRANSPOSE\): \[0, 1, 1, 3\] is not a permutation"):
        validate(model.serialize(), "bad.tflite")
    model = lower(graph)
    matmul = next(o for o in model.operators if o.opcode == "BATCH_MATMUL")
    matmul.fields["AdjY"] = True  # k^T read as k: [.., N, dh] x [.., N, dh]^T no longer multiplies
    with pytest.raises(EdgesnnError, match=r"operator \d+ \(BATCH_MATMUL\): .* do not multiply"):
        validate(model.serialize(), "bad.tflite")


def test_an_int16_product_that_can_leave_int32_is_refused(tmp_path):
    """TFLite's int16 kernel casts the requantized sum to int32 before clamping (measured: 75 of 144
    integers wrap on such a graph), the IR saturates: refused from the operands' bounds."""
    tensors = {"input": g.TensorSpec([3, 5], "int16", 1.0, 0), "out": g.TensorSpec([3, 3], "int16", 1 / 4096, 0)}
    m, s = _requant(1.0, 1.0, 1 / 4096)
    op = g.BatchMatMul("gram", ["input", "input"], "out", adj_y=True, multiplier=m, shift=s, clamp=[-32768, 32767])
    graph = g.Graph(tensors, [op], "input", ["out"])
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'gram' \(batch_matmul\) can requantize its product to "
                       r"-21,989,561,466,880 \(operands in \[-32768, 32767\] and \[-32768, 32767\], 5 terms\), beyond int32"):
        export_tflite(graph, tmp_path / "model.tflite")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_int16_gram_matrix_of_rank2_tokens_is_bit_exact(tmp_path, runtime):
    """Rank 2 ([tokens, channels]) and rank 1 reshapes, signed int16 operands, a clamp on both sides."""
    t = {"input": g.TensorSpec([H, W, C], "int8", 0.05, 0), "x": g.TensorSpec([N, C], "int8", 0.05, 0),
         "x16": g.TensorSpec([N, C], "int16", 0.05, 0), "gram": g.TensorSpec([N, N], "int16", 0.16, 0),
         "flat": g.TensorSpec([N * N], "int16", 0.16, 0)}
    m, s = _requant(0.05, 1.0, 0.05)
    ops = [g.Reshape("tokens", ["input"], "x"),
           g.Requantize("widen", ["x"], "x16", multiplier=m, shift=s, clamp=[-32768, 32767])]
    m, s = _requant(0.05, 0.05, 0.16)
    ops += [g.BatchMatMul("gram", ["x16", "x16"], "gram", adj_y=True, multiplier=m, shift=s, clamp=[-1000, 2000]),
            g.Reshape("flatten", ["gram"], "flat")]
    graph = g.Graph(t, ops, "input", ["x", "x16", "gram", "flat"])
    xq = np.random.default_rng(3).integers(-128, 128, (64, H, W, C)).astype(np.int8)
    values = graph.run_integer(xq, keep_all=True)
    assert values["gram"].min() == -1000 and values["gram"].max() == 2000
    path = export_tflite(graph, tmp_path / "gram.tflite")
    assert_every_tensor_equal(graph, xq, path, runtime)
    assert {"MAXIMUM", "MINIMUM", "BATCH_MATMUL"} <= set(opcodes(path))
