"""The Lava backend: edgesnn's fixed-point Lava processes compute every output integer the IR
computes, in Lava's Loihi2SimCfg, in graded and rate-burst modes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import data, pipeline
from edgesnn.backends.lava import export_lava
from edgesnn.backends.lava.network import describe
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load
from edgesnn.quantize import Options, quantize_checkpoint

pytestmark = pytest.mark.slow


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_python_3_11_compatibility_step_is_needed_and_enough():
    probe = "import lava.magma.core.process.process"
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert bare.returncode != 0 and "mutable default" in bare.stderr and "ByteEncoder" in bare.stderr
    fixed = subprocess.run([sys.executable, "-c", "from edgesnn.backends.lava.compat import ensure_lava_importable as f; "
                            "import dataclasses; d = dataclasses.dataclass; f(); f(); " + probe +
                            "; import lava.proc.dense.process; assert dataclasses.dataclass is d"],
                           capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "spikeformer"])
@pytest.mark.parametrize("mode", ["graded", "rate-burst"])
def test_each_family_is_bit_exact_in_lava(trained, tmp_path, family, mode):
    out = tmp_path / "lava"
    r = edgesnn("export", trained[family], "--target", "lava", "--lava-mode", mode, "--out", out)
    assert r.exit_code == 0, r.output
    r = edgesnn("verify", out, "--samples", 50, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert (res["samples"], res["mismatches"], res["mode"]) == (50, 0, mode)
    assert res["seconds_per_sample"] > 0 and "Loihi2SimCfg" in res["runtime"]
    network = json.loads((out / "lava.json").read_text())
    graph = load(out / "model.ir")
    assert len(network["processes"]) == sum(op.kind != "reshape" for op in graph.ops)
    window = max(s.spike_D for s in graph.tensors.values() if s.spike_D) if mode == "rate-burst" else 1
    assert res["timesteps_per_sample"] == window


def test_rate_burst_spike_trains_sum_to_the_graded_integers(trained, tmp_path):
    """In rate-burst mode a spike tensor really travels as unit spikes: its consumers see 0/1 per step."""
    pipeline.export_model(trained["cnn"], "ir", tmp_path)
    graph = load(tmp_path / "model.ir")
    net = describe(graph, "rate-burst")
    spiking = [p for p in net["processes"] if p["burst_out"]]
    assert spiking and net["window"] == 4
    assert all(any(p["burst_in"]) for p in net["processes"] if set(p["inputs"]) & {s["name"] for s in spiking})


def test_int16_streams_and_compressed_models(trained, tmp_path):
    quantize_checkpoint(trained["spikeformer"], "bestformer", tmp_path / "q", Options(epochs=1))
    out = pipeline.export_model(tmp_path / "q", "lava", tmp_path / "lava")  # int16 streams, 1-bit weights
    assert pipeline.verify(out, "digits", samples=50)["mismatches"] == 0
    assert pipeline.verify(out, "digits", samples=50, lava_mode="rate-burst")["mismatches"] == 0


def test_an_op_loihi_cannot_hold_is_refused_naming_it_and_nothing_is_written(trained, tmp_path):
    pipeline.export_model(trained["mlp"], "ir", tmp_path)
    graph = load(tmp_path / "model.ir")
    dense = next(op for op in graph.ops if op.kind == "dense")
    dense.bias = dense.bias.copy()
    dense.bias[0] = 2**24  # beyond the 24-bit neuron state
    out = tmp_path / "lava"
    with pytest.raises(EdgesnnError, match=f"lava: IR op '{dense.name}' \\(dense\\) can accumulate .* 24-bit neuron state"):
        export_lava(graph, out, "graded", data.to_nhwc(data.digits().x_train[:16]))
    assert not out.exists()


def test_bad_mode_and_samples_are_one_line_errors(trained, tmp_path):
    r = edgesnn("export", trained["mlp"], "--target", "lava", "--lava-mode", "bursty", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "unknown Lava mode 'bursty'" in r.output and not (tmp_path / "o").exists()
    pipeline.export_model(trained["mlp"], "lava", tmp_path / "l")
    r = edgesnn("verify", tmp_path / "l", "--samples", 0)
    assert r.exit_code == 1 and "--samples must be at least 1" in r.output and "Traceback" not in r.output


def test_a_changed_graph_is_caught(trained, tmp_path):
    """verify compares Lava with the IR, so a Lava graph built from a different IR must fail."""
    out = pipeline.export_model(trained["mlp"], "lava", tmp_path / "lava")
    graph = load(out / "model.ir")
    golden = graph.run_integer(graph.quantize_input(data.to_nhwc(data.digits().x_test[:50])))[graph.outputs[0]]
    dense = next(op for op in graph.ops if op.kind == "dense")
    dense.bias = dense.bias + 5000
    graph.save(out / "model.ir")  # Lava now simulates the changed graph; compare with the original outputs
    from edgesnn.backends.lava.network import run_in_subprocess

    got = run_in_subprocess(out / "model.ir", graph.quantize_input(data.to_nhwc(data.digits().x_test[:50])), "graded", 300)
    assert not np.array_equal(got, golden.reshape(50, -1))
