"""IR state over time: lif / cuba_lif / li / recurrent ops, run over sequences by the golden interpreter,
checked against a reference written here element by element in Python integers (Loihi's decay, TFLite's
requantization spelled out), plus reset between sequences, overflow, bad input and the file round trip."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_h

from edgesnn import ir
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import serialize
from edgesnn.ir import state as st
from edgesnn.ir.fixedpoint import quantize_multiplier

I32 = [-(2**31), 2**31 - 1]


# ---------------------------------------------------------------- the reference, in Python integers

def ref_decay(v: int, d: int) -> int:
    p = v * (4096 - d)
    return (abs(p) >> 12) * (1 if p > 0 else -1 if p < 0 else 0)


def ref_hold(v: int, bits: int) -> int:
    top = 2 ** (bits - 1) - 1
    return max(-top, min(top, v))


def ref_mbqm(x: int, m: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier on one int32."""
    x = x << max(shift, 0)
    if x == m == -(2**31):
        high = 2**31 - 1
    else:
        ab = x * m
        nudged = ab + (2**30 if ab >= 0 else 1 - 2**30)
        high = abs(nudged) // 2**31 * (1 if nudged >= 0 else -1)  # C division truncates toward zero
    e = max(-shift, 0)
    mask = (1 << e) - 1
    return (high >> e) + ((high & mask) > (mask >> 1) + (high < 0))


def ref_lif(xs, decay_v, theta, reset, shift=0, bits=24, decay_i=None):
    """One neuron over a sequence of integer inputs: (spikes, membranes after reset)."""
    v = i = 0
    spikes, vs = [], []
    for x in xs:
        drive = x << shift
        if decay_i is not None:
            i = ref_hold(ref_decay(i, decay_i) + drive, bits)
            drive = i
        v = ref_hold(ref_decay(v, decay_v) + drive, bits)
        s = int(v > theta)
        if s:
            v = v - theta if reset == "subtract" else 0
        spikes.append(s)
        vs.append(v)
    return spikes, vs


# ---------------------------------------------------------------- graph builders

def spec(shape, dtype, scale=1.0, spike_D=None):
    return g.TensorSpec(list(shape), dtype, scale, 0, spike_D)


def neuron_graph(kind, C=5, T=7, reset="subtract", shift=0, bits=24, overflow="saturate", readout="count", rng=None):
    rng = rng or np.random.default_rng(0)
    scale = 0.5
    tensors = {"x": spec([C], "int16", scale)}
    states = {"v": st.StateSpec([C], "int32", bits, scale / 2**shift, overflow)}
    kw = dict(v_state="v", decay_v=rng.integers(0, 4097, C).astype(np.int32), input_shift=shift)
    if kind in ("cuba_lif",) or kind == "cuba_li":
        states["i"] = st.StateSpec([C], "int32", bits, scale / 2**shift, overflow)
        kw.update(i_state="i", decay_i=rng.integers(0, 4097, C).astype(np.int32))
    if kind in ("lif", "cuba_lif"):
        tensors["s"] = spec([C], "int8", 1.0, spike_D=1)
        cls = st.LIF if kind == "lif" else st.CubaLIF
        op = cls("n", ["x"], "s", threshold=rng.integers(50, 400, C).astype(np.int32) << shift, reset=reset, **kw)
        out = "s"
    else:
        tensors["v_out"] = spec([C], "int32", scale / 2**shift)
        op = st.LI("n", ["x"], "v_out", **kw)
        out = "v_out"
    return g.Graph(tensors, [op], "x", [out], states=states, sequence=st.Sequence(T, {out: readout}))


def currents(rng, n, T, C, lo=-300, hi=500):
    return rng.integers(lo, hi, (n, T, C)).astype(np.int16)


# ---------------------------------------------------------------- neurons against the reference

