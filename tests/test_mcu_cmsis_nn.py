"""``export --target mcu --kernels cmsis-nn``: the digits cnn's int8 conv/dense layers call CMSIS-NN
(compiled from ../shared/anchors/cmsis-nn, never copied), the rest keep TVM kernels, and the
project's outputs equal the golden interpreter's on the host and on QEMU's Cortex-M4. A CMSIS-NN
folder without the functions the project calls is a one-line error naming them, before any file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import pipeline
from edgesnn.cli import app

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu.cmsis_nn import FUNCTIONS  # noqa: E402

# The unmodified CMSIS-NN beside the repository (../shared/anchors), wherever the clone lives.
ANCHOR = next((p for p in (Path(os.environ.get("EDGESNN_CMSIS_NN", "/nonexistent")),
                           Path(__file__).resolve().parents[2] / "shared" / "anchors" / "cmsis-nn",
                           Path("/work/shared/anchors/cmsis-nn")) if p.is_dir()),
              Path(__file__).resolve().parents[2] / "shared" / "anchors" / "cmsis-nn")


def need(*tools: str) -> None:
    """Not skipped: CI runs scripts/setup.sh, so a missing tool is a failure of the setup."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs it"


def need_anchor() -> None:
    assert ANCHOR.is_dir(), (f"no CMSIS-NN at {ANCHOR}: the tests build it from ../shared/anchors/cmsis-nn beside the "
                             f"repository (or $EDGESNN_CMSIS_NN); scripts/setup.sh installs the toolchains, not it")


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def project(trained, tmp_path_factory):
    """The digits cnn with CMSIS-NN kernels; features.6 (reading spikes) chosen event-driven, so it keeps TVM's."""
    need("cc", "make")
    need_anchor()
    out = tmp_path_factory.mktemp("cmsis") / "mcu"
    r = edgesnn("export", trained["cnn"], "--target", "mcu", "--board", "nucleo-f446re", "--out", out,
                "--event-driven", "features.6", "--kernels", "cmsis-nn", "--cmsis-nn", ANCHOR)
    assert r.exit_code == 0, r.output
    return out


def test_covered_layers_call_cmsis_nn_and_the_rest_keep_tvm(project):
    info = json.loads((project / "project.json").read_text())
    sources = {k["op"]: (k["kind"], k["event_driven"], k["source"]) for k in info["kernels"]}
    assert sources["features.2"] == ("conv2d", False, "cmsis-nn:arm_convolve_wrapper_s8")
    assert sources["features.6"] == ("conv2d", True, "tvm")  # event-driven: CMSIS-NN has no such form
    assert sources["output"] == ("dense", False, "cmsis-nn:arm_fully_connected_per_channel_s8")
    for kind, event, source in sources.values():
        assert source.startswith("cmsis-nn:") == (kind in ("conv2d", "dense") and not event)
    assert info["cmsis_nn"] == str(ANCHOR.resolve())
    layers = (project / "cmsis_layers.c").read_text()
    assert "arm_convolve_wrapper_s8(" in layers and "arm_fully_connected_per_channel_s8(" in layers
    assert "edgesnn_features_6" in (project / "kernels.c").read_text()  # TVM's kernel for the event-driven conv
    assert not list(project.rglob("arm_convolve_s8.c"))  # CMSIS-NN is built from the user's folder, not copied


def test_cmsis_nn_project_is_bit_exact_on_the_host(project):
    r = pipeline.verify(project, "digits", trust_code=True)  # every test sample
    host = r["runs"]["host"]
    assert host["samples"] > 300 and host["mismatched_elements"] == 0 and r["mismatches"] == 0


def test_cmsis_nn_project_is_bit_exact_on_cortex_m4(project):
    need("arm-none-eabi-gcc", "qemu-system-arm")
    r = pipeline.verify(project, "digits", qemu=True, samples=6, trust_code=True)
    arm = r["runs"]["arm"]
    assert arm["machine"] == "mps2-an386" and arm["samples"] == 6 and arm["mismatched_elements"] == 0
    assert "arm_convolve_wrapper_s8" in (project / "build" / "arm" / "model.map").read_text()
    assert 0 < arm["instructions_per_inference"]


