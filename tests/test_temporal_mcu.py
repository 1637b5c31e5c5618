"""The MCU target of temporal graphs: edgesnn_reset() / edgesnn_step() with the state in a static arena,
every step's output integers and the readout bit-exact with the golden interpreter over whole sequences:
the trained digits-events model from the command line (host over the whole test split, QEMU's Cortex-M4
over a few sequences), tiny hand-built graphs for saturation, both resets, cuba/li currents and a
recurrent loop, the reset between sequences, and the refusals."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from edgesnn import boards, targets
from edgesnn.backends.mcu import export_mcu
from edgesnn.backends.mcu.build import run
from edgesnn.backends.mcu.sequences import verify_sequences
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from conftest import temporal_dense_copy
from test_cli import edgesnn
from test_ir_state import currents, full_graph, neuron_graph

_MISSING = [t for t in ("cc", "make", "arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
if _MISSING:  # CI runs scripts/setup.sh: a missing tool is a failure of the setup, never a skip
    pytest.fail(f"{', '.join(_MISSING)} missing: scripts/setup.sh installs it", pytrace=False)
BOARD = "nucleo-f446re"  # Cortex-M4: QEMU's mps2-an386


@pytest.fixture(scope="module")
def trained(tmp_path_factory, temporal_dense):
    """train, export --target mcu and verify from the command line, as a user runs them."""
    d = tmp_path_factory.mktemp("temporal_mcu")
    temporal_dense_copy(temporal_dense, d)
    r = edgesnn("export", d / "ck", "--target", "mcu", "--board", BOARD, "--out", d / "mcu")
    assert r.returncode == 0, r.stderr
    return d


def test_cli_export_and_host_verify_are_bit_exact_over_the_test_split(trained):
    d = trained
    r = edgesnn("verify", d / "mcu", "--data", "digits-events", "--trust-code", "--json", d / "v.json")
    assert r.returncode == 0, r.stderr
    v = json.loads((d / "v.json").read_text())
    assert v["samples"] == 450 and v["steps"] == 10 and v["readout"] == "mean" and v["passed"]
    host = v["runs"]["host"]
    assert host["mismatches"] == 0 and host["mismatched_elements"] == 0 and host["stats"]["samples"] == 4500
    metrics = json.loads((d / "ck" / "metrics.json").read_text())
    assert v["accuracy"] == metrics["test_accuracy"]  # the IR's, which torch's integer forward equals
    info = json.loads((d / "mcu" / "project.json").read_text())
    assert info["steps"] == 10 and info["state_bytes"] == 128 + 48  # int16[64] and int16[20], each aligned to 16
    assert [k["source"] for k in info["kernels"]] == ["tvm", "c:state", "tvm", "c:state"]
    header = (d / "mcu" / "model.h").read_text()
    assert "void edgesnn_reset(void);" in header and "#define EDGESNN_STEPS 10" in header
    assert f"#define EDGESNN_STATE_BYTES {info['state_bytes']}" in header and "edgesnn_infer" not in header
    readme = (d / "mcu" / "README.md").read_text()
    assert "edgesnn_step(frame, output)" in readme and f"| {info['state_bytes']:,} | RAM" in readme


def test_qemu_cortex_m4_is_bit_exact(trained):
    r = targets.verify(trained / "mcu", "digits-events", samples=6, trust_code=True, qemu=True)
    assert r["samples"] == 6 and r["mismatches"] == 0
    arm = r["runs"]["arm"]
    assert arm["machine"] == "mps2-an386" and arm["mismatched_elements"] == 0 and arm["stats"]["samples"] == 60
    assert 1_000 < arm["instructions_per_step"] < 100_000


def test_verify_catches_a_wrong_state(trained, tmp_path):
    """The comparison can fail: a project whose LIF resets to zero instead of subtracting differs."""
    project = tmp_path / "mcu"
    shutil.copytree(trained / "mcu", project, ignore=shutil.ignore_patterns("build"))
    state_c = (project / "state.c").read_text()
    assert "if (spike) v -= theta;" in state_c
    (project / "state.c").write_text(state_c.replace("if (spike) v -= theta;", "if (spike) v = 0;"))
    r = targets.verify(project, "digits-events", samples=50, trust_code=True)
    assert r["runs"]["host"]["mismatched_step_elements"] > 0 and r["mismatches"] > 0


def _export(graph, tmp_path, name="p"):
    export_mcu(graph, boards.load(BOARD), tmp_path / name, "none", None)
    return tmp_path / name


def _exact(project, xq, qemu=False):
    r = verify_sequences(project, None, qemu=qemu, trust_code=True, xq=xq)
    assert all(row["mismatched_elements"] == 0 for row in r["runs"].values()), r["runs"]
    return r


@pytest.mark.parametrize("kind", ["lif", "cuba_lif"])
def test_both_resets_are_bit_exact_and_differ(kind, tmp_path):
    rng = np.random.default_rng(3)
    xq = currents(rng, 12, 7, 5)
    spikes = {}
    for reset in ("subtract", "zero"):
        graph = neuron_graph(kind, reset=reset, shift=6, rng=np.random.default_rng(4))
        _exact(_export(graph, tmp_path, reset), xq)
        spikes[reset] = st.run_sequence(graph, xq, keep_steps=True)["s@steps"]
    assert not np.array_equal(spikes["subtract"], spikes["zero"])  # the reset mode matters on these inputs


def test_saturation_is_bit_exact(tmp_path):
    """A 10-bit current and membrane (+-511) saturate on these inputs in an LI; a 9-bit LIF membrane
    (+-255) saturates and its spikes differ from a 24-bit one's."""
    rng = np.random.default_rng(5)
    xq = currents(rng, 10, 7, 5, -500, 500)
    li = neuron_graph("cuba_li", bits=10, readout="last", rng=np.random.default_rng(6))
    steps = st.run_sequence(li, xq, keep_steps=True)["v_out@steps"]
    assert (steps == 511).any() and (steps == -511).any()
    _exact(_export(li, tmp_path, "li"), xq)
    lif = neuron_graph("lif", bits=9, rng=np.random.default_rng(6))
    wide = neuron_graph("lif", bits=24, rng=np.random.default_rng(6))
    for graph in (lif, wide):  # within the 9-bit membrane's width
        graph.ops[0].threshold = np.minimum(graph.ops[0].threshold, 210)
    steps = "s@steps"
    assert (st.run_sequence(lif, xq, keep_steps=True)[steps] != st.run_sequence(wide, xq, keep_steps=True)[steps]).sum() > 5
    _exact(_export(lif, tmp_path, "lif"), xq)


