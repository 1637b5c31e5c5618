"""The int8 micro-kernels (backends/mcu/microkernels.py) on a DSP core: a hand-built graph whose
layers take every path of them — whole kernel rows and border taps with run lengths that are not
multiples of four, four-channel tiles and left-over rows, the event lists with negative values
gathered into tiles of four and eight outputs — exported dense and event-driven, equal to the
golden interpreter on the host (plain C) and on QEMU's Cortex-M4 (SXTB16/SMLAD)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgesnn import boards
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.microkernels import AXPY, DOT, DOT4, EVENTS, GATHER  # noqa: E402


def need(*tools: str) -> None:
    """Not skipped: CI runs scripts/setup.sh, so a missing tool is a failure of the setup."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs it"


def _layer(rng, name, src, dst, w_shape, shift, clamp, dense=False, **conv):
    out_ch = w_shape[0]
    common = dict(multiplier=rng.integers(2**30, 2**31 - 1, out_ch).astype(np.int32),
                  shift=np.full(out_ch, shift, np.int32), clamp=clamp,
                  weight=rng.integers(-127, 128, w_shape).astype(np.int8),
                  bias=rng.integers(-3000, 3000, out_ch).astype(np.int32), weight_scale=np.full(out_ch, 0.01))
    return g.Dense(name, [src], dst, **common) if dense else g.Conv2D(name, [src], dst, **common, **conv)


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(11)
    t = {"x": g.TensorSpec([9, 9, 6], "int8", 0.05, 3), "a": g.TensorSpec([9, 9, 8], "int8", 0.1, 0),
         "b": g.TensorSpec([4, 5, 12], "int8", 0.1, 0), "c": g.TensorSpec([4, 5, 16], "int8", 0.1, 0),
         "d": g.TensorSpec([4, 5, 16], "int8", 0.1, 0), "f": g.TensorSpec([320], "int8", 0.1, 0),
         "e": g.TensorSpec([12], "int8", 0.1, 0), "y": g.TensorSpec([10], "int8", 0.2, -3)}
    ops = [_layer(rng, "rows", "x", "a", (8, 3, 3, 6), -9, [0, 127], padding=[1, 1, 1, 1]),  # ReLU: sparse
           _layer(rng, "strided", "a", "b", (12, 3, 2, 8), -9, [-128, 127], stride=[2, 2], padding=[1, 0, 0, 1]),
           _layer(rng, "pointwise", "b", "c", (16, 1, 1, 12), -9, [0, 127]),  # reads negative values
           _layer(rng, "depthwise", "c", "d", (16, 3, 3, 1), -7, [0, 127], groups=16, padding=[1, 1, 1, 1]),
           g.Reshape("flatten", ["d"], "f"),
           _layer(rng, "fc", "f", "e", (12, 320), -11, [0, 127], dense=True),
           _layer(rng, "head", "e", "y", (10, 12), -7, [-128, 127], dense=True)]
    return g.Graph(t, ops, "x", ["y"])


@pytest.mark.parametrize("event_driven", ["none", "all"])
def test_micro_kernels_are_bit_exact_on_the_host_and_cortex_m4(graph, tmp_path, event_driven):
    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    rng = np.random.default_rng(5)
    x = (rng.integers(-128, 128, (24, 9, 9, 6)).astype(np.float32) - 3) * np.float32(0.05)
    values = graph.run_integer(graph.quantize_input(x), keep_all=True)
    for name in ("a", "c", "d", "e"):  # the ReLU outputs are sparse, not all zero
        assert 0.2 < np.count_nonzero(values[name]) / values[name].size < 0.9, name
    assert (values["b"] < 0).mean() > 0.2 and len(np.unique(values["y"])) > 20  # not all clamped
    out = tmp_path / "mcu"
    info = export_mcu(graph, boards.load("nucleo-f446re"), out, event_driven, x)
    source = (out / "kernels.c").read_text()
    # dense: the 10-row head leaves two rows to DOT; event-driven, it adds columns of 10 (AXPY)
    used = {DOT4} | ({EVENTS, GATHER[4], GATHER[8], AXPY} if event_driven == "all" else {DOT})
    assert all(f"{name}(" in source for name in used), [n for n in used if f"{n}(" not in source]
    assert {k["op"] for k in info["kernels"] if k["event_driven"]} == (
        {"strided", "pointwise", "depthwise", "fc", "head"} if event_driven == "all" else set())
    r = verify_mcu(out, x, qemu=True, samples=24, trust_code=True)
    assert set(r["runs"]) == {"host", "arm"} and r["runs"]["arm"]["machine"] == "mps2-an386"
    assert all(run["mismatched_elements"] == 0 and run["samples"] == 24 for run in r["runs"].values())
