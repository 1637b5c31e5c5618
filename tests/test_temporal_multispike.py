"""SFA MultiSpike per timestep (issue 24): a stateful ``lif`` / ``cuba_lif`` with ``max_spike`` D emits at each
step the number of thresholds theta, 2 theta, ..., D theta its membrane exceeds (D = 1: today's ``v > theta``),
then resets by s * theta or to zero. The IR's arithmetic against hand-computed sequences and a reference in
Python integers, the file, torch's integer forward against the IR, and a model trained with max_spike 4 from
the command line, exported and verified bit-exact in TFLite (LiteRT reference and TFLite Micro), ONNX, the
MCU host build and Lava; NIR refusing it in one line, and the bad values of max_spike."""

import json
import re

import numpy as np
import pytest
import torch

from edgesnn import data
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load as load_ir
from edgesnn.ir import serialize
from edgesnn.ir import state as st
from edgesnn.temporal.export import export
from edgesnn.temporal.model import dense_model
from edgesnn.temporal.neurons import LIF, _MultiSpike, _Spike
from typer.testing import CliRunner

from edgesnn.cli import app
from test_cli import assert_user_error, edgesnn
from test_ir_state import currents, full_graph, neuron_graph, ref_decay

D = 4


def cli(*args):
    """The command line in this process (no interpreter and torch start per command)."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def multi_graph(kind, top=D, **kw):
    graph = neuron_graph(kind, **kw)
    graph.ops[0].max_spike = top
    graph.tensors["s"].spike_D = top
    return graph


def ref_multi(xs, d_v, theta, top, reset, shift, bits, d_i=None):
    """One channel in Python integers: the count of k in 1..top with v > k * theta."""
    hi = 2 ** (bits - 1) - 1
    hold = lambda a: max(-hi, min(hi, a))  # noqa: E731
    v = i = 0
    out = []
    for x in xs:
        drive = x * 2**shift
        if d_i is not None:
            i = hold(ref_decay(i, d_i) + drive)
            drive = i
        v = hold(ref_decay(v, d_v) + drive)
        s = sum(v > k * theta for k in range(1, top + 1))
        if s:
            v = v - s * theta if reset == "subtract" else 0
        out.append(s)
    return out


# ---------------------------------------------------------------- the IR

@pytest.mark.parametrize("reset,spikes,last_v", [("subtract", [2, 0, 3, 1, 0, 1, 0, 0, 1], 10),
                                                 ("zero", [2, 0, 3, 0, 0, 0, 0, 1, 0], 10)])
def test_a_hand_computed_sequence(reset, spikes, last_v):
    """IF, threshold 10, D 3, inputs 25 4 40 0 -5 7 -1 10 10. Subtract: v 25 -> 2 spikes (v 5); 9 -> 0; 49 -> 3,
    capped (v 19); 19 -> 1 (v 9); 4; 11 -> 1 (v 1); 0; 10 -> 0 (not > 10); 20 -> 1 (not > 20), v 10.
    Zero: 25 -> 2 (v 0); 4; 44 -> 3 (v 0); 0; -5; 2; 1; 11 -> 1 (v 0); 10 -> 0, v 10."""
    graph = multi_graph("lif", top=3, C=1, T=9, reset=reset)
    graph.ops[0].decay_v, graph.ops[0].threshold = np.array([0], np.int32), np.array([10], np.int32)
    xq = np.array([25, 4, 40, 0, -5, 7, -1, 10, 10], np.int16).reshape(1, 9, 1)
    stepper = st.Stepper(graph)
    stepper.reset(1)
    got = [int(stepper.step(xq[:, t])["s"][0, 0]) for t in range(9)]
    assert got == spikes and int(stepper.states["v"][0, 0]) == last_v
    out = st.run_sequence(graph, xq, keep_steps=True)
    assert out["s@steps"][0, :, 0].tolist() == spikes and out["s"].tolist() == [[sum(spikes)]]


def test_the_count_is_the_thresholds_passed_and_d1_is_v_above_theta():
    rng = np.random.default_rng(0)
    v = rng.integers(-300, 600, 4000).astype(np.int64)
    theta = rng.integers(1, 60, 4000).astype(np.int64)
    v[:50] = theta[:50] * rng.integers(0, 5, 50)  # on the boundaries k * theta
    for top in (1, 2, 4, 127):
        want = sum((v > k * theta).astype(np.int64) for k in range(1, top + 1))
        assert np.array_equal(st.spike_count(v, theta, top), want)
    assert np.array_equal(st.spike_count(v, theta, 1), v > theta)
    assert np.array_equal(np.clip(np.floor_divide(v - 1, theta), 0, 1), v > theta)  # the general rule at D = 1


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind,shift", [("lif", 0), ("cuba_lif", 6)])
def test_neurons_match_the_reference(kind, shift, reset):
    rng = np.random.default_rng(1)
    graph = multi_graph(kind, reset=reset, shift=shift, bits=16, rng=rng)
    op = graph.ops[0]
    op.threshold = (rng.integers(20, 120, 5) << shift).astype(np.int32)
    xq = currents(rng, 6, 7, 5)
    out = st.run_sequence(graph, xq, keep_steps=True)
    for n in range(6):
        for c in range(5):
            di = int(op.decay_i[c]) if kind == "cuba_lif" else None
            want = ref_multi(xq[n, :, c].tolist(), int(op.decay_v[c]), int(op.threshold[c]), D, reset, shift, 16, di)
            assert out["s@steps"][n, :, c].tolist() == want
    steps = out["s@steps"]
    assert steps.dtype == np.int8 and (steps == D).any() and ((steps > 1) & (steps < D)).any() and (steps == 0).any()


def test_the_file_round_trips_and_d1_is_not_written(tmp_path):
    graph = multi_graph("cuba_lif")
    graph.save(tmp_path / "a.ir")
    back = load_ir(tmp_path / "a.ir")
    assert back.ops[0].max_spike == D and back.tensors["s"].spike_D == D
    back.save(tmp_path / "b.ir")
    assert (tmp_path / "a.ir").read_bytes() == (tmp_path / "b.ir").read_bytes()
    header, _ = serialize.to_header(graph)
    assert header["ops"][0]["max_spike"] == D
    header, _ = serialize.to_header(neuron_graph("lif"))  # files before max_spike: no such key, read as 1
    assert "max_spike" not in header["ops"][0]
    neuron_graph("lif").save(tmp_path / "c.ir")
    assert load_ir(tmp_path / "c.ir").ops[0].max_spike == 1


@pytest.mark.parametrize("value,shown", [(0, "0"), (-2, "-2"), (128, "128"), (2.5, "2.5"), (True, "True"), ("4", "'4'")])
def test_a_bad_max_spike_in_a_file_is_one_line(value, shown):
    header, arrays = serialize.to_header(multi_graph("lif"))
    header["ops"][0]["max_spike"] = value
    message = f"op n: max_spike (the most spikes per step) must be an integer in 1..127, got {shown}"
    with pytest.raises(EdgesnnError, match="^" + re.escape(message) + "$"):
        serialize.graph_from_header(header, arrays)


def test_the_file_refuses_a_spike_range_or_threshold_that_does_not_fit():
    header, arrays = serialize.to_header(multi_graph("lif"))
    header["tensors"]["s"]["spike_D"] = 1
    with pytest.raises(EdgesnnError, match=r"^op n: its output is spikes: int8, zero point 0, spike_D 4$"):
        serialize.graph_from_header(header, arrays)
    graph = multi_graph("lif")
    graph.ops[0].threshold[0] = 0
    header, arrays = serialize.to_header(graph)
    with pytest.raises(EdgesnnError, match=r"^op n: max_spike 4 counts multiples of the threshold, which must then be at "
                                           r"least 1$"):
        serialize.graph_from_header(header, arrays)


# ---------------------------------------------------------------- torch

def test_the_surrogate_is_the_sum_over_thresholds_and_d1_is_snntorchs():
    v = torch.linspace(-100, 400, 301, dtype=torch.float64, requires_grad=True)
    _MultiSpike.apply(v, 64.0, 1, 5.0).sum().backward()
    one = v.grad.clone()
    v.grad = None
    _Spike.apply((v - 64) / 64, 5.0).sum().backward()
    assert torch.allclose(one, v.grad)
    v.grad = None
    s = _MultiSpike.apply(v, 64.0, 3, 5.0)
    s.sum().backward()
    u = v.detach() / 64
    assert torch.allclose(v.grad, sum(1 / (1 + 5 * (u - k).abs()) ** 2 for k in (1, 2, 3)) / 64)
    assert torch.equal(s, torch.clamp(torch.floor((v.detach() - 1) / 64), 0, 3))


@pytest.fixture(scope="module")
def events():
    return data.load("digits-events", temporal=True)


@pytest.mark.parametrize("neuron", ["lif", "cuba_lif", "rlif"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_torch_integers_equal_the_ir_at_every_step(events, neuron, reset):
    model = dense_model(events.frame_shape, events.num_classes, hidden=16, neuron=neuron, reset=reset, levels=8,
                        max_spike=D)
    model.calibrate(torch.as_tensor(events.x_train))
    with torch.no_grad():
        model.layers[0].weight.mul_(8)  # currents of several thresholds
    x = np.asarray(events.x_test[:40], np.float32)
    want = model.integers(torch.as_tensor(x), keep_steps=True)
    graph = export(model, events.steps)
    (out,) = graph.outputs
    xq = st.quantize_sequence(graph, data.to_nhwc(x))
    got = st.run_sequence(graph, xq, keep_steps=True)
    assert np.array_equal(got[out], want["readout"]) and np.array_equal(got[f"{out}@steps"], want["steps"])
    spikes = _hidden_spikes(graph, xq)
    assert spikes.max() == D and ((spikes > 1) & (spikes < D)).any()


def _hidden_spikes(graph, xq):
    stepper = st.Stepper(graph)
    stepper.reset(len(xq))
    return np.stack([stepper.step(xq[:, t], keep_all=True)["l0.spikes"] for t in range(xq.shape[1])], 1)


def test_the_conv_model_takes_it_and_its_pool_must_fit_int8(events):
    from edgesnn.temporal.conv import conv_model

    model = conv_model(events.frame_shape, events.num_classes, channels=[4], levels=8, max_spike=3)
    model.calibrate(torch.as_tensor(events.x_train))
    x = np.asarray(events.x_test[:10], np.float32)
    graph = export(model, events.steps)
    assert graph.tensors["l0.spikes"].spike_D == 3 and graph.ops[1].max_spike == 3
    got = graph.run_sequence(data.to_nhwc(x))[graph.outputs[0]]
    assert np.array_equal(got, model.integers(torch.as_tensor(x))["readout"])
    with pytest.raises(EdgesnnError, match=r"^a 6x6 sum of up to 4 spikes per step \(max_spike\) can reach 144, beyond "
                                           r"the int8 of the pooled counts$"):
        conv_model((1, 12, 12), 2, channels=[2], pool=6, max_spike=4)


@pytest.mark.parametrize("value", [0, -1, 128, 2.5, True, "2"])
def test_a_bad_max_spike_is_one_error(value):
    with pytest.raises(EdgesnnError, match=r"^LIF: max_spike \(the most spikes per step\) must be an integer in "
                                           r"1\.\.127, got "):
        LIF(4, max_spike=value)


# ---------------------------------------------------------------- trained, exported, verified

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("multispike")
    r = cli("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1, "--out", d / "ck",
                "--model-kwargs", json.dumps({"max_spike": D, "hidden": 32, "levels": 16}))
    r = cli("export", d / "ck", "--target", "ir", "--out", d / "ir")
    return d


def test_trained_model_spikes_up_to_d_and_the_ir_is_torchs(trained, events):
    graph = load_ir(trained / "ir" / "model.ir")
    assert [op.kind for op in graph.ops] == ["reshape", "dense", "lif", "dense", "li"]
    assert graph.ops[2].max_spike == D and graph.tensors["l0.spikes"].spike_D == D
    xq = st.quantize_sequence(graph, data.to_nhwc(np.asarray(events.x_test, np.float32)))
    spikes = _hidden_spikes(graph, xq[:100])
    assert spikes.max() > 1  # the trained neurons do emit several spikes in a step
    r = cli("verify", trained / "ir" / "model.ir", "--json", trained / "v.json")
    v = json.loads((trained / "v.json").read_text())
    assert v["samples"] == 450 and v["mismatches"] == 0 and v["passed"]


@pytest.mark.parametrize("target", ["tflite", "onnx"])
def test_tflite_and_onnx_are_bit_exact(trained, target):
    r = cli("export", trained / "ck", "--target", target, "--out", trained / target)
    artifact = trained / target / f"model.{target}"
    r = cli("verify", artifact, "--samples", 60, "--json", trained / f"{target}.json")
    v = json.loads((trained / f"{target}.json").read_text())
    assert v["samples"] == 60 and v["mismatches"] == 0 and v["passed"]
    if target == "tflite":
        from edgesnn.backends.tflite import micro_available

        assert set(v["exact_in"]) >= {"litert-reference"} | ({"tflite-micro"} if micro_available() else set())
        assert all(row["mismatched_step_elements"] == 0 for row in v["runtimes"].values())


@pytest.mark.parametrize("kind,reset", [("lif", "subtract"), ("cuba_lif", "zero")])
def test_hand_built_graphs_in_tflite_and_onnx(kind, reset, tmp_path):
    """Per-channel thresholds and decays, input shift 6: every step's counts equal the IR's."""
    from edgesnn.backends.onnx import export_integer
    from edgesnn.backends.onnx.state import run_sequences as onnx_sequences
    from edgesnn.backends.tflite import export_tflite, micro_available
    from edgesnn.backends.tflite.state import run_sequences as tflite_sequences

    rng = np.random.default_rng(2)
    graph = multi_graph(kind, reset=reset, shift=6, bits=24, rng=rng)
    graph.ops[0].threshold = (rng.integers(20, 120, 5) << 6).astype(np.int32)
    xq = currents(rng, 10, 7, 5)
    want = st.run_sequence(graph, xq, keep_steps=True)["s@steps"]
    assert want.max() == D
    path = export_tflite(graph, tmp_path / "model.tflite")
    for runtime in ["litert-reference"] + ["tflite-micro"] * micro_available():
        steps, _ = tflite_sequences(path, graph, xq, runtime)
        assert np.array_equal(steps[0], want), runtime
    path = tmp_path / "model.onnx"
    export_integer(graph, path)
    steps, _ = onnx_sequences(path, graph, xq)
    assert np.array_equal(steps[0], want)


def test_a_recurrent_network_feeds_back_counts(tmp_path):
    """recurrent (the spikes 0..D of the step before, W int4) -> cuba_lif with max_spike D -> li: both outputs
    at every step equal to the IR's in TFLite and ONNX."""
    from edgesnn.backends.onnx import export_integer
    from edgesnn.backends.onnx.state import run_sequences as onnx_sequences
    from edgesnn.backends.tflite import export_tflite, micro_available
    from edgesnn.backends.tflite.state import run_sequences as tflite_sequences

    graph = full_graph()
    graph.ops[1].max_spike, graph.tensors["s"].spike_D = D, D
    graph.ops[1].threshold = np.minimum(graph.ops[1].threshold, 60)
    xq = currents(np.random.default_rng(2), 12, 7, 5)
    want = st.run_sequence(graph, xq, keep_steps=True)
    assert want["s@steps"].max() == D
    path = export_tflite(graph, tmp_path / "model.tflite")
    for runtime in ["litert-reference"] + ["tflite-micro"] * micro_available():
        steps, _ = tflite_sequences(path, graph, xq, runtime)
        assert np.array_equal(steps[0], want["s@steps"]) and np.array_equal(steps[1], want["m@steps"]), runtime
    export_integer(graph, tmp_path / "model.onnx")
    steps, _ = onnx_sequences(tmp_path / "model.onnx", graph, xq)
    assert np.array_equal(steps[0], want["s@steps"]) and np.array_equal(steps[1], want["m@steps"])