def recurrent_graph():
    """dense-free recurrent -> cuba_lif -> li (the IR test's network with one output): the recurrent op
    reads the spikes of the step before."""
    graph = full_graph()
    graph.outputs = ["m"]
    graph.sequence.readout = {"m": "mean"}
    graph.states["vo"].overflow = "saturate"
    return graph


def test_recurrent_network_and_reset_between_sequences(tmp_path):
    graph = recurrent_graph()
    project = _export(graph, tmp_path)
    rng = np.random.default_rng(7)
    xq = currents(rng, 8, 7, 5, -200, 200)
    r = _exact(project, xq, qemu=True)
    assert set(r["runs"]) == {"host", "arm"}
    # the second sequence after the first gives what it gives alone: the harness resets the state
    size = 5
    both, _ = run(project, "host", xq[:2].reshape(14, 5), "int32", size)
    alone, _ = run(project, "host", xq[1:2].reshape(7, 5), "int32", size)
    np.testing.assert_array_equal(both[7:], alone)
    carried = st.Stepper(graph)  # without the reset the state carries over and the outputs differ
    carried.reset(1)
    for t in range(7):
        carried.step(xq[0:1, t])
    later = np.stack([carried.step(xq[1:2, t])["m"][0] for t in range(7)])
    assert not np.array_equal(later, alone)


