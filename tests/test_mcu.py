"""The MCU backend: the generated C project computes every output integer the IR computes, built
for the host, for Cortex-M cores on QEMU and for aarch64 Linux under qemu-aarch64."""

import json
import numpy as np
import pytest
from typer.testing import CliRunner

from edgesnn import boards, data, pipeline
from edgesnn.backends.mcu import choose_event_driven, cost, event_candidates
from edgesnn.backends.mcu.arena import Buffer, plan
from edgesnn.cli import app
from edgesnn.ir import load
from edgesnn.quantize import Options, quantize_checkpoint

pytestmark = pytest.mark.slow


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_arena_reuses_memory_of_dead_buffers():
    offsets, total = plan([Buffer("a", 100, 0, 1), Buffer("b", 50, 1, 2), Buffer("c", 100, 2, 3)])
    assert offsets["a"] == offsets["c"] == 0 and offsets["b"] >= 100 and total == 176


def test_boards_load_and_check_fit():
    assert {"nucleo-f446re", "stm32h743", "nrf5340", "raspberry-pi-4"} <= set(boards.available())
    b = boards.load("nucleo-l011k4")
    assert (b.flash_bytes, b.ram_bytes) == (16384, 2048)
    with pytest.raises(Exception, match="flash needs 20000 bytes, has 16384; RAM needs 4096 bytes, has 2048"):
        boards.check_fits(b, 20000, 4096)


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet", "spikeformer"])
def test_host_build_is_bit_exact(trained, tmp_path, family):
    out = tmp_path / "mcu"
    r = edgesnn("export", trained[family], "--target", "mcu", "--board", "nucleo-f446re", "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("model.h", "model.c", "weights.c", "kernels.c", "Makefile", "project.json", "model.ir"):
        assert (out / name).is_file(), name
    assert "malloc" not in (out / "model.c").read_text() + (out / "kernels.c").read_text()
    r = edgesnn("verify", out, "--json", tmp_path / "r.json", "--trust-code")  # our own project: its Makefile may run
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["samples"] == 450 and res["runs"]["host"]["mismatches"] == 0 and res["mismatches"] == 0


@pytest.mark.parametrize("board,machine", [("nucleo-f446re", "mps2-an386"), ("stm32h743", "mps2-an500"),
                                           ("nrf5340", "mps2-an505")])
def test_cortex_m_on_qemu_is_bit_exact_and_counts_instructions(trained, tmp_path, board, machine):
    out = pipeline.export_model(trained["cnn"], "mcu", tmp_path / "mcu", board=board)
    r = pipeline.verify(out, "digits", qemu=True, samples=200, trust_code=True)
    arm = r["runs"]["arm"]
    assert arm["machine"] == machine and arm["samples"] == 200 and arm["mismatches"] == 0
    assert arm["instructions_per_inference"] > 1000
    assert arm["sizes"]["text"] > 0 and arm["sizes"]["bss"] >= r["arena_bytes"]


def test_aarch64_linux_under_qemu_user(trained, tmp_path):
    out = pipeline.export_model(trained["resnet"], "mcu", tmp_path / "mcu", board="raspberry-pi-4")
    r = pipeline.verify(out, "digits", qemu=True, samples=200, trust_code=True)
    assert r["runs"]["aarch64"]["mismatches"] == 0 and r["runs"]["host"]["mismatches"] == 0


@pytest.mark.parametrize("method,opts", [("qsnn", Options(weight_bits=1, epochs=1)),
                                         ("qpsnn", Options(weight_bits=3, prune=0.5, epochs=1))])
def test_packed_sub_byte_weights_are_bit_exact(trained, tmp_path, method, opts):
    quantize_checkpoint(trained["cnn"], method, tmp_path / "q", opts)
    out = pipeline.export_model(tmp_path / "q", "mcu", tmp_path / "mcu", board="nucleo-f446re")
    assert pipeline.verify(out, "digits", trust_code=True)["mismatches"] == 0
    graph = load(out / "model.ir")
    packed = sum((op.weight.size * op.weight_bits + 7) // 8 for op in graph.weight_ops())
    info = json.loads((out / "project.json").read_text())
    assert info["const_bytes"] < sum(op.weight.size for op in graph.weight_ops())  # weights stay packed in flash
    assert packed < info["const_bytes"]


def test_event_driven_kernels_equal_dense_ones(trained, tmp_path):
    graph_dir = pipeline.export_model(trained["spikeformer"], "ir", tmp_path / "ir")
    graph = load(graph_dir)
    candidates = event_candidates(graph)
    ops = {op.name: op for op in graph.ops}
    assert candidates
    for mode in ("all", "none"):
        out = pipeline.export_model(trained["spikeformer"], "mcu", tmp_path / mode, board="nucleo-f446re",
                                    event_driven=mode)
        info = json.loads((out / "project.json").read_text())
        assert sum(k["event_driven"] for k in info["kernels"]) == (len(candidates) if mode == "all" else 0)
        assert pipeline.verify(out, "digits", trust_code=True)["mismatches"] == 0
    chosen, rates = choose_event_driven(graph, "auto", data.to_nhwc(data.digits().x_train[:64]), "cortex-m4")
    assert set(rates) == set(candidates) and all(0 <= r <= 1 for r in rates.values())
    assert chosen == {n for n, r in rates.items() if (lambda d, e: e < d)(*cost.costs(graph, ops[n], r, "cortex-m4"))}


@pytest.mark.parametrize("family,code", [("cnn", "bit-plane"), ("cnn", "rate-burst"), ("spikeformer", "bit-plane")])
def test_spike_train_kernels_are_bit_exact(trained, tmp_path, family, code):
    """--spike-code: every event-driven layer reading spike counts runs spike trains; project.json
    records the code and each layer's virtual steps (the cnn's head reads a 2x2 sum pool: counts to 16)."""
    out = tmp_path / "mcu"
    r = edgesnn("export", trained[family], "--target", "mcu", "--board", "nucleo-f446re", "--event-driven", "all",
                "--spike-code", code, "--out", out)
    assert r.exit_code == 0, r.output
    info = json.loads((out / "project.json").read_text())
    trains = {k["op"]: k["timesteps"] for k in info["kernels"] if k.get("spike_code") == code}
    assert info["spike_code"] == code and trains
    if family == "cnn":
        assert trains == ({"features.6": 16, "head.2": 16, "output": 4} if code == "rate-burst"
                          else {"features.6": 5, "head.2": 5, "output": 3})
    res = pipeline.verify(out, "digits", samples=100, trust_code=True, qemu=family == "cnn" and code == "bit-plane")
    assert res["mismatches"] == 0 and res["spike_code"] == code and set(res["spike_train_layers"]) == set(trains)
    assert all(run["mismatches"] == 0 for run in res["runs"].values())


@pytest.mark.parametrize("args,fragment", [
    (["--target", "mcu", "--board", "nucleo-f446re", "--event-driven", "none", "--spike-code", "bit-plane"],
     "--spike-code bit-plane: no event-driven layer reads spike counts (--event-driven none"),
    (["--target", "mcu", "--board", "nucleo-f446re", "--spike-code", "morse"], "unknown spike code 'morse'"),
    (["--target", "tflite", "--spike-code", "bit-plane"], "--spike-code: the tflite target runs no spike trains"),
])
def test_bad_spike_codes_are_one_line_errors(trained, tmp_path, args, fragment):
    r = edgesnn("export", trained["mlp"], "--out", tmp_path / "o", *args)
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_model_too_big_for_the_board_is_refused_before_writing(trained, tmp_path):
    out = tmp_path / "mcu"
    r = edgesnn("export", trained["cnn"], "--target", "mcu", "--board", "nucleo-l011k4", "--out", out)
    assert r.exit_code == 1 and "Traceback" not in r.output and r.output.count("\n") == 1
    assert "does not fit nucleo-l011k4: flash needs" in r.output and "has 16384" in r.output
    assert "RAM needs" in r.output and "has 2048" in r.output
    assert not out.exists()


@pytest.mark.parametrize("args,fragment", [
    (["--board", "no-such-board"], "unknown board 'no-such-board'"),
    ([], "--target mcu needs --board"),
    (["--board", "nucleo-f446re", "--event-driven", "nope"], "--event-driven: nope is not a conv2d/dense layer"),
])
def test_bad_options_are_one_line_errors(trained, tmp_path, args, fragment):
    r = edgesnn("export", trained["mlp"], "--target", "mcu", "--out", tmp_path / "o", *args)
    assert r.exit_code == 1 and fragment in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_a_changed_project_is_caught(trained, tmp_path):
    out = pipeline.export_model(trained["mlp"], "mcu", tmp_path / "mcu", board="nucleo-f446re")
    weights = (out / "weights.c").read_text()
    bias = weights.index("= {", weights.index("__bias[")) + 3  # the first layer's first bias
    (out / "weights.c").write_text(weights[:bias] + "1000000," + weights[bias:].split(",", 1)[1])
    r = edgesnn("verify", out, "--trust-code")
    assert r.exit_code == 1 and "not bit-exact with the IR" in r.output


def test_the_c_api_header(trained, tmp_path):
    out = pipeline.export_model(trained["cnn"], "mcu", tmp_path / "mcu", board="nucleo-f446re")
    header = (out / "model.h").read_text()
    assert "int edgesnn_infer(const int8_t *input, edgesnn_output_t *output);" in header
    assert "#define EDGESNN_INPUT_SIZE 64" in header and "#define EDGESNN_OUTPUT_SIZE 10" in header
    assert np.prod(load(out / "model.ir").tensors["input"].shape) == 64
