"""The MCU kernels' requantization forms (backends/mcu/kernels.py: requantize_double_rounding with
what the generator knows of the constants, kernels.requant_info) equal the interpreter's
fixedpoint.multiply_by_quantized_multiplier for every int32 accumulator tried, int32 extremes
included: the general form, the short form for shifts -31..-2 (one multiply-accumulate, an add
and a shift), and constants folded into the code (per tensor, the exporter's exact x 2^k
widening). Compiled by the host gcc with UBSan (an overflow or a bad shift fails too)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edgesnn.ir.fixedpoint import multiply_by_quantized_multiplier

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from tvm import te  # noqa: E402
from edgesnn.backends.mcu import kernels as K  # noqa: E402
from edgesnn.backends.mcu.tvm_pipeline import SHIM_HEADERS, build_c  # noqa: E402

CFLAGS = ["-std=c99", "-O1", "-Wall", "-fsanitize=undefined", "-fno-sanitize-recover=undefined"]


def _requantize_c(x: np.ndarray, mult: np.ndarray, shift: np.ndarray, rq, tmp_path) -> np.ndarray:
    """requantize_double_rounding(x[i], mult[i], shift[i], rq) for every i, compiled and run on the host."""
    n = len(x)
    xt, mt, st = (te.placeholder((n,), "int32", name) for name in ("x", "multiplier", "shift"))
    out = te.compute((n,), lambda i: K.requantize_double_rounding(xt[i], mt[i], st[i], rq), "out")
    return _run(te.create_prim_func([xt, mt, st, out]), x, mult, shift, tmp_path)


def _run(func, x: np.ndarray, mult: np.ndarray, shift: np.ndarray, tmp_path) -> np.ndarray:
    """An int32 kernel (x, multiplier, shift) -> out, compiled with UBSan and run on the host."""
    assert shutil.which("gcc"), "gcc missing: scripts/setup.sh installs it"
    n = len(x)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for rel, text in SHIM_HEADERS.items():
        (tmp_path / "include" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "include" / rel).write_text(text)
    (tmp_path / "kernels.c").write_text(build_c({"rq_kernel": func}))

    def array(name, values):
        body = ",".join(f"(int32_t){int(v)}LL" for v in values)
        return f"static int32_t {name}[{n}] = {{{body}}};\n"

    main = ("#include <stdio.h>\n#include <stdint.h>\n"
            "int32_t rq_kernel(int32_t *restrict x, int32_t *restrict m, int32_t *restrict s, int32_t *restrict o);\n"
            + array("x", x) + array("m", mult) + array("s", shift) + f"static int32_t o[{n}];\n"
            "int main(void) { rq_kernel(x, m, s, o);\n"
            f"  for (int i = 0; i < {n}; i++) printf(\"%ld\\n\", (long)o[i]);\n  return 0; }}\n")
    (tmp_path / "main.c").write_text(main)
    exe = tmp_path / "run"
    subprocess.run(["gcc", *CFLAGS, f"-I{tmp_path / 'include'}", str(tmp_path / "kernels.c"), str(tmp_path / "main.c"),
                    "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[:2000]
    return np.array(run.stdout.split(), dtype=np.int64)


def _accumulators(rng, n: int) -> np.ndarray:
    """int32 values: the extremes, around 0 and the rounding ties, and random ones of every magnitude."""
    edges = [-(2**31), -(2**31) + 1, 2**31 - 1, 2**31 - 2, 0, 1, -1, 2, -2, 3, -3, 1 << 30, -(1 << 30)]
    bits = rng.integers(0, 32, n)
    rand = (rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int64) >> bits)
    return np.concatenate([np.array(edges, np.int64), rand])[:n]


@pytest.mark.parametrize("shifts", [(-31, -2), (-12, -2)])
def test_right_shift_form(shifts, tmp_path):
    """Per-channel shifts within [-31, -2] (requant_info says right) take the short form: the same
    integers as TFLite's for every accumulator and multiplier >= 0, zero included."""
    rng = np.random.default_rng(sum(shifts) & 0xFF)
    n = 3000
    x = _accumulators(rng, n)
    mult = rng.integers(1 << 30, 2**31 - 1, n)
    mult[:40] = [0, 1, 2**31 - 1, 1 << 30] * 10
    shift = rng.integers(shifts[0], shifts[1] + 1, n)
    rq = K.requant_info(mult, shift)
    assert rq.right and rq.shift is None
    got = _requantize_c(x, mult, shift, rq, tmp_path)
    np.testing.assert_array_equal(got, multiply_by_quantized_multiplier(x, mult, shift))


@pytest.mark.parametrize("mult,shift", [(1 << 30, 5), (1 << 30, 8), (1 << 30, 1), (1518500250, 3), (1518500250, 0),
                                        (1 << 30, 0), (1966081932, -1), (1966081932, -2), (1231241341, -10),
                                        (1 << 30, -19), (2**31 - 1, -31)])