def test_overflow_error_state_stops_the_step(tmp_path):
    """A state of overflow 'error' that leaves its width: the IR stops, edgesnn_step returns nonzero."""
    graph = neuron_graph("li", bits=10, overflow="error", readout="last", rng=np.random.default_rng(8))
    xq = np.full((1, 7, 5), 500, np.int16)
    with pytest.raises(EdgesnnError, match="would overflow its 10 bits"):
        st.run_sequence(graph, xq)
    project = _export(graph, tmp_path)
    _exact(project, np.full((1, 7, 5), 20, np.int16))  # within the width it runs
    with pytest.raises(EdgesnnError, match="host run failed with status"):
        run(project, "host", xq.reshape(7, 5), "int32", 5)


def test_refusals_name_the_op(tmp_path):
    graph = recurrent_graph()
    graph.ops[0].shift = np.full(5, 20, np.int32)  # acc << 20 could leave int32
    with pytest.raises(EdgesnnError, match=r"^mcu: op rec: its recurrent accumulator .* could leave int32"):
        _export(graph, tmp_path, "a")
    with pytest.raises(EdgesnnError, match=r"^mcu: a temporal graph with 2 outputs; edgesnn_step writes one$"):
        _export(full_graph(), tmp_path, "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_sequence_of_the_wrong_length_is_one_line(trained):
    x = np.zeros((2, 6, 12, 12, 1), np.float32)
    with pytest.raises(EdgesnnError, match=r"this model takes \(batch, T=10, 12, 12, 1\)"):
        verify_sequences(trained / "mcu", x, trust_code=True)


def test_static_projects_keep_edgesnn_infer(tmp_path):
    """A static graph's project is as before: edgesnn_infer, no state.c."""
    graph = g.Graph({"x": g.TensorSpec([4], "int8", 1.0, 0), "y": g.TensorSpec([4], "int8", 1.0, 0)},
                    [g.Reshape("r", ["x"], "y")], "x", ["y"])
    export_mcu(graph, boards.load(BOARD), tmp_path / "s", "none", np.zeros((1, 4), np.float32))
    assert "int edgesnn_infer(" in (tmp_path / "s" / "model.h").read_text()
    assert not (tmp_path / "s" / "state.c").exists() and "edgesnn_state" not in (tmp_path / "s" / "model.c").read_text()


def test_a_firmware_links_the_library_with_cmake_and_steps_it(tmp_path):
    """add_subdirectory(<export>) builds state.c into the library; a main.c written as a firmware would
    (model.h only: reset, then one step per frame) gives the IR's output at every step."""
    graph = recurrent_graph()
    project = _export(graph, tmp_path)
    xq = currents(np.random.default_rng(9), 3, 7, 5, -200, 200)
    frames = ",".join("{" + ",".join(map(str, seq.reshape(-1).tolist())) + "}" for seq in xq)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.c").write_text(f"""#include <stdio.h>
#include "model.h"

static const edgesnn_input_t seqs[3][EDGESNN_STEPS * EDGESNN_INPUT_SIZE] = {{{frames}}};
static edgesnn_output_t out[EDGESNN_OUTPUT_SIZE];

int main(void)
{{
    for (int s = 0; s < 3; s++) {{
        edgesnn_reset();
        for (int t = 0; t < EDGESNN_STEPS; t++) {{
            if (edgesnn_step(seqs[s] + t * EDGESNN_INPUT_SIZE, out) != 0)
                return 1;
            for (int k = 0; k < EDGESNN_OUTPUT_SIZE; k++)
                printf("%ld ", (long)out[k]);
            printf("\\n");
        }}
    }}
    return 0;
}}
""")
    (tmp_path / "app" / "CMakeLists.txt").write_text(f"""cmake_minimum_required(VERSION 3.13)
project(firmware C)
add_subdirectory("{project.as_posix()}" edgesnn_model)
add_executable(app main.c)
target_link_libraries(app PRIVATE edgesnn_model)
""")
    for cmd in (["cmake", "-S", tmp_path / "app", "-B", tmp_path / "b"], ["cmake", "--build", tmp_path / "b"],
                [tmp_path / "b" / "app"]):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    got = np.array([line.split() for line in r.stdout.splitlines()], np.int64).reshape(3, 7, 5)
    want = st.run_sequence(graph, xq, keep_steps=True)["m@steps"]
    assert want.std() > 0
    np.testing.assert_array_equal(got, want)
