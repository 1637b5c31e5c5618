"""The exported MCU project as a library a firmware links: libedgesnn_model.a and model.h with no
harness in it, built by the Makefile and by CMake's add_subdirectory, called from a main.c written
here; its outputs equal the golden interpreter's. project.json and README.md give the library's
sizes beside the whole verification image's.

The model: tests/attention_graphs.py's int16 attention (int16 input, products, transposes,
reshapes, 1x1 convs), so the C types of the API are not all int8.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from attention_graphs import attention_graph, attention_inputs
from edgesnn import boards
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu  # noqa: E402

SAMPLES = 5
BOARD = "nucleo-f446re"


def need(*tools: str) -> None:
    """Not skipped: CI runs scripts/setup.sh, so a missing tool is a failure of the setup."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs it"


def _floats(graph: g.Graph, xq: np.ndarray) -> np.ndarray:
    spec = graph.tensors[graph.input]
    return (xq.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(graph, input integers, project folder, project.json), exported once."""
    need("cc", "make", "arm-none-eabi-gcc")  # export builds the Cortex-M library and image with it
    graph = attention_graph("int16", 3, True)
    xq = attention_inputs(graph, SAMPLES, seed=4)
    out = tmp_path_factory.mktemp("lib") / "mcu"
    info = export_mcu(graph, boards.load(BOARD), out, "all", _floats(graph, attention_inputs(graph, 16)))
    assert np.array_equal(graph.quantize_input(_floats(graph, xq)), xq)
    return graph, xq, out, info


def _main_c(graph: g.Graph, xq: np.ndarray) -> str:
    """A caller as a firmware would write it: model.h only, the samples as a const array, each
    output integer printed."""
    n = int(np.prod(graph.tensors[graph.input].shape))
    body = ",".join("{" + ",".join(str(int(v)) for v in sample.reshape(-1)) + "}" for sample in xq)
    return f"""#include <stdio.h>
#include "model.h"

static const edgesnn_input_t samples[{len(xq)}][EDGESNN_INPUT_SIZE] = {{{body}}};
static edgesnn_output_t out[EDGESNN_OUTPUT_SIZE];

int main(void)
{{
    _Static_assert(EDGESNN_INPUT_SIZE == {n}, "input size");
    for (int s = 0; s < {len(xq)}; s++) {{
        if (edgesnn_infer(samples[s], out) != 0)
            return 1;
        for (int k = 0; k < EDGESNN_OUTPUT_SIZE; k++)
            printf("%d ", (int)out[k]);
        printf("\\n");
    }}
    return 0;
}}
"""


def _run(cmd, **kw) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _outputs(stdout: str) -> np.ndarray:
    return np.array([line.split() for line in stdout.splitlines()], dtype=np.int64)


def _golden(graph: g.Graph, xq: np.ndarray) -> np.ndarray:
    want = graph.run_integer(xq)[graph.outputs[0]].reshape(len(xq), -1)
    assert want.std() > 0  # not a degenerate check
    return want


def test_the_makefile_builds_a_library_without_the_harness_that_a_main_links(exported, tmp_path):
    graph, xq, out, _ = exported
    _run(["make", "-s", "-C", out, "host-lib"])
    lib = out / "build" / "host" / "libedgesnn_model.a"
    assert sorted(_run(["ar", "t", lib]).split()) == ["kernels.o", "model.o", "weights.o"]
    symbols = _run(["nm", "-g", "--defined-only", lib])
    assert " edgesnn_infer" in symbols and " main" not in symbols and "plat_" not in symbols
    (tmp_path / "main.c").write_text(_main_c(graph, xq))
    _run(["cc", "-std=c11", "-Wall", "-Werror", "-I", out, "-o", tmp_path / "app", tmp_path / "main.c", lib])
    np.testing.assert_array_equal(_outputs(_run([tmp_path / "app"])), _golden(graph, xq))


def test_cmake_add_subdirectory_builds_the_library_target(exported, tmp_path):
    """A firmware-style CMake project: add_subdirectory(<export> edgesnn_model), link the target."""
    need("cmake")
    graph, xq, out, _ = exported
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.c").write_text(_main_c(graph, xq))
    (app / "CMakeLists.txt").write_text(f"""cmake_minimum_required(VERSION 3.13)
project(firmware C)
add_subdirectory("{out.as_posix()}" edgesnn_model)
add_executable(app main.c)
target_link_libraries(app PRIVATE edgesnn_model)
""")
    _run(["cmake", "-S", app, "-B", tmp_path / "b", "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", tmp_path / "b"])
    lib = tmp_path / "b" / "edgesnn_model" / "libedgesnn_model.a"
    assert sorted(_run(["ar", "t", lib]).split()) == ["kernels.c.o", "model.c.o", "weights.c.o"]
    np.testing.assert_array_equal(_outputs(_run([tmp_path / "b" / "app"])), _golden(graph, xq))


def test_library_and_image_sizes_in_project_json_and_readme(exported):
    """Export built the Cortex-M library and the verification image: the library is the model
    alone (its .bss is the arena, its flash the constants and the kernels' code), the image adds
    the harness, startup and newlib's stdio."""
    graph, _, out, info = exported
    sizes = json.loads((out / "project.json").read_text())["sizes"]
    assert sizes == info["sizes"] and sizes["note"] is None
    lib, image = sizes["library"], sizes["image"]
    assert lib["data"] == 0 and info["arena_bytes"] <= lib["bss"] <= info["arena_bytes"] + 16
    assert info["const_bytes"] < lib["text"] < image["text"] and lib["bss"] < image["bss"]
    assert image["flash"] - lib["flash"] > 10_000  # newlib stdio and the harness: what a firmware does not link
    assert (out / "build" / "arm" / "libedgesnn_model.a").is_file() and (out / "build" / "arm" / "model.elf").is_file()
    readme = (out / "README.md").read_text()
    i = graph.tensors[graph.input]
    for fact in ("int edgesnn_infer(const edgesnn_input_t *input, edgesnn_output_t *output);",
                 f"`EDGESNN_INPUT_SIZE` = {int(np.prod(i.shape))} values of `edgesnn_input_t` (`int16_t`)",
                 f"| activation arena | {info['arena_bytes']:,} |", f"| {info['const_bytes']:,} | flash",
                 f"| {lib['flash']:,} | arm-none-eabi-size at export, -mcpu=cortex-m4 |", f"| {image['ram']:,} |",
                 "add_subdirectory(path/to/this/folder edgesnn_model)", "make lib"):
        assert fact in readme, fact
    assert "add_library(edgesnn_model STATIC model.c weights.c kernels.c)" in (out / "CMakeLists.txt").read_text()


def test_a_hard_float_firmware_links_the_library_built_for_its_abi(exported, tmp_path):
    """The linker refuses to mix float ABIs; make lib ARM_ABI=... builds the library for the firmware's."""
    graph, xq, out, _ = exported
    project = shutil.copytree(out, tmp_path / "mcu")
    (tmp_path / "main.c").write_text(_main_c(graph, xq[:1]))
    hard = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    link = ["arm-none-eabi-gcc", *hard, "--specs=nosys.specs", "-I", project, "-o", tmp_path / "fw.elf",
            tmp_path / "main.c", project / "build" / "arm" / "libedgesnn_model.a"]
    soft = subprocess.run([str(c) for c in link], capture_output=True, text=True)
    assert soft.returncode != 0 and "VFP register arguments" in soft.stderr  # the soft-float library exported
    _run(["make", "-s", "-B", "-C", project, "lib", "ARM_ABI=-mfloat-abi=hard -mfpu=fpv4-sp-d16"])
    _run(link)
    assert (tmp_path / "fw.elf").stat().st_size > 0
