"""edgesnn quantize of a temporal checkpoint (edgesnn/quantize/temporal.py): Q-SNN's low-bit weights and
membrane on a recurrent temporal-dense, fine-tuned by BPTT, bit-exact between torch's integer forward, the IR
(readout and every step), TFLite (LiteRT's reference kernels and TFLite Micro) and the MCU host build; the IR
holds the weights on their few bits; the methods a temporal checkpoint cannot take and a membrane too narrow
for its threshold are one line each, with nothing written."""

import json

import numpy as np
import pytest
import torch

from edgesnn import checkpoint, data, ir, pipeline
from edgesnn.backends.tflite import micro_available
from edgesnn.errors import EdgesnnError
from edgesnn.ir import packing
from edgesnn.quantize import Options, quantize_checkpoint
from edgesnn.quantize.temporal import membrane_levels
from edgesnn.temporal.export import export
from edgesnn.temporal.neurons import QLinear
from test_cli import assert_user_error, edgesnn
from test_temporal_train import _assert_bit_exact

KWARGS = '{"hidden": 16, "neuron": "rlif"}'  # small, and with an inner (recurrent) weight for Q-SNN's grid


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """train (1 epoch) -> quantize --method qsnn, 4-bit weights (first and last too), 8-bit membrane, 1 epoch."""
    d = tmp_path_factory.mktemp("temporal_quantize")
    r = edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1, "--out", d / "ck",
                "--model-kwargs", KWARGS)
    assert r.returncode == 0, r.stderr
    r = edgesnn("quantize", d / "ck", "--method", "qsnn", "--weight-bits", 4, "--first-last-bits", 4,
                "--membrane-bits", 8, "--epochs", 1, "--out", d / "q")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "note:" not in r.stdout
    return d


def test_the_checkpoint_records_the_grids_and_is_bit_exact_with_its_ir(runs, tmp_path):
    model, config = checkpoint.load(runs / "q")
    spec = config["quantization"]
    assert spec == {"method": "qsnn", "membrane_bits": 8, "levels": 64,
                    "weights": {"layers.0": {"quantizer": "uniform", "bits": 4},
                                "layers.1.recurrent": {"quantizer": "qsnn", "bits": 4},
                                "layers.2": {"quantizer": "uniform", "bits": 4}}}
    assert config["kwargs"]["bits"] == 8 and config["kwargs"]["levels"] == 64 and config["temporal"]["steps"] == 10
    assert [(m.weight_quantizer, m.weight_bits) for m in model.modules() if isinstance(m, QLinear)] == \
        [("uniform", 4), ("qsnn", 4), ("uniform", 4)]  # the spec replayed on load
    assert [r["format"] for r in pipeline.inspect(runs / "q")["weight_layers"]] == \
        ["uniform 4-bit", "qsnn 4-bit", "uniform 4-bit"]
    source, _ = checkpoint.load(runs / "ck")
    assert not torch.equal(source.layers[0].weight, model.layers[0].weight)  # the epoch fine-tuned them

    graph = export(model, 10)
    graph.save(tmp_path / "m.ir")
    graph = ir.load(tmp_path / "m.ir")  # the packed 4-bit weights, read back
    ds = data.load("digits-events", temporal=True)
    readout = _assert_bit_exact(model, graph, ds.x_test)
    metrics = json.loads((runs / "q" / "metrics.json").read_text())
    assert float(np.mean(readout.argmax(1) == ds.y_test.numpy())) == metrics["test_accuracy"]

    weighted = {op.name: op for op in graph.ops if getattr(op, "weight", None) is not None}
    assert {n: (op.weight_bits, op.weight_code) for n, op in weighted.items()} == \
        {"l0.dense": (4, "signed"), "l0.rec": (4, "odd"), "l1.dense": (4, "signed")}
    for op in weighted.values():
        packing.check_weights(op.weight, op.weight_bits, op.weight_code)
        assert max(len(np.unique(row)) for row in op.weight) <= 16
    rec = weighted["l0.rec"].weight
    assert (rec % 2 == 1).all() and np.abs(rec).max() <= 15 and max(len(np.unique(row)) for row in rec) > 2
    assert graph.states["l0.v"].bits == 8 and graph.states["l0.v"].dtype == "int8"


