"""The attention ops (transpose, reshape of any rank, batch_matmul) in the Lava backend: every output
integer of Lava's simulation equals the golden interpreter's, int8 and int16 streams and products,
both adj_y forms, graded and spike-train modes; the Loihi 2 report says how each product maps onto
cores; netx and NIR refuse the ops by name, and nothing is written."""

import json

import numpy as np
import pytest

from attention_graphs import attention_graph, attention_inputs
from edgesnn.backends.lava import REPORT_FILE, NETWORK_FILE, export_lava, verify_lava
from edgesnn.backends.lava.arith import STATE_MAX
from edgesnn.backends.lava.netx import netx_supported, write_netx
from edgesnn.backends.lava.network import run_in_subprocess
from edgesnn.backends.nir import export_nir
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import effective_multiplier, quantize_multipliers

pytestmark = pytest.mark.slow  # each case starts a Lava simulation (about a second on 32 samples)

SAMPLES = 32
H, W, C, HEADS = 4, 6, 8, 2
N, DH = H * W, C // HEADS


def loihi_attention(stream: str, adj_y: bool) -> g.Graph:
    """attention_graph, its int16 convs' weights halved: with the whole int16 input range, the
    published ones can accumulate beyond Loihi 2's 24-bit state (see the refusal test below)."""
    graph = attention_graph(stream, 0, adj_y)
    if stream == "int16":
        for op in graph.ops:
            if op.kind == "conv2d" and graph.tensors[op.inputs[0]].dtype == "int16":
                op.weight = (op.weight // 2).astype(np.int8)
    return graph


def _requant(s_in, s_w, s_out):
    return quantize_multipliers(effective_multiplier(s_in, s_w, s_out))


def signed_products_graph(adj_y: bool) -> g.Graph:
    """int8 products (int32 accumulator, the int8 requantization) of signed operands straight from
    the input: image -> (N, C) tokens -> heads (heads, N, d); gram = h @ h^T clamped both ways;
    gram @ h into an output with a zero point; back to HWC, so the output is a transposed view."""
    t, ops = {}, []
    t["input"] = g.TensorSpec([H, W, C], "int8", 0.05, 0)
    t["tokens"] = g.TensorSpec([N, C], "int8", 0.05, 0)
    ops.append(g.Reshape("tokens", ["input"], "tokens"))
    t["split"] = g.TensorSpec([N, HEADS, DH], "int8", 0.05, 0)
    ops.append(g.Reshape("split", ["tokens"], "split"))
    t["h"] = g.TensorSpec([HEADS, N, DH], "int8", 0.05, 0)
    ops.append(g.Transpose("heads", ["split"], "h", perm=[1, 0, 2]))
    other = "h"
    if not adj_y:
        t["hT"] = g.TensorSpec([HEADS, DH, N], "int8", 0.05, 0)
        ops.append(g.Transpose("h_T", ["h"], "hT", perm=[0, 2, 1]))
        other = "hT"
    t["gram"] = g.TensorSpec([HEADS, N, N], "int8", 0.5, 0)
    m, s = _requant(0.05, 0.05, 0.5 / 100)  # sums up to 65536 / 100: the clamp bites on both sides
    ops.append(g.BatchMatMul("gram", ["h", other], "gram", adj_y=adj_y, multiplier=m, shift=s, clamp=[-100, 120]))
    t["mixed"] = g.TensorSpec([HEADS, N, DH], "int8", 2.0, -5)
    m, s = _requant(0.5, 0.05, 2.0 * 3.0)
    ops.append(g.BatchMatMul("mix", ["gram", "h"], "mixed", multiplier=m, shift=s, clamp=[-128, 127]))
    t["back"] = g.TensorSpec([N, HEADS, DH], "int8", 2.0, -5)
    ops.append(g.Transpose("from_heads", ["mixed"], "back", perm=[1, 0, 2]))
    t["output"] = g.TensorSpec([H, W, C], "int8", 2.0, -5)
    ops.append(g.Reshape("to_hwc", ["back"], "output"))
    return g.Graph(t, ops, "input", ["output"])


def as_float(graph: g.Graph, xq: np.ndarray) -> np.ndarray:
    """Real inputs that quantize back to exactly ``xq`` (what export's calibration and verify take)."""
    x = graph.dequantize(graph.input, xq).astype(np.float32)
    assert np.array_equal(graph.quantize_input(x), xq)
    return x


def run_lava(graph: g.Graph, xq: np.ndarray, mode: str, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """Export to a Lava folder (process graph, report), simulate it; (Lava's outputs, the IR's)."""
    out = tmp_path / "lava"
    export_lava(graph, out, mode, as_float(graph, xq))
    got = run_in_subprocess(out / "model.ir", xq, mode, 300)
    want = graph.run_integer(xq)[graph.outputs[0]].reshape(len(xq), -1)
    return got, want


@pytest.mark.parametrize("adj_y", [True, False])
@pytest.mark.parametrize("stream", ["int8", "int16"])
def test_attention_is_bit_exact_in_lava(tmp_path, stream, adj_y):
    """int16 products (the 16x16 requantization) of spike counts; both adj_y forms."""
    graph = loihi_attention(stream, adj_y)
    xq = attention_inputs(graph, SAMPLES)
    got, want = run_lava(graph, xq, "graded", tmp_path)
    assert got.shape == want.shape == (SAMPLES, H * W * C)
    assert int((got != want).sum()) == 0
    assert len(np.unique(want)) > 100  # the output really varies
    network = json.loads((tmp_path / "lava" / NETWORK_FILE).read_text())
    assert len(network["processes"]) == sum(op.kind not in ("reshape", "transpose") for op in graph.ops)
    products = [p for p in network["processes"] if p["kind"] == "batch_matmul"]
    assert [p["name"] for p in products] == ["q_kT", "qk_v"]
    k_view = products[0]["views"][1]  # k^T: wiring (a permutation of k16's vector) when adj_y is False
    assert k_view == ([] if adj_y else [{"shape": [HEADS, N, DH], "perm": [0, 2, 1]}])


@pytest.mark.parametrize(("stream", "adj_y", "mode"), [("int8", True, "rate-burst"), ("int16", False, "bit-plane")])
def test_attention_spike_trains_are_bit_exact_in_lava(tmp_path, stream, adj_y, mode):
    """q, k and v travel as spike trains into the products; verify reads the folder as the CLI does."""
    graph = loihi_attention(stream, adj_y)
    xq = attention_inputs(graph, SAMPLES)
    got, want = run_lava(graph, xq, mode, tmp_path)
    assert int((got != want).sum()) == 0
    network = json.loads((tmp_path / "lava" / NETWORK_FILE).read_text())
    q_kT = next(p for p in network["processes"] if p["name"] == "q_kT")
    assert q_kT["burst_in"] == [True, True] and network["window"] == (4 if mode == "rate-burst" else 3)
    res = verify_lava(tmp_path / "lava", as_float(graph, xq), SAMPLES)
    assert (res["samples"], res["mismatches"], res["mode"]) == (SAMPLES, 0, mode)


@pytest.mark.parametrize("adj_y", [True, False])
def test_int8_products_of_signed_operands_are_bit_exact_in_lava(tmp_path, adj_y):
    graph = signed_products_graph(adj_y)
    xq = np.random.default_rng(5).integers(-128, 128, (SAMPLES, H, W, C)).astype(np.int8)
    values = graph.run_integer(xq, keep_all=True)
    assert values["gram"].min() == -100 and values["gram"].max() == 120  # both clamps act
    assert values["mixed"].min() < 0 < values["mixed"].max()
    got, want = run_lava(graph, xq, "graded", tmp_path)
    assert int((got != want).sum()) == 0
    network = json.loads((tmp_path / "lava" / NETWORK_FILE).read_text())
    assert network["output_view"] == [{"shape": [HEADS, N, DH], "perm": [1, 0, 2]}]  # the sink reads a transpose
    assert network["processes"][0]["inputs"] == ["input", "input"]  # gram reads the source through wiring


def test_the_loihi2_report_maps_each_product_onto_cores(tmp_path):
    graph = loihi_attention("int8", True)
    xq = attention_inputs(graph, SAMPLES)
    export_lava(graph, tmp_path / "lava", "graded", as_float(graph, xq))
    report = json.loads((tmp_path / "lava" / REPORT_FILE).read_text())
    rows = {row["name"]: row for row in report["layers"]}
    for name in ("q_heads", "k_heads", "v_heads", "merge_heads", "q_split", "to_hwc"):
        assert (rows[name]["neurons"], rows[name]["synaptic_connections"], rows[name]["cores"]) == (0, 0, 0)
    for name, (m, k, n) in {"q_kT": (N, DH, N), "qk_v": (N, N, DH)}.items():
        row, p = rows[name], rows[name]["product"]
        terms = HEADS * m * k * n
        assert (p["batch"], p["m"], p["k"], p["n"]) == (HEADS, m, k, n)
        assert (p["product_compartments"], p["sum_neurons"]) == (terms, HEADS * m * n)
        assert row["neurons"] == terms + HEADS * m * n and row["synapses"] == 0
        assert row["synaptic_connections"] == p["operand_synapses"] + p["sum_synapses"] == 3 * terms
        assert row["fan_in"] == k and row["cores"] >= 1 and p["native"] is False
        assert 0 < row["synops"] <= row["synaptic_connections"]
        assert p["alternative"]["neurons"] == HEADS * m * n and p["alternative"]["synapses"] == HEADS * k * n
        assert "integer multiplies" in p["products"]  # q, k, v are counts up to 4, not binary spikes
    assert rows["q_kT"]["product"]["max_state"] == {"product_compartment": 16, "sum_neuron": 64}
    assert rows["qk_v"]["product"]["max_state"] == {"product_compartment": 64 * 4, "sum_neuron": 64 * 4 * N}
    assert report["neurons"] == sum(row["neurons"] for row in rows.values())
    assert any("batch_matmul" in line and "product compartments" in line for line in report["model"])


def test_binary_spike_operands_make_the_products_additions_only(tmp_path):
    graph = loihi_attention("int8", True)
    for op in graph.ops:  # q, k and v as binary spikes
        if op.name in ("q_conv", "k_conv", "v_conv"):
            op.clamp = [0, 1]
    export_lava(graph, tmp_path / "lava", "graded", as_float(graph, attention_inputs(graph, 8)))
    rows = {row["name"]: row for row in json.loads((tmp_path / "lava" / REPORT_FILE).read_text())["layers"]}
    assert rows["q_kT"]["product"]["products"].startswith("AND of binary spikes")
    assert rows["q_kT"]["product"]["max_state"] == {"product_compartment": 1, "sum_neuron": DH}


def product_graph(dtype: str, tokens: int, k: int) -> g.Graph:
    """input [tokens, k] times its own transpose: the smallest graph with a batch_matmul."""
    tensors = {"input": g.TensorSpec([tokens, k], dtype, 1.0, 0), "gram": g.TensorSpec([tokens, tokens], dtype, 1.0, 0)}
    m, s = _requant(1.0, 1.0, 1.0)
    op = g.BatchMatMul("gram", ["input", "input"], "gram", adj_y=True, multiplier=m, shift=s,
                       clamp=list(g.dtype_range(dtype)))
    return g.Graph(tensors, [op], "input", ["gram"])


def test_a_state_beyond_24_bits_is_refused_naming_the_op_and_nothing_is_written(tmp_path):
    graph = attention_graph("int16", 0, True)  # its int16 convs, over the whole int16 range
    with pytest.raises(EdgesnnError, match=r"^lava: IR op 'q_conv' \(conv2d\) can accumulate \d+, beyond Loihi 2's "
                                           r"24-bit neuron state"):
        export_lava(graph, tmp_path / "lava", "graded", as_float(graph, attention_inputs(graph, 4)))
    state = rf", beyond Loihi 2's 24-bit neuron state \(\|state\| <= {STATE_MAX}\)$"
    with pytest.raises(EdgesnnError, match=rf"^lava: IR op 'gram' \(batch_matmul\): a product compartment can reach "
                                           rf"{32768 * 32768}{state}"):  # one int16 x int16 product
        export_lava(product_graph("int16", 3, 2), tmp_path / "lava", "graded", np.zeros((2, 3, 2), np.float32))
    with pytest.raises(EdgesnnError, match=rf"^lava: IR op 'gram' \(batch_matmul\): a sum neuron can reach "
                                           rf"{128 * 128 * 600}{state}"):  # 600 int8 x int8 products
        export_lava(product_graph("int8", 3, 600), tmp_path / "lava", "graded", np.zeros((2, 3, 600), np.float32))
    wide = product_graph("int8", 3, 600)  # the IR's int32 accumulator holds it, Loihi 2's 24-bit state does not
    assert wide.run_integer(np.full((1, 3, 600), -128, np.int8))["gram"].max() == 127
    assert not (tmp_path / "lava").exists()


def test_netx_refuses_the_attention_ops_by_name(tmp_path):
    graph = loihi_attention("int8", True)
    export_lava(graph, tmp_path / "lava", "graded", as_float(graph, attention_inputs(graph, 4)))
    network = json.loads((tmp_path / "lava" / NETWORK_FILE).read_text())
    assert network["netx"] is None and not (tmp_path / "lava" / "model.net").exists()
    assert network["netx_note"] == ("netx cannot express IR op 'q_heads' (transpose): netx has no layer that "
                                    "permutes a tensor's axes (its only reshape is a flatten before a dense); it "
                                    "stays Lava-only")
    product = product_graph("int8", N, DH)
    ok, reason = netx_supported(product)
    assert not ok and reason == ("netx cannot express IR op 'gram' (batch_matmul): netx layers hold trained weights "
                                 "and read one stream; a product of two activation tensors has no netx layer; it "
                                 "stays Lava-only")
    with pytest.raises(EdgesnnError, match=r"'gram' \(batch_matmul\)"):
        write_netx(product, tmp_path / "model.net")
    assert not (tmp_path / "model.net").exists()


def test_nir_refuses_the_attention_ops_and_reshapes_it_cannot_express(tmp_path):
    path = tmp_path / "model.nir"
    with pytest.raises(EdgesnnError, match=r"^op 'q_heads' \(transpose\) has no NIR form: NIR has no node "
                                           r"that permutes a tensor's axes"):
        export_nir(attention_graph("int8", 0, True), path)
    with pytest.raises(EdgesnnError, match=r"^op 'gram' \(batch_matmul\) has no NIR form: NIR has no node "
                                           r"for the product of two activation tensors"):
        export_nir(product_graph("int8", N, DH), path)  # named before the topology (it reads two inputs)
    tensors = {"input": g.TensorSpec([H, W, C], "int8", 0.05, 0), "tokens": g.TensorSpec([N, C], "int8", 0.05, 0),
               "out": g.TensorSpec([N, 3], "int8", 0.1, 0)}
    ws = np.full(3, 0.01, np.float32)
    m, s = _requant(0.05, ws, 0.1)
    dense = g.Dense("mix", ["tokens"], "out", multiplier=m, shift=s, weight=np.ones((3, C), np.int8),
                    bias=np.zeros(3, np.int32), weight_scale=ws)
    tokens = g.Graph(tensors, [g.Reshape("tokens", ["input"], "tokens"), dense], "input", ["out"])
    with pytest.raises(EdgesnnError, match=r"^op 'tokens' \(reshape\) has no NIR form: reshaping \(4, 6, 8\) "
                                           r"\(rank 3\) to \(24, 8\) \(rank 2\) is not a flatten"):
        export_nir(tokens, path)
    assert not any(tmp_path.iterdir())