def test_a_cmsis_nn_folder_without_the_functions_is_one_line_naming_them(trained, tmp_path):
    partial = tmp_path / "CMSIS-NN"
    (partial / "Include").mkdir(parents=True)
    (partial / "Include" / "arm_nnfunctions.h").write_text("/* old */\n")
    for name, rel in FUNCTIONS.items():  # all but the depthwise wrapper and the per-channel dense
        if name not in ("arm_depthwise_conv_wrapper_s8", "arm_fully_connected_per_channel_s8"):
            path = partial / "Source" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(f"int32_t {name}(void)\n{{\n    return 0;\n}}\n")
    out = tmp_path / "o"
    r = edgesnn("export", trained["cnn"], "--target", "mcu", "--board", "nucleo-f446re", "--out", out,
                "--kernels", "cmsis-nn", "--cmsis-nn", partial)
    assert r.exit_code == 1 and not out.exists()
    line = r.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "missing arm_depthwise_conv_wrapper_s8, arm_fully_connected_per_channel_s8" in line
    assert "arm_convolve_wrapper_s8," not in line


@pytest.mark.parametrize("args, message", [
    (["--target", "mcu", "--kernels", "cmsis-nn", "--cmsis-nn", "{tmp}/nowhere"], "nowhere: no such folder"),
    (["--target", "mcu", "--kernels", "cmsis-nn"], "--kernels cmsis-nn needs --cmsis-nn PATH"),
    (["--target", "mcu", "--kernels", "cmsis-nn", "--cmsis-nn", "{tmp}"], "no Include/arm_nnfunctions.h"),
    (["--target", "mcu", "--kernels", "cmsisnn"], "unknown kernel source 'cmsisnn'; available: tvm, cmsis-nn"),
    (["--target", "mcu", "--cmsis-nn", "{tmp}"], "--cmsis-nn: only used with --kernels cmsis-nn"),
    (["--target", "tflite", "--kernels", "cmsis-nn", "--cmsis-nn", "{tmp}"], "choose the kernels of --target mcu"),
])
def test_bad_kernel_options_are_one_line_before_any_work(trained, tmp_path, args, message):
    out = tmp_path / "o"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    board = ["--board", "nucleo-f446re"] if "mcu" in args else []
    r = edgesnn("export", trained["cnn"], "--out", out, *board, *args)
    assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def _layer(rng, name, src, dst, w_shape, shift, zp_out, clamp, dense=False, **conv):
    """A conv2d (OHWI) or dense with random int8 weights, int32 bias and per-channel multipliers."""
    from edgesnn.ir import graph as g

    out_ch = w_shape[0]
    common = dict(multiplier=rng.integers(2**30, 2**31 - 1, out_ch).astype(np.int32),
                  shift=np.full(out_ch, shift, np.int32), clamp=clamp,
                  weight=rng.integers(-127, 128, w_shape).astype(np.int8),
                  bias=rng.integers(-3000, 3000, out_ch).astype(np.int32), weight_scale=np.full(out_ch, 0.01))
    return g.Dense(name, [src], dst, **common) if dense else g.Conv2D(name, [src], dst, **common, **conv)


@pytest.fixture(scope="module")
def odd_graph():
    """Layers that take CMSIS-NN's other paths: a strided depthwise conv with asymmetric padding, a
    grouped 1x1 conv (TVM), a 3x2 conv padded unevenly, a 1x1 conv (its fast path), and a dense
    layer, all with nonzero zero points and clamps inside int8."""
    from edgesnn.ir import graph as g

    rng = np.random.default_rng(7)
    t = {"x": g.TensorSpec([9, 9, 6], "int8", 0.05, 3), "dw": g.TensorSpec([4, 4, 6], "int8", 0.1, -5),
         "gc": g.TensorSpec([4, 4, 6], "int8", 0.1, 2), "c": g.TensorSpec([4, 4, 7], "int8", 0.1, -1),
         "p": g.TensorSpec([4, 4, 5], "int8", 0.1, 4), "f": g.TensorSpec([80], "int8", 0.1, 4),
         "y": g.TensorSpec([10], "int8", 0.2, -3)}
    ops = [_layer(rng, "dw", "x", "dw", (6, 3, 3, 1), -8, -5, [-100, 120], groups=6, stride=[2, 2], padding=[1, 0, 1, 0]),
           _layer(rng, "grouped", "dw", "gc", (6, 1, 1, 3), -7, 2, [-128, 127], groups=2),
           _layer(rng, "conv", "gc", "c", (7, 3, 2, 6), -9, -1, [-128, 127], padding=[1, 1, 0, 1]),
           _layer(rng, "pointwise", "c", "p", (5, 1, 1, 7), -7, 4, [-20, 127]),
           g.Reshape("flatten", ["p"], "f"),
           _layer(rng, "fc", "f", "y", (10, 80), -9, -3, [-128, 127], dense=True)]
    return g.Graph(t, ops, "x", ["y"])