@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("kind,shift", [("lif", 0), ("lif", 6), ("cuba_lif", 0), ("cuba_lif", 6)])
def test_lif_and_cuba_lif_match_the_reference(kind, shift, reset):
    rng = np.random.default_rng(1)
    graph = neuron_graph(kind, reset=reset, shift=shift, rng=rng)
    xq = currents(rng, 6, 7, 5)
    out = st.run_sequence(graph, xq, keep_steps=True)
    op = graph.ops[0]
    theta = op.threshold.tolist()
    for n in range(6):
        for c in range(5):
            di = int(op.decay_i[c]) if kind == "cuba_lif" else None
            spikes, _ = ref_lif(xq[n, :, c].tolist(), int(op.decay_v[c]), theta[c], reset, shift, 24, di)
            assert out["s@steps"][n, :, c].tolist() == spikes
            assert out["s"][n, c] == sum(spikes)
    assert out["s"].dtype == np.int32 and out["s@steps"].dtype == np.int8
    assert 0 < out["s"].sum() < 6 * 7 * 5  # the thresholds are met sometimes, not always


def test_if_is_lif_without_decay_and_the_membrane_carries_over():
    """decay 0, threshold 10, inputs 4 each step: 4, 8, 12 -> spike (v 2), 6, 10 (not > 10), 14 -> spike."""
    graph = neuron_graph("lif", C=1, T=6)
    graph.ops[0].decay_v = np.array([0], np.int32)
    graph.ops[0].threshold = np.array([10], np.int32)
    out = st.run_sequence(graph, np.full((1, 6, 1), 4, np.int16), keep_steps=True)
    assert out["s@steps"][0, :, 0].tolist() == [0, 0, 1, 0, 0, 1] and out["s"].tolist() == [[2]]


def test_loihi_decay_rounds_toward_zero_for_both_signs():
    v = np.array([1000, -1000, 1, -1, 4095, -4095], np.int64)
    np.testing.assert_array_equal(st.decay(v, np.int64(1)), [ref_decay(int(a), 1) for a in v])
    assert st.decay(np.array([1000, -1000]), np.int64(1)).tolist() == [999, -999]  # 1000 * 4095 / 4096 = 999.75
    assert st.decay(np.array([7, -7]), np.int64(4096)).tolist() == [0, 0]
    assert st.decay(np.array([7, -7]), np.int64(0)).tolist() == [7, -7]


@pytest.mark.parametrize("kind", ["li", "cuba_li"])
@pytest.mark.parametrize("readout", ["mean", "last"])
def test_li_readouts(kind, readout):
    rng = np.random.default_rng(2)
    graph = neuron_graph(kind, readout=readout, rng=rng)
    xq = currents(rng, 4, 7, 5)
    out = st.run_sequence(graph, xq, keep_steps=True)
    op = graph.ops[0]
    for n in range(4):
        for c in range(5):
            v = i = 0
            vs = []
            for x in xq[n, :, c].tolist():
                drive = x
                if kind == "cuba_li":
                    i = ref_hold(ref_decay(i, int(op.decay_i[c])) + drive, 24)
                    drive = i
                v = ref_hold(ref_decay(v, int(op.decay_v[c])) + drive, 24)
                vs.append(v)
            assert out["v_out@steps"][n, :, c].tolist() == vs
            assert out["v_out"][n, c] == (sum(vs) if readout == "mean" else vs[-1])
    real = st.readout_real(graph, "v_out", out["v_out"])
    want = out["v_out@steps"].astype(np.float64).mean(axis=1) * 0.5 if readout == "mean" else out["v_out"] * 0.5
    np.testing.assert_allclose(real, want, rtol=1e-12)


