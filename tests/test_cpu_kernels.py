"""The application-CPU kernels (backends/mcu/kernels_cpu.py, microkernels_cpu.py): conv2d / dense as an int8 GEMM
tile with its requantization, for host and linux-aarch64 boards. Every path of the micro-kernel (AVX-512 VNNI,
AVX2, plain C on this machine; Armv8.2 dot product and Armv8.0 NEON under qemu-aarch64) gives every output
integer of the golden interpreter, on a hand-built graph with a signed input, padding, strides, a remainder
of output pixels and channels and reductions that are not multiples of four, and on the digits cnn and
spikeformer over the whole test split."""

from __future__ import annotations

import json

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgesnn import boards, pipeline
from edgesnn.ir import graph as g
from edgesnn.ir import load as load_ir

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.microkernels_cpu import DEPTHWISE, GEMM, HEADER  # noqa: E402
from test_mcu_microkernels import need  # noqa: E402

VNNI = "avx512_vnni" in Path("/proc/cpuinfo").read_text()
# (build, flags, the micro-kernel path they select); the native build on this machine is AVX-512 VNNI's
HOST_PATHS = [("host", "-O3 -march=native", "avx512-vnni" if VNNI else None),
              ("host", "-O3 -march=haswell", "avx2"), ("host", "-O3 -march=x86-64", "c")]
A64_PATHS = [("aarch64", "-O3 -mcpu=cortex-a76", "neon-dotprod"), ("aarch64", "-O3 -mcpu=cortex-a72", "neon")]


def _layer(rng, name, src, dst, w_shape, shift, clamp, dense=False, **conv):
    out_ch = w_shape[0]
    common = dict(multiplier=rng.integers(2**30, 2**31 - 1, out_ch).astype(np.int32),
                  shift=rng.integers(shift - 2, shift + 1, out_ch).astype(np.int32), clamp=clamp,
                  weight=rng.integers(-127, 128, w_shape).astype(np.int8),
                  bias=rng.integers(-3000, 3000, out_ch).astype(np.int32), weight_scale=np.full(out_ch, 0.01))
    return g.Dense(name, [src], dst, **common) if dense else g.Conv2D(name, [src], dst, **common, **conv)


@pytest.fixture(scope="module")
def graph():
    """A signed input (zero point 3) into a padded conv of K = 27, a strided one of 40 output channels (a
    remainder of 8 past 32; 15 output pixels: three tiles of four and one of three), a pointwise one reading
    negative values, a strided depthwise conv of 72 channels (64 and a remainder), dense layers of K = 432
    (the input is the row) and K = 33 (a padded copy), and an int8 output with a zero point."""
    rng = np.random.default_rng(3)
    t = {"x": g.TensorSpec([9, 9, 3], "int8", 0.05, 3), "a": g.TensorSpec([9, 9, 8], "int8", 0.1, -128),
         "b": g.TensorSpec([5, 3, 40], "int8", 0.1, 5), "c": g.TensorSpec([5, 3, 72], "int8", 0.1, -20),
         "d": g.TensorSpec([3, 2, 72], "int8", 0.1, 0), "f": g.TensorSpec([432], "int8", 0.1, 0),
         "e": g.TensorSpec([33], "int8", 0.1, -7), "y": g.TensorSpec([10], "int8", 0.2, -3)}
    ops = [_layer(rng, "first", "x", "a", (8, 3, 3, 3), -6, [-128, 127], padding=[1, 1, 1, 1]),
           _layer(rng, "strided", "a", "b", (40, 3, 2, 8), -9, [-128, 127], stride=[2, 4], padding=[1, 1, 0, 1]),
           _layer(rng, "pointwise", "b", "c", (72, 1, 1, 40), -8, [-128, 127]),
           _layer(rng, "depthwise", "c", "d", (72, 3, 3, 1), -5, [0, 127], groups=72, stride=[2, 2],
                  padding=[1, 1, 1, 1]),
           g.Reshape("flatten", ["d"], "f"),
           _layer(rng, "fc", "f", "e", (33, 432), -8, [-128, 127], dense=True),
           _layer(rng, "head", "e", "y", (10, 33), -6, [-128, 127], dense=True)]
    return g.Graph(t, ops, "x", ["y"])


