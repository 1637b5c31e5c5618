"""Temporal graphs in ONNX (backends/onnx/state.py): the state as int64 inputs and outputs, one onnxruntime run
per step, every readout integer and every step's output equal to the golden interpreter's run_sequence: LIF,
CubaLIF, LI and CubaLI with both resets, input shifts (20: beyond int32), 24- and 32-bit states, a 12-bit
membrane that saturates, a recurrent network; the file passes onnx.checker's full check; ONNX's reference
evaluator computes the same steps; the CLI's train, export and verify of temporal-dense on digits-events; a
sequence of the wrong length is one line; onnx-qcdq stays refused."""

import json

import numpy as np
import onnx
import pytest

from edgesnn.backends.onnx import export_integer, run
from edgesnn.backends.onnx.state import compare_sequences, run_sequences
from edgesnn.errors import EdgesnnError
from edgesnn.ir import state as st
from test_ir_state import currents, full_graph, neuron_graph


def exported(graph, tmp_path, name="model.onnx"):
    return export_integer(graph, tmp_path / name)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind,shift,bits", [("lif", 0, 24), ("lif", 6, 24), ("lif", 0, 32), ("lif", 20, 32), ("cuba_lif", 0, 24),
                                             ("cuba_lif", 6, 12), ("li", 0, 24), ("li", 0, 32), ("cuba_li", 6, 24)])
def test_neurons_are_bit_exact_over_sequences(tmp_path, kind, shift, bits, reset):
    rng = np.random.default_rng(3)
    graph = neuron_graph(kind, T=9, reset=reset, shift=shift, bits=bits, readout="count" if "lif" in kind else "mean", rng=rng)
    xq = currents(rng, 12, 9, 5)
    r = compare_sequences(exported(graph, tmp_path), graph, xq)
    assert r["samples"] == 12 and r["steps"] == 9 and r["mismatches"] == 0 and r["bit_exact"]
    assert r["mismatched_elements"] == r["mismatched_step_elements"] == 0
    steps = st.run_sequence(graph, xq, keep_steps=True)[f"{graph.outputs[0]}@steps"]
    if kind in ("li", "cuba_li"):
        assert steps.min() < 0 < steps.max()  # negative membranes decay as positive ones
    elif bits > 12:
        assert 0 < steps.sum() < steps.size


def test_saturation_and_both_resets(tmp_path):
    """A 12-bit membrane driven past its width saturates at 2047 (the LI's output is the membrane), and the two
    resets give different spike trains: each equal to the IR's at every step."""
    rng = np.random.default_rng(4)
    li = neuron_graph("li", T=9, bits=12, readout="last", rng=rng)
    li.ops[0].decay_v = np.zeros(5, np.int32)
    xq = currents(rng, 8, 9, 5, lo=200, hi=900)
    steps, _ = run_sequences(exported(li, tmp_path), li, xq)
    assert steps[0].max() == 2047 and (steps[0][:, -1] == 2047).all()
    assert np.array_equal(steps[0], st.run_sequence(li, xq, keep_steps=True)["v_out@steps"])
    trains = {}
    for reset in ("subtract", "zero"):
        graph = neuron_graph("lif", T=9, reset=reset, bits=12, rng=np.random.default_rng(5))
        steps, _ = run_sequences(exported(graph, tmp_path, f"{reset}.onnx"), graph, xq)
        assert np.array_equal(steps[0], st.run_sequence(graph, xq, keep_steps=True)["s@steps"]), reset
        trains[reset] = steps[0]
    assert trains["subtract"].sum() > trains["zero"].sum() > 0


def test_a_recurrent_network_is_bit_exact(tmp_path):
    """recurrent (its own spikes of the previous step, W int4, per-channel requantization by requant.py) ->
    cuba_lif -> li into int32 with an ``overflow: error`` state: every step's spikes and membrane, and the
    readouts, equal to the IR's; a second batch starts from zero states again."""
    graph = full_graph()
    xq = currents(np.random.default_rng(2), 20, 7, 5)
    path = exported(graph, tmp_path)
    steps, runtime = run_sequences(path, graph, xq)
    want = st.run_sequence(graph, xq, keep_steps=True)
    assert np.array_equal(steps[0], want["s@steps"]) and np.array_equal(steps[1], want["m@steps"])
    assert steps[0].sum() > 0 and runtime.startswith("onnxruntime ")
    again, _ = run_sequences(path, graph, xq[::-1])
    assert np.array_equal(again[1], want["m@steps"][::-1])
    assert compare_sequences(path, graph, xq)["mismatches"] == 0


