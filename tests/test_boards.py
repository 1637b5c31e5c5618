"""Boards: every shipped board file loads with its sources, `edgesnn boards` lists them, a user's
own YAML works, and a malformed file fails with one line naming the file and the field."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from edgesnn import boards, pipeline
from edgesnn.backends.mcu import build
from edgesnn.backends.lava.resources import load_limits
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError

REQUIRED = ["raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "stm32f746-disco", "stm32h743",
            "nrf52840", "rp2040", "loihi2", "host"]
EXTRAS = ["nucleo-f446re", "nrf5340", "nucleo-l011k4", "nucleo-f103rb", "microbit", "mps3-an547"]
MINIMAL = {"name": "myboard", "kind": "mcu", "isa": "Armv7E-M", "cpu": "cortex-m4", "clock_hz": 100_000_000,
           "flash_bytes": 65536, "ram_bytes": 16384, "targets": ["mcu"], "sources": ["my datasheet"]}


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write(tmp_path, fields=None, text=None, name="board.yaml"):
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(fields))
    return path


@pytest.mark.parametrize("name", REQUIRED + EXTRAS)
def test_every_shipped_board_loads_with_sources(name):
    b = boards.load(name)
    assert b.name == name and b.kind in boards.KINDS and b.sources and b.targets
    assert set(b.targets) <= set(boards.TARGETS)
    if b.kind == "mcu":
        assert b.cpu.startswith("cortex-m") and b.clock_hz and b.flash_bytes and b.ram_bytes
        assert b.qemu_machine in (None, *build.MACHINES) and "mcu" in b.targets
    if b.kind == "linux-aarch64":
        assert b.cpu.startswith("cortex-a") and b.memory_bytes and b.qemu_user == "qemu-aarch64"
    if b.active_power_w and b.kind == "mcu" and "cycle" in b.energy_pj:  # energy per cycle = power / clock
        assert b.energy_pj["cycle"] == pytest.approx(b.active_power_w / b.clock_hz * 1e12, rel=0.01)


def test_shipped_figures_and_machines():
    assert set(REQUIRED + EXTRAS) == set(boards.available())
    machines = {n: boards.load(n).qemu_machine for n in ("stm32f746-disco", "stm32h743", "nrf52840", "rp2040",
                                                          "nucleo-f446re", "nrf5340")}
    assert machines == {"stm32f746-disco": "mps2-an500", "stm32h743": "mps2-an500", "nrf52840": "mps2-an386",
                        "rp2040": None, "nucleo-f446re": "mps2-an386", "nrf5340": "mps2-an505"}
    assert boards.available(boards.BUILD_KINDS) == sorted(set(REQUIRED + EXTRAS) - {"loihi2", "host"})
    host = boards.load("host")
    assert host.kind == "host" and host.isa and host.cores >= 1 and host.memory_bytes > 0


def test_loihi2_keeps_its_figures_for_the_lava_report():
    b = boards.load("loihi2")
    figures = load_limits()
    assert b.kind == "neuromorphic" and b.targets == ["lava"] and b.figures == figures
    assert b.cores == figures["neuro_cores_per_chip"]["value"]
    assert b.energy_pj == {"synop": figures["energy_per_synop_pj"]["value"],
                           "neuron_update": figures["energy_per_neuron_update_pj"]["value"]}


def test_cli_lists_every_board_and_writes_json(tmp_path):
    r = edgesnn("boards", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    listed = {b["name"]: b for b in json.loads((tmp_path / "b.json").read_text())["boards"]}
    assert set(REQUIRED + EXTRAS) <= set(listed)
    for name in REQUIRED + EXTRAS:
        assert name in r.output  # the name column never wraps
    assert listed["stm32h743"]["qemu_machine"] == "mps2-an500" and listed["jetson-nano"]["qemu_user"] == "qemu-aarch64"


def test_custom_yaml_path(tmp_path):
    path = write(tmp_path, {**MINIMAL, "energy_pj": {"cycle": 40.5}, "notes": ["mine"]})
    b = boards.load(path)
    assert (b.name, b.flash_bytes, b.ram_bytes, b.energy_pj) == ("myboard", 65536, 16384, {"cycle": 40.5})
    assert b.qemu_machine is None and b.idle_power_w is None
    r = edgesnn("boards", path, "--json", tmp_path / "b.json")
    assert r.exit_code == 0 and "myboard" in r.output
    assert json.loads((tmp_path / "b.json").read_text())["boards"][0]["cpu"] == "cortex-m4"


@pytest.mark.parametrize("case,fields,text,message", [
    ("missing", {k: v for k, v in MINIMAL.items() if k != "ram_bytes"}, None,
     "missing field 'ram_bytes' (required for kind mcu)"),
    ("missing-name", {k: v for k, v in MINIMAL.items() if k != "name"}, None, "missing field 'name'"),
    ("wrong-type", {**MINIMAL, "clock_hz": "fast"}, None,
     "field 'clock_hz' must be a positive integer, got str 'fast'"),
    ("bool-int", {**MINIMAL, "flash_bytes": True}, None, "field 'flash_bytes' must be a positive integer"),
    ("zero-cores", {**MINIMAL, "cores": 0}, None, "field 'cores' must be a positive integer, got int 0"),
    ("negative-ram", {**MINIMAL, "ram_bytes": -5}, None, "field 'ram_bytes' must be a positive integer, got int -5"),
    ("nan-power", {**MINIMAL, "active_power_w": float("nan")}, None, "field 'active_power_w' must be a finite non-negative number"),
    ("inf-energy", {**MINIMAL, "energy_pj": {"cycle": float("inf")}}, None, "field 'energy_pj' must be a mapping"),
    ("bad-figure", {**MINIMAL, "figures": {"neuro_cores_per_chip": {"value": -5}}}, None,
     "figure 'neuro_cores_per_chip' must be a mapping with a positive 'value'"),
    ("yaml-alias", None, "name: &a x\nkind: *a\n", "YAML aliases (*name) are not accepted"),
    ("wrong-list", {**MINIMAL, "targets": "mcu"}, None, "field 'targets' must be a list of strings"),
    ("energy", {**MINIMAL, "energy_pj": {"cycle": "a lot"}}, None, "field 'energy_pj' must be a mapping"),
    ("unknown", {**MINIMAL, "colour": "green"}, None, "unknown field 'colour'"),
    ("bad-kind", {**MINIMAL, "kind": "fpga"}, None, "field 'kind' must be one of mcu, linux-aarch64"),
    ("bad-target", {**MINIMAL, "targets": ["mcu", "cuda"]}, None, "field 'targets' has unknown target 'cuda'"),
    ("invalid-yaml", None, "name: x\nkind: [mcu\n", "not valid YAML (line 3"),
    ("not-a-mapping", None, "- just\n- a list\n", "a board file is a YAML mapping"),
])
def test_malformed_board_files_fail_in_one_line(tmp_path, case, fields, text, message):
    path = write(tmp_path, fields, text)
    with pytest.raises(EdgesnnError) as e:
        boards.load(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    r = edgesnn("boards", path)
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and message in r.output and "Traceback" not in r.output


def test_unknown_board_and_missing_file():
    with pytest.raises(EdgesnnError, match="unknown board 'nope'; available: .*loihi2"):
        boards.load("nope")
    with pytest.raises(EdgesnnError, match="no such board file"):
        boards.load("/nonexistent/board.yaml")


@pytest.mark.parametrize("board,kind", [("loihi2", "neuromorphic"), ("host", "host")])
def test_target_mcu_refuses_a_board_it_cannot_build_for(tmp_path, board, kind):
    # refused before the checkpoint is read: the missing checkpoint is never reached
    with pytest.raises(EdgesnnError, match=rf"board {board} \({kind}\) cannot run --target mcu; "
                                           r"boards for mcu: .*nucleo-f446re.*raspberry-pi-4"):
        pipeline.export_model(tmp_path / "no-checkpoint", "mcu", tmp_path / "out", board=board)
    r = edgesnn("export", tmp_path / "no-checkpoint", "--target", "mcu", "--board", board, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "cannot run --target mcu" in r.output and not (tmp_path / "o").exists()


def test_fit_check_uses_memory_on_linux_boards():
    pi = boards.load("raspberry-pi-4")
    boards.check_fits(pi, 10**9, 10**8)  # no flash limit; 1 GB of memory
    with pytest.raises(EdgesnnError, match="RAM needs 2147483648 bytes, has 1073741824"):
        boards.check_fits(pi, 0, 2 << 30)
