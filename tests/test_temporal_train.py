"""Torch neurons with state over time (edgesnn/temporal): BPTT on digits-events beats the time-summed
baseline, and the exported temporal IR graph gives exactly the torch eval integers over the whole test
split (readout and every step), for LIF, IF, CubaLIF and recurrent LIF with both resets."""

import numpy as np
import pytest
import torch

from edgesnn import data, ir
from edgesnn.errors import EdgesnnError
from edgesnn.ir import state as st
from edgesnn.temporal import neurons as tn
from edgesnn.temporal.export import export
from edgesnn.temporal.model import SpikingSequence, dense_model
from edgesnn.temporal.train import accuracy, train


@pytest.fixture(scope="module")
def events():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is as fast, and the machine is shared
    yield data.load("digits-events", temporal=True)
    torch.set_num_threads(threads)


def _roundtrip(graph, tmp_path):
    graph.save(tmp_path / "t.ir")
    return ir.load(tmp_path / "t.ir")


def _assert_bit_exact(model, graph, x):
    out = graph.run_sequence(data.to_nhwc(x), keep_steps=True)
    mine = model.integers(x, keep_steps=True)
    o = graph.outputs[0]
    assert out[o].dtype == mine["readout"].dtype
    np.testing.assert_array_equal(out[o], mine["readout"])
    np.testing.assert_array_equal(out[f"{o}@steps"], mine["steps"])
    return out[o]


def _hidden_spike_rate(graph, x):
    stepper = st.Stepper(graph)
    xq = st.quantize_sequence(graph, data.to_nhwc(x))
    stepper.reset(len(xq))
    rates = [stepper.step(xq[:, t], keep_all=True)["l0.spikes"].mean() for t in range(xq.shape[1])]
    return float(np.mean(rates))


def test_bptt_lif_beats_the_time_summed_baseline_and_exports_bit_exact(events, tmp_path):
    """flatten -> Linear -> LIF -> Linear -> LI (mean): logistic regression scores ~0.30 on the time-summed
    counts and ~0.69 on the whole sequence (tests/test_data_temporal.py); this must clear 0.7, in the IR."""
    model = dense_model(events.frame_shape, events.num_classes, hidden=64, neuron="lif")
    history = train(model, events.x_train, events.y_train, epochs=12)
    assert history.loss[-1] < 0.7 * history.loss[0]
    graph = _roundtrip(export(model, events.steps), tmp_path)
    assert [op.kind for op in graph.ops] == ["reshape", "dense", "lif", "dense", "li"]
    assert graph.sequence == st.Sequence(10, {"l1.v_out": "mean"})
    readout = _assert_bit_exact(model, graph, events.x_test)
    ir_acc = float(np.mean(readout.argmax(1) == events.y_test.numpy()))
    assert ir_acc == accuracy(model, events.x_test, events.y_test)
    assert ir_acc >= 0.7, ir_acc
    assert 0.02 < _hidden_spike_rate(graph, events.x_test[:64]) < 0.8


@pytest.mark.parametrize("neuron,reset,extra", [
    ("cuba_lif", "subtract", {}), ("cuba_lif", "zero", {}), ("rlif", "subtract", {}), ("rlif", "zero", {}),
    ("lif", "zero", {"beta": 1.0}),  # IF: no leak
    ("lif", "subtract", {"bits": 6, "levels": 16}),  # a 6-bit membrane, saturating at +-31
    ("lif", "subtract", {"readout_alpha": 0.7}),  # an LI readout with a synaptic current
])
def test_each_neuron_exports_bit_exact(events, tmp_path, neuron, reset, extra):
    torch.manual_seed(0)
    model = dense_model(events.frame_shape, events.num_classes, hidden=32, neuron=neuron, reset=reset, **extra)
    train(model, events.x_train[:256], events.y_train[:256], epochs=2)
    graph = _roundtrip(export(model, events.steps), tmp_path)
    kinds = [op.kind for op in graph.ops]
    assert kinds[2:-2] == {"cuba_lif": ["cuba_lif"], "rlif": ["recurrent", "lif"], "lif": ["lif"]}[neuron]
    assert graph.ops[-3].reset == reset
    assert (graph.ops[-1].i_state == "l1.i") == ("readout_alpha" in extra)
    _assert_bit_exact(model, graph, events.x_test)
    assert 0.01 < _hidden_spike_rate(graph, events.x_test[:64]) < 0.9
    if neuron == "rlif":  # the recurrence is live: without it the outputs differ
        graph.ops[2].weight = np.zeros_like(graph.ops[2].weight)
        assert not np.array_equal(graph.run_sequence(data.to_nhwc(events.x_test[:64]))["l1.v_out"],
                                  model.integers(events.x_test[:64])["readout"])
    if "bits" in extra:  # the membrane does saturate, in torch as in the IR
        v = model.layers[1]
        xq = model.quantize_input(events.x_test[:64]).flatten(2).to(torch.int64)
        state = v.init_state(64, xq)
        peak = 0
        for t in range(events.steps):
            cur = model.layers[0].step(xq[:, t], float(model.input_scale), v.scale, v.current)
            peak = max(peak, int(v.integrate(cur, state).abs().max()))
            v.step(cur, state)
        assert peak == 31


