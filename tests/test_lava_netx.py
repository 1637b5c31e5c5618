"""The netx writer and the Loihi 2 resource report: netx files round-trip through netx's reading
rules, binary (D = 1) neurons within Loihi's limits reproduce the IR's spikes bit for bit under
Lava's fixed-point CUBA update, layers beyond them are marked approximate with the reason, ops netx
cannot express are refused by name, and the report's numbers add up. (tests/test_netx_lava_dl.py
runs the files in lava-dl's netx itself.)"""

import copy

import numpy as np
import pytest

from edgesnn import data, pipeline
from edgesnn.backends.lava.netx import (BIAS_MANT_RANGE, LIF_A_IN_RANGE, VTH_MAX, _threshold_and_bias,
                                        netx_supported, read_netx, write_netx)
from edgesnn.backends.lava.resources import load_limits, loihi2_report
from edgesnn.errors import EdgesnnError
from edgesnn.ir import load
from edgesnn.ir.fixedpoint import multiply_by_quantized_multiplier
from edgesnn.ir.packing import widen

import h5py  # noqa: E402,F401  (scripts/setup.sh installs it: a missing one fails, never skips)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Briefly trained IRs: a binary (D = 1) CNN (with 8-bit and 4-bit weights), a graded MLP and two
    models with add / mul."""
    root = tmp_path_factory.mktemp("lava_netx")
    out = {}
    for name, D in (("cnn", 1), ("mlp", 4), ("resnet", 4), ("spikeformer", 4)):
        ckpt = root / f"{name}{D}"
        pipeline.train_model(name, "digits", 2, ckpt, D=D)
        out[name] = load(pipeline.export_model(ckpt, "ir", root / f"{name}{D}_ir"))
    out["cnn-w4"] = load(pipeline.export_model(root / "cnn1", "ir", root / "cnn1_w4_ir", weight_bits=4))
    return out


@pytest.fixture(scope="module")
def x_test():
    return data.to_nhwc(data.load("digits").x_test[:96])


def _op(graph, name):
    return next(op for op in graph.ops if op.name == name)


def _widened(op):
    return widen(op.weight, op.weight_bits, op.weight_code)


def test_round_trip_keeps_layout_weights_and_geometry(graphs, tmp_path):
    graph = graphs["cnn"]
    summary = write_netx(graph, tmp_path / "cnn.net")
    layers = read_netx(tmp_path / "cnn.net")
    assert [l["type"] for l in layers] == ["input", "conv", "conv", "conv", "conv", "flatten", "dense", "dense"]
    assert [r["type"] for r in summary["layers"]] == [l["type"] for l in layers]
    assert layers[0]["xyz"] == (8, 8, 1) and layers[0]["neuron"]["process"] == "Delta"
    for row, layer in zip(summary["layers"], layers):
        if not row["ir_ops"]:
            continue
        op = _op(graph, row["ir_ops"][-1])
        out_shape = graph.tensors[op.output].shape
        if op.kind == "conv2d":  # [O, I/g, kH, kW], stride / padding in (H, W) order
            assert layer["xyz"] == (out_shape[1], out_shape[0], out_shape[2])
            np.testing.assert_array_equal(layer["raw"]["weight"] * row["weight_divisor"],
                                          _widened(op).transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(layer["raw"]["stride"], op.stride)
            np.testing.assert_array_equal(layer["raw"]["padding"], op.padding[::2])
            flipped = layer["raw"]["weight"][:, :, ::-1, ::-1].transpose(0, 3, 2, 1)  # Lava's [O, kW, kH, I/g]
            assert np.gcd.reduce(np.abs(layer["raw"]["weight"]).ravel()) == 1  # the common factor is divided out
            np.testing.assert_array_equal(layer["lava_weight"], flipped)
            assert layer["neuron"]["process"] == "LIF" and layer["groups"] == op.groups
        elif op.kind == "sum_pool2d":  # depthwise conv of 64s
            assert layer["groups"] == out_shape[2] and (layer["raw"]["weight"] == 64).all()
            assert layer["raw"]["weight"].shape == (out_shape[2], 1, *op.kernel)
            assert layer["neuron"]["process"] == "SigmaDelta"
        elif op.kind == "dense":
            w = _widened(op)
            if layer["flatten_before"]:  # the IR flattens (H, W, C), netx (C, H, W)
                h, wd, c = graph.tensors[_op(graph, "flatten").inputs[0]].shape
                w = w.reshape(len(w), h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1)
            np.testing.assert_array_equal(layer["raw"]["weight"] * row["weight_divisor"], w)
    assert layers[-1]["neuron"]["process"] == "Sigma" and layers[-2]["flatten_before"]


def _conv_nchw(p, w, stride, padding, groups):
    """Cross-correlation in PyTorch's NCHW / OIHW layout (independent of the IR's NHWC kernels)."""
    p = np.pad(p, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    o, cg, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(p, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    n, c, ho, wo = win.shape[:4]
    win = win.reshape(n, groups, cg, ho, wo, kh, kw)
    w = w.reshape(groups, o // groups, cg, kh, kw)
    return np.einsum("ngchwij,gocij->ngohw", win, w).reshape(n, o, ho, wo)


def _cuba_step(state, a_in, bias, neuron):
    """Lava's fixed-point LIF (lif/models.py) as netx configures it: 12-bit decays, 6-bit exponents."""
    def decay(x, d):
        y = x * (4096 - d)
        return np.sign(y) * (np.abs(y) >> 12)
    u = decay(state["u"], neuron["du"] + 1) + (a_in << 6)
    v = decay(state["v"], neuron["dv"]) + u + (bias << neuron["bias_exp"])
    return (v > (neuron["vth"] << 6)).astype(np.int64)


