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


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "spikeformer"])
def test_bit_plane_spike_trains_are_bit_exact_in_lava(trained, tmp_path, family):
    """--spike-code bit-plane: ceil(log2(D + 1)) = 3 steps per sample for D = 4, every output integer the IR's."""
    out = tmp_path / "lava"
    r = edgesnn("export", trained[family], "--target", "lava", "--spike-code", "bit-plane", "--out", out)
    assert r.exit_code == 0, r.output
    r = edgesnn("verify", out, "--samples", 20, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert (res["samples"], res["mismatches"], res["mode"], res["timesteps_per_sample"]) == (20, 0, "bit-plane", 3)
    report = json.loads((out / "loihi2.json").read_text())
    assert (report["mode"], report["timesteps"]) == ("bit-plane", 3)


_DRIVE_A_BURST_MODEL = """
import json, sys
import numpy as np
from edgesnn.backends.lava.compat import ensure_lava_importable
ensure_lava_importable()
from edgesnn.backends.lava import processes as P
P._one_blas_thread = lambda: None
rows, sent = iter(np.array(json.loads(sys.argv[1]))), []
class Port:
    def recv(self): return next(rows)
class Out:
    shape = (4,)
    def send(self, v): sent.append(v.tolist())
class Model(P._Burst):
    proc_params = {"fn": lambda xs: xs[0], "window": 3, "code": "bit-plane", "burst_in": (True,), "burst_out": True,
                   "delays": (0,)}
    in0, out = Port(), Out()
    def _inputs(self): return (self.in0,)
model = Model()
for step in range(1, 7):
    model.time_step = step
    model.run_spk()
print(json.dumps(sent))
"""


def test_bit_plane_processes_send_binary_trains_msb_first_and_integrate_them_exactly():
    """The process model itself (run in a child: Lava must be imported before any multiprocessing): a
    window of a bit-plane input train (5, 0, 3, -6 over 3 steps) integrates to its integers, and during
    the next window the neuron sends them as their train, bit by bit."""
    from edgesnn.spikes import expand

    train = expand(np.array([5, 0, 3, -6]), 7, "bit-plane")
    feed = json.dumps(np.concatenate([train, np.zeros_like(train)]).tolist())
    r = subprocess.run([sys.executable, "-c", _DRIVE_A_BURST_MODEL, feed], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    sent = np.array(json.loads(r.stdout))
    np.testing.assert_array_equal(sent[3:], train)  # window 2 sends window 1's integers as their train
    assert set(np.unique(sent).tolist()) <= {-1, 0, 1}


def test_verify_runs_a_lava_folder_in_another_spike_code_and_refuses_a_contradiction(trained, tmp_path):
    out = pipeline.export_model(trained["mlp"], "lava", tmp_path / "lava")  # graded
    res = pipeline.verify(out, "digits", samples=10, spike_code="bit-plane")
    assert (res["mode"], res["mismatches"], res["timesteps_per_sample"]) == ("bit-plane", 0, 3)
    r = edgesnn("export", trained["mlp"], "--target", "lava", "--lava-mode", "graded", "--spike-code", "bit-plane",
                "--out", tmp_path / "o")
    assert r.exit_code == 1 and "--lava-mode graded and --spike-code bit-plane disagree" in r.output
    assert not (tmp_path / "o").exists()
    pipeline.export_model(trained["mlp"], "ir", tmp_path / "ir")
    r = edgesnn("verify", tmp_path / "ir" / "model.ir", "--spike-code", "bit-plane")
    assert r.exit_code == 1 and "--spike-code chooses how a Lava folder runs" in r.output


def test_int16_streams_and_compressed_models(trained, tmp_path):
    quantize_checkpoint(trained["spikeformer"], "bestformer", tmp_path / "q", Options(epochs=1, stream_dtype="int16"))
    out = pipeline.export_model(tmp_path / "q", "lava", tmp_path / "lava")  # int16 streams (trained), 1-bit weights
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
