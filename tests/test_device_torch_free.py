"""The board's commands without torch (edgesnn[device], edgesnn/device.py): verify, profile --measure and bench of
a .tflite file and of an MCU project built for an aarch64 Linux board run with torch (and Brevitas, TVM,
Lava) blocked from import, and give the same results as with everything installed, where torch is not
imported either. A missing runtime is one line naming what to install.

Each command runs in a child interpreter whose first meta path finder refuses the blocked packages and
records every attempt: an import caught by a ``try`` would still be seen."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgesnn import cli, data, models, pipeline, threads

HEAVY = ("torch", "brevitas", "tvm", "lava")
RUNTIMES = ("ai_edge_litert", "tflite_runtime")
# What differs between two runs of the same artifact: times, memory and what is computed from them (an
# estimated board energy's note quotes the latency it was computed from).
TIMED = {"latency_ms_median", "latency_ms_runs", "peak_rss_bytes", "energy_board_pj", "power_w_mean",
         "energy_mj_per_inference_measured", "energy_board_note"}

CHILD = textwrap.dedent("""
    import json, sys
    blocked, log = json.loads(sys.argv[1]), sys.argv[2]

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                with open(log, "a") as f:
                    f.write(name + "\\n")
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = ["edgesnn", *sys.argv[3:]]
    try:
        from edgesnn.__main__ import main
        main()
    finally:
        with open(log, "a") as f:
            f.write("".join(f"loaded {m}\\n" for m in sys.modules if m.partition(".")[0] in ("torch", "brevitas")))