def test_constants_in_the_code(mult, shift, tmp_path):
    """One multiplier and shift for every channel: the shift folded into the code, widenings x 2^k
    as a shift; equal to TFLite's wherever its left shift stays in int32."""
    rng = np.random.default_rng(abs(shift) + 7)
    x = _accumulators(rng, 1000)
    if shift > 0:  # TFLite's x << shift must fit int32 (the exporter bounds it)
        x = np.clip(x, -(2**31) >> shift, ((2**31) >> shift) - 1)
    rq = K.requant_info(np.full(3, mult), np.full(3, shift))
    assert (rq.multiplier, rq.shift, rq.right) == (mult, shift, -31 <= shift <= -2)
    # the shift loads are not read (garbage there changes nothing); the multiplier's may be (a register)
    got = _requantize_c(x, np.full_like(x, mult), np.full_like(x, 3), rq, tmp_path)
    np.testing.assert_array_equal(got, multiply_by_quantized_multiplier(x, mult, shift))


def test_general_form_for_mixed_shifts(tmp_path):
    """Shifts on both sides of 0 (and -1) per channel keep the general form."""
    rng = np.random.default_rng(3)
    n = 2000
    shift = rng.integers(-8, 4, n)
    x = np.clip(_accumulators(rng, n), -(2**27), 2**27 - 1)
    mult = rng.integers(1 << 30, 2**31 - 1, n)
    rq = K.requant_info(mult, shift)
    assert not rq.right and rq.shift is None
    np.testing.assert_array_equal(_requantize_c(x, mult, shift, rq, tmp_path),
                                  multiply_by_quantized_multiplier(x, mult, shift))


@pytest.mark.parametrize("event_driven", [False, True])
def test_depthwise_window_kernel(event_driven, tmp_path):
    """Depthwise 3x3 convolutions (8 and 12 channels; padded, strided, unpadded; an input zero point,
    spike counts) take the edgesnn_dw4_s8 window kernel in both forms (kernels.depthwise4; the
    event-driven one skips all-zero taps) and equal the interpreter."""
    from test_mcu_kernels import Builder, check_ops

    b = Builder(11)
    x = b.tensor("x", [7, 6, 8], zero_point=-9)
    s = b.tensor("s", [6, 6, 12], spike_D=4)
    b.conv("dw", x, 8, groups=8)
    b.conv("dw_s2", x, 8, stride=(2, 2), groups=8, out_zp=3)
    b.conv("dw_valid", x, 8, padding=(0, 0, 0, 0), groups=8)
    b.conv("dw_spikes", s, 12, padding=(1, 0, 0, 1), groups=12, clamp=[0, 4])
    graph = b.graph()
    assert all(K.depthwise4(graph, op) for op in b.ops)
    kernels = check_ops(graph, b.ops, tmp_path, event_driven=event_driven)
    assert all(k.scratch_bytes == 0 for k in kernels)


def test_im2col_kernel(tmp_path):
    """Groups-1 convolutions of inputs with 1 to 3 channels (an image; a zero point that the
    padding must cancel; strided, unpadded) take the window-gathering kernel (kernels.im2col4)
    and equal the interpreter."""
    from test_mcu_kernels import Builder, check_ops

    b = Builder(12)
    x1 = b.tensor("x1", [8, 8, 1], zero_point=-128)
    x3 = b.tensor("x3", [7, 6, 3], zero_point=5)
    b.conv("stem", x1, 16)
    b.conv("stem_s2", x3, 8, stride=(2, 2), out_zp=-4)
    b.conv("valid", x3, 4, kernel=(2, 3), padding=(0, 0, 0, 0))
    b.conv("spikes", x1, 8, padding=(2, 0, 1, 1), clamp=[0, 4])
    graph = b.graph()
    assert all(K.im2col4(graph, op) for op in b.ops)
    check_ops(graph, b.ops, tmp_path)


def test_nonnegative_form_under_a_clamp(tmp_path):
    """finish() with a clamp whose low end is at or above the zero point (a neuron's counts) takes
    the short form without the sign's nudge: every accumulator, negative ones included, gives the
    interpreter's clamped output."""
    rng = np.random.default_rng(5)
    n = 3000
    x = _accumulators(rng, n)
    mult = rng.integers(1 << 30, 2**31 - 1, n)
    shift = rng.integers(-31, -1, n)
    rq = K.requant_info(mult, shift)
    for zp, clamp in ((0, (0, 4)), (-3, (0, 127)), (2, (2, 9))):
        n_ = len(x)
        xt, mt, st = (te.placeholder((n_,), "int32", nm) for nm in ("x", "multiplier", "shift"))
        out = te.compute((n_,), lambda i: K.finish(xt[i], K.requantize_double_rounding, mt[i], st[i], zp, clamp,
                                                   "int32", rq=rq), "out")
        got = _run(te.create_prim_func([xt, mt, st, out]), x, mult, shift, tmp_path / f"zp{zp}")
        want = np.clip(multiply_by_quantized_multiplier(x, mult, shift) + zp, *clamp)
        np.testing.assert_array_equal(got, want)