def test_the_decay_is_loihis_exactly():
    rng = np.random.default_rng(0)
    v = rng.integers(-(2**23), 2**23, 2000)
    d = rng.integers(0, 4097, 2000)
    got = tn.decay(torch.from_numpy(v), torch.from_numpy(d))
    np.testing.assert_array_equal(got.numpy(), st.decay(v, d))
    f = tn.decay(torch.tensor([1000.0, -1000.0, 7.0]), torch.tensor([1]))  # the float path truncates too
    assert f.tolist() == [999.0, -999.0, 6.0]


def test_bptt_reaches_the_first_step_through_the_membrane():
    """Input only at step 0, loss on the last step: the first layer's weight gets a gradient only through
    the membranes carried over time (the leaky ones), none when every neuron forgets at once (beta 0)."""
    def first_weight_grad(beta):
        torch.manual_seed(0)
        model = dense_model((6,), 3, hidden=8, neuron="lif", beta=beta, readout_beta=beta)
        model.calibrate(torch.ones(1))
        x = torch.zeros(4, 5, 6)
        x[:, 0] = torch.rand(4, 6)
        model.steps(x, exact=False)[:, -1].sum().backward()
        return model.layers[0].weight.grad.abs().sum()

    assert first_weight_grad(0.9) > 0
    assert first_weight_grad(0.0) == 0


def test_bad_models_and_inputs_are_one_clear_error(events):
    with pytest.raises(EdgesnnError, match=r"^LIF: beta must be a number in 0..1, got 1.5$"):
        tn.LIF(4, beta=1.5)
    with pytest.raises(EdgesnnError, match=r"^LIF: threshold 64 does not fit 6 bits \(at most 31\)$"):
        tn.LIF(4, bits=6)
    with pytest.raises(EdgesnnError, match=r"^LIF: reset must be one of subtract, zero, got 'half'$"):
        tn.LIF(4, reset="half")
    with pytest.raises(EdgesnnError, match=r"^an LI layer \(no spikes\) can only be the last layer$"):
        SpikingSequence((4,), [tn.QLinear(4, 3), tn.LI(3), tn.QLinear(3, 2), tn.LI(2)])
    with pytest.raises(EdgesnnError, match=r"^readout 'count' does not suit a last layer LI"):
        SpikingSequence((4,), [tn.QLinear(4, 3), tn.LI(3)], readout="count")
    with pytest.raises(EdgesnnError, match=r"^QLinear 5->3 does not take 4 features to LIF\(3\)$"):
        SpikingSequence((4,), [tn.QLinear(5, 3), tn.LIF(3)], readout="count")
    model = dense_model(events.frame_shape, events.num_classes, hidden=8)
    with pytest.raises(EdgesnnError, match=r"^the model has no input scale yet"):
        export(model, 10)
    model.calibrate(events.x_train)
    with pytest.raises(EdgesnnError, match=r"^input sequences have shape \(2, 10, 144\); this model takes \(batch, T, 1, 12, 12\)$"):
        model.integers(torch.zeros(2, 10, 144))
    graph = export(model, 10)
    with pytest.raises(EdgesnnError, match=r"this model takes \(batch, T=10, 12, 12, 1\)"):
        graph.run_sequence(data.to_nhwc(events.x_test[:2, :9]))


@pytest.mark.parametrize("readout", ["count", "last"])
def test_count_and_last_readouts_export_bit_exact(events, tmp_path, readout):
    torch.manual_seed(0)
    last = tn.LIF(events.num_classes, levels=32) if readout == "count" else tn.LI(events.num_classes)
    model = SpikingSequence(events.frame_shape, [tn.QLinear(144, 32), tn.CubaLIF(32, reset="zero"),
                                                 tn.QLinear(32, events.num_classes), last], readout=readout)
    train(model, events.x_train[:256], events.y_train[:256], epochs=2)
    graph = _roundtrip(export(model, events.steps), tmp_path)
    assert graph.sequence.readout == {graph.outputs[0]: readout}
    out = _assert_bit_exact(model, graph, events.x_test)
    assert out.dtype == (np.int32 if readout == "count" else np.int16)
    assert len(np.unique(out)) >= 2  # a live output, not a constant


