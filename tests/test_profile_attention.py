"""Profiling spike-driven attention (batch_matmul, transpose, reshape of any rank): op counts are
recomputed here from the interpreter's own tensors, pair by pair, and compared exactly."""

import json

import numpy as np
import pytest
from attention_graphs import C, DH, HEADS, H, N, W, attention_graph, attention_inputs
from typer.testing import CliRunner

from edgesnn.cli import app
from edgesnn.profile import memory, ops
from edgesnn.profile.energy import E_AC_PJ, E_MAC_PJ, energy_45nm

SAMPLES = 24


def _popcount(x: np.ndarray) -> np.ndarray:
    x = np.abs(x.astype(np.int64))
    return sum((x >> i) & 1 for i in range(16))


def _products(values: dict, a: str, b: str, adj_y: bool) -> np.ndarray:
    """Every product a[.., m, k] * b[.., k, n], kept apart: (samples, heads, M, K, N)."""
    x, y = values[a].astype(np.int64), values[b].astype(np.int64)
    y = np.swapaxes(y, -1, -2) if adj_y else y
    return x[..., :, :, None] * y[..., None, :, :]


def _binary(graph):
    """The same graph with binary spikes: every neuron clamps to [0, 1]."""
    for spec in graph.tensors.values():
        if spec.spike_D is not None:
            spec.spike_D = 1
    for op in graph.ops:
        if getattr(op, "clamp", None) == [0, 4]:
            op.clamp = [0, 1]
    return graph


@pytest.mark.parametrize("stream, adj_y", [("int8", True), ("int16", False)])
def test_attention_counts_match_the_pairs_of_the_interpreters_tensors(stream, adj_y):
    graph = attention_graph(stream, seed=3, adj_y=adj_y)
    xq = attention_inputs(graph, SAMPLES)
    values = graph.run_integer(xq, keep_all=True)
    rows = {r["name"]: r for r in ops.layer_ops(graph, xq)}
    heads = ["k_T"] if not adj_y else []
    assert list(rows) == ["q_conv", "q_heads", "k_conv", "k_heads", "v_conv", "v_heads", *heads, "q_kT", "qk_v",
                          "merge_heads", "proj"]  # reshapes are views: no row

    # q @ k^T: both operands spike counts in [0, 4] -> additions, one per pair of spikes
    qk = _products(values, "q16", "kT" if not adj_y else "k16", adj_y)
    assert qk.shape == (SAMPLES, HEADS, N, DH, N)
    assert 0 < np.count_nonzero(qk) < qk.size and values["q16"].max() > 1  # sparse, and multi-level spikes
    row = rows["q_kT"]
    assert row["kind"] == "batch_matmul" and row["counted_as"] == "additions"
    assert row["macs"] == HEADS * N * DH * N
    assert row["nonzero_products"] == np.count_nonzero(qk) / SAMPLES
    assert row["sops"] == row["sops_by_code"]["rate-burst"] == qk.sum() / SAMPLES  # s_a x s_b spike pairs
    k_t = np.swapaxes(values["k16"], -1, -2)  # k^T: [heads, dh, tokens]
    bits = _popcount(values["q16"])[..., :, :, None] * _popcount(k_t)[..., None, :, :]  # set bits meet set bits
    assert row["sops_by_code"]["bit-plane"] == bits.sum() / SAMPLES < row["sops"]
    assert row["timesteps"] == {"rate-burst": 4, "bit-plane": 3} and row["firing_rate"] is None

    # (q k^T) @ v: q k^T is a plain integer, not spikes -> every product a MAC
    qkv = _products(values, "qk", "v16", False)
    row = rows["qk_v"]
    assert row["counted_as"] == "MACs" and row["sops"] is None and row["sops_by_code"] is None
    assert row["macs"] == HEADS * N * N * DH and row["nonzero_products"] == np.count_nonzero(qkv) / SAMPLES
    assert row["firing_rate"] == values["qkv"].mean()  # its neurons: requantize + clamp [0, D]

    for name in ("q_heads", "k_heads", "v_heads", "merge_heads", *heads):
        assert rows[name]["macs"] == 0 and rows[name]["counted_as"] == "moves data" and rows[name]["sops"] is None
        assert rows[name]["firing_rate"] is None  # it moves its producer's spikes; it fires none
    for name in ("q", "k", "v"):  # read the input: multiplies; fire spikes
        assert rows[f"{name}_conv"]["counted_as"] == "MACs" and rows[f"{name}_conv"]["macs"] == H * W * C * C
        assert rows[f"{name}_conv"]["firing_rate"] == values[f"{name}_s"].mean()
    # the projection reads the merged spikes through a 1x1 conv: each spike reaches C outputs
    assert rows["proj"]["counted_as"] == "additions" and rows["proj"]["sops"] == values["attn_hwc"].sum() * C / SAMPLES

    e = energy_45nm(list(rows.values()))
    adds = rows["q_kT"]["sops"] + rows["proj"]["sops"]
    assert e["energy_45nm_pj"] == pytest.approx((3 * H * W * C * C + HEADS * N * N * DH) * E_MAC_PJ + adds * E_AC_PJ)
    assert e["energy_ann_45nm_pj"] == pytest.approx((4 * H * W * C * C + 2 * HEADS * N * N * DH) * E_MAC_PJ)


