"""The counts micro-kernels (backends/mcu/microkernels.py: edgesnn_events_counts_s8 and the
gathers that only add weights) on single spike-reading layers: binary spikes, counts 0..4
widened by the exporter's 2^4 headroom, 300 inputs of one count in a pixel, counts whose 16-bit
running sums must be flushed before the last count, a dense layer; ternary spikes and large
weights (600 inputs) keep the multiply-accumulate gather. Each is equal to the golden interpreter
on the host (plain C) and on QEMU's Cortex-M4 (SXTAB16/SADD16), two also at -Os, and the counts
kernel takes fewer instructions there than the multiply-accumulate one it replaces. 1x1 convs and
dense layers take a tile in one call (gather and requantization: edgesnn_counts_tile_s8)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from edgesnn import boards
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, kernels, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.build import run  # noqa: E402
from edgesnn.backends.mcu.microkernels import (COUNTS_TILE, EVENTS, EVENTS_COUNTS, GATHER,  # noqa: E402
                                               GATHER_COUNTS)

M4 = "nucleo-f446re"


def need(*tools: str) -> None:
    """Not skipped: CI runs scripts/setup.sh, so a missing tool is a failure of the setup."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs it"


def _graph(kind: str, in_shape, out_ch: int, D: int, headroom: int = 0, signed: bool = False, wmax: int = 127,
           shift: int | None = None, seed: int = 0, k: int | None = None, zero_point: int = -3,
           clamp=(-128, 127)) -> g.Graph:
    """x (spike counts 0..D, or -D..D) -> [x 2^headroom] -> one conv2d (3x3, padded; 1x1 when the
    input has over 64 channels, or ``k``) or dense layer with int8 weights in [-wmax, wmax], output
    ``zero_point`` and ``clamp`` (a neuron's counts: zero point 0, clamp [0, D])."""
    rng = np.random.default_rng(seed)
    fan_in = in_shape[-1]
    conv = kind == "conv"
    k = k or (3 if conv and fan_in <= 64 else 1)
    w_shape = (out_ch, k, k, fan_in) if conv else (out_ch, fan_in)
    out_shape = [*in_shape[:2], out_ch] if conv else [out_ch]
    tensors = {"x": g.TensorSpec(list(in_shape), "int8", 1.0, 0, spike_D=D, signed=signed),
               "y": g.TensorSpec(out_shape, "int8", 0.5, zero_point)}
    ops, src = [], "x"
    if headroom:
        tensors["xs"] = g.TensorSpec(list(in_shape), "int8", 1.0 / (1 << headroom), 0)
        ops.append(g.Requantize("widen", ["x"], "xs", multiplier=np.array([1 << 30], np.int32),
                                shift=np.array([headroom + 1], np.int32), clamp=[-128, 127]))
        src = "xs"
    common = dict(multiplier=rng.integers(2**30, 2**31 - 1, out_ch).astype(np.int32),
                  shift=np.resize(np.array(-9 - headroom - (D > 4) * 3 if shift is None else shift, np.int32), out_ch),
                  clamp=list(clamp),
                  weight=rng.integers(-wmax, wmax + 1, w_shape).astype(np.int8),
                  bias=rng.integers(-3000, 3000, out_ch).astype(np.int32), weight_scale=np.full(out_ch, 0.01))
    if conv:
        ops.append(g.Conv2D("layer", [src], "y", **common, padding=[k // 2] * 4))
    else:
        ops.append(g.Dense("layer", [src], "y", **common))
    return g.Graph(tensors, ops, "x", ["y"])


def _spikes(graph: g.Graph, rate: float, samples: int, seed: int = 1) -> np.ndarray:
    spec = graph.tensors["x"]
    rng = np.random.default_rng(seed)
    shape = (samples, *spec.shape)
    values = rng.integers(1, spec.spike_D + 1, shape)
    if spec.signed:
        values = values * np.where(rng.random(shape) < 0.5, 1, -1)
    return np.where(rng.random(shape) < rate, values, 0).astype(np.float32)


CASES = {  # name: (graph arguments, counts kernel expected, counts between flushes: 0 none before the end)
    "binary": (dict(kind="conv", in_shape=(5, 5, 12), out_ch=16, D=1), True, 0),
    "D4-headroom": (dict(kind="conv", in_shape=(5, 4, 20), out_ch=8, D=4, headroom=4), True, 0),
    "300-inputs": (dict(kind="conv", in_shape=(3, 3, 300), out_ch=8, D=1, wmax=90, shift=-5), True, 0),
    "flushed": (dict(kind="conv", in_shape=(4, 4, 48), out_ch=16, D=16), True, None),
    "dense": (dict(kind="dense", in_shape=(70,), out_ch=24, D=4, headroom=2), True, 0),
    "ternary": (dict(kind="conv", in_shape=(5, 5, 8), out_ch=8, D=1, signed=True), False, None),
    "large-weights": (dict(kind="conv", in_shape=(2, 2, 600), out_ch=8, D=1, shift=-5), False, None),
    # 1x1 convs: a tile of eight outputs in one micro-kernel call (edgesnn_counts_tile_s8) with the
    # DSP requantization (per-channel shifts within [-31, -2]); a neuron's counts out (zero point 0,
    # clamp [0, 4]: no sign nudge) with shifts -6..-13; tiles of four (the requantization call alone)
    "1x1-counts-out": (dict(kind="conv", in_shape=(4, 5, 32), out_ch=16, D=4, headroom=4, k=1, zero_point=0,
                            clamp=(0, 4), shift=tuple(range(-6, -14, -1))), True, 0),
    "1x1-tile4": (dict(kind="conv", in_shape=(3, 4, 24), out_ch=12, D=4, headroom=4, k=1, shift=-11), True, 0),
    "1x1-flushed": (dict(kind="conv", in_shape=(3, 3, 48), out_ch=16, D=16, k=1, shift=-7), True, None),  # sums in acc
}


@pytest.mark.parametrize("case", list(CASES))
def test_counts_kernels_are_bit_exact_on_the_host_and_cortex_m4(case, tmp_path):
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    args, takes_counts, steps = CASES[case]
    graph = _graph(**args)
    op = graph.ops[-1]
    counts = kernels.counts_gather(graph, op)
    assert (counts is not None) == takes_counts, counts
    if steps is not None:
        assert counts[2] == steps
    if case in ("flushed", "1x1-flushed"):  # 16-bit sums flushed before the last count: the path is taken
        assert 0 < counts[2] < counts[1] == 16
    if case == "300-inputs":  # one pixel's 300 inputs in one group: > 258 weights added into a half
        w = np.abs(op.weight.astype(np.int64)).sum(-1).max()
        assert w <= 32767 and op.weight.shape[-1] > 258
    if case == "large-weights":
        assert np.abs(op.weight.astype(np.int64)).sum(-1).max() > 32767
    x = _spikes(graph, 0.95 if case == "300-inputs" else 0.5, 12)
    ints = graph.run_integer(graph.quantize_input(x), keep_all=True)
    assert len(np.unique(ints["y"])) > (4 if case == "1x1-counts-out" else 10)  # outputs not all clamped
    if case == "1x1-counts-out":  # counts below, inside and above [0, 4] before the clamp
        acc = ints["y"].reshape(-1, op.weight.shape[0])
        assert (acc == 0).mean() > 0.05 and (acc == 4).mean() > 0.05
    if case == "300-inputs":
        assert (np.count_nonzero(ints["x"], axis=-1) > 258).any()
    out = tmp_path / "mcu"
    export_mcu(graph, boards.load(M4), out, "all", x)
    source = (out / "kernels.c").read_text()
    tile = kernels.gather_tile(graph, op)
    fused = case.startswith("1x1") or case in ("300-inputs", "dense")  # one gather a tile
    if fused:  # the whole tile in one call, flags 7: per channel, the DSP form of the requantization, no left shift
        assert f"{COUNTS_TILE}({tile}," in source and f"{GATHER_COUNTS[tile]}(" not in source
        assert re.search(r"shift\[[^\]]*\]\)\), 7, ", source)
    used = (EVENTS_COUNTS, COUNTS_TILE if fused else GATHER_COUNTS[tile]) if takes_counts else (EVENTS, GATHER[tile])
    assert all(f"{name}(" in source for name in used), used
    r = verify_mcu(out, x, qemu=True, samples=12, trust_code=True)
    assert set(r["runs"]) == {"host", "arm"}
    assert all(run["mismatched_elements"] == 0 and run["samples"] == 12 for run in r["runs"].values()), r["runs"]


@pytest.mark.parametrize("case", ["flushed", "dense"])
def test_counts_kernels_are_bit_exact_at_os(case, tmp_path, monkeypatch):
    """-Os (MAKEFLAGS, as scripts/mcu_vs_cmsis_nn.py builds) allocates registers otherwise."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    monkeypatch.setenv("MAKEFLAGS", "OPT=-Os")
    graph = _graph(**CASES[case][0])
    x = _spikes(graph, 0.5, 6)
    export_mcu(graph, boards.load(M4), tmp_path / "mcu", "all", x)
    r = verify_mcu(tmp_path / "mcu", x, qemu=True, samples=6, trust_code=True)
    assert all(run["mismatched_elements"] == 0 and run["samples"] == 6 for run in r["runs"].values()), r["runs"]


def test_counts_gather_takes_fewer_instructions_than_the_multiply_accumulate_one(tmp_path, monkeypatch):
    need("make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph = _graph("conv", (6, 6, 32), 64, D=4)  # the digits cnn's features.6 channels, counts 0..4
    x = _spikes(graph, 0.6, 3)
    xq = graph.quantize_input(x)
    measured = {}
    for form in ("counts", "multiply"):
        if form == "multiply":
            monkeypatch.setattr(kernels, "counts_gather", lambda graph, op: None)
        out = tmp_path / form
        export_mcu(graph, boards.load(M4), out, "all", x)
        assert (f"{EVENTS_COUNTS}(" in (out / "kernels.c").read_text()) == (form == "counts")
        y, stats = run(out, "arm", xq, "int8", 6 * 6 * 64, machine=boards.load(M4).qemu_machine)
        assert (y.reshape(3, 6, 6, 64) == graph.run_integer(xq, keep_all=True)["y"]).all()
        measured[form] = stats["mean"]
    assert measured["counts"] < 0.75 * measured["multiply"], measured  # 0.60 when written


@pytest.mark.parametrize("case", ["300-inputs"])
def test_counts_tile_is_bit_exact_with_helium(case, tmp_path, monkeypatch):
    """edgesnn_counts_tile_s8's Helium form (the bias, the int16-lane gather and the vector
    requantization) on QEMU's Cortex-M55 (mps3-an547; GCC has Helium only with the hard-float ABI):
    a 1x1 conv of 300 input channels, over the gather-dot form's 256 (kernels_gather.applies), which
    takes every other spike-reading layer on Helium."""
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    monkeypatch.setenv("MAKEFLAGS", "ARM_ABI=-mfloat-abi=hard")
    graph = _graph(**CASES[case][0])
    x = _spikes(graph, 0.5, 6)
    board = boards.load("mps3-an547")
    export_mcu(graph, board, tmp_path / "mcu", "all", x)
    assert f"{COUNTS_TILE}(" in (tmp_path / "mcu" / "kernels.c").read_text()
    r = verify_mcu(tmp_path / "mcu", x, qemu=True, samples=6, trust_code=True)
    assert r["runs"]["arm"]["machine"] == board.qemu_machine
    assert all(run["mismatched_elements"] == 0 and run["samples"] == 6 for run in r["runs"].values()), r["runs"]
