"""Torch's thread count: one unless --threads, EDGESNN_THREADS or a recipe says otherwise, so the same
seed trains the same model whatever OMP_NUM_THREADS and MKL_NUM_THREADS say."""

import json
import os
import subprocess
import sys

import torch
from typer.testing import CliRunner

from edgesnn import threads
from edgesnn.cli import app


def train_in_process(out, **env):
    """``python -m edgesnn train`` in a fresh process with these environment variables (None: unset)."""
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    r = subprocess.run([sys.executable, "-m", "edgesnn", "train", "--model", "mlp", "--epochs", "2", "--out", str(out)],
                       capture_output=True, text=True, env=full, timeout=300)
    assert r.returncode == 0, r.stderr
    return (out / "model.safetensors").read_bytes(), json.loads((out / "metrics.json").read_text())


def test_the_same_model_whatever_the_environment_asks(tmp_path):
    """Two threads train another model here (measured: the MLP's weights differ); the CLI uses one."""
    one, m1 = train_in_process(tmp_path / "a", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", EDGESNN_THREADS=None)
    two, m2 = train_in_process(tmp_path / "b", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", EDGESNN_THREADS=None)
    assert one == two
    assert m1["threads"] == m2["threads"] == 1 and m1["test_accuracy"] == m2["test_accuracy"]


def test_edgesnn_threads_sets_the_count_and_metrics_record_it(tmp_path):
    _, metrics = train_in_process(tmp_path / "c", OMP_NUM_THREADS="1", EDGESNN_THREADS="2")
    assert metrics["threads"] == 2


def test_bad_counts_are_usage_errors(tmp_path):
    before = torch.get_num_threads()
    for args, env in ((["--threads", "0", "boards"], {}), (["boards"], {"EDGESNN_THREADS": "many"}),
                      (["--threads", "5000", "boards"], {})):
        r = CliRunner().invoke(app, args, env=env)
        assert r.exit_code == 2 and "Invalid value for '--threads'" in " ".join(r.output.replace("│", " ").split()), \
            r.output
    assert torch.get_num_threads() == before


def test_a_recipe_pins_its_count_for_its_stages(tmp_path):
    (tmp_path / "r.yaml").write_text("name: t\ndata: digits\nthreads: 2\nmodel: {name: mlp}\ntrain: {epochs: 1}\n"
                                     "export:\n  - {target: ir}\n")
    r = CliRunner().invoke(app, ["--threads", "1", "run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "checkpoint" / "metrics.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == 1  # as before the run


def test_pinned_restores_the_count():
    before = torch.get_num_threads()
    with threads.pinned(before + 1):
        assert threads.current() == before + 1
    assert threads.current() == before
    with threads.pinned(None):
        assert threads.current() == before
