"""The Helium forms of the image conv (kernels._im2col: microkernels.IMAGE, the window gathered once a
pixel, one VMLADAVA a channel) and of the sum pools (kernels.sum_pool2d: microkernels.SUM_POOL, the
channels as lanes) on QEMU's Cortex-M55 (mps3-an547, hard float): 1 and 3 input channels, windows of
one, two and three vectors (9, 27 and 48 bytes: the rows read moved back by 4 and by 0 bytes), padding
(asymmetric too), stride 2, output channels not a multiple of 16, per-tensor and per-channel
requantization with left and right shifts, a clamp above and below the output's zero point; sum
pools 2x2 and 3x3 stride 2, int8 -> int8 / int16 and int16 -> int32, channel counts that leave a
partial last vector. Each project equals the golden interpreter, on the M55 and on a core without
Helium (a Cortex-M4 board on mps2-an386: the else branches)."""

from __future__ import annotations

import numpy as np
import pytest

from edgesnn import boards
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, kernels, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.microkernels import IMAGE, IMAGE_PREP, SUM_POOL  # noqa: E402
from test_mcu_helium import HARD, M55, _layer, need  # noqa: E402

CORTEX_M4 = "nucleo-f446re"  # a Cortex-M4 (DSP, no Helium), run on QEMU's mps2-an386


def _one_channel() -> tuple[g.Graph, set[str]]:
    """8x8x1 (the digits cnn's first conv) -> 20 channels (9-byte windows, padding 1, per-channel
    right shifts, clamp [-3, 27] at zero point -3) -> sum pool 2x2 int8 -> int8 (20 channels: a whole
    vector and a partial one; zero points -3 in, 5 out) -> sum pool 3x3 stride 2 int8 -> int16."""
    rng = np.random.default_rng(11)
    t = {"x": g.TensorSpec([8, 8, 1], "int8", 0.02, -128), "a": g.TensorSpec([8, 8, 20], "int8", 0.1, -3),
         "p": g.TensorSpec([4, 4, 20], "int8", 0.1, 5), "q": g.TensorSpec([1, 1, 20], "int16", 0.1, -7),
         "y": g.TensorSpec([20], "int16", 0.1, -7)}
    ops = [_layer(rng, "img", "x", "a", (20, 3, 3, 1), -9, [-3, 27], padding=[1, 1, 1, 1]),
           g.SumPool2D("pool2", ["a"], "p", kernel=[2, 2], stride=[2, 2]),
           g.SumPool2D("pool3", ["p"], "q", kernel=[3, 3], stride=[2, 2]),
           g.Reshape("flatten", ["q"], "y")]
    return g.Graph(t, ops, "x", ["y"]), {IMAGE, SUM_POOL["int8", "int8"], SUM_POOL["int8", "int16"]}


def _three_channels() -> tuple[g.Graph, set[str]]:
    """9x9x3 -> stride 2, padding 1, 12 channels (27-byte windows: two vectors), one multiplier and a
    left shift, clamp [-128, 127] around zero point -5 -> 4x4 kernel, asymmetric padding, 8 channels
    (48 bytes: three whole vectors) -> 1x1 conv to int16 -> sum pool 3x3 stride 2 int16 -> int32."""
    rng = np.random.default_rng(12)
    t = {"x": g.TensorSpec([9, 9, 3], "int8", 0.05, 3), "b": g.TensorSpec([5, 5, 12], "int8", 0.1, -5),
         "c": g.TensorSpec([5, 5, 3], "int8", 0.1, 2), "d": g.TensorSpec([5, 5, 8], "int8", 0.1, 0),
         "e": g.TensorSpec([5, 5, 4], "int16", 0.01, 3), "f": g.TensorSpec([2, 2, 4], "int32", 0.01, -11),
         "y": g.TensorSpec([16], "int32", 0.01, -11)}
    img3 = _layer(rng, "img3", "x", "b", (12, 3, 3, 3), 1, [-128, 127], per_tensor=True, stride=[2, 2],
                  padding=[1, 1, 1, 1])
    img3.multiplier = np.array([1 << 19], np.int32)  # times 2 (the left shift), / 2^12: not all clamped
    ops = [img3,
           _layer(rng, "mix", "b", "c", (3, 1, 1, 12), -8, [-128, 127]),
           _layer(rng, "img4", "c", "d", (8, 4, 4, 3), -7, [0, 127], padding=[2, 1, 2, 1]),
           _layer(rng, "wide", "d", "e", (4, 1, 1, 8), -6, [-32768, 32767]),
           g.SumPool2D("pool", ["e"], "f", kernel=[3, 3], stride=[2, 2]),
           g.Reshape("flatten", ["f"], "y")]
    return g.Graph(t, ops, "x", ["y"]), {IMAGE, SUM_POOL["int16", "int32"]}