def _run(project: Path, build: str, flags: str, xq: np.ndarray, size: int) -> np.ndarray:
    """The project rebuilt with ``flags`` (make -B: every object) and run over ``xq``; its outputs."""
    var = "HOST_FLAGS" if build == "host" else "A64_FLAGS"
    r = subprocess.run(["make", "-s", "-B", "-C", str(project), build, f"{var}={flags}"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    work = project / "build" / f"run-{build}-{flags.split()[-1]}"
    work.mkdir(parents=True)
    xq.astype(np.int8).tofile(work / "inputs.bin")
    binary = project / "build" / build / "model"
    cmd = [str(binary.resolve())] if build == "host" else ["qemu-aarch64", "-cpu", "max", str(binary.resolve())]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return np.fromfile(work / "outputs.bin", np.int8).reshape(len(xq), size)


def _calls(source: str, name: str = GEMM) -> list[str]:
    """A micro-kernel's call sites in TVM's C (not its declarations)."""
    return re.findall(rf"^\s+{name}\(\(", source, re.M)


def _path(project: Path, build: str, flags: str) -> str:
    """The micro-kernel path the compiler takes with ``flags`` (the header's EDGESNN_CPU_PATH)."""
    cc = "cc" if build == "host" else "aarch64-linux-gnu-gcc"
    src = f'#include "{HEADER}"\nEDGESNN_CPU_PATH\n'
    r = subprocess.run([cc, *flags.split(), "-E", "-P", "-I", str(project / "include"), "-"], input=src,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1].strip('"')


def test_every_micro_kernel_path_is_bit_exact(graph, tmp_path):
    need("cc", "make", "aarch64-linux-gnu-gcc", "qemu-aarch64")
    rng = np.random.default_rng(7)
    x = (rng.integers(-128, 128, (40, 9, 9, 3)).astype(np.float32) - 3) * np.float32(0.05)
    xq = graph.quantize_input(x)
    values = graph.run_integer(xq, keep_all=True)
    golden = values["y"].reshape(len(xq), -1)
    assert (values["b"] < 5).mean() > 0.2 and len(np.unique(golden)) > 50  # negative offsets; not all clamped
    out = tmp_path / "pi5"
    export_mcu(graph, boards.load("raspberry-pi-5"), out, "none", x)
    source = (out / "kernels.c").read_text()
    assert len(_calls(source)) == 5  # first, strided, pointwise, fc, head
    assert len(_calls(source, DEPTHWISE)) == 1
    assert "-O3 -march=native" in (out / "board.mk").read_text()
    for build, flags, path in HOST_PATHS + A64_PATHS:
        if path is None:  # a machine without AVX-512 VNNI: native is one of the others, run all the same
            path = _path(out, build, flags)
        assert _path(out, build, flags) == path
        got = _run(out, build, flags, xq, 10)
        assert (got == golden).all(), (path, int((got != golden).sum()))
    # a Cortex-M project of the same graph keeps the Cortex-M kernels: no GEMM, no header
    m4 = tmp_path / "m4"
    export_mcu(graph, boards.load("nucleo-f446re"), m4, "none", x)
    assert not {GEMM, DEPTHWISE} & set(re.findall(r"edgesnn_cpu_\w+", (m4 / "kernels.c").read_text()))
    assert not (m4 / "include" / HEADER).exists()
    assert "HOST_FLAGS" not in (m4 / "board.mk").read_text()


@pytest.mark.parametrize("family", ["cnn", "spikeformer"])
def test_digits_models_are_bit_exact_on_the_host_and_aarch64(trained, tmp_path, family):
    """The whole digits test split (450 samples): the host build (AVX-512 VNNI here) and the Pi 5's static
    aarch64 build (dot product) under qemu-aarch64, every output integer equal to the golden interpreter.
    --event-driven auto (the default) keeps every layer dense on an application CPU."""
    need("cc", "make", "aarch64-linux-gnu-gcc", "qemu-aarch64")
    out = pipeline.export_model(trained[family], "mcu", tmp_path / "pi5", board="raspberry-pi-5")
    project = json.loads((out / "project.json").read_text())
    assert project["kernels"] and not any(k["event_driven"] for k in project["kernels"])
    graph = load_ir(out / "model.ir")
    linear = [op for op in graph.ops if op.kind in ("conv2d", "dense") and getattr(op, "groups", 1) == 1]
    assert linear and len(_calls((out / "kernels.c").read_text())) >= len(set(
        (tuple(op.weight.shape), op.kind) for op in linear))  # kernels of equal code are shared
    r = verify_mcu(out, _digits_test(), qemu=True, trust_code=True)
    assert set(r["runs"]) == {"host", "aarch64"}
    for run in r["runs"].values():
        assert (run["samples"], run["mismatches"], run["mismatched_elements"]) == (450, 0, 0)


def _digits_test() -> np.ndarray:
    from edgesnn import data

    ds = data.digits()
    return data.to_nhwc(ds.x_test)