def test_mcu_host_is_bit_exact(trained):
    r = cli("export", trained / "ck", "--target", "mcu", "--board", "nucleo-f446re", "--out", trained / "mcu")
    assert "int64_t spike = v > theta ? (v - 1) / theta : 0;" in (trained / "mcu" / "state.c").read_text()
    r = cli("verify", trained / "mcu", "--data", "digits-events", "--samples", 60, "--trust-code",
                "--json", trained / "mcu.json")
    v = json.loads((trained / "mcu.json").read_text())
    assert v["samples"] == 60 and v["passed"] and v["runs"]["host"]["mismatched_elements"] == 0


def test_mcu_verify_sees_a_reset_of_one_threshold(trained, tmp_path):
    """The comparison can fail: state.c subtracting one threshold whatever the count (D = 1's reset) differs
    wherever a step emits more than one spike."""
    import shutil

    from edgesnn import targets

    project = tmp_path / "mcu"
    shutil.copytree(trained / "mcu", project, ignore=shutil.ignore_patterns("build"))
    reset = "if (spike) v -= spike * theta;"
    source = (project / "state.c").read_text()
    assert reset in source
    (project / "state.c").write_text(source.replace(reset, "if (spike) v -= theta;"))
    r = targets.verify(project, "digits-events", samples=60, trust_code=True)
    assert r["runs"]["host"]["mismatched_step_elements"] > 0 and r["mismatches"] > 0