def test_depthwise_strided_padded_and_pointwise_layers_are_bit_exact(odd_graph, tmp_path):
    from edgesnn import boards
    from edgesnn.backends.mcu import export_mcu, verify_mcu

    need("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm")
    need_anchor()
    rng = np.random.default_rng(1)
    x = (rng.integers(-128, 128, (40, 9, 9, 6)).astype(np.float32) - 3) * np.float32(0.05)
    out = tmp_path / "mcu"
    info = export_mcu(odd_graph, boards.load("nucleo-f446re"), out, "none", x, kernels="cmsis-nn", cmsis_nn=ANCHOR)
    assert {k["op"]: k["source"] for k in info["kernels"]} == {
        "dw": "cmsis-nn:arm_depthwise_conv_wrapper_s8", "grouped": "tvm", "conv": "cmsis-nn:arm_convolve_wrapper_s8",
        "pointwise": "cmsis-nn:arm_convolve_wrapper_s8", "fc": "cmsis-nn:arm_fully_connected_per_channel_s8"}
    golden = odd_graph.run_integer(odd_graph.quantize_input(x))["y"]
    assert len(np.unique(golden)) > 50  # the outputs spread over the int8 range: not all clamped
    r = verify_mcu(out, x, qemu=True, samples=12, trust_code=True)
    assert r["mismatches"] == 0 and all(run["mismatched_elements"] == 0 for run in r["runs"].values())
    assert set(r["runs"]) == {"host", "arm"}


def test_a_cmake_firmware_links_the_cmsis_nn_library(odd_graph, tmp_path):
    """add_subdirectory of the project compiles the wrappers and CMSIS-NN's sources (cmsis_nn.cmake);
    a main.c calling edgesnn_infer prints the IR's output integers."""
    import subprocess

    from edgesnn import boards
    from edgesnn.backends.mcu import export_mcu

    need("cc", "cmake")
    need_anchor()
    xq = np.random.default_rng(2).integers(-128, 128, (3, 9, 9, 6)).astype(np.int8)
    floats = (xq.astype(np.float32) - 3) * np.float32(0.05)
    out = tmp_path / "mcu"
    export_mcu(odd_graph, boards.load("raspberry-pi-4"), out, "none", floats, kernels="cmsis-nn", cmsis_nn=ANCHOR)
    assert "cmsis_layers.c" in (out / "README.md").read_text()
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(f"cmake_minimum_required(VERSION 3.13)\nproject(app C)\n"
                                        f"add_subdirectory({out} edgesnn_model)\nadd_executable(app main.c)\n"
                                        f"target_link_libraries(app PRIVATE edgesnn_model)\n")
    samples = ",".join("{" + ",".join(map(str, s.ravel().tolist())) + "}" for s in xq)
    (app / "main.c").write_text(
        '#include <stdio.h>\n#include "model.h"\n'
        f"static const edgesnn_input_t in[{len(xq)}][EDGESNN_INPUT_SIZE] = {{{samples}}};\n"
        "int main(void) { edgesnn_output_t out[EDGESNN_OUTPUT_SIZE];\n"
        f"  for (int s = 0; s < {len(xq)}; s++) {{ if (edgesnn_infer(in[s], out)) return 1;\n"
        '    for (int i = 0; i < EDGESNN_OUTPUT_SIZE; i++) printf("%d ", out[i]); }\n  return 0; }\n')
    for cmd in (["cmake", "-S", app, "-B", app / "b"], ["cmake", "--build", app / "b"], [app / "b" / "app"]):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    golden = odd_graph.run_integer(odd_graph.quantize_input(floats))["y"]
    assert [int(v) for v in r.stdout.split()] == golden.ravel().tolist()
