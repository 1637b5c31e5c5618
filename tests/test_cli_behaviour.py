"""The CLI behaves like its peers: choices in --help and in shell completion, tables not cut when
piped, -q/-v/--threads on every command, progress of long steps (stderr only, silent in the
library by default), one exit-status rule, verify's claims and --min-agreement, and the run
summary's flash bytes.

One small MLP checkpoint (two epochs on digits) serves every case; commands run in-process
(CliRunner, whose stdout and stderr are no terminal, as in a pipe).
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgesnn import boards, cli, data, pipeline, spikes, threads, train
from edgesnn.cli import app
from edgesnn.ir import load as load_ir

EXIT_RULE = ("Exit status: 0 done; 1 edgesnn refused the input", "2 usage error: the command line itself is wrong")


def edgesnn(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def unboxed(text: str) -> str:
    """Rich's help or table text with box characters and line breaks turned into single spaces."""
    return " ".join(re.sub(r"[│┃╭╮╰╯─━┏┓┗┛┡┩└┘┌┐╇╈┳┻┼┃]", " ", text).split())


def wide_help(*args) -> str:
    r = edgesnn(*args, "--help", env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.exit_code == 0, r.output
    return unboxed(r.output)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """A two-epoch MLP and its IR and .tflite."""
    root = tmp_path_factory.mktemp("cli")
    with threads.pinned(1):
        pipeline.train_model("mlp", "digits", 2, root / "ck")
        pipeline.export_model(root / "ck", "ir", root / "ir")
        pipeline.export_model(root / "ck", "tflite", root / "tfl")
    return {"root": root, "ck": root / "ck", "ir": root / "ir" / "model.ir", "tflite": root / "tfl" / "model.tflite"}


# ---------------------------------------------------------------- choices, names, completion, exit status

def test_choices_are_listed_in_help_from_the_library():
    from edgesnn.backends.lava.network import MODES
    from edgesnn.ir.fixedpoint import ADD_LEFT_SHIFT
    from edgesnn.models import MODELS
    from edgesnn.quantize import METHODS
    from edgesnn.quantize.pruning import CRITERIA

    shown = lambda values: "[" + "|".join(values)  # noqa: E731
    export, quantize, verify, profile, train_help = (wide_help(c) for c in ("export", "quantize", "verify", "profile",
                                                                            "train"))
    assert f"--target {shown(pipeline.TARGETS)}]" in export
    assert f"--stream-dtype {shown(ADD_LEFT_SHIFT)}]" in export and f"--stream-dtype {shown(ADD_LEFT_SHIFT)}]" in quantize
    assert f"--lava-mode {shown(MODES)}]" in export and f"--lava-mode {shown(MODES)}]" in verify
    assert f"--spike-code {shown(spikes.CODES)}]" in export and f"--spike-code {shown(spikes.CODES)}]" in profile
    assert f"--method {shown(METHODS)}]" in quantize and f"--prune-criterion {shown(CRITERIA)}]" in quantize
    assert f"--model {shown([m for m in MODELS if m != 'nir'])}|MODULE:FACTORY]" in train_help
    assert "--event-driven [auto|none|all|LAYER,...]" in export
    # boards: every shipped name in the help (a .yaml path is a board too, so not a strict choice)
    assert "--board NAME|FILE.yaml" in export and "--board NAME|FILE.yaml" in profile
    assert all(name in export for name in boards.available(boards.BUILD_KINDS))
    assert all(name in profile for name in boards.available())
    assert "loihi2" not in export.split("--board")[1].split("--event-driven")[0]  # mcu builds only
    assert (cli.METHODS, cli.PRUNE_CRITERIA, cli.LAVA_MODES, cli.STREAM_DTYPES) == (
        tuple(METHODS), CRITERIA, MODES, tuple(ADD_LEFT_SHIFT))  # the CLI's copies are the library's lists


def test_every_command_has_the_same_common_options_and_single_form_flags():
    """-q/-v and --threads (also after the command name) on every command; a flag is one spelling
    (--qemu, --measure, --trust-code, --float), none with a --no- twin."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        opts = {o for p in command.params for o in p.opts}
        assert {"--quiet", "-q", "--verbose", "-v", "--threads"} <= opts, name
        assert all(not p.secondary_opts for p in command.params if getattr(p, "is_flag", False)), name
        assert EXIT_RULE[0] in " ".join((command.epilog or "").split()), name
    assert "--qemu" in wide_help("verify") and "--no-qemu" not in wide_help("verify")
    assert "--measure" in wide_help("profile") and "--no-measure" not in wide_help("profile")


def test_one_exit_status_rule_documented_and_kept(art, tmp_path):
    text = wide_help()
    assert all(part in text for part in EXIT_RULE)
    usage = edgesnn("export", art["ck"])  # --out missing: typer's usage error
    assert usage.exit_code == 2 and "Missing option '--out'" in unboxed(usage.stderr)
    for args, fragment in ((["export", art["ck"], "--target", "fpga", "--out", tmp_path / "o"], "unknown target 'fpga'"),
                           (["export", art["ck"], "--stream-dtype", "int4", "--out", tmp_path / "o"], "int4"),
                           (["profile", art["ir"], "--board", "nope"], "unknown board 'nope'")):
        r = edgesnn(*args)  # a wrong choice is refused by edgesnn, as a wrong board name is
        assert r.exit_code == 1 and r.stderr.startswith("error: ") and fragment in r.stderr, r.output
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_shell_completion_completes_commands_and_choices():
    assert "--install-completion" in wide_help() and "--show-completion" in wide_help()

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        r = edgesnn(prog_name="edgesnn", env={"_EDGESNN_COMPLETE": "complete_bash", "COMP_WORDS": line,
                                              "COMP_CWORD": str(len(words) - 1)})
        assert r.exit_code == 0, r.output
        return r.stdout.split()

    assert complete("edgesnn ver") == ["verify"]
    assert complete("edgesnn export ck --target t") == ["tflite"]
    assert complete("edgesnn quantize ck --method q") == ["qsnn", "qpsnn"]
    assert complete("edgesnn profile m.ir --board nucleo") == [b for b in boards.available() if b.startswith("nucleo")]


# ---------------------------------------------------------------- output: pipes, -q, -v

def test_piped_tables_are_not_cut_at_80_columns():
    r = edgesnn("boards")
    assert r.exit_code == 0 and "…" not in r.stdout
    lines = r.stdout.splitlines()
    for b in boards.load_all():
        row = next(line for line in lines if re.search(rf"[│┃] {re.escape(b.name)} +[│┃]", line))
        cpu = b.cpu or b.isa
        assert cpu in row and ", ".join(b.targets) in row, row  # every cell whole, on the board's own line
        assert (b.qemu_machine or "none") in row if not b.qemu_user else f"{b.qemu_user} (user mode)" in row


def test_quiet_prints_only_the_result(art, tmp_path):
    r = edgesnn("boards", "-q")
    assert r.exit_code == 0 and r.stdout.splitlines() == [b.name for b in boards.load_all()] and r.stderr == ""
    r = edgesnn("verify", art["tflite"], "--quiet", "--json", tmp_path / "v.json")
    assert r.exit_code == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 1, r.output
    assert r.stdout.startswith(f"{art['tflite']}: bit-exact with the IR in litert-reference")
    assert json.loads((tmp_path / "v.json").read_text())["passed"] is True  # --json is written all the same
    r = edgesnn("inspect", art["ir"], "-q")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1 and r.stdout.startswith("input ")
    r = edgesnn("boards", "-q", "-v")
    assert r.exit_code == 1 and r.stderr.startswith("error: -q/--quiet and -v/--verbose contradict")


def test_threads_after_the_command_and_quiet_train(tmp_path):
    before = threads.current()
    try:
        r = edgesnn("train", "--model", "mlp", "--epochs", 1, "--out", tmp_path / "m", "--threads", 2, "-q")
    finally:
        threads.use(before)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [r.stdout.strip()] and r.stdout.startswith(f"wrote {tmp_path / 'm'}")
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["threads"] == 2


def test_verbose_logs_steps_and_shows_the_traceback(art, tmp_path):
    r = edgesnn("verify", art["tflite"], "-v")
    assert r.exit_code == 0, r.output
    log = r.stderr.splitlines()
    assert "start tflite: 450 samples in litert-reference" in log
    assert any(re.fullmatch(r"end   tflite: 450 samples in litert-reference done in \d+\.\d s", line) for line in log)
    r = edgesnn("verify", tmp_path / "nope.ir", "-v")
    assert r.exit_code == 1 and "Traceback (most recent call last)" in r.stderr and "EdgesnnError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    r = edgesnn("verify", tmp_path / "nope.ir")  # without -v: the one line
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [r.stderr.strip()]


def test_no_progress_on_a_stderr_that_is_no_terminal(art, tmp_path):
    r = edgesnn("export", art["ck"], "--target", "tflite", "--out", tmp_path / "t")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == f"wrote {tmp_path / 't' / 'model.tflite'}\n"


# ---------------------------------------------------------------- progress from the library

def test_train_reports_progress_to_a_callback_and_is_silent_by_default(capfd):
    from edgesnn import models, progress

    ds = data.digits()
    events = []
    model = models.build("mlp", models.default_kwargs("mlp", ds.in_shape, 10, 4))
    train.train(model, ds, 2, progress=events.append)
    steps = -(-len(ds.x_train) // 64)
    assert [e.state for e in events][0] == "start" and events[-1].state == "end"
    assert {e.total for e in events} == {2 * steps} and events[-1].done == 2 * steps
    assert [e.done for e in events if e.state == "advance"] == list(range(1, 2 * steps + 1))
    assert events[-2].info.startswith("epoch 2/2  loss ")
    capfd.readouterr()
    train.train(model, ds, 1)  # the default: nothing on stdout or stderr
    assert capfd.readouterr() == ("", "")
    train.train(model, ds, 1, progress=True)  # a stderr that is no terminal: a line per step
    out, err = capfd.readouterr()
    assert out == "" and err.splitlines()[0] == "start train" and err.splitlines()[1].startswith("end   train done in")


def _steps(events):
    started = {e.id: e for e in events if e.state == "start"}
    ended = {e.id for e in events if e.state == "end"}
    assert set(started) == ended  # every step that started ended
    return [(e.label, e.depth) for e in started.values()]


def test_export_and_verify_to_mcu_and_lava_and_profile_report_their_steps(art, tmp_path):
    from edgesnn import progress
    from edgesnn.profile import profile

    events = []
    with progress.listen(events.append):
        lava = pipeline.export_model(art["ck"], "lava", tmp_path / "lava")
        pipeline.verify(lava, "digits", samples=3)
        mcu = pipeline.export_model(art["ck"], "mcu", tmp_path / "mcu", board="nucleo-f446re")
        pipeline.verify(mcu, "digits", samples=3, qemu=True, trust_code=True)
        profile(art["ir"], "host", "digits")
    steps = _steps(events)
    assert ("lava: Loihi 2 resources and energy over 256 calibration samples", 0) in steps
    assert ("lava: 3 samples in Lava's Loihi 2 simulation (graded)", 0) in steps
    assert ("mcu: compile the kernels (TVM) and write the project", 0) in steps
    assert ("mcu: build and run 3 samples, arm (QEMU mps2-an386)", 0) in steps
    assert ("make arm", 1) in steps and ("make host", 1) in steps  # inside their build-and-run step
    assert ("profile: operations and firing rates over 450 samples", 0) in steps


# ---------------------------------------------------------------- verify: what is exact, --min-agreement

def test_verify_says_bit_exact_only_where_exact_and_states_the_boards_runtime(art, tmp_path):
    from edgesnn import verdict
    from edgesnn.backends.tflite import LITERT_DEFAULT, LITERT_REFERENCE, RUNTIMES, run

    assert {r for names in verdict.TFLITE_RUNTIMES_BY_KIND.values() for r in names} <= set(RUNTIMES)

    r = edgesnn("verify", art["tflite"], "--json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())
    rows = {row["name"]: row for row in v["checks"]}
    exact = [n for n, row in rows.items() if row["compares"] == "every output integer" and row["differing"] == 0
             and row["against"] == "the IR"]
    assert f"bit-exact with the IR in {', '.join(exact)} (450 samples)" in r.stdout
    for name, row in rows.items():  # a runtime is called bit-exact exactly when no output integer differs
        assert (row["result"] == "bit-exact") == (row["compares"] == "every output integer" and row["differing"] == 0)
        assert row["differing"] == (v["runtimes"][name]["mismatches"] if name in v["runtimes"] else row["differing"])
    assert rows[LITERT_REFERENCE]["min_agreement"] == 1.0 and rows[LITERT_DEFAULT]["min_agreement"] is None
    # what a Raspberry Pi runs, next to the reference kernels, with their difference measured here
    graph = load_ir(art["ir"])
    xq = graph.quantize_input(data.to_nhwc(data.digits().x_test))
    ref, default = run(art["tflite"], xq, LITERT_REFERENCE).outputs[0], run(art["tflite"], xq, LITERT_DEFAULT).outputs[0]
    n = len(xq)
    diff = rows[f"{LITERT_DEFAULT} vs {LITERT_REFERENCE}"]
    assert diff["against"] == "the reference kernels" and "raspberry-pi-4" in diff["boards"]
    assert diff["differing"] == int((ref.reshape(n, -1) != default.reshape(n, -1)).any(1).sum())
    assert diff["argmax"] == int((ref.reshape(n, -1).argmax(1) != default.reshape(n, -1).argmax(1)).sum())
    assert "raspberry-pi-4" in rows[LITERT_DEFAULT]["boards"] and "nucleo-f446re" in rows["tflite-micro"]["boards"]
    table = unboxed(r.stdout)
    assert "boards that run it" in table and "litert-default vs litert-reference" in table
    if diff["differing"]:
        assert f"{LITERT_DEFAULT} vs {LITERT_REFERENCE}: {diff['differing']} of 450 samples differ" in r.stdout


def _flip_last_layer(graph):
    last = graph.weight_ops()[-1]
    last.weight = -last.weight
    return graph


def test_verify_exits_1_below_min_agreement(art, tmp_path):
    from edgesnn import verdict
    from edgesnn.backends.tflite import export_tflite

    v = pipeline.verify(art["ir"], "digits")  # the IR as exported: judged against the README's 99.5 %
    r = edgesnn("verify", art["ir"])
    assert r.exit_code == (0 if v["agreement"] >= verdict.MIN_TORCH else 1)
    bad_ir = tmp_path / "bad.ir"
    _flip_last_layer(load_ir(art["ir"])).save(bad_ir)
    r = edgesnn("verify", bad_ir, "--checkpoint", art["ck"], "--json", tmp_path / "b.json")
    assert r.exit_code == 1 and "its argmax differs from torch's in too many samples" in r.stderr, r.output
    assert "< --min-agreement 0.995" in r.stderr and json.loads((tmp_path / "b.json").read_text())["passed"] is False
    assert edgesnn("verify", bad_ir, "--checkpoint", art["ck"], "--min-agreement", 0).exit_code == 0

    (tmp_path / "t").mkdir()
    bad = tmp_path / "t" / "model.tflite"
    export_tflite(_flip_last_layer(load_ir(art["ir"])), bad)
    r = edgesnn("verify", bad, "--ir", art["ir"])
    assert r.exit_code == 1 and "not bit-exact with the IR in litert-reference" in r.stderr
    assert "< --min-agreement 1)" in r.stderr
    r = edgesnn("verify", bad, "--ir", art["ir"], "--min-agreement", 0)
    assert r.exit_code == 0 and "bit-exact with the IR in litert-reference" not in r.stdout
    assert "litert-reference: " in r.stdout and ">= 0 required" in r.stdout
    r = edgesnn("verify", art["ir"], "--min-agreement", 1.5)
    assert r.exit_code == 1 and r.stderr.strip() == "error: --min-agreement must be between 0 and 1, got 1.5"


# ---------------------------------------------------------------- the run summary

def test_run_summary_counts_flash_bytes_and_lava_samples(tmp_path):
    from edgesnn.backends.mcu import read_project
    from edgesnn.run import VERIFY_SAMPLES, flash_bytes

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: tiny\ndata: digits\nmodel: {name: mlp, D: 4}\ntrain: {epochs: 2}\nexport:\n"
                      "  - {target: ir}\n  - {target: tflite}\n  - {target: mcu, board: nucleo-f446re}\n"
                      "  - {target: lava}\n")
    out = tmp_path / "run"
    r = edgesnn("run", recipe, "--out", out)
    assert r.exit_code == 0, r.output
    rows = {row["export"]: row for row in json.loads((out / "manifest.json").read_text())["summary"]}
    assert rows["tflite"]["bytes"] == (out / "tflite" / "model.tflite").stat().st_size  # the file is deployed
    assert rows["ir"]["bytes"] == pipeline.inspect(out / "ir" / "model.ir")["bytes"]  # constants, not the file
    assert rows["mcu-nucleo-f446re"]["bytes"] == read_project(out / "mcu-nucleo-f446re")["const_bytes"]
    report = json.loads((out / "lava" / "loihi2.json").read_text())
    assert rows["lava"]["bytes"] == -(-report["synaptic_memory_bits"] // 8)
    for name, row in rows.items():
        folder = sum(f.stat().st_size for f in (out / name).rglob("*") if f.is_file())
        assert row["bytes"] < folder and (row["bytes"], row["bytes_counted"]) == flash_bytes(out / name, row["export"]
                                                                                             .split("-")[0])
        assert row["passed"] is json.loads((out / name / "verify.json").read_text())["passed"]
        assert row["passed"] or name == "ir"  # integer targets: bit-exact (the IR is judged against torch)
    assert rows["lava"]["samples"] == VERIFY_SAMPLES["lava"] and rows["ir"]["samples"] == 450
    lava_row = next(line for line in r.stdout.splitlines() if re.search(r"[│┃] lava +[│┃]", line))
    assert re.search(rf"[│┃] +{VERIFY_SAMPLES['lava']} [│┃]", lava_row) and str(rows["lava"]["bytes"]) in lava_row
    assert "bytes: what goes into flash" in unboxed(r.stdout)