def test_lava_is_bit_exact_in_edgesnns_neuron(trained):
    r = cli("export", trained / "ck", "--target", "lava", "--out", trained / "lava")
    assert f"up to {D} spikes per step, MultiSpike (Lava's LIF spikes 0/1)" in r.output
    r = cli("verify", trained / "lava", "--data", "digits-events", "--samples", 6, "--json", trained / "lava.json")
    v = json.loads((trained / "lava.json").read_text())
    assert v["samples"] == 6 and v["passed"] and v["mismatched_step_elements"] == 0 and v["mismatches"] == 0
    assert v["models"]["l0"] == "edgesnn Neuron"


def test_nir_refuses_it_in_one_line(trained, tmp_path):
    assert_user_error(edgesnn("export", trained / "ck", "--target", "nir", "--out", tmp_path / "nir"),
                      f"op 'l0' (lif) emits up to {D} spikes per step (MultiSpike, max_spike); NIR's LIF and CubaLIF "
                      f"spike 0/1, so NIR export takes max_spike 1 only")
    assert not (tmp_path / "nir").exists()


def test_profile_counts_a_spike_of_s_as_s_events(trained, events):
    from edgesnn.profile import profile

    ir = trained / "ir" / "model.ir"
    graph = load_ir(ir)
    r = profile(ir, "nucleo-f446re")
    xq = st.quantize_sequence(graph, data.to_nhwc(np.asarray(events.x_test, np.float32)))
    spikes = _hidden_spikes(graph, xq).astype(np.int64)
    dense = next(op for op in graph.ops if op.kind == "dense" and op.inputs[0] == "l0.spikes")
    assert r["sops_per_sequence"] == pytest.approx(spikes.sum() * dense.weight.shape[0] / len(xq), rel=1e-12)


def test_cli_refuses_a_bad_max_spike(tmp_path):
    assert_user_error(edgesnn("train", "--model", "temporal-dense", "--data", "digits-events", "--epochs", 1,
                              "--out", tmp_path / "ck", "--model-kwargs", json.dumps({"max_spike": 0})),
                      "LIF: max_spike (the most spikes per step) must be an integer in 1..127, got 0")
    assert not (tmp_path / "ck").exists()
