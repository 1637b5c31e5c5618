"""The Helium (MVE) paths of the micro-kernels (backends/mcu/microkernels.py, ``EDGESNN_MVE``) on
QEMU's Cortex-M55 (mps3-an547) built with the hard-float ABI: taps of four bytes (the gather-load
dot of four outputs), runs with and without a partial last vector (an image's window, kernel rows),
a nonzero input offset, a depthwise conv, per-tensor and per-channel requantization with left and
right shifts (edgesnn_requant_s8), and the event-driven layers' gather-dot form (kernels_gather: segments
of whole taps, a direct 1x1 conv, a dense layer of four segments, outputs not a multiple of four, spike
counts up to 16). Each project equals the golden interpreter, and the Helium build takes fewer instructions
than the same project built without it (soft float: the DSP code)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgesnn import boards
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, kernels, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.microkernels import DOT4, DW4, REQUANT  # noqa: E402
from edgesnn.backends.mcu.microkernels_gather import APPEND, GDOT4, LIST  # noqa: E402

M55 = "mps3-an547"
HARD = "ARM_ABI=-mfloat-abi=hard"  # GCC has Helium only with the hard-float ABI


def need(*tools: str) -> None:
    """Not skipped: CI runs scripts/setup.sh, so a missing tool is a failure of the setup."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs it"


def _layer(rng, name, src, dst, w_shape, shift, clamp, dense=False, per_tensor=False, **conv):
    out_ch = w_shape[0]
    n = 1 if per_tensor else out_ch
    common = dict(multiplier=rng.integers(2**30, 2**31 - 1, n).astype(np.int32), shift=np.full(n, shift, np.int32),
                  clamp=clamp, weight=rng.integers(-127, 128, w_shape).astype(np.int8),
                  bias=rng.integers(-3000, 3000, out_ch).astype(np.int32), weight_scale=np.full(out_ch, 0.01))
    return g.Dense(name, [src], dst, **common) if dense else g.Conv2D(name, [src], dst, **common, **conv)


def _int8_graph() -> g.Graph:
    rng = np.random.default_rng(3)
    t = {"x": g.TensorSpec([8, 8, 3], "int8", 0.05, 3), "a": g.TensorSpec([8, 8, 4], "int8", 0.1, 0),
         "b": g.TensorSpec([8, 8, 12], "int8", 0.1, 0), "c": g.TensorSpec([8, 8, 32], "int8", 0.1, -5),
         "d": g.TensorSpec([8, 8, 16], "int8", 0.1, 0), "d2": g.TensorSpec([8, 8, 16], "int8", 0.1, 0),
         "f": g.TensorSpec([1024], "int8", 0.1, 0), "e": g.TensorSpec([20], "int8", 0.1, 0),
         "y": g.TensorSpec([10], "int8", 0.2, -3)}
    ops = [_layer(rng, "short", "x", "a", (4, 3, 3, 3), -9, [0, 127], padding=[1, 1, 1, 1]),  # a window of 27 bytes
           _layer(rng, "four", "a", "b", (12, 3, 3, 4), -10, [0, 127], padding=[1, 1, 1, 1]),  # rows 12, taps 4 bytes
           _layer(rng, "left", "b", "c", (32, 1, 1, 12), 1, [-128, 127], per_tensor=True),  # x 2, one multiplier
           _layer(rng, "whole", "c", "d", (16, 1, 1, 32), -11, [0, 127]),  # offset 5, two whole vectors
           _layer(rng, "dw", "d", "d2", (16, 3, 3, 1), -8, [0, 127], groups=16, padding=[1, 1, 1, 1]),  # depthwise
           g.Reshape("flatten", ["d2"], "f"),
           _layer(rng, "fc", "f", "e", (20, 1024), -12, [0, 127], dense=True),
           _layer(rng, "head", "e", "y", (10, 20), -7, [-128, 127], dense=True)]
    return g.Graph(t, ops, "x", ["y"])


def _counts_graph(D: int, out_ch: int, channels: int) -> g.Graph:
    """spike counts 0..D -> a padded 3x3 conv -> a dense layer reading the conv's ReLU output."""
    rng = np.random.default_rng(D)
    t = {"x": g.TensorSpec([4, 4, channels], "int8", 1.0, 0, spike_D=D), "a": g.TensorSpec([4, 4, out_ch], "int8", 0.5, 0),
         "f": g.TensorSpec([16 * out_ch], "int8", 0.5, 0), "y": g.TensorSpec([12], "int8", 0.5, -3)}
    ops = [_layer(rng, "conv", "x", "a", (out_ch, 3, 3, channels), -9 - 3 * (D > 4), [0, 127], padding=[1, 1, 1, 1]),
           g.Reshape("flatten", ["a"], "f"),
           _layer(rng, "fc", "f", "y", (12, 16 * out_ch), -10, [-128, 127], dense=True)]
    return g.Graph(t, ops, "x", ["y"])


