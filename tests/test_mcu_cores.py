"""Every Cortex-M core: each shipped MCU board's project builds (library and verification image),
and runs bit-exact on QEMU where QEMU emulates its core: Cortex-M3 (mps2-an385), M4 (an386),
M7 (an500), M33 (an505), M55 (mps3-an547, SysTick) and M0 (microbit, SysTick, Thumb-1). A board
whose core QEMU does not emulate gets one line naming its core and the cores QEMU runs.

Models: a tiny conv + dense graph on 8x8 digits (it fits even the 16 KB / 2 KB nucleo-l011k4) for
every board, and tests/attention_graphs.py's int16 attention (int64 accumulators, products,
transposes) on the three newest cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from attention_graphs import attention_graph, attention_inputs
from edgesnn import boards, data
from edgesnn.cli import app
from edgesnn.ir import graph as g

import tvm  # noqa: E402,F401  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import export_mcu, verify_mcu  # noqa: E402
from edgesnn.backends.mcu.build import CORES, MACHINES, run  # noqa: E402
from test_mcu_kernels import Builder  # noqa: E402

_MISSING = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
if _MISSING:  # CI runs scripts/setup.sh: a missing tool is a failure of the setup, never a skip
    pytest.fail(f"{', '.join(_MISSING)} missing: scripts/setup.sh installs it", pytrace=False)
MCU_BOARDS = boards.available(("mcu",))
EMULATED = [b for b in MCU_BOARDS if boards.load(b).qemu_machine in MACHINES]
NEW_CORES = {"nucleo-f103rb": "mps2-an385", "mps3-an547": "mps3-an547", "microbit": "microbit"}
SAMPLES = 3


def tiny_graph() -> g.Graph:
    """digits 8x8x1 (int8, zero point -128) -> 3x3 stride-2 conv to 4 channels of spike counts ->
    flatten -> dense 10 (event-driven: it reads the counts)."""
    b = Builder(21)
    b.tensors["x"] = g.TensorSpec([8, 8, 1], "int8", 1 / 255, -128)
    conv = b.conv("conv", "x", 4, stride=(2, 2), padding=(0, 1, 0, 1), out_zp=0, clamp=[0, 4])
    b.tensors[conv.output] = g.TensorSpec([4, 4, 4], "int8", 1.0, 0, spike_D=4)
    flat = b.add_op(g.Reshape("flat", [conv.output], b.tensor("flat.out", [64], spike_D=4)))
    dense = b.dense("fc", flat.output, 10)
    return g.Graph(b.tensors, b.ops, "x", [dense.output], meta={"created_by": "tests/test_mcu_cores.py"})


def _digits(n: int) -> np.ndarray:
    return data.to_nhwc(data.digits().x_test[:n])


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """board -> (project folder, project.json) of the tiny graph, each exported once."""
    graph, root, made = tiny_graph(), tmp_path_factory.mktemp("cores"), {}

    def get(board):
        if board not in made:
            out = root / board
            made[board] = out, export_mcu(graph, boards.load(board), out, "auto", _digits(32))
        return made[board]
    return get


def test_the_new_cores_have_boards_and_machines():
    assert {b: boards.load(b).qemu_machine for b in NEW_CORES} == NEW_CORES
    assert {b: boards.load(b).cpu for b in NEW_CORES} == {"nucleo-f103rb": "cortex-m3", "mps3-an547": "cortex-m55",
                                                        "microbit": "cortex-m0"}
    assert {CORES[m] for m in MACHINES} == {"cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33",
                                            "cortex-m55"}


@pytest.mark.parametrize("board", MCU_BOARDS)
def test_every_shipped_mcu_board_builds(projects, board):
    """Export built the library and the verification image (project.json has both sizes) with
    make arm-lib and make arm, which then have nothing left to do. A board without an emulated
    machine links its image against a link-check map, with SysTick counting cycles."""
    out, info = projects(board)
    sizes = json.loads((out / "project.json").read_text())["sizes"]
    assert sizes["note"] is None and sizes["library"]["text"] > info["const_bytes"]
    assert sizes["image"]["text"] > sizes["library"]["text"] and sizes["library"]["bss"] >= info["arena_bytes"]
    up_to_date = subprocess.run(["make", "-q", "-C", str(out), "build/arm/model.elf", "build/arm/libedgesnn_model.a"])
    assert up_to_date.returncode == 0
    machine = boards.load(board).qemu_machine
    mk = (out / "board.mk").read_text()
    if machine in MACHINES:
        assert f"LDSCRIPT := {machine}.ld" in mk and f"-DTIMER_HZ={MACHINES[machine][1]}u" in mk
    else:
        assert "LDSCRIPT := cortex-m.ld" in mk and "PLAT := plat_systick" in mk and "TIMER_HZ" not in mk


@pytest.mark.parametrize("board", EMULATED)
def test_every_emulated_board_is_bit_exact_on_qemu(projects, board):
    out, _ = projects(board)
    res = verify_mcu(out, _digits(SAMPLES), qemu=True, trust_code=True)
    arm = res["runs"]["arm"]
    assert arm["machine"] == boards.load(board).qemu_machine and arm["samples"] == SAMPLES
    assert res["mismatches"] == 0 and arm["mismatched_elements"] == 0 and arm["stats"]["unit"] == "insn"
    assert 1000 < arm["instructions_per_inference"] < 200_000
    assert arm["library_sizes"] == json.loads((out / "project.json").read_text())["sizes"]["library"]


@pytest.mark.parametrize("board", sorted(NEW_CORES))
def test_int16_attention_is_bit_exact_on_m3_m55_and_m0(board, tmp_path):
    """int16 streams, 64-bit accumulators and products on the three cores added here (on the M0,
    Thumb-1 code calling libgcc for 64-bit arithmetic)."""
    graph = attention_graph("int16", 1, False)
    spec = graph.tensors[graph.input]

    def floats(xq):
        return (xq.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)

    export_mcu(graph, boards.load(board), tmp_path / "mcu", "none", floats(attention_inputs(graph, 16)))
    xq = attention_inputs(graph, SAMPLES, seed=7)
    res = verify_mcu(tmp_path / "mcu", floats(xq), qemu=True, trust_code=True)
    arm = res["runs"]["arm"]
    assert arm["machine"] == NEW_CORES[board] and arm["mismatched_elements"] == 0 and res["mismatches"] == 0
    assert graph.run_integer(xq)[graph.outputs[0]].std() > 0


def test_systick_counts_its_wraps(projects, tmp_path):
    """The SysTick timer (M55, M0) counts what the CMSDK timer counts, and a 16-tick reload (a wrap
    every 640 instructions, dozens per inference, each counted by the interrupt or by plat_ns)
    changes the count by the interrupt's own instructions only, never by a lost or doubled period.
    On mps2-an386, which has both timers (SysTick at the 25 MHz CPU clock)."""
    out, _ = projects("nucleo-f446re")
    xq = tiny_graph().quantize_input(_digits(SAMPLES))
    means = {}
    for name, plat, timer in (("cmsdk", "plat_mps2", "-DTIMER0_BASE=0x40000000u -DTIMER_HZ=25000000u"),
                              ("systick", "plat_systick", "-DTIMER_HZ=25000000u"),
                              ("systick-16", "plat_systick", "-DTIMER_HZ=25000000u -DSYSTICK_MASK=0xfu")):
        copy = shutil.copytree(out, tmp_path / name, ignore=shutil.ignore_patterns("build"))
        mk = (copy / "board.mk").read_text().splitlines()
        mk = [f"PLAT := {plat}" if ln.startswith("PLAT") else f"TIMER := {timer}" if ln.startswith("TIMER") else ln
              for ln in mk]
        (copy / "board.mk").write_text("\n".join(mk) + "\n")
        got, stats = run(copy, "arm", xq, "int8", 10, machine="mps2-an386")
        np.testing.assert_array_equal(got, tiny_graph().run_integer(xq)[tiny_graph().outputs[0]])
        means[name] = stats["mean"]
    assert abs(means["systick"] - means["cmsdk"]) <= 50  # one 40-instruction tick, and the spin's few
    wraps = means["systick"] / 640
    assert wraps > 10 and 0 < means["systick-16"] - means["systick"] < 30 * wraps  # a lost wrap: -640


def test_an_image_the_micro_bit_cannot_hold_leaves_the_library(tmp_path):
    """A 12 KB arena fits the micro:bit's 16 KB of RAM, the verification image with newlib's
    buffers does not: export keeps the library and says why there is no image."""
    b = Builder(3)
    b.tensors["x"] = g.TensorSpec([32, 32, 4], "int8", 0.05, 0)
    conv = b.conv("conv", "x", 8, kernel=(1, 1), padding=(0, 0, 0, 0))
    graph = g.Graph(b.tensors, b.ops, "x", [conv.output])
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 4)).astype(np.float32)
    info = export_mcu(graph, boards.load("microbit"), tmp_path / "mcu", "none", x)
    sizes = info["sizes"]
    assert info["arena_bytes"] == 12288 and sizes["library"]["bss"] >= 12288 and sizes["image"] is None
    assert sizes["note"].startswith(f"no verification image: {tmp_path / 'mcu'}: the arm build failed: ")
    assert "region `RAM' overflowed by" in sizes["note"]
    assert sizes["note"] in (tmp_path / "mcu" / "README.md").read_text()


def test_a_board_qemu_cannot_run_is_one_line_naming_the_cores(projects, tmp_path):
    out, _ = projects("rp2040")
    r = CliRunner().invoke(app, ["verify", str(out), "--data", "digits", "--qemu", "--trust-code", "--samples", "2"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert "no QEMU machine emulates cortex-m0plus, the core of board rp2040" in r.output
    assert "cortex-m0 (microbit)" in r.output and "cortex-m55 (mps3-an547)" in r.output
    assert not (out / "build" / "run-host").exists()  # refused before anything ran
    mine = dict(boards.as_dict(boards.load("nucleo-f446re")), name="my-board", qemu_machine="netduino2")
    (tmp_path / "my.yaml").write_text(json.dumps({k: v for k, v in mine.items() if v is not None}))
    export_mcu(tiny_graph(), boards.load(tmp_path / "my.yaml"), tmp_path / "mcu", "none", _digits(8))
    with pytest.raises(Exception, match="board my-board names QEMU machine 'netduino2', which edgesnn does not run; "
                                        "QEMU runs cortex-m3 \\(mps2-an385\\)"):
        verify_mcu(tmp_path / "mcu", _digits(2), qemu=True, trust_code=True)