def test_the_file_takes_the_state_and_gives_it_back(tmp_path):
    graph = full_graph()
    model = onnx.load(str(exported(graph, tmp_path)))
    onnx.checker.check_model(model, full_check=True)
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    i64 = onnx.TensorProto.INT64
    assert ins == [("x", onnx.TensorProto.INT16), ("state:v", i64), ("state:i", i64), ("state:prev", i64), ("state:vo", i64)]
    assert outs == [("s", onnx.TensorProto.INT8), ("m", onnx.TensorProto.INT32), ("state:v:next", i64),
                    ("state:i:next", i64), ("state:prev:next", i64), ("state:vo:next", i64)]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edgesnn.sequence"]) == {"steps": 7, "readout": {"s": "count", "m": "mean"}}
    assert [s["input"] for s in json.loads(meta["edgesnn.states"])] == ["state:v", "state:i", "state:prev", "state:vo"]
    assert {n.op_type for n in model.graph.node} <= {"Abs", "Add", "Cast", "Clip", "Div", "Greater", "MatMul", "Mul",
                                                     "Sign", "Sub"}


def test_onnx_reference_evaluator_computes_the_same_steps(tmp_path):
    """A second implementation of the operators (ONNX's Python reference evaluator) steps the same file to the
    IR's membranes, negative ones included (the decay divides magnitudes only, so how a runtime rounds a
    negative integer Div cannot enter)."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(8)
    graph = neuron_graph("cuba_li", T=6, bits=16, readout="last", rng=rng)
    xq = currents(rng, 6, 6, 5, lo=-500, hi=300)
    ref = ReferenceEvaluator(onnx.load(str(exported(graph, tmp_path))))
    states = {f"state:{n}": np.zeros((6, 5), np.int64) for n in graph.states}
    steps = []
    for t in range(6):
        out = ref.run(None, {"x": xq[:, t], **states})
        steps.append(out[0])
        states = dict(zip(states, out[1:]))
    want = st.run_sequence(graph, xq, keep_steps=True)["v_out@steps"]
    assert np.array_equal(np.stack(steps, 1), want) and want.min() < 0


def test_wrong_sequences_and_other_files_are_one_line(tmp_path):
    graph = neuron_graph("lif", T=7)
    path = exported(graph, tmp_path)
    with pytest.raises(EdgesnnError, match=r"^input sequences have shape \(2, 6, 5\) \(batch, T=6, 5\); this model "
                                           r"takes \(batch, T=7, 5\)") as e:
        run_sequences(path, graph, np.zeros((2, 6, 5), np.int16))
    assert "\n" not in str(e.value)
    other = neuron_graph("cuba_lif", T=7)
    with pytest.raises(EdgesnnError, match=r"not the stateful ONNX file of its IR"):
        run_sequences(path, other, np.zeros((2, 7, 5), np.int16))
    with pytest.raises(EdgesnnError, match=r"a model over sequences runs one step at a time with its states"):
        run(path, graph, np.zeros((2, 5), np.int16))


def test_train_export_verify_from_the_command_line(tmp_path, temporal_dense):
    """edgesnn train (temporal-dense, digits-events) -> export --target onnx -> verify: every readout integer and
    every step's output of the 450 test sequences equal to the IR's in onnxruntime; onnx-qcdq refuses the model."""
    from conftest import temporal_dense_copy
    from test_cli import assert_user_error, edgesnn

    temporal_dense_copy(temporal_dense, tmp_path)
    r = edgesnn("export", tmp_path / "ck", "--target", "onnx", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["model.ir", "model.onnx"]
    onnx.checker.check_model(onnx.load(str(tmp_path / "d" / "model.onnx")), full_check=True)
    r = edgesnn("verify", tmp_path / "d" / "model.onnx", "--data", "digits-events", "--json", tmp_path / "v.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["samples"] == 450 and v["steps"] == 10 and v["mismatches"] == 0 and v["passed"] and v["bit_exact"]
    assert v["mismatched_step_elements"] == 0
    metrics = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert v["ir_accuracy"] == metrics["test_accuracy"]
    assert "bit-exact with the IR in onnxruntime (450 samples)" in r.stdout
    assert_user_error(edgesnn("export", tmp_path / "ck", "--target", "onnx-qcdq", "--out", tmp_path / "q"),
                      "--target onnx-qcdq runs no stateful graph")
    assert not (tmp_path / "q").exists()
