"""Temporal graphs in TFLite (backends/tflite/state.py): the state as inputs and outputs, one invoke per step,
every readout integer and every step's output equal to the golden interpreter's run_sequence in LiteRT's
reference kernels and TFLite Micro: LIF, CubaLIF, LI with both resets, 24-bit and saturating 12-bit states,
a recurrent network, the int8 -> int16 dense of int32.py, the digits-events test split through verify and
the CLI; sequences of the wrong length and what int32 cannot hold refused in one line."""

import numpy as np
import pytest

from edgesnn import targets
from edgesnn.backends.tflite import export_tflite, micro_available
from edgesnn.backends.tflite.state import compare_sequences, run_sequences
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from edgesnn.ir.fixedpoint import quantize_multipliers
from test_ir_state import currents, full_graph, neuron_graph

RUNTIMES = ["litert-reference"] + ["tflite-micro"] * micro_available()


def exported(graph, tmp_path):
    return export_tflite(graph, tmp_path / "model.tflite")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind,shift,bits", [("lif", 0, 24), ("lif", 6, 24), ("cuba_lif", 0, 24), ("cuba_lif", 6, 12),
                                             ("li", 0, 24), ("cuba_li", 6, 24)])
def test_neurons_are_bit_exact_over_sequences(tmp_path, kind, shift, bits, reset):
    rng = np.random.default_rng(3)
    graph = neuron_graph(kind, T=9, reset=reset, shift=shift, bits=bits, readout="count" if "lif" in kind else "mean", rng=rng)
    xq = currents(rng, 12, 9, 5)
    r = compare_sequences(exported(graph, tmp_path), graph, xq, RUNTIMES)
    assert r["samples"] == 12 and r["steps"] == 9 and r["mismatches"] == 0 and r["bit_exact"]
    for row in r["runtimes"].values():
        assert row["mismatches"] == row["mismatched_elements"] == row["mismatched_step_elements"] == 0


def test_saturation_and_both_resets(tmp_path):
    """A 12-bit membrane driven past its width saturates at 2047 (the LI's output is the membrane), and the two
    resets give different spike trains: each equal to the IR's at every step."""
    rng = np.random.default_rng(4)
    li = neuron_graph("li", T=9, bits=12, readout="last", rng=rng)
    li.ops[0].decay_v = np.zeros(5, np.int32)
    xq = currents(rng, 8, 9, 5, lo=200, hi=900)
    steps, _ = run_sequences(exported(li, tmp_path), li, xq, "litert-reference")
    assert steps[0].max() == 2047 and (steps[0][:, -1] == 2047).all()
    assert np.array_equal(steps[0], st.run_sequence(li, xq, keep_steps=True)["v_out@steps"])
    trains = {}
    for reset in ("subtract", "zero"):
        graph = neuron_graph("lif", T=9, reset=reset, bits=12, rng=np.random.default_rng(5))
        folder = tmp_path / reset
        folder.mkdir()
        path = exported(graph, folder)
        for runtime in RUNTIMES:
            steps, _ = run_sequences(path, graph, xq, runtime)
            assert np.array_equal(steps[0], st.run_sequence(graph, xq, keep_steps=True)["s@steps"]), runtime
        trains[reset] = steps[0]
    assert trains["subtract"].sum() > trains["zero"].sum() > 0


