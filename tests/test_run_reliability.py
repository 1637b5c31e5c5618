"""`edgesnn run` under stress: killed at random points by signals it leaves only complete files
the manifest lists, it resumes to the same bytes, and the same recipe and seed give byte-identical
IR, .tflite and C files in any folder."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = """name: kill-me
data: digits
model: {name: mlp, D: 4, kwargs: {hidden: [64]}}
train: {epochs: 3, seed: 3}
export:
  - {target: ir}
  - {target: tflite}
  - {target: mcu, board: nucleo-f446re}
profile:
  - {export: mcu-nucleo-f446re, board: nucleo-f446re}
"""
DETERMINISTIC = ("ir/model.ir", "tflite/model.tflite", "tflite/model.ir", "mcu-nucleo-f446re/model.c",
                 "mcu-nucleo-f446re/kernels.c", "mcu-nucleo-f446re/weights.c", "mcu-nucleo-f446re/model.h",
                 "mcu-nucleo-f446re/weights.h")


def start(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgesnn", "run", str(recipe), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def complete_and_listed(out: Path) -> dict:
    """Every file under ``out`` is manifest.json or listed in it with its sha256; returns the listing."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    if not files:
        return {}
    manifest = json.loads((out / "manifest.json").read_text())  # parses: it was replaced whole
    listed = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
    for f in files:
        if f == "manifest.json":
            continue
        assert f in listed, f"{f} is in the output folder but not in the manifest"
        assert hashlib.sha256((out / f).read_bytes()).hexdigest() == listed[f], f"{f} is incomplete"
    return listed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its bytes are what every run must give."""
    root = tmp_path_factory.mktemp("reference")
    recipe = root / "kill-me.yaml"
    recipe.write_text(RECIPE)
    p = start(recipe, root / "out")
    _, stderr = p.communicate(timeout=900)
    assert p.returncode == 0, stderr
    return recipe, root / "out"


@pytest.mark.slow
def test_same_recipe_and_seed_give_byte_identical_ir_tflite_and_c_in_another_folder(reference, tmp_path):
    recipe, first = reference
    p = start(recipe, tmp_path / "elsewhere" / "second")
    _, stderr = p.communicate(timeout=900)
    assert p.returncode == 0, stderr
    second = tmp_path / "elsewhere" / "second"
    for f in DETERMINISTIC:
        assert (first / f).read_bytes() == (second / f).read_bytes(), f"{f} differs between two runs"
    checkpoint = "checkpoint/model.safetensors"
    assert (first / checkpoint).read_bytes() == (second / checkpoint).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_killed_at_random_points_leaves_only_complete_listed_files_and_resumes(reference, tmp_path, seed):
    recipe, first = reference
    out = tmp_path / "out"
    rng = random.Random(seed)
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGTERM]
    interrupted = 0
    for i, sig in enumerate(signals):
        p = start(recipe, out)
        seen = ""
        if i == 0:  # during the imports
            time.sleep(rng.uniform(0.1, 1.5))
        else:  # at a random moment of a stage that does work (its "run  STAGE" line is out)
            for line in p.stderr:
                seen += line
                if line.startswith("run "):
                    break
            time.sleep(rng.uniform(0.0, 0.5))  # later, a short last stage can finish the whole run first
        p.send_signal(sig)
        _, rest = p.communicate(timeout=300)
        stderr = seen + rest
        assert "Traceback" not in stderr
        if p.returncode != 0 and sig != signal.SIGKILL:  # stopped by the signal: one line, 128 + signal
            assert stderr.strip().splitlines()[-1] == "error: interrupted" and p.returncode == 128 + sig, stderr
        interrupted += p.returncode != 0
        complete_and_listed(out)
    assert interrupted >= 3  # the kills did land in the middle of runs
    p = start(recipe, out)  # the last run finishes what the killed ones left
    _, stderr = p.communicate(timeout=900)
    assert p.returncode == 0, stderr
    listed = complete_and_listed(out)
    expected = json.loads((first / "manifest.json").read_text())
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages.keys() == expected["stages"].keys()
    # a profile's key covers its export's verify.json, whose host timings differ from run to run
    assert all(stages[k] == v for k, v in expected["stages"].items() if not k.startswith("profile:"))
    assert set(listed) == {a["path"] for a in expected["artifacts"]}
    for f in DETERMINISTIC:
        assert (out / f).read_bytes() == (first / f).read_bytes(), f"{f} differs after interrupted runs"
    assert not any(p.name.endswith(".edgesnn-work") for p in tmp_path.iterdir())  # the work folder is gone