def test_recurrent_network_matches_the_reference():
    """int8 input -> dense (int32 current) -> + W_rec . previous spikes -> lif -> dense -> li (mean)."""
    rng = np.random.default_rng(3)
    F, H, O, T, N = 6, 4, 3, 9, 5
    w1 = rng.integers(-127, 128, (H, F)).astype(np.int8)
    wr = rng.integers(-127, 128, (H, H)).astype(np.int8)
    w2 = rng.integers(-127, 128, (O, H)).astype(np.int8)
    b1 = rng.integers(-500, 500, H).astype(np.int32)
    b2 = np.zeros(O, np.int32)
    m1, s1 = quantize_multiplier(0.37)
    mr, sr = quantize_multiplier(60.0)
    m2, s2 = quantize_multiplier(1.9)
    tensors = {"x": spec([F], "int8", 1 / 16), "a": spec([H], "int32", 0.01), "c": spec([H], "int32", 0.01),
               "s": spec([H], "int8", 1.0, spike_D=1), "b": spec([O], "int32", 0.02), "o": spec([O], "int32", 0.02)}
    states = {"s.prev": st.StateSpec([H], "int8", 8, 1.0), "v1": st.StateSpec([H], "int32", 24, 0.01),
              "v2": st.StateSpec([O], "int32", 24, 0.02)}
    dv1, th1, dv2 = np.array([300], np.int32), np.array([5000], np.int32), np.array([1024, 0, 4000], np.int32)
    ops = [
        g.Dense("fc1", ["x"], "a", multiplier=np.array([m1], np.int32), shift=np.array([s1], np.int32), clamp=I32,
                weight=w1, bias=b1, weight_scale=np.ones(H, np.float32)),
        st.Recurrent("rec", ["a"], "c", multiplier=np.array([mr], np.int32), shift=np.array([sr], np.int32), clamp=I32,
                     state="s.prev", source="s", weight=wr, weight_scale=np.ones(H, np.float32)),
        st.LIF("lif1", ["c"], "s", v_state="v1", decay_v=dv1, threshold=th1, reset="zero"),
        g.Dense("fc2", ["s"], "b", multiplier=np.array([m2], np.int32), shift=np.array([s2], np.int32), clamp=I32,
                weight=w2, bias=b2, weight_scale=np.ones(O, np.float32)),
        st.LI("li2", ["b"], "o", v_state="v2", decay_v=dv2),
    ]
    graph = g.Graph(tensors, ops, "x", ["o"], states=states, sequence=st.Sequence(T, {"o": "mean"}))
    xq = rng.integers(-128, 128, (N, T, F)).astype(np.int8)
    out = st.run_sequence(graph, xq, keep_steps=True)
    spiked = 0
    for n in range(N):
        prev, v1, v2, total = [0] * H, [0] * H, [0] * O, [0] * O
        for t in range(T):
            x = xq[n, t].tolist()
            a = [ref_mbqm(sum(int(w1[h, f]) * x[f] for f in range(F)) + int(b1[h]), m1, s1) for h in range(H)]
            c = [a[h] + ref_mbqm(sum(int(wr[h, k]) * prev[k] for k in range(H)), mr, sr) for h in range(H)]
            s = []
            for h in range(H):
                v1[h] = ref_hold(ref_decay(v1[h], 300) + c[h], 24)
                s.append(int(v1[h] > 5000))
                v1[h] = 0 if s[h] else v1[h]
            b = [ref_mbqm(sum(int(w2[o, h]) * s[h] for h in range(H)), m2, s2) for o in range(O)]
            for o in range(O):
                v2[o] = ref_hold(ref_decay(v2[o], int(dv2[o])) + b[o], 24)
                total[o] += v2[o]
            assert out["o@steps"][n, t].tolist() == v2
            prev = s
            spiked += sum(s)
        assert out["o"][n].tolist() == total
    assert 0 < spiked < N * T * H
    # the recurrence matters: without it (W_rec = 0) the outputs differ
    ops[1].weight = np.zeros_like(wr)
    assert not np.array_equal(st.run_sequence(graph, xq)["o"], out["o"])


# ---------------------------------------------------------------- state between sequences