@pytest.mark.parametrize("frame", [(2, 3, 4), (7,)])
def test_multichannel_and_feature_frames_export_bit_exact(tmp_path, frame):
    """C > 1: the IR's HWC frame holds torch's CHW features in another order (the first weight's columns
    are permuted); counts up to 5 make the input scale 2**-4 (5 -> 80)."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 6, (40, 4, *frame)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 40))
    torch.manual_seed(0)
    model = dense_model(frame, 3, hidden=16, neuron="rlif", levels=32)
    train(model, x, y, epochs=1)
    assert float(model.input_scale) == 2.0**-4
    graph = _roundtrip(export(model, 4), tmp_path)
    assert graph.tensors["input"].shape == ([3, 4, 2] if len(frame) == 3 else [7])
    _assert_bit_exact(model, graph, x)
    if len(frame) == 3:  # the permutation matters: torch's order in the IR gives other integers
        graph.ops[1].weight = model.layers[0].integers(float(model.input_scale), model.layers[1].scale)["weight"]
        assert not np.array_equal(graph.run_sequence(data.to_nhwc(x), keep_steps=True)["l1.v_out@steps"],
                                  model.integers(x, keep_steps=True)["steps"])


def test_recurrent_feedback_beyond_the_current_range_is_clamped_only_in_the_sum():
    """An 8-bit membrane's current is int8; 4 neurons always spiking feed back 4 x 64 = 256 to 4 neurons
    whose own current is -80: the IR clamps -80 + 256 to 127 (not -80 + 127), and so must torch."""
    model = dense_model((3,), 2, hidden=8, neuron="rlif", bits=8, levels=16)
    model.calibrate(torch.ones(1))
    with torch.no_grad():
        model.layers[0].weight.zero_()
        model.layers[0].bias.copy_(torch.tensor([5.0, -5.0] * 4))  # +-5 / (1/16) = +-80
        model.layers[1].recurrent.weight.fill_(4.0)  # 4 / (1/16) = 64 per spike
    x = torch.zeros(2, 4, 3)
    graph = export(model, 4)
    _assert_bit_exact(model, graph, x)
    out = st.run_sequence(graph, np.zeros((1, 4, 3), np.int8), keep_steps=True)
    assert out["l1.v_out@steps"][0, 1].tolist() == [-371, -32]  # the feedback, clamped in the sum, reaches v


def test_the_state_dict_rebuilds_the_same_integers(events, tmp_path):
    """Weights and buffers (input scale, decays) through safetensors into a model built from the same
    JSON-able arguments with another seed: the same integers (what a checkpoint holds)."""
    from safetensors.torch import load_file, save_file

    kwargs = dict(hidden=16, neuron="cuba_lif", beta=0.8, bits=10, levels=32, reset="zero", readout_alpha=0.5)
    model = dense_model(events.frame_shape, events.num_classes, **kwargs)
    train(model, events.x_train[:128], events.y_train[:128], epochs=1)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    back = dense_model(events.frame_shape, events.num_classes, seed=1, **kwargs)
    assert not torch.equal(back.layers[0].weight, model.layers[0].weight)
    back.load_state_dict(load_file(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(back.integers(events.x_test)["readout"], model.integers(events.x_test)["readout"])


def test_a_learned_readout_beta_is_the_decay_that_deploys(events):
    """learn_readout_beta (temporal-dense's and temporal-conv's kwarg): BPTT moves the LI's beta, the exported
    li decay is round(4096 (1 - beta)) of the trained value, and the IR equals torch's integers at every step."""
    from edgesnn import models

    model = models.build("temporal-dense", {"frame_shape": list(events.frame_shape), "classes": events.num_classes,
                                            "hidden": 16, "readout_beta": 0.8, "learn_readout_beta": True})
    li = model.layers[-1]
    assert li.learn_beta and not model.layers[1].learn_beta
    train(model, events.x_train[:256], events.y_train[:256], epochs=1)
    beta = float(li.beta.detach())
    graph = export(model, events.steps)
    d = int(graph.ops[-1].decay_v[0])
    assert abs(beta - 0.8) > 1e-3 and d == round(4096 * (1 - beta)) and d != 819
    assert int(graph.ops[2].decay_v[0]) == 410  # the hidden LIF's beta 0.9 stays
    _assert_bit_exact(model, graph, events.x_test[:96])
    with pytest.raises(EdgesnnError, match="LI: learn_beta must be true or false, got 'yes'"):
        dense_model(events.frame_shape, events.num_classes, learn_readout_beta="yes")