def _moved_windows() -> tuple[g.Graph, set[str]]:
    """Windows whose vectors end 12 and 8 bytes past a weight row (moved by three and two VSHLC steps,
    the first across two vectors): 7x6x3 -> a 2x3 kernel, no padding (18 bytes, rows of 20) -> 1x1
    conv to 2 channels -> a 2x2 kernel (8 bytes), stride (1, 2), padding on one side of each axis
    (6x4 -> 6x2: a pixel pair per row), 12 channels -> sum pool 2x2 stride 2 int8 -> int16."""
    rng = np.random.default_rng(13)
    t = {"x": g.TensorSpec([7, 6, 3], "int8", 0.05, 5), "a": g.TensorSpec([6, 4, 8], "int8", 0.1, 0),
         "b": g.TensorSpec([6, 4, 2], "int8", 0.1, 1), "c": g.TensorSpec([6, 2, 12], "int8", 0.1, -2),
         "d": g.TensorSpec([3, 1, 12], "int16", 0.1, 0), "y": g.TensorSpec([36], "int16", 0.1, 0)}
    ops = [_layer(rng, "valid", "x", "a", (8, 2, 3, 3), -9, [0, 127], padding=[0, 0, 0, 0]),
           _layer(rng, "two", "a", "b", (2, 1, 1, 8), -7, [-128, 127]),
           _layer(rng, "pairs", "b", "c", (12, 2, 2, 2), -6, [-20, 100], stride=[1, 2], padding=[0, 1, 1, 0]),
           g.SumPool2D("pool", ["c"], "d", kernel=[2, 2], stride=[2, 2]),
           g.Reshape("flatten", ["d"], "y")]
    return g.Graph(t, ops, "x", ["y"]), {IMAGE, SUM_POOL["int8", "int16"]}


def _inputs(graph: g.Graph, n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(5)
    spec = graph.tensors[graph.input]
    return ((rng.integers(-128, 128, (n, *spec.shape)) - spec.zero_point) * spec.scale).astype(np.float32)


def _verify(graph, x, out, board, monkeypatch, abi=HARD):
    monkeypatch.setenv("MAKEFLAGS", abi)
    export_mcu(graph, boards.load(board), out, "none", x)
    r = verify_mcu(out, x, qemu=True, samples=len(x), trust_code=True)
    assert r["runs"]["arm"]["machine"] == boards.load(board).qemu_machine
    assert all(run["mismatched_elements"] == 0 and run["samples"] == len(x) for run in r["runs"].values())
    return r["runs"]["arm"]["instructions_per_inference"]


@pytest.mark.parametrize("build", [_one_channel, _three_channels, _moved_windows])
def test_helium_image_conv_and_sum_pools_are_bit_exact(tmp_path, monkeypatch, build):
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    graph, used = build()
    x = _inputs(graph)
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)
    for op in graph.ops:  # every layer's outputs vary (not all clamped)
        assert len(np.unique(values[op.output])) > 3, op.name
    for op in graph.ops:
        if op.kind == "conv2d" and op.weight.shape[3] < 4:
            assert kernels.im2col4(graph, op), op.name
    helium = _verify(graph, x, tmp_path / "m55", M55, monkeypatch)
    source = (tmp_path / "m55" / "kernels.c").read_text()
    assert all(f"{name}(" in source for name in used | {IMAGE_PREP}), [n for n in used if f"{n}(" not in source]
    # the same project without Helium (soft float: the DSP code, the else branches) costs far more
    dsp = _verify(graph, x, tmp_path / "m55-soft", M55, monkeypatch, abi="ARM_ABI=-mfloat-abi=soft")
    assert helium < 0.5 * dsp, (helium, dsp)
    _verify(graph, x, tmp_path / "m4", CORTEX_M4, monkeypatch, abi="")  # a core without Helium