def test_state_resets_between_sequences_and_not_within_a_run():
    rng = np.random.default_rng(4)
    graph = neuron_graph("cuba_lif", rng=rng)
    a, b = currents(rng, 1, 7, 5), currents(rng, 1, 7, 5)
    both = st.run_sequence(graph, np.concatenate([a, b]), keep_steps=True)
    alone = st.run_sequence(graph, b, keep_steps=True)
    np.testing.assert_array_equal(both["s@steps"][1], alone["s@steps"][0])
    stepper = st.Stepper(graph)
    stepper.reset(1)
    for t in range(7):
        stepper.step(a[:, t])
    carried = [stepper.step(b[:, t])["s"] for t in range(7)]  # no reset: a's state carries into b
    stepper.reset(1)
    fresh = [stepper.step(b[:, t])["s"] for t in range(7)]
    assert np.array_equal(np.stack(fresh, 1), alone["s@steps"])
    assert not np.array_equal(np.stack(carried, 1), np.stack(fresh, 1))
    with pytest.raises(EdgesnnError, match=r"^a frame batch has shape \(2, 5\); after reset\(1\) this model takes \(1, 5\) per step$"):
        stepper.step(np.zeros((2, 5), np.int16))
    with pytest.raises(EdgesnnError, match=r"^reset\(n\) the states before the first step$"):
        st.Stepper(graph).step(a[:, 0])


# ---------------------------------------------------------------- overflow and bad input

def test_state_overflow_saturates_or_is_one_clear_error():
    graph = neuron_graph("li", C=2, T=4, bits=8, readout="last")
    graph.ops[0].decay_v = np.array([0, 0], np.int32)
    xq = np.array([[[100, -100]] * 4], np.int16)
    out = st.run_sequence(graph, xq, keep_steps=True)
    assert out["v_out@steps"][0].tolist() == [[100, -100], [127, -127], [127, -127], [127, -127]]  # +-(2**7 - 1)
    graph.states["v"].overflow = "error"
    with pytest.raises(EdgesnnError) as e:
        st.run_sequence(graph, np.concatenate([xq * 0, xq]))
    assert str(e.value) == "op n: state 'v' would overflow its 8 bits (-127..127) at step 1 of sample 1: 200"


def test_wrong_sequences_are_one_clear_error():
    graph = neuron_graph("lif", C=5, T=7)
    with pytest.raises(EdgesnnError) as e:
        st.run_sequence(graph, np.zeros((2, 6, 5), np.int16))
    assert str(e.value) == ("input sequences have shape (2, 6, 5) (batch, T=6, 5); this model takes (batch, T=7, 5) in "
                            "NHWC: 7 steps of one frame each")
    with pytest.raises(EdgesnnError, match=r"shape \(2, 7, 4\) \(batch, T=7, 4\); this model takes \(batch, T=7, 5\)"):
        graph.run_sequence(np.zeros((2, 7, 4)))
    with pytest.raises(EdgesnnError, match=r"shape \(7, 5\)"):
        st.run_sequence(graph, np.zeros((7, 5), np.int16))
    with pytest.raises(EdgesnnError, match=r"^this model keeps state over 7 timesteps: it takes sequences \(batch, T=7, 5\)"):
        graph.run(np.zeros((2, 5)))
    static = g.Graph({"x": spec([5], "int8")}, [g.Reshape("r", ["x"], "y")], "x", ["y"])
    static.tensors["y"] = spec([5], "int8")
    with pytest.raises(EdgesnnError, match=r"no state over time: it takes one sample"):
        st.run_sequence(static, np.zeros((1, 3, 5), np.int8))


def test_float_sequences_are_quantized_frame_by_frame():
    graph = neuron_graph("li", C=3, T=2, readout="last")
    graph.ops[0].decay_v = np.array([4096], np.int32)  # nothing kept: the output is this step's input
    x = np.array([[[0.25, -1.0, 2.6], [1.0, 0.74, -0.26]]])  # scale 0.5: round half away from zero
    assert graph.run_sequence(x)["v_out"].tolist() == [[2, 1, -1]]


# ---------------------------------------------------------------- the file