""")


def edgesnn(tmp_path, *args, blocked=HEAVY):
    """(exit status, stdout, stderr, the blocked imports tried and heavy modules loaded) of the CLI."""
    log = tmp_path / f"imports-{len(list(tmp_path.glob('imports-*')))}.log"
    log.touch()
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(blocked)), str(log), *map(str, args)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr, log.read_text().split()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """An MLP trained briefly on digits, exported as .tflite (with model.ir), as a C project for the Pi 4 and as
    integer ONNX."""
    root = tmp_path_factory.mktemp("device")
    pipeline.train_model("mlp", "digits", 1, root / "ckpt")
    tflite = pipeline.export_model(root / "ckpt", "tflite", root / "tflite")
    mcu = pipeline.export_model(root / "ckpt", "mcu", root / "mcu", board="raspberry-pi-4")
    onnx = pipeline.export_model(root / "ckpt", "onnx", root / "onnx")  # integer ONNX: bench times it without torch
    return {"tflite": tflite, "mcu": mcu, "onnx": onnx}


COMMANDS = {
    "verify-tflite": ["verify", "{tflite}", "--data", "digits"],
    "verify-mcu": ["verify", "{mcu}", "--trust-code"],
    "profile-tflite": ["profile", "{tflite}", "--board", "raspberry-pi-4", "--measure"],
    "profile-mcu": ["profile", "{mcu}", "--board", "raspberry-pi-4", "--measure", "--trust-code"],
}


def _untimed(r: dict) -> dict:
    r = {k: v for k, v in r.items() if k not in TIMED}
    if "runs" in r:  # an MCU project's builds: the harness's own timing of each inference
        r["runs"] = {name: {k: v for k, v in run.items() if k != "stats"} for name, run in r["runs"].items()}
    return r


@pytest.mark.parametrize("name", COMMANDS)
def test_board_commands_run_without_torch_with_the_same_results(artifacts, tmp_path, name):
    args = [a.format(**artifacts) for a in COMMANDS[name]]
    results = {}
    for how, blocked in (("without torch", HEAVY), ("everything installed", ())):
        out = tmp_path / f"{how.replace(' ', '-')}.json"
        status, stdout, stderr, imports = edgesnn(tmp_path, *args, "--json", out, blocked=blocked)
        assert status == 0, f"{how}: {stderr}"
        assert imports == [], f"{how}: tried or loaded {imports}"  # torch is not even imported where installed
        results[how] = json.loads(out.read_text()), stdout.strip().splitlines()[-1]
    (got, got_line), (want, want_line) = results["without torch"], results["everything installed"]
    assert got.keys() == want.keys()
    assert _untimed(got) == _untimed(want)
    if name.startswith("verify"):
        assert got["passed"] is True and got["mismatches"] == 0 and got_line == want_line
        assert "bit-exact" in got_line
    else:
        assert got["latency_ms_median"] > 0 and got_line == want_line


@pytest.mark.parametrize("name, args, runtimes", [
    ("tflite", ["{tflite}"], {"litert-reference", "litert-default"}),
    ("mcu", ["{mcu}", "--trust-code"], {"c-host"}),
    ("onnx", ["{onnx}"], {"onnxruntime"}),
])
def test_bench_runs_without_torch(artifacts, tmp_path, name, args, runtimes):
    out = tmp_path / "bench.json"
    status, stdout, stderr, imports = edgesnn(tmp_path, "bench", *[a.format(**artifacts) for a in args], "--samples",
                                              4, "--repeats", 2, "--json", out)
    assert status == 0, stderr
    assert imports == []
    r = json.loads(out.read_text())
    assert (r["kind"], r["data"], r["samples"], r["repeats"], set(r["runtimes"])) == (name, "digits", 4, 2, runtimes)
    for row in r["runtimes"].values():
        assert len(row["latency_ms_runs"]) == 2 and all(v > 0 for v in row["latency_ms_runs"])
        assert row["throughput_per_s"] > 0 and row["runtime"] in stdout
    assert stdout.strip().splitlines()[-1].startswith("fastest at batch 1: ")


def test_a_command_that_needs_torch_says_what_to_install(tmp_path):
    status, stdout, stderr, imports = edgesnn(tmp_path, "train", "--out", "ckpt", "--epochs", "1")
    assert status == 1 and stdout == "" and "torch" in imports
    assert stderr.splitlines() == ["error: this command needs torch, which is not installed: pip install "
                                   "'edgesnn[train]' (or edgesnn[all]); edgesnn[device] alone runs verify and "
                                   "profile of .tflite files and MCU projects"]
    assert not (tmp_path / "ckpt").exists()


def test_a_missing_tflite_runtime_is_one_line_naming_what_to_install(artifacts, tmp_path):
    for command in (["verify"], ["bench"], ["profile", "--board", "raspberry-pi-4", "--measure"]):
        status, stdout, stderr, imports = edgesnn(tmp_path, command[0], artifacts["tflite"], *command[1:],
                                                  blocked=HEAVY + RUNTIMES)
        assert status == 1 and stdout == ""
        assert stderr.splitlines() == ["error: running .tflite files needs ai-edge-litert (pip install ai-edge-litert) "
                                       "or, on old board images, tflite-runtime"]
        assert "ai_edge_litert" in imports and not {m for m in imports if m.partition(".")[0] == "torch"}


def test_bench_of_onnx_without_onnxruntime_is_one_line_naming_what_to_install(artifacts, tmp_path):
    status, stdout, stderr, imports = edgesnn(tmp_path, "bench", artifacts["onnx"], blocked=HEAVY + ("onnxruntime",))
    assert status == 1 and stdout == "" and "onnxruntime" in imports
    assert stderr.splitlines() == [f"error: {artifacts['onnx']}: running .onnx files needs onnx and onnxruntime (pip "
                                   "install onnx onnxruntime): No module named 'onnxruntime'"]


def test_the_clis_lists_are_the_torch_modules_own():
    assert cli.MODELS == tuple(models.MODELS) and cli.TARGETS == pipeline.TARGETS


@pytest.mark.parametrize("spec", ["digits", "mnist5k-14"])
def test_data_as_arrays_are_the_tensors_values(spec):
    arrays, tensors = data.load(spec, arrays=True), data.load(spec)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        a, t = getattr(arrays, name), getattr(tensors, name).numpy()
        assert isinstance(a, np.ndarray) and a.dtype == t.dtype and np.array_equal(a, t)
    assert (arrays.in_shape, arrays.num_classes) == (tensors.in_shape, tensors.num_classes)


def test_a_thread_count_set_before_torch_is_imported_applies_when_it_is():
    code = ("import sys; from edgesnn import threads; threads.use(3); assert 'torch' not in sys.modules; "
            "import torch; print(torch.get_num_threads())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3"]
    assert threads.DEFAULT == 1
