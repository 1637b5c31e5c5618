"""Float weights at up to 16 bits as two int8 planes (export --weight-bits 16, edgesnn/export_planes.py):
the split is exact, the doubled input is [k x, x], the IR computes the float model more closely than
with 8-bit weights, and a target runs it bit-exact. The snnTorch and SpikingJelly models brought in
without retraining are exported this way in tests/test_bring_library_models.py (>= 99.5 % agreement)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgesnn import data, export
from edgesnn.cli import app
from edgesnn.export_planes import plane_factor, split
from edgesnn.ir import graph as g
from edgesnn.ir.interpreter import execute
from edgesnn.ir.packing import widen


@pytest.mark.parametrize("k", [2, 4, 16, 128])
def test_split_gives_two_symmetric_int8_planes(k):
    w16 = torch.arange(-127 * k, 127 * k + 1, dtype=torch.float64)
    q1, q2 = split(w16, k)
    assert torch.equal(k * q1 + q2, w16)
    assert q1.abs().max() <= 127 and q2.min() >= -k // 2 and q2.max() < k // 2


def test_plane_factor_is_the_largest_power_of_two_the_bounds_allow():
    assert plane_factor(weight_row_sum=100, x_absmax=1) == 128  # spikes: Q2 must stay in [-64, 63]
    assert plane_factor(weight_row_sum=1000, x_absmax=240) == 16  # 16 * 1000 * 240 <= 2^22 < 32 * ...
    assert plane_factor(weight_row_sum=1, x_absmax=300) == 64  # 64 * 300 <= 32767 < 128 * 300
    assert plane_factor(weight_row_sum=10**6, x_absmax=127) == 1


def _doublings(graph: g.Graph) -> list[g.Conv2D]:
    return [op for op in graph.ops if ".planes" in op.output and op.kind == "conv2d"]


def test_the_doubled_input_is_k_x_and_x(small_cnn_graph, digits):
    model, _ = small_cnn_graph
    graph = export.export(model, digits.x_train[:512], weight_bits=16, stream_dtype="int16")
    doublings = _doublings(graph)
    assert len(doublings) == sum(op.kind in ("conv2d", "dense") for op in graph.ops) - len(doublings)
    xq = graph.quantize_input(data.to_nhwc(digits.x_test[:32]))
    values = execute(graph, xq, keep_all=True)
    for op in doublings:
        k = round(graph.tensors[op.inputs[0]].scale / graph.tensors[op.output].scale)
        x = values[op.inputs[0]].astype(np.int64) - graph.tensors[op.inputs[0]].zero_point
        y = values[op.output].astype(np.int64)
        assert k in (2, 4, 8, 16, 32, 64, 128)
        assert np.array_equal(y[..., 0::2], k * x) and np.array_equal(y[..., 1::2], x), op.name


def test_sixteen_bit_weights_compute_the_float_model_more_closely(small_cnn_graph, digits):
    """The IR's logits against torch's: the planes' error is a fraction of the 8-bit weights' one,
    and no more samples disagree."""
    model, _ = small_cnn_graph
    x = digits.x_test
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    errors, mismatches = {}, {}
    for bits in (8, 16):
        graph = export.export(model, digits.x_train[:512], weight_bits=bits, stream_dtype="int16")
        spec = graph.tensors[graph.outputs[0]]
        q = graph.run(data.to_nhwc(x))
        logits = spec.scale * (q.astype(np.float64) - spec.zero_point)
        errors[bits] = float(np.abs(logits - ref).mean())
        mismatches[bits] = int((logits.argmax(1) != ref.argmax(1)).sum())
    assert errors[16] < 0.5 * errors[8], errors
    assert mismatches[16] <= mismatches[8], mismatches


def test_main_layers_hold_both_planes_in_int8(small_cnn_graph, digits):
    model, _ = small_cnn_graph
    graph = export.export(model, digits.x_train[:512], weight_bits=16, stream_dtype="int16")
    doubled = {op.output for op in _doublings(graph)} | {op.output for op in graph.ops
                                                          if op.kind == "reshape" and ".planes" in op.inputs[0]}
    readers = [op for op in graph.ops if op.kind in ("conv2d", "dense") and op.inputs[0] in doubled]
    assert readers
    for op in readers:
        w = widen(op.weight, op.weight_bits, op.weight_code)
        assert op.weight_bits == 8 and w.shape[-1] % 2 == 0 and np.abs(w).max() <= 127


def test_an_mlp_exports_to_onnx_bit_exact(trained, tmp_path):
    out = tmp_path / "onnx"
    r = CliRunner().invoke(app, ["export", str(trained["mlp"]), "--target", "onnx", "--out", str(out),
                                 "--weight-bits", "16", "--stream-dtype", "int16"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["verify", str(out / "model.onnx"), "--json", str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["mismatches"] == 0 and result["samples"] == 450, result


def test_other_widths_are_one_error_line(trained, tmp_path):
    r = CliRunner().invoke(app, ["export", str(trained["cnn"]), "--target", "ir", "--out", str(tmp_path / "o"),
                                 "--weight-bits", "12"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == ("error: weight bits must be between 1 and 8, or 16 "
                                                 "(two int8 planes), got 12")
    assert not (tmp_path / "o").exists()
