"""The Lava target of temporal graphs: the state in the ProcessModels (Lava's own bit-accurate LIF where its
arithmetic is the IR's, edgesnn's Neuron and Recurrent processes elsewhere), zeroed at each sequence's first
step, every step's output integers and the readout bit-exact with the golden interpreter in Lava's simulator:
the trained digits-events model from the command line over a few test sequences, tiny hand-built graphs for
both resets, saturation (a 10-bit membrane, and Lava's 24-bit one), currents, an LI readout, a recurrent
loop, the reset between sequences, and the refusals."""

import json

import numpy as np
import pytest

from edgesnn import targets
from edgesnn.backends.lava import sequences as seq
from edgesnn.backends.lava.network import run_in_subprocess
from edgesnn.errors import EdgesnnError
from edgesnn.ir import state as st
from conftest import temporal_dense_copy
from test_cli import assert_user_error, edgesnn
from test_ir_state import currents, full_graph, neuron_graph

SAMPLES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory, temporal_dense):
    """train, export --target lava and verify from the command line, as a user runs them."""
    d = tmp_path_factory.mktemp("temporal_lava")
    temporal_dense_copy(temporal_dense, d)
    r = edgesnn("export", d / "ck", "--target", "lava", "--out", d / "lava")
    assert r.returncode == 0, r.stderr
    assert "lava: l0 (lif): edgesnn Neuron: reset by subtraction (Lava's LIF resets to zero)" in r.stdout
    return d


