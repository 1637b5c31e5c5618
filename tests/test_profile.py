"""Profiling: the numbers of a 2-layer network are known exactly; the command runs on real artifacts."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import pipeline
from edgesnn.cli import app
from edgesnn.ir import graph as g
from edgesnn.profile import memory, ops
from edgesnn.profile.energy import energy_45nm

ONE = (np.array([1 << 30], np.int32), np.array([1], np.int32))  # the identity multiplier


def two_layers(bits_a: int = 8) -> g.Graph:
    """x (4 int8) -> dense A (4 -> 3, neuron [0, 2]) -> dense B (3 -> 2), identity requantization."""
    tensors = {"x": g.TensorSpec([1, 1, 4], "int8", 1.0), "a": g.TensorSpec([3], "int8", 1.0, spike_D=2),
               "b": g.TensorSpec([2], "int8", 1.0), "xf": g.TensorSpec([4], "int8", 1.0)}
    wa = np.eye(3, 4, dtype=np.int8)
    a = g.Dense("A", ["xf"], "a", weight=wa, bias=np.zeros(3, np.int32), weight_scale=np.ones(3, np.float32),
                multiplier=np.repeat(ONE[0], 3), shift=np.repeat(ONE[1], 3), clamp=[0, 2], weight_bits=bits_a)
    b = g.Dense("B", ["a"], "b", weight=np.ones((2, 3), np.int8), bias=np.zeros(2, np.int32),
                weight_scale=np.ones(2, np.float32), multiplier=np.repeat(ONE[0], 2), shift=np.repeat(ONE[1], 2))
    return g.Graph(tensors, [g.Reshape("flat", ["x"], "xf"), a, b], "x", ["b"])


def test_two_layer_numbers_by_hand():
    graph = two_layers()
    xq = np.array([[[[1, 0, 2, 0]]]], np.int8)  # A's spike counts: 1, 0, 2
    rows = ops.layer_ops(graph, xq)
    assert [(r["name"], r["macs"], r["sops"], r["firing_rate"]) for r in rows] == [
        ("A", 12, None, 1.0),  # reads the input: multiplies; its 3 neurons fire 1 + 0 + 2 spikes
        ("B", 6, 6.0, None)]  # 3 spikes x fan-out 2
    e = energy_45nm(rows)
    assert e["energy_45nm_pj"] == pytest.approx(12 * 4.6 + 6 * 0.9)
    assert e["energy_ann_45nm_pj"] == pytest.approx(18 * 4.6)
    assert memory.params(graph) == 12 + 3 + 6 + 2
    assert memory.weight_bytes(graph) == 18
    assert memory.peak_activation_bytes(graph) == 4 + 3  # the input and A's spikes live together
    assert memory.neuron_state_bytes(graph) == 3 * 4


def test_sub_byte_weights_count_at_their_width():
    assert memory.weight_bytes(two_layers(bits_a=2)) == 12 * 2 // 8 + 6


def test_conv_fan_out_counts_each_input_pixel_once_per_window():
    spec = {"x": g.TensorSpec([3, 3, 1], "int8", 1.0, spike_D=1), "y": g.TensorSpec([3, 3, 2], "int8", 1.0)}
    conv = g.Conv2D("c", ["x"], "y", weight=np.ones((2, 3, 3, 1), np.int8), bias=np.zeros(2, np.int32),
                    weight_scale=np.ones(2, np.float32), multiplier=np.repeat(ONE[0], 2), shift=np.repeat(ONE[1], 2),
                    padding=[1, 1, 1, 1])
    graph = g.Graph(spec, [conv], "x", ["y"])
    fan = ops.fan_out(graph, conv).reshape(3, 3)
    assert fan[1, 1] == 9 * 2 and fan[0, 0] == 4 * 2 and fan[0, 1] == 6 * 2  # windows covering the pixel x outputs
    assert ops.macs(graph, conv) == 3 * 3 * 2 * 9


@pytest.mark.slow
def test_profile_command_on_an_ir_and_a_tflite_file(tmp_path):
    pipeline.train_model("cnn", "digits", 2, tmp_path / "cnn")
    pipeline.export_model(tmp_path / "cnn", "tflite", tmp_path / "tfl")
    for artifact in (tmp_path / "tfl" / "model.ir", tmp_path / "tfl" / "model.tflite"):
        r = CliRunner().invoke(app, ["profile", str(artifact), "--board", "nucleo-f446re", "--json", str(tmp_path / "r.json")])
        assert r.exit_code == 0, r.output
        res = json.loads((tmp_path / "r.json").read_text())
        for key in ("board", "target", "fits", "weight_bytes", "peak_activation_bytes", "macs", "sops", "energy_45nm_pj",
                    "energy_ann_45nm_pj", "layers"):
            assert key in res, key
        assert res["fits"] and res["energy_45nm_pj"] < res["energy_ann_45nm_pj"]
        assert all({"name", "macs", "sops", "firing_rate"} <= set(row) for row in res["layers"])
    assert res["target"] == "tflite" and res["target_memory"]["tflm_arena_bytes"] > 0
    r = CliRunner().invoke(app, ["profile", str(artifact), "--board", "nucleo-l011k4"])
    assert r.exit_code == 0 and "does not fit" in r.output