def _verify(graph, x, out, event_driven, monkeypatch, abi=HARD, samples=12):
    monkeypatch.setenv("MAKEFLAGS", abi)
    info = export_mcu(graph, boards.load(M55), out, event_driven, x)
    r = verify_mcu(out, x, qemu=True, samples=samples, trust_code=True)
    assert r["runs"]["arm"]["machine"] == M55
    assert all(run["mismatched_elements"] == 0 and run["samples"] == samples for run in r["runs"].values())
    return info, r["runs"]["arm"]["instructions_per_inference"]


@pytest.mark.parametrize("event_driven", ["none", "all"])
def test_helium_int8_kernels_are_bit_exact(tmp_path, monkeypatch, event_driven):
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph = _int8_graph()
    rng = np.random.default_rng(5)
    x = (rng.integers(-128, 128, (12, 8, 8, 3)).astype(np.float32) - 3) * np.float32(0.05)
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)
    for name in ("a", "b", "d", "d2", "e"):  # ReLU outputs: sparse, not all zero
        assert 0.1 < np.count_nonzero(values[name]) / values[name].size < 0.95, name
    assert len(np.unique(values["c"])) > 100 and len(np.unique(values["y"])) > 20  # not all clamped
    info, helium = _verify(graph, x, tmp_path / "hard", event_driven, monkeypatch)
    source = (tmp_path / "hard" / "kernels.c").read_text()
    used = {DOT4, DW4, REQUANT} | ({GDOT4, LIST, APPEND} if event_driven == "all" else set())
    assert all(f"{name}(" in source for name in used), [n for n in used if f"{n}(" not in source]
    if event_driven == "none":  # the same project without Helium (soft float: the DSP code) costs more
        _, dsp = _verify(graph, x, tmp_path / "soft", event_driven, monkeypatch, abi="ARM_ABI=-mfloat-abi=soft")
        assert helium < 0.6 * dsp, (helium, dsp)


@pytest.mark.parametrize("D,out_ch,channels,opt", [(1, 8, 40, "-O2"), (16, 16, 48, "-O2"), (16, 16, 48, "-Os"),
                                                    (4, 4, 20, "-O2")])
def test_helium_gather_dot_reads_spike_counts_exactly(tmp_path, monkeypatch, D, out_ch, channels, opt):
    """Spike counts up to 16 through the gather-dot form: a padded 3x3 conv whose 9 taps of 40 or 48
    channels make two segments (6 or 5 taps of at most 256 bytes), or one (20 channels), then a dense
    layer of 16 x out_ch inputs; also at -Os."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph = _counts_graph(D, out_ch, channels)
    rng = np.random.default_rng(7)
    shape = (10, 4, 4, channels)
    x = np.where(rng.random(shape) < 0.5, rng.integers(1, D + 1, shape), 0).astype(np.float32)
    info, _ = _verify(graph, x, tmp_path / "p", "all", monkeypatch, abi=f"{HARD} OPT={opt}", samples=10)
    source = (tmp_path / "p" / "kernels.c").read_text()
    assert all(f"{name}(" in source for name in (GDOT4, LIST, APPEND))
    assert {"conv", "fc"} <= {k["op"] for k in info["kernels"] if k["event_driven"]}


def test_m55_cost_model_takes_the_gather_dot_form_where_it_is_cheaper(tmp_path, monkeypatch):
    """The digits cnn's features.6 shape (4x4x32 -> 64, counts 0..4 at rate 0.6): event-driven on the
    M55's coefficients (the gather-dot form, fitted on its Helium build), QEMU's M55 measures it
    cheaper than the dense form, and the model is within 25 % of both forms' counts."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    from edgesnn.backends.mcu import cost

    rng = np.random.default_rng(2)
    t = {"x": g.TensorSpec([4, 4, 32], "int8", 1.0, 0, spike_D=4), "y": g.TensorSpec([4, 4, 64], "int8", 0.5, -3)}
    graph = g.Graph(t, [_layer(rng, "conv", "x", "y", (64, 3, 3, 32), -11, [-128, 127], padding=[1, 1, 1, 1])],
                    "x", ["y"])
    shape = (6, 4, 4, 32)
    x = np.where(rng.random(shape) < 0.6, np.minimum(rng.geometric(0.5, shape), 4), 0).astype(np.float32)
    rate = float(np.count_nonzero(x)) / x.size
    op = graph.ops[0]
    assert cost.kernel_family(graph, op, "helium") == "gather"
    assert cost.choose(graph, {"conv": rate}, "cortex-m55") == {"conv"}
    measured = [_verify(graph, x, tmp_path / form, form, monkeypatch, samples=6)[1] for form in ("none", "all")]
    modelled = cost.costs(graph, op, rate, "cortex-m55")
    assert measured[1] < 0.8 * measured[0], measured
    for m, c in zip(measured, modelled):
        assert abs(c - m) < 0.25 * m, (measured, modelled)