def _sigma_delta_step(a_in, neuron):
    """Lava's SigmaDelta from reset, spike_exp 0: relu(a_in) passes if >= vth << 6, then >> state_exp."""
    act = np.maximum(a_in, 0)
    return np.where(act >= neuron["vth"] << 6, act, 0) >> neuron["state_exp"]


def _nchw_to_ir(y):
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def test_binary_neurons_reproduce_ir_spikes_exactly(graphs, tmp_path, x_test):
    graph = graphs["cnn-w4"]  # 4-bit weights: divided by 16, the first layer fits LIF's registers
    summary = write_netx(graph, tmp_path / "cnn.net")
    assert summary["exact"] and all(r["exact"] for r in summary["layers"])
    layers = read_netx(tmp_path / "cnn.net")
    xq = graph.quantize_input(x_test)
    ir = graph.run_integer(xq, keep_all=True)
    p = (xq.astype(np.int64) + summary["input_offset"]).transpose(0, 3, 1, 2)  # the payloads the source sends
    rng = np.random.default_rng(0)
    for row, layer in zip(summary["layers"][1:], layers[1:]):
        if layer["type"] == "flatten":
            p = p.reshape(len(p), -1)  # netx's transpose([2,1,0]).flatten() of WHC = C-order flatten of CHW
            continue
        w, bias = layer["raw"]["weight"], layer["raw"].get("bias")
        a_in = _conv_nchw(p, w, layer["raw"]["stride"], layer["raw"]["padding"], layer["groups"]) \
            if layer["type"] == "conv" else p @ w.T
        neuron = layer["neuron"]
        if neuron["process"] == "LIF":  # any leftover state is forgotten: iDecay = vDecay = 4096
            assert LIF_A_IN_RANGE[0] <= a_in.min() and a_in.max() <= LIF_A_IN_RANGE[1] and 0 <= neuron["vth"] <= VTH_MAX
            assert BIAS_MANT_RANGE[0] <= bias.min() and bias.max() <= BIAS_MANT_RANGE[1]
            state = {"u": rng.integers(-2**20, 2**20, a_in.shape), "v": rng.integers(-2**20, 2**20, a_in.shape)}
            b = bias[None, :, None, None] if a_in.ndim == 4 else bias[None, :]
            p = _cuba_step(state, a_in, b, neuron)
        elif neuron["process"] == "SigmaDelta":
            p = _sigma_delta_step(a_in, neuron)
        else:  # Sigma readout: the host finishes the IR's requantization
            op = _op(graph, summary["readout"]["op"])
            acc = summary["readout"]["factor"] * a_in + op.bias
            spec = graph.tensors[op.output]
            p = np.clip(multiply_by_quantized_multiplier(acc, op.multiplier, op.shift) + spec.zero_point, *op.clamp)
        name = row["ir_ops"][-1]
        np.testing.assert_array_equal(_nchw_to_ir(p), ir[_op(graph, name).output], err_msg=name)
    assert ir[graph.outputs[0]].argmax(1).std() > 0  # the check covered a model that tells classes apart