def test_binary_spikes_count_one_addition_per_nonzero_product():
    graph = _binary(attention_graph("int8", seed=5))
    xq = attention_inputs(graph, SAMPLES)
    values = graph.run_integer(xq, keep_all=True)
    assert values["q16"].max() == 1 and values["k16"].max() == 1
    nonzero = np.count_nonzero(_products(values, "q16", "k16", True)) / SAMPLES
    assert nonzero > 0
    for code in ("rate-burst", "bit-plane"):
        row = next(r for r in ops.layer_ops(graph, xq, code) if r["name"] == "q_kT")
        assert row["counted_as"] == "additions" and row["sops"] == row["nonzero_products"] == nonzero
        assert row["timesteps"] == {"rate-burst": 1, "bit-plane": 1}


def test_a_product_of_a_spike_and_a_plain_integer_counts_macs():
    graph = attention_graph("int8", seed=0)
    for name in ("k_s", "k_nc", "k_h", "k16"):  # k as plain integers (no neuron made it): q @ k^T multiplies
        graph.tensors[name].spike_D = None
    row = next(r for r in ops.layer_ops(graph, attention_inputs(graph, 4)) if r["name"] == "q_kT")
    assert row["counted_as"] == "MACs" and row["sops"] is None and row["macs"] == HEADS * N * DH * N


def _peak_by_brute_force(graph) -> int:
    """Batch 1: while op i runs, the bytes of every tensor produced so far and read by op i or a
    later op (or a graph output); a reshape's output is its input's storage."""
    root = {}
    for op in graph.ops:
        if op.kind == "reshape":
            root[op.output] = root.get(op.inputs[0], op.inputs[0])
    base = lambda t: root.get(t, t)  # noqa: E731
    born = {graph.input: 0, **{op.output: i for i, op in enumerate(graph.ops, 1) if op.kind != "reshape"}}
    peak = 0
    for i in range(len(graph.ops) + 1):
        later = {base(t) for op in graph.ops[max(i - 1, 0):] for t in op.inputs} | {base(t) for t in graph.outputs}
        live = [t for t, b in born.items() if b <= i and (t in later or b == i)]
        peak = max(peak, sum(memory.tensor_bytes(graph.tensors[t]) for t in live))
    return peak


@pytest.mark.parametrize("adj_y", [True, False])
def test_memory_of_rank_3_tensors_and_the_new_ops(adj_y):
    graph = attention_graph("int16", seed=0, adj_y=adj_y)
    assert memory.peak_activation_bytes(graph) == _peak_by_brute_force(graph)
    # neurons: the three q/k/v convs and the product's requantize; not the reshaped, transposed or
    # widened copies of their spikes, not the narrowing of the product's
    assert memory.neuron_state_bytes(graph) == 4 * (3 * H * W * C + HEADS * N * DH)


def test_profile_command_on_an_attention_ir_file(tmp_path):
    graph = attention_graph("int8", seed=2, adj_y=False)
    graph.save(tmp_path / "model.ir")
    xq = attention_inputs(graph, 40)
    x = (xq.astype(np.float32) * np.float32(graph.tensors["input"].scale)).transpose(0, 3, 1, 2)  # NCHW, exact
    y = np.arange(len(x)) % 2
    np.savez(tmp_path / "att.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    r = CliRunner().invoke(app, ["profile", str(tmp_path / "model.ir"), "--board", "nucleo-f446re", "--data",
                                 str(tmp_path / "att.npz"), "--json", str(tmp_path / "r.json"),
                                 "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["samples"] == 40 and res["target"] == "ir" and res["fits"]
    values = graph.run_integer(xq, keep_all=True)
    layers = {row["name"]: row for row in res["layers"]}
    qk = _products(values, "q16", "kT", False)
    assert layers["q_kT"]["counted_as"] == "additions" and layers["q_kT"]["sops"] == qk.sum() / 40
    assert layers["q_kT"]["nonzero_products"] == np.count_nonzero(qk) / 40
    assert layers["qk_v"]["counted_as"] == "MACs" and layers["k_T"]["counted_as"] == "moves data"
    assert res["macs"] == 4 * H * W * C * C + 2 * HEADS * N * N * DH
    assert res["sops"] == pytest.approx(layers["q_kT"]["sops"] + layers["proj"]["sops"])
    assert res["neuron_state_bytes"] == 4 * (3 * H * W * C + HEADS * N * DH)
    assert f"MACs {res['macs']}," in r.output
    page = (tmp_path / "rep" / "index.html").read_text()
    row = page[page.index("<td>q_kT</td>"):]
    assert row[:row.index("</tr>")].count("additions (AC, spike-driven)") == 1
    row = page[page.index("<td>qk_v</td>"):]
    assert "<td>MACs</td>" in row[:row.index("</tr>")]
    assert "moves data (0 ops)" in page
