"""netx for temporal graphs (backends/lava/netx_state.py): the narrow class lava-dl's netx holds exactly (dense
layers scaled by an exact power of two into Lava's own LIF, binary spikes, a count readout) is written as
model.net by `export --target lava` and run in lava-dl's netx itself (``hdf5.Network(reset_interval=T)``,
Loihi2SimCfg fixed_pt): every step's spikes of every sequence equal the golden interpreter's. The trained
models and anything else outside that class get no model.net and the reason, by name."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgesnn import targets
from edgesnn.backends.lava import netx_state
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from test_ir_state import neuron_graph, spec
from test_netx_lava_dl import TIMEOUT_S, _one_thread_env

T = 7


def chain(input_shift=5, bias=True, reset="zero") -> g.Graph:
    """int8 frames (2, 2), flattened -> dense (x 1) -> cuba_lif -> dense (x 2, a bias) -> lif (input shift 5:
    5 + 1 = Lava's 6)."""
    rng = np.random.default_rng(3)
    tensors = {"x": spec([2, 2], "int8", 1.0), "flat": spec([4], "int8", 1.0), "c0": spec([5], "int16", 1.0),
               "s0": spec([5], "int8", 1.0, spike_D=1), "c1": spec([4], "int16", 1.0),
               "s1": spec([4], "int8", 1.0, spike_D=1)}
    states = {"v0": st.StateSpec([5], "int32", 24, 1 / 64), "i0": st.StateSpec([5], "int32", 24, 1 / 64, "error"),
              "v1": st.StateSpec([4], "int32", 24, 1 / 2**input_shift)}
    w0 = rng.integers(-40, 40, (5, 4)).astype(np.int8)
    w0[0, 0], w0[1, 1] = 127, -127  # the IR's int8 extremes pass netx's weight optimizer unchanged
    w1 = rng.integers(-60, 100, (4, 5)).astype(np.int8)
    ops = [g.Reshape("flatten", ["x"], "flat"),
           g.Dense("d0", ["flat"], "c0", weight=w0, bias=np.zeros(5, np.int32), weight_scale=np.ones(5, np.float32),
                   multiplier=np.full(5, 1 << 30, np.int32), shift=np.full(5, 1, np.int32), clamp=[-32768, 32767]),
           st.CubaLIF("n0", ["c0"], "s0", v_state="v0", i_state="i0", decay_v=np.array([300], np.int32),
                      decay_i=np.array([700], np.int32), threshold=np.array([64 * 200], np.int32), reset="zero",
                      input_shift=6),
           g.Dense("d1", ["s0"], "c1", weight=w1, bias=rng.integers(-20, 20, 4).astype(np.int32) * bias,
                   weight_scale=np.ones(4, np.float32), multiplier=np.full(4, 1 << 30, np.int32),
                   shift=np.full(4, 2, np.int32), clamp=[-32768, 32767]),
           st.LIF("n1", ["c1"], "s1", v_state="v1", decay_v=np.array([500], np.int32),
                  threshold=np.array([64 * 150], np.int32), reset=reset, input_shift=input_shift)]
    return g.Graph(tensors, ops, "x", ["s1"], states=states, sequence=st.Sequence(T, {"s1": "count"}))


RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from edgesnn.backends.lava.compat import import_netx
    from edgesnn.backends.lava import netx_state
    from edgesnn.ir import load
    netx = import_netx()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    folder = sys.argv[1]
    graph, xq = load(folder + "/model.ir"), np.load(folder + "/xq.npy")
    net = netx.hdf5.Network(net_config=folder + "/model.net", reset_interval=graph.sequence.steps, reset_offset=1,
                            input_message_bits=netx_state.INPUT_MESSAGE_BITS)
    feed = netx_state.netx_sequence_feed(graph, xq)
    source = io.source.RingBuffer(data=feed)
    source.s_out.connect(net.inp)
    sink = io.sink.RingBuffer(shape=net.out.shape, buffer=feed.shape[1])
    net.out.connect(sink.a_in)
    net.run(condition=RunSteps(num_steps=feed.shape[1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    recorded = sink.data.get()
    net.stop()
    np.save(folder + "/netx_spikes.npy", netx_state.netx_sequence_spikes(graph, recorded, len(xq)))
    """)


def test_netx_runs_the_chain_bit_exact_over_sequences(tmp_path):
    graph = chain()
    graph.save(tmp_path / "g.ir")
    targets.export_ir("lava", tmp_path / "g.ir", tmp_path / "lava")
    net = json.loads((tmp_path / "lava" / "lava.json").read_text())
    assert net["netx"] == "model.net" and net["netx_summary"]["exact"] and net["netx_summary"]["latency_steps"] == 2
    assert [(row["du"], row["dv"], row["vth"], row["scale_shift"]) for row in net["netx_summary"]["layers"]] == [
        (699, 300, 200, 0), (4095, 500, 150, 1)]
    report = json.loads((tmp_path / "lava" / "loihi2.json").read_text())  # both neurons are Loihi's CUBA in netx
    assert report["loihi_cuba_layers"] == ["n0", "n1"] and report["estimated_layers"] == []
    xq = np.random.default_rng(1).integers(-100, 120, (4, T, 2, 2)).astype(np.int8)
    xq[2] = xq[0]  # the same sequence after another: the states start from zero again
    np.save(tmp_path / "lava" / "xq.npy", xq)
    run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "lava")], capture_output=True, text=True,
                         timeout=TIMEOUT_S, env=_one_thread_env())
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "lava" / "netx_spikes.npy")
    want = st.run_sequence(graph, xq, keep_steps=True)
    assert got.shape == want["s1@steps"].shape == (4, T, 4)
    assert int((got != want["s1@steps"]).sum()) == 0
    assert 0 < got.sum() < got.size and np.array_equal(got[2], got[0])
    hidden = st.run_sequence(_with_output(graph, "s0"), xq, keep_steps=True)["s0@steps"]
    assert 0 < hidden.sum() < hidden.size  # the first layer spikes too: both blocks are exercised


def _with_output(graph, name):
    import copy

    g2 = copy.deepcopy(graph)
    g2.outputs.append(name)
    g2.sequence.readout[name] = "count"
    return g2


@pytest.mark.parametrize("case,reason", [
    ("subtract", "n1: not Lava's LIF: reset by subtraction (Lava's LIF resets to zero)"),
    ("shift", "n1: its input shift 6 and d1's scale 2^1 shift the accumulator by 7, Lava's LIF by 6"),
    ("li", "n: an LI readout (netx's CUBA neuron always spikes); netx holds a chain of dense -> lif/cuba_lif blocks"),
    ("requantized", "d0: its requantization is not one exact power of two >= 1"),
])
def test_what_netx_cannot_hold_gets_no_file_and_the_reason(case, reason, tmp_path):
    graph = {"subtract": lambda: chain(reset="subtract"), "shift": lambda: chain(input_shift=6),
             "li": lambda: neuron_graph("li", bits=16, readout="mean"), "requantized": chain}[case]()
    if case == "requantized":
        graph.ops[1].multiplier = np.full(5, 1 << 29, np.int32)
    ok, why = netx_state.supported(graph)
    assert not ok and why.startswith(f"netx cannot hold this model over sequences exactly: {reason}"), why
    graph.save(tmp_path / "g.ir")
    targets.export_ir("lava", tmp_path / "g.ir", tmp_path / "lava")
    net = json.loads((tmp_path / "lava" / "lava.json").read_text())
    assert net["netx"] is None and net["netx_note"] == why
    assert not (tmp_path / "lava" / "model.net").exists()