def full_graph():
    rng = np.random.default_rng(5)
    graph = neuron_graph("cuba_lif", rng=rng)
    graph.tensors["h"] = spec([5], "int32", 0.5)
    graph.tensors["m"] = spec([5], "int32", 0.5)
    graph.states.update({"prev": st.StateSpec([5], "int8", 8, 1.0), "vo": st.StateSpec([5], "int32", 16, 0.5, "error")})
    m, s = quantize_multiplier(0.8)
    rec = st.Recurrent("rec", ["x"], "h", multiplier=np.array([m] * 5, np.int32), shift=np.array([s] * 5, np.int32),
                       clamp=[-30000, 30000], state="prev", source="s", weight=rng.integers(-7, 8, (5, 5)).astype(np.int8),
                       weight_scale=np.ones(5, np.float32), weight_bits=4)
    graph.ops[0].inputs = ["h"]
    graph.ops.insert(0, rec)
    graph.ops.append(st.LI("out", ["h"], "m", v_state="vo", decay_v=np.array([100], np.int32)))
    graph.outputs = ["s", "m"]
    graph.sequence.readout = {"s": "count", "m": "mean"}
    return graph


def test_round_trip_through_the_ir_file(tmp_path):
    graph = full_graph()
    graph.save(tmp_path / "a.ir")
    back = ir.load(tmp_path / "a.ir")
    assert back.states == graph.states and back.sequence == graph.sequence
    assert [op.kind for op in back.ops] == ["recurrent", "cuba_lif", "li"]
    assert back.ops[0].weight_bits == 4 and back.ops[0].source == "s"
    xq = currents(np.random.default_rng(6), 3, 7, 5, -200, 200)
    a, b = st.run_sequence(graph, xq, keep_steps=True), st.run_sequence(back, xq, keep_steps=True)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    back.save(tmp_path / "b.ir")
    assert (tmp_path / "a.ir").read_bytes() == (tmp_path / "b.ir").read_bytes()
    header, _ = serialize.to_header(graph)
    assert header["sequence"] == {"steps": 7, "readout": {"s": "count", "m": "mean"}}
    assert header["states"]["vo"] == {"shape": [5], "dtype": "int32", "bits": 16, "scale": 0.5, "overflow": "error"}


def test_a_static_graph_header_is_unchanged():
    static = g.Graph({"x": spec([5], "int8"), "y": spec([5], "int8")}, [g.Reshape("r", ["x"], "y")], "x", ["y"])
    header, _ = serialize.to_header(static)
    assert "states" not in header and "sequence" not in header


def _broken(change):
    graph = full_graph()
    header, arrays = serialize.to_header(graph)
    header = json.loads(json.dumps(header))
    change(header, arrays)
    with pytest.raises(EdgesnnError) as e:
        serialize.graph_from_header(header, arrays)
    return str(e.value)


def test_invalid_temporal_graphs_are_refused_by_name():
    def op(h, name):
        return next(o for o in h["ops"] if o["name"] == name)

    assert _broken(lambda h, a: h.pop("sequence")) == "'states' without a 'sequence'"
    assert _broken(lambda h, a: (h.pop("sequence"), h.pop("states"))) == \
        "op rec keeps state over time, but the graph has no 'sequence' (steps and readout)"
    assert _broken(lambda h, a: h["states"]["v"].update(bits=33)) == "state v: bits must be an integer in 2..32 (int32)"
    assert _broken(lambda h, a: h["states"]["v"].update(overflow="wrap")) == "state v: overflow must be one of saturate, error"
    assert _broken(lambda h, a: h["sequence"].update(steps=0)) == "sequence steps must be an integer in 1..1,000,000"
    assert _broken(lambda h, a: h["sequence"]["readout"].update(m="max")) == \
        "sequence readout must map outputs to one of count, last, mean"
    assert _broken(lambda h, a: h["sequence"]["readout"].update(m="count")) == \
        "output 'm': a count readout sums spikes, and it is not a spike tensor"
    assert _broken(lambda h, a: h["sequence"]["readout"].pop("m")) == \
        "sequence readout must name every output once: outputs ['s', 'm'], readout ['s']"
    assert _broken(lambda h, a: a.update({"n.decay_v": np.full(5, 5000, np.int32)})) == "op n: decay_v must be in 0..4096"
    assert _broken(lambda h, a: a.update({"n.threshold": np.full(5, 2**23, np.int32)})) == \
        "op n: threshold must be in 0..8388607 (the membrane's width)"
    assert _broken(lambda h, a: op(h, "n").update(reset="half")) == "op n: reset must be one of subtract, zero"
    assert _broken(lambda h, a: op(h, "n").update(input_shift=3)).startswith(
        "op n: the input's scale / 2**input_shift must be the current's")
    assert _broken(lambda h, a: op(h, "out").update(v_state="v")) == "state 'v' is updated by both op n and op out"
    assert _broken(lambda h, a: op(h, "rec").update(source="nowhere")) == "op rec: source 'nowhere' is no tensor an op computes"
    assert _broken(lambda h, a: h["states"]["prev"].update(dtype="int16", bits=16)).startswith(
        "op rec: state 'prev' holds 's' from the previous step: shape [5], dtype int8")
    assert _broken(lambda h, a: h["tensors"]["s"].update(spike_D=3)) == \
        "op n: its output is spikes: int8, zero point 0, spike_D 1"
    assert _broken(lambda h, a: h["states"].update(extra={"shape": [1], "dtype": "int8", "bits": 8, "scale": 1.0})) == \
        "state 'extra' is updated by no op"