def test_graded_neurons_are_marked_approximate(graphs, tmp_path):
    summary = write_netx(graphs["mlp"], tmp_path / "mlp.net")
    cuba = [r for r in summary["layers"] if r["type"] == "dense" and "vThMant" in r]
    assert not summary["exact"] and cuba
    graded = "graded D = 4: netx's CUBA spike is binary (y >= 1), the level is lost"
    assert all(not r["exact"] and graded in r["reasons"] for r in cuba)
    readout = summary["layers"][-1]
    assert summary["readout"]["factor"] == 16 * readout["weight_divisor"]  # the IR's "spikes x 16", folded in


def test_a_first_layer_beyond_the_bias_mantissa_is_approximate_and_clipped(graphs, tmp_path):
    """8-bit weights on 8-bit pixels: the first layer's thresholds spread wider than a 13-bit bias
    can carry. The file says so for that layer, and holds clipped biases, not ones int16 would wrap."""
    summary = write_netx(graphs["cnn"], tmp_path / "cnn.net")
    first = summary["layers"][1]
    assert not summary["exact"] and not first["exact"] and first["ir_ops"] == ["features.2"]
    assert any("13-bit bias mantissa -4096..4095" in why for why in first["reasons"])
    assert summary["note"].startswith("approximate: layer 1 (features.2): ")
    bias = read_netx(tmp_path / "cnn.net")[1]["raw"]["bias"]
    assert bias.min() == BIAS_MANT_RANGE[0] or bias.max() == BIAS_MANT_RANGE[1]  # clipped at the mantissa
    assert BIAS_MANT_RANGE[0] <= bias.min() and bias.max() <= BIAS_MANT_RANGE[1]