def test_the_file_takes_the_state_and_gives_it_back(tmp_path):
    import tflite

    graph = neuron_graph("cuba_lif")
    model = tflite.Model.GetRootAs(exported(graph, tmp_path).read_bytes(), 0).Subgraphs(0)
    names = lambda n, get: [model.Tensors(get(i)).Name().decode() for i in range(n)]  # noqa: E731
    assert names(model.InputsLength(), model.Inputs) == ["x", "state:v", "state:i"]
    assert names(model.OutputsLength(), model.Outputs) == ["s", "state:v:next", "state:i:next"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_recurrent_network_is_bit_exact(tmp_path, runtime):
    """recurrent (its own spikes of the previous step, W int4, per-channel requantization) -> cuba_lif -> li
    into int32, with an ``overflow: error`` state: every step's spikes and membrane equal to the IR's."""
    graph = full_graph()
    xq = currents(np.random.default_rng(2), 20, 7, 5)
    steps, _ = run_sequences(exported(graph, tmp_path), graph, xq, runtime)
    want = st.run_sequence(graph, xq, keep_steps=True)
    assert np.array_equal(steps[0], want["s@steps"]) and np.array_equal(steps[1], want["m@steps"])
    assert 0 < steps[0].sum() < steps[0].size  # the feedback has spikes to carry


def test_wrong_sequences_and_what_int32_cannot_hold_are_one_line(tmp_path):
    graph = neuron_graph("lif", T=7)
    path = exported(graph, tmp_path)
    with pytest.raises(EdgesnnError, match=r"^input sequences have shape \(2, 6, 5\) \(batch, T=6, 5\); this model "
                                           r"takes \(batch, T=7, 5\)"):
        run_sequences(path, graph, np.zeros((2, 6, 5), np.int16), "litert-reference")
    wide = full_graph()
    wide.ops[0].shift = np.full(5, 20, np.int32)  # a left shift of 20: the feedback beyond 2**30
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'rec' \(recurrent\) can reach a feedback accumulator of "):
        export_tflite(wide, tmp_path / "rec.tflite")
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'n' \(lif\) shifts its input left by 20 beyond int32$"):
        export_tflite(neuron_graph("lif", shift=20), tmp_path / "lif.tflite")
    with pytest.raises(EdgesnnError, match=r"^tflite: IR op 'n' \(lif\) adds an input of up to 32,768 to state 'v' "
                                           r"of up to 2,147,483,647, beyond int32, where TFLite's int32 ADD wraps$"):
        export_tflite(neuron_graph("lif", bits=32), tmp_path / "lif.tflite")
    assert not (tmp_path / "rec.tflite").exists() and not (tmp_path / "lif.tflite").exists()


def events_graph() -> g.Graph:
    """digits-events frames (12, 12, 1), binary events as the int8 64 -> flattened -> a LIF per pixel, spikes counted."""
    spec = lambda shape, dtype, scale, D=None: g.TensorSpec(shape, dtype, scale, 0, D)  # noqa: E731
    tensors = {"frame": spec([12, 12, 1], "int8", 1 / 64), "flat": spec([144], "int8", 1 / 64), "s": spec([144], "int8", 1.0, 1)}
    ops = [g.Reshape("flat", ["frame"], "flat"),
           st.LIF("lif", ["flat"], "s", v_state="v", decay_v=np.array([700], np.int32),
                  threshold=np.array([150], np.int32), reset="zero")]
    return g.Graph(tensors, ops, "frame", ["s"], states={"v": st.StateSpec([144], "int16", 10, 1 / 64)},
                   sequence=st.Sequence(10, {"s": "count"}))


def test_verify_is_bit_exact_over_the_digits_events_test_split(tmp_path):
    ir = tmp_path / "model.ir"
    events_graph().save(ir)
    artifact = targets.export_ir("tflite", ir, tmp_path / "d", calibration=np.zeros((1, 12, 12, 1), np.float32))
    r = targets.verify(artifact, data="digits-events")
    assert r["samples"] == 450 and r["steps"] == 10 and r["mismatches"] == 0 and r["bit_exact"]
    assert set(r["exact_in"]) >= set(RUNTIMES) and all(row["mismatched_step_elements"] == 0 for row in r["runtimes"].values())
    with pytest.raises(EdgesnnError, match="has static samples"):
        targets.verify(artifact, data="digits")


def dense_graph(rng, n=37, m=23, zp=-3) -> g.Graph:
    """int8 -> int16 dense (a temporal model's current), multipliers from 2**-20 to 40: shifts on both sides."""
    reals = np.exp(rng.uniform(np.log(2.0**-20), np.log(40.0), m))
    mult, shift = quantize_multipliers(reals)
    w = rng.integers(-127, 128, (m, n)).astype(np.int8)
    w[0] = 127  # the widest accumulator this input allows
    bias = rng.integers(-20000, 20000, m).astype(np.int32)
    tensors = {"x": g.TensorSpec([1, 1, n], "int8", 0.5, zp), "flat": g.TensorSpec([n], "int8", 0.5, zp),
               "y": g.TensorSpec([m], "int16", 0.25, 0)}
    op = g.Dense("fc", ["flat"], "y", multiplier=np.asarray(mult, np.int32), shift=np.asarray(shift, np.int32),
                 clamp=[-32768, 32767], weight=w, bias=bias, weight_scale=np.full(m, 0.01, np.float32))
    return g.Graph(tensors, [g.Reshape("flat", ["x"], "flat"), op], "x", ["y"])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_to_int16_dense_is_the_irs_requantization(tmp_path, runtime):
    """No TFLite kernel writes an int8 dense into int16 rounding as the IR: int32.py's program does, at the
    accumulator's extremes and across saturation of int16 too."""
    from edgesnn.backends.tflite import run

    rng = np.random.default_rng(7)
    graph = dense_graph(rng)
    xq = rng.integers(-128, 128, (300, 1, 1, 37)).astype(np.int8)
    xq[0], xq[1], xq[2] = 127, -128, -3  # the extremes and the zero point
    want = graph.run_integer(xq)["y"]
    got = run(exported(graph, tmp_path), xq, runtime).outputs[0].reshape(want.shape)
    assert np.array_equal(got, want)
    assert (np.abs(want) == 32767).any() and (np.abs(want) < 100).any()  # saturated and small values both occur


def test_the_int32_operators_have_op_version_cc_versions(tmp_path):
    from edgesnn.backends.tflite.op_versions import INT32_RULES, Signature, Spec, version

    sig = lambda op, i, o: Signature(op, tuple(Spec(t, (1, 1, 1, 5)) for t in i), tuple(Spec(t, (1, 1, 1, 5)) for t in o))  # noqa: E731
    assert version(sig("CAST", ["int8"], ["int32"])) == version(sig("CAST", ["bool"], ["int8"])) == 3
    assert version(sig("CAST", ["bool"], ["int32"])) == version(sig("CAST", ["int32"], ["int16"])) == 1
    assert version(sig("GREATER", ["int32", "int32"], ["bool"])) == 1 and version(sig("GREATER", ["int8"] * 2, ["bool"])) == 2
    assert version(sig("SUB", ["int32", "int32"], ["int32"])) == version(sig("DIV", ["int32", "int32"], ["int32"])) == 1
    assert version(Signature("DIV", (Spec("int32", (1, 1, 1, 1, 5)), Spec("int32", (1,))), (Spec("int32", (1, 1, 1, 1, 5)),))) == 2
    assert set(INT32_RULES) == {"SUB", "DIV", "GREATER", "CAST"}


def test_train_export_verify_from_the_command_line(tmp_path, temporal_dense):
    """edgesnn train (temporal-dense, digits-events) -> export --target tflite -> verify: every readout integer
    of the 450 test sequences equal to the IR's in LiteRT's reference kernels and TFLite Micro."""
    import json

    from conftest import temporal_dense_copy
    from test_cli import edgesnn

    temporal_dense_copy(temporal_dense, tmp_path)
    r = edgesnn("export", tmp_path / "ck", "--target", "tflite", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["model.ir", "model.tflite"]
    r = edgesnn("verify", tmp_path / "d" / "model.tflite", "--data", "digits-events", "--json", tmp_path / "v.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["samples"] == 450 and v["steps"] == 10 and v["mismatches"] == 0 and v["passed"]
    assert set(v["exact_in"]) >= set(RUNTIMES)
    metrics = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert v["ir_accuracy"] == metrics["test_accuracy"]
    assert "bit-exact with the IR in litert-reference" in r.stdout


@pytest.mark.parametrize("change,message", [
    ("zero", "operator 0 (DIV): divides by something other than a constant without zeros"),
    ("input", "operator 0 (DIV): divides by something other than a constant without zeros"),
    ("cast", "operator 1 (CAST): casts or compares types edgesnn never writes"),
])
def test_hostile_int32_operators_are_refused_before_a_runtime_reads_them(change, message):
    """A division by zero crashes the runtimes: validate.py refuses it, and casts edgesnn never writes."""
    from edgesnn.backends.tflite import flatbuffer as fb
    from edgesnn.backends.tflite.validate import validate

    m = fb.Model()
    x = m.add_tensor(fb.Tensor("x", [1, 4], "int32"))
    d = m.add_tensor(fb.Tensor("d", [1, 4], "int32")) if change == "input" else \
        m.add_tensor(fb.Tensor("d", [1], "int32", data=np.array([0 if change == "zero" else 4096], np.int32)))
    y = m.add_tensor(fb.Tensor("y", [1, 4], "int32"))
    z = m.add_tensor(fb.Tensor("z", [1, 4], "bool" if change == "cast" else "int8"))  # int32 -> bool: never written
    m.add_operator(fb.Operator("DIV", [x, d], [y], "DivOptions", {"FusedActivationFunction": 0}))
    m.add_operator(fb.Operator("CAST", [y], [z]))
    m.inputs, m.outputs = [x] + ([d] if change == "input" else []), [z]
    with pytest.raises(EdgesnnError, match=f"^model.tflite: {message.replace('(', '.').replace(')', '.')}$"):
        validate(m.serialize(), "model.tflite")