_BAD = st_h.one_of(st_h.none(), st_h.booleans(), st_h.integers(-(2**40), 2**40), st_h.sampled_from([2**31, -1, 0, 4097]),
                   st_h.floats(allow_nan=True, allow_infinity=True), st_h.text(max_size=6),
                   st_h.lists(st_h.integers(-5, 9), max_size=3), st_h.dictionaries(st_h.text(max_size=4), st_h.integers(), max_size=2))


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@settings(deadline=None, max_examples=120, suppress_health_check=list(HealthCheck))
@given(st_h.data())
def test_hostile_temporal_headers_load_and_run_or_fail_in_one_line(tmp_path_factory, data):
    """Any edit of a temporal graph's JSON (states, sequence, the stateful ops' fields): the file is
    refused in one line naming it, or it loads and runs sequences or refuses them in one line."""
    path = tmp_path_factory.mktemp("hostile") / "t.ir"
    full_graph().save(path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    st_header = json.loads(raw[8:8 + n])
    doc = json.loads(st_header["__metadata__"]["edgesnn_ir"])
    for _ in range(data.draw(st_h.integers(1, 3))):
        paths = [p for p in _paths(doc) if p and p[0] in ("states", "sequence", "ops", "tensors", "outputs")]
        target = data.draw(st_h.sampled_from(paths))
        parent = doc
        for k in target[:-1]:
            parent = parent[k]
        if data.draw(st_h.booleans()):
            parent[target[-1]] = data.draw(_BAD)
        else:
            del parent[target[-1]]
    st_header["__metadata__"]["edgesnn_ir"] = json.dumps(doc)
    text = json.dumps(st_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    try:
        graph = ir.load(path)
    except EdgesnnError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        return
    xq = currents(np.random.default_rng(0), 2, 7, 5, -200, 200)
    try:
        out = st.run_sequence(graph, xq) if graph.sequence is not None else graph.run_integer(xq[:, 0])
    except EdgesnnError as e:
        assert "\n" not in str(e), str(e)
        return
    assert all(len(v) == 2 for v in out.values())


def test_a_target_without_state_refuses_a_temporal_graph_by_name(tmp_path):
    """Every built-in target now steps sequences (tests/test_temporal_*.py); one that does not (the toy target
    of tests/toy_target.py, stateful False) is refused in one line naming it, before it writes anything."""
    import toy_target

    from edgesnn import targets

    path = tmp_path / "model.ir"
    serialize.save(full_graph(), path)
    out = tmp_path / "out"
    targets.register(toy_target.TOY)
    try:
        assert not targets.get("toy").stateful
        with pytest.raises(EdgesnnError, match="^--target toy runs no stateful graph"):
            targets.export_ir("toy", path, out, calibration=np.zeros((1, 5), np.float32))
    finally:
        targets.unregister("toy")
    assert not out.exists()