def test_threshold_and_bias_keep_every_channel_a_vth_can_keep():
    """Property: a channel not reported missed fires (a_in + bias > vth) exactly when a_in >= its
    threshold over its whole reachable a_in; biases and vth stay in their registers; and no vth keeps
    more channels than the one chosen (brute force over every vth that could matter)."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        channels = int(rng.integers(1, 7))
        a_lo = rng.integers(-6000, 0, channels)
        a_hi = a_lo + rng.integers(0, 14000, channels)
        theta = np.clip(rng.integers(-8000, 16000, channels), a_lo, a_hi + 1)
        vth, bias, missed = _threshold_and_bias(theta, a_lo, a_hi)
        assert 0 <= vth <= VTH_MAX and BIAS_MANT_RANGE[0] <= bias.min() and bias.max() <= BIAS_MANT_RANGE[1]
        kept = 0
        for c in range(channels):
            a = np.arange(a_lo[c], a_hi[c] + 1)
            kept += np.array_equal(a + bias[c] > vth, a >= theta[c])
        assert kept == channels - missed
        v = np.arange(24000)[:, None]  # every vth that could matter here
        lo, hi = np.where(theta <= a_lo, -10**9, theta), np.where(theta > a_hi, 10**9, theta)
        fits = (lo <= v + 1 - BIAS_MANT_RANGE[0]) & (hi >= v + 1 - BIAS_MANT_RANGE[1])  # a bias gives a threshold
        assert kept == fits.sum(axis=1).max()


# The first op netx cannot express: an add or mul, or (since the stem's first neuron reads the stem's
# accumulator itself, issue 18) a second conv reading the stem's input, which breaks netx's chain.
@pytest.mark.parametrize("name, kinds", [("resnet", ("add", "conv2d")), ("spikeformer", ("add", "mul", "conv2d"))])
def test_ops_netx_cannot_express_are_refused_by_name(graphs, tmp_path, name, kinds):
    graph = graphs[name]
    with pytest.raises(EdgesnnError, match=r"netx cannot express IR op '.+' \((add|mul|conv2d)\).*Lava-only"):
        write_netx(graph, tmp_path / f"{name}.net")
    assert not (tmp_path / f"{name}.net").exists() and list(tmp_path.iterdir()) == []
    ok, reason = netx_supported(graph)
    assert not ok and any(f"({k})" in reason for k in kinds)


def test_int16_stream_and_nonlinear_requantize_are_refused(graphs):
    wide = copy.deepcopy(graphs["cnn"])
    wide.tensors[wide.ops[0].output].dtype = "int16"
    assert "int16" in netx_supported(wide)[1]
    stream = copy.deepcopy(graphs["mlp"])
    requantize = next(op for op in stream.ops if op.kind == "requantize")
    requantize.clamp = [0, 20]  # 4 spikes x 16 now clamp: no longer a rescale a threshold can absorb
    ok, reason = netx_supported(stream)
    assert not ok and f"'{requantize.name}' (requantize)" in reason


def test_read_netx_refuses_layers_netx_does_not_load(tmp_path):
    import h5py

    with h5py.File(tmp_path / "pool.net", "w") as f:
        f.create_dataset("layer/0/type", (1,), "S10", [b"pool"])
    with pytest.raises(EdgesnnError, match="pool"):
        read_netx(tmp_path / "pool.net")


def test_resource_report_adds_up(graphs, x_test):
    graph = graphs["cnn"]
    r = loihi2_report(graph, x_test)
    figures = load_limits()
    assert r["synapses"] == sum(op.weight.size for op in graph.weight_ops())
    assert r["synaptic_connections"] > r["synapses"]  # conv kernels are reused at every position
    dense = [row for row in r["layers"] if row["op"] == "dense"]
    assert all(row["synaptic_connections"] == row["synapses"] for row in dense)
    assert r["neurons"] == sum(int(np.prod(graph.tensors[op.output].shape)) for op in graph.ops if op.kind != "reshape")
    assert r["energy_pj_per_inference"] == pytest.approx(
        r["synops_per_inference"] * figures["energy_per_synop_pj"]["value"]
        + r["neuron_updates_per_inference"] * figures["energy_per_neuron_update_pj"]["value"])
    assert r["cores"] >= sum(op.kind != "reshape" for op in graph.ops) and r["chips"] == 1
    assert r["figures"]["energy_per_synop_pj"]["chip"] == "loihi1"  # the proxy says so
    assert 0 < r["synops_per_inference"] <= sum(row["synaptic_connections"] for row in r["layers"])


def test_more_active_inputs_cost_more_synaptic_operations(graphs, x_test):
    graph = graphs["mlp"]
    dark = np.full_like(x_test, float(graph.dequantize(graph.input, np.array(graph.tensors[graph.input].zero_point))))
    half = x_test.copy()
    half[:, ::2] = dark[:, ::2]

    def first(x):  # the first dense layer reads the image
        return next(row["synops"] for row in loihi2_report(graph, x)["layers"] if row["op"] == "dense")

    assert first(dark) == 0 < first(half) < first(x_test)
    graded, burst = loihi2_report(graph, x_test), loihi2_report(graph, x_test, mode="rate-burst")
    assert burst["neuron_updates_per_inference"] == 4 * graded["neuron_updates_per_inference"]
    assert burst["synops_per_inference"] > graded["synops_per_inference"]  # levels above 1 cost more spikes
    with pytest.raises(EdgesnnError, match="mode"):
        loihi2_report(graph, x_test, mode="poisson")