@pytest.mark.parametrize("channels,stride,D,widen", [(16, 1, 4, True), (24, 2, 4, True), (16, 1, 32, False)])
def test_helium_depthwise_of_spike_counts_in_int16_lanes(tmp_path, monkeypatch, channels, stride, D, widen):
    """A depthwise 3x3 conv reading spike counts 0..D, widened by 2^4 or not (the spikeformer's sn3 reads
    counts 0..4 after its x16 requantize): eight channels as int16 lanes (microkernels_dw.DW8) where D x
    the largest sum of a channel's |weights| fits int16 (channel 0's nine weights are 127: 4 x 1143 does,
    32 x 1143 does not, which keeps the int32-lane kernel); exact on QEMU's M55 and the host."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    from edgesnn.backends.mcu.microkernels_dw import DW8

    rng = np.random.default_rng(channels + D)
    out_hw = 6 // stride
    t = {"x": g.TensorSpec([6, 6, channels], "int8", 1.0, 0, spike_D=D),
         "xs": g.TensorSpec([6, 6, channels], "int8", 1.0 / 16, 0),
         "y": g.TensorSpec([out_hw, out_hw, channels], "int8", 0.5, -3)}
    ops = [g.Requantize("widen", ["x"], "xs", multiplier=np.array([1 << 30], np.int32), shift=np.array([5], np.int32),
                        clamp=[-128, 127])] if widen else []
    dw = _layer(rng, "dw", "xs" if widen else "x", "y", (channels, 3, 3, 1), -8 if widen else -7, [-128, 127],
                groups=channels, padding=[1, 1, 1, 1], stride=[stride, stride])
    dw.weight[0] = 127
    graph = g.Graph(t if widen else {k: v for k, v in t.items() if k != "xs"}, [*ops, dw], "x", ["y"])
    shape = (8, 6, 6, channels)
    x = np.where(rng.random(shape) < 0.4, rng.integers(1, D + 1, shape), 0).astype(np.float32)
    small = D * 9 * 127 <= 32767
    assert (kernels.depthwise_small_sums(graph, dw) == (4 if widen else 0)) == small
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)["y"]
    assert len(np.unique(values)) > 50  # not all clamped
    _verify(graph, x, tmp_path / "p", "none", monkeypatch, samples=8)
    assert (f"{DW8}(" in (tmp_path / "p" / "kernels.c").read_text()) == small


@pytest.mark.parametrize("channels,outputs,rate", [(20, 56, 0.4), (40, 96, 0.3), (16, 16, 0.9)])
def test_helium_1x1_conv_of_spike_counts_in_int16_lanes(tmp_path, monkeypatch, channels, outputs, rate):
    """1x1 convs reading spike counts 0..4 widened by 2^4 (the spikeformer's pointwise layers): each
    nonzero input adds its count times a weight column to up to 48 outputs in int16 lanes
    (microkernels_gather.LANES: 56 outputs as 32 + 24, 96 as 48 + 48), then a 1x1 conv whose weights
    make 4 x an output's |weights| over 32767 keeps the gather-dot form; exact on QEMU's M55 and the host."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    from edgesnn.backends.mcu.kernels_gather import lanes_shift
    from edgesnn.backends.mcu.microkernels_gather import LANES

    rng = np.random.default_rng(outputs)
    t = {"x": g.TensorSpec([5, 4, channels], "int8", 1.0, 0, spike_D=4),
         "xs": g.TensorSpec([5, 4, channels], "int8", 1.0 / 16, 0),
         "a": g.TensorSpec([5, 4, outputs], "int8", 0.5, 0, spike_D=4),
         "y": g.TensorSpec([5, 4, 8], "int8", 0.5, -3)}
    ops = [g.Requantize("widen", ["x"], "xs", multiplier=np.array([1 << 30], np.int32), shift=np.array([5], np.int32),
                        clamp=[-128, 127]),
           _layer(rng, "pw", "xs", "a", (outputs, 1, 1, channels), -9, [0, 4]),
           _layer(rng, "wide", "a", "y", (8, 1, 1, outputs), -7, [-128, 127])]
    ops[2].weight[0] = 127  # 4 x 127 x outputs > 32767 where outputs >= 65: the gather-dot form
    graph = g.Graph(t, ops, "x", ["y"])
    assert lanes_shift(graph, ops[1]) == 4 and (lanes_shift(graph, ops[2]) is None) == (outputs > 64)
    shape = (10, 5, 4, channels)
    x = np.where(rng.random(shape) < rate, rng.integers(1, 5, shape), 0).astype(np.float32)
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)
    assert 0.1 < np.count_nonzero(values["a"]) / values["a"].size < 0.95 and len(np.unique(values["y"])) > 30
    info, _ = _verify(graph, x, tmp_path / "p", "all", monkeypatch, samples=10)
    source = (tmp_path / "p" / "kernels.c").read_text()
    assert source.count(f"{LANES}(") >= 2 and (f"{GDOT4}(" in source) == (outputs > 64)
    assert {"pw", "wide"} <= {k["op"] for k in info["kernels"] if k["event_driven"]}