def test_cli_export_and_verify_are_bit_exact_over_sequences(trained):
    d = trained
    r = edgesnn("verify", d / "lava", "--data", "digits-events", "--samples", SAMPLES, "--json", d / "v.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((d / "v.json").read_text())
    assert v["passed"] and v["samples"] == SAMPLES and v["steps"] == 10 and v["readout"] == "mean"
    assert v["mismatches"] == 0 and v["mismatched_elements"] == 0 and v["mismatched_step_elements"] == 0
    assert v["models"] == {"l0": "edgesnn Neuron", "l1": "edgesnn Neuron"}
    net = json.loads((d / "lava" / "lava.json").read_text())
    assert net["steps"] == 10 and net["netx"] is None and "netx" in net["netx_note"]
    assert [p["kind"] for p in net["processes"]] == ["dense", "lif", "dense", "li"]
    assert sorted(p.name for p in (d / "lava").iterdir()) == ["lava.json", "loihi2.json", "model.ir"]
    from edgesnn import data
    from edgesnn.ir import load

    graph = load(d / "lava" / "model.ir")  # the IR's accuracy on those sequences, which Lava equals
    ds = data.load("digits-events", temporal=True)
    want = graph.run_sequence(data.to_nhwc(ds.x_test[:SAMPLES]))[graph.outputs[0]]
    assert v["accuracy"] == float((want.argmax(1) == np.asarray(ds.y_test)[:SAMPLES]).mean())


def test_cli_refuses_spike_trains(trained, tmp_path):
    d = trained
    assert_user_error(edgesnn("export", d / "ck", "--target", "lava", "--lava-mode", "rate-burst", "--out", tmp_path / "x"),
                      "lava: a model over sequences runs graded spikes only (one IR step per Lava step, its spikes 0/1), "
                      "not rate-burst")
    assert not (tmp_path / "x").exists()
    assert_user_error(edgesnn("verify", d / "lava", "--lava-mode", "bit-plane"), "runs graded spikes only, not bit-plane")


def _lava(graph, xq, tmp_path):
    graph.save(tmp_path / "g.ir")
    got = run_in_subprocess(tmp_path / "g.ir", xq, "graded", 300)
    r = seq.compare(graph, xq, got)
    return r, got


def _lif(kind, shift=6, reset="zero", **kw):
    graph = neuron_graph(kind, reset=reset, shift=shift, overflow="error" if kind == "cuba_lif" else "saturate", **kw)
    op = graph.ops[0]
    op.decay_v, op.threshold = np.array([300], np.int32), np.array([64 * 300], np.int32)
    if kind == "cuba_lif":
        op.decay_i = np.array([700], np.int32)
    return graph


@pytest.mark.parametrize("kind", ["lif", "cuba_lif"])
def test_lavas_own_lif_is_the_irs_arithmetic(kind, tmp_path):
    """Reset to zero, input shift 6, 24 bits, one decay and a threshold vth * 64: Lava's PyLifResetModelBitAcc.
    The same spike trains are not the subtracting neuron's: the compare sees the difference."""
    graph = _lif(kind)
    assert seq.describe(graph, "graded")["processes"][0]["model"] == seq.LAVA_LIF
    xq = currents(np.random.default_rng(2), 4, 7, 5, -600, 900)
    r, got = _lava(graph, xq, tmp_path)
    assert r["mismatches"] == 0 and r["mismatched_elements"] == 0
    assert 0 < got["s"].sum() < got["s"].size
    graph.ops[0].reset = "subtract"
    assert seq.compare(graph, xq, got)["mismatches"] > 0


def _reaches(graph, xq, name) -> bool:
    """Whether state ``name`` reaches its bound on some step (the IR's Stepper)."""
    stepper = st.Stepper(graph)
    stepper.reset(len(xq))
    lo, hi = graph.states[name].bounds()
    hit = False
    for t in range(xq.shape[1]):
        stepper.step(xq[:, t])
        hit |= bool((stepper.states[name] <= lo).any() or (stepper.states[name] >= hi).any())
    return hit


def test_lavas_lif_saturates_its_24_bit_membrane_as_the_ir(tmp_path):
    """Five steps of -32000 << 6 hold v at -(2**23 - 1); climbing back takes the spikes to step 10, where an
    unsaturated membrane would not spike at all (and an int16 a_in would have wrapped the shifted input)."""
    graph = _lif("lif", C=1, T=12)
    graph.ops[0].decay_v, graph.ops[0].threshold = np.array([0], np.int32), np.array([640], np.int32)
    xq = np.array([[-32000] * 5 + [32767] * 7], np.int16).reshape(1, 12, 1)
    assert _reaches(graph, xq, "v")
    r, got = _lava(graph, xq, tmp_path)
    assert r["mismatches"] == 0
    assert got["s"][0, :, 0].tolist() == [0] * 9 + [1, 1, 1]


CASES = {
    "lif subtract": lambda: neuron_graph("lif", reset="subtract"),
    "cuba_lif subtract, shift 6": lambda: neuron_graph("cuba_lif", reset="subtract", shift=6),
    "cuba_lif zero, per-channel": lambda: neuron_graph("cuba_lif", reset="zero"),
    "10-bit lif saturating": lambda: neuron_graph("lif", bits=10),
    "cuba li, mean": lambda: neuron_graph("cuba_li", readout="mean", bits=20),
    "recurrent network": full_graph,
}


@pytest.mark.parametrize("case", list(CASES))
def test_edgesnn_processes_are_bit_exact_and_reset_between_sequences(case, tmp_path):
    """Sequences 0 and 2 are the same: after sequence 1, the states start from zero again."""
    graph = CASES[case]()
    net = seq.describe(graph, "graded")
    assert all(p["model"].startswith("edgesnn") for p in net["processes"] if p["kind"] in st.OP_TYPES)
    lo, hi = (-600, 300) if "saturating" in case else (-300, 500)  # below -511, held there (no spike resets it)
    xq = currents(np.random.default_rng(4), 3, graph.sequence.steps, 5, lo, hi)
    xq[2] = xq[0]
    if "saturating" in case:
        assert _reaches(graph, xq, "v")
    r, got = _lava(graph, xq, tmp_path)
    assert r["mismatches"] == 0 and r["mismatched_elements"] == 0, r
    for o in graph.outputs:
        assert np.array_equal(got[o][2], got[o][0]) and got[o][0].any()


def test_why_lavas_lif_is_not_used():
    graph = neuron_graph("cuba_lif", reset="subtract", shift=0, bits=16)
    _, why = seq.loihi_lif(graph, graph.ops[0], [])
    assert why == ("reset by subtraction (Lava's LIF resets to zero); input shift 0 (Lava's LIF shifts its input by 6); "
                   "a 16-bit membrane (Lava's is 24 bits); a current that saturates or is not 24 bits (Lava's wraps "
                   "at 24 bits); per-channel decays or thresholds (Lava's LIF has one each)")
    graph = _lif("lif")
    assert seq.loihi_lif(graph, graph.ops[0], []) == ({"du": 4095, "dv": 300, "vth": 300}, "the IR's arithmetic exactly")


def test_a_state_wider_than_loihis_is_refused_by_name(tmp_path):
    graph = neuron_graph("lif", bits=32)
    graph.save(tmp_path / "model.ir")
    with pytest.raises(EdgesnnError, match=r"^lava: state 'v' has 32 bits; Loihi's neuron state has 24$"):
        targets.export_ir("lava", tmp_path / "model.ir", tmp_path / "out")
    assert not (tmp_path / "out").exists()