def test_export_and_verify_are_bit_exact_on_the_ir_tflite_and_the_mcu_host(runs):
    """edgesnn.pipeline's export and verify (the CLI's steps, in this process) on each target, the 450 test
    sequences: every readout integer equal to the IR's, which equals torch's integer forward."""
    d = runs
    artifacts = {"ir": "model.ir", "tflite": "model.tflite", "mcu": ""}
    results = {}
    for target, name in artifacts.items():
        pipeline.export_model(d / "q", target, d / target, board="nucleo-f446re" if target == "mcu" else None)
        results[target] = v = pipeline.verify(d / target / name, trust_code=True)
        assert v["samples"] == 450 and v["mismatches"] == 0, target
    assert results["ir"]["runtimes"]["torch-integers"]["mismatched_elements"] == 0
    assert set(results["tflite"]["exact_in"]) >= {"litert-reference"} | ({"tflite-micro"} if micro_available() else set())
    host = results["mcu"]["runs"]["host"]
    assert host["mismatched_elements"] == 0 and host["stats"]["samples"] == 4500


def test_a_method_a_temporal_checkpoint_cannot_take_is_one_line(runs, tmp_path):
    r = edgesnn("quantize", runs / "ck", "--method", "ternary", "--epochs", 1, "--out", tmp_path / "x")
    assert_user_error(r, "--method ternary: a temporal checkpoint (temporal-dense) takes only --method qsnn")
    assert not (tmp_path / "x").exists()
    for method in ("qpsnn", "bestformer", "int8", "ibra", "mpbn"):
        with pytest.raises(EdgesnnError, match=f"^--method {method}: a temporal checkpoint"):
            quantize_checkpoint(runs / "ck", method, tmp_path / "x", Options(epochs=1))
    with pytest.raises(EdgesnnError, match="^--stream-dtype: a temporal model .temporal-dense. has no residual"):
        quantize_checkpoint(runs / "ck", "qsnn", tmp_path / "x", Options(epochs=1, stream_dtype="int16"))
    # before torchrun relaunches the command: one line, not one per rank and torchrun's traceback
    r = edgesnn("quantize", runs / "ck", "--method", "qsnn", "--epochs", 1, "--out", tmp_path / "x",
                "--nproc-per-node", 2)
    assert_user_error(r, "--nproc-per-node: a temporal model (temporal-dense) fine-tunes in one process")
    assert not (tmp_path / "x").exists()


def test_a_membrane_that_cannot_exceed_its_threshold_is_one_line(runs, tmp_path):
    r = edgesnn("quantize", runs / "ck", "--method", "qsnn", "--membrane-bits", 2, "--epochs", 1,
                "--out", tmp_path / "x")
    assert_user_error(r, "--membrane-bits 2: a 2-bit membrane holds at most 1, so it cannot exceed a threshold "
                         "of 1 spike(s) per step; give at least 3")
    assert not (tmp_path / "x").exists()


def test_the_threshold_levels_follow_the_membrane_width():
    """The checkpoint's 64 levels where an M-bit membrane holds them with room above, else 2^(M-2) // D."""
    assert membrane_levels(12, 64, 1) == membrane_levels(8, 64, 1) == 64
    assert membrane_levels(6, 64, 1) == 16 and membrane_levels(3, 64, 1) == 2 and membrane_levels(8, 20, 1) == 20
    assert membrane_levels(8, 64, 3) == 21  # 3 spikes per step: v must exceed 63 < 127


def test_the_weight_grids():
    """int8 by default (what training writes); Q-SNN's odd levels on 3 bits with a per-channel scale std * 2^k;
    the training forward uses exactly q * scale, and the exact forward the widened levels."""
    torch.manual_seed(0)
    lin = QLinear(24, 5)
    _, q8, _ = lin.weight_grid()
    assert lin.weight_bits == 8 and lin.weight_code == "signed" and q8.abs().max() == 127
    lin.set_weight_grid("qsnn", 3)
    fake, q, scale = lin.weight_grid()
    assert set(q.unique().tolist()) <= {-7, -5, -3, -1, 1, 3, 5, 7}
    torch.testing.assert_close(fake, q * scale[:, None], rtol=0, atol=0)
    step = scale / lin.weight.detach().std(1)
    torch.testing.assert_close(torch.exp2(torch.round(torch.log2(step))), step, rtol=1e-6, atol=0)
    p = lin.integers(0.5, 0.25)
    assert p["weight_bits"] == 3 and p["weight_code"] == "odd"
    np.testing.assert_array_equal(p["weight_scale"], (scale.numpy() / 16).astype(np.float32))  # widened by 2^4
    x = torch.randint(-3, 4, (6, 24))
    exact = lin.step(x, 0.5, 0.25, (-(2**15), 2**15 - 1))
    approx = lin.step(x.float(), 0.5, 0.25, (-(2**15), 2**15 - 1))
    assert (exact - approx).abs().max() <= 1  # the IR's requantization, against torch's float rounding
    with pytest.raises(Exception, match="odd-level weights take 1..7 bits, got 8"):
        lin.set_weight_grid("qsnn", 8)
