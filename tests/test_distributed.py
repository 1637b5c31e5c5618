"""quantize under torchrun: two CPU processes (DistributedDataParallel, gloo) against one. Each rank
trains on half of every batch, its loss scaled so the averaged gradient is the whole batch's; what
differs is BatchNorm's per-rank statistics (SyncBatchNorm is GPU-only) and float summation order, so
the accuracies agree within TOLERANCE, not bit for bit. Only rank 0 writes."""

import subprocess
import sys

import pytest
import torch

from edgesnn import distributed, pipeline
from edgesnn.limits import read_json

TOLERANCE = 0.02  # test accuracy, 1 vs 2 processes (9 of digits' 450 test samples)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "cnn"
    pipeline.train_model("cnn", "digits", 3, out, model_kwargs={"channels": [8, 16], "hidden": 32})
    return out


def quantize(ckpt, out, *extra):
    return subprocess.run([sys.executable, "-m", "edgesnn", "quantize", str(ckpt), "--method", "qpsnn", "--epochs", "2",
                           "--out", str(out), *extra], capture_output=True, text=True)


def test_two_torchrun_processes_match_one(ckpt, tmp_path):
    one, two = quantize(ckpt, tmp_path / "one"), quantize(ckpt, tmp_path / "two", "--nproc-per-node", "2")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert sum(ln.startswith("wrote ") for ln in two.stdout.splitlines()) == 1  # rank 0 says it wrote
    a, b = read_json(tmp_path / "one" / "metrics.json", "m"), read_json(tmp_path / "two" / "metrics.json", "m")
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= TOLERANCE
    assert a["test_accuracy"] > 0.8 and b["test_accuracy"] > 0.8  # both trained, not both broken
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # rank 1 wrote nothing anywhere


def test_one_process_is_unchanged(digits):
    """Outside torchrun the helpers are the identity: the loop trains exactly as before."""
    idx = torch.arange(10)
    assert not distributed.active() and distributed.is_writer()
    assert torch.equal(distributed.shard(idx), idx) and distributed.loss_scale(5, 10) == 1.0
    assert distributed.total([1.5, 2.0]) == [1.5, 2.0]
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model


def test_nproc_option_is_removed_for_the_ranks():
    argv = ["quantize", "ck", "--nproc-per-node", "2", "--out", "q", "--nproc-per-node=3"]
    assert distributed.without_option(argv, "--nproc-per-node") == ["quantize", "ck", "--out", "q"]


def test_nproc_from_python_is_one_line(tmp_path):
    """The option relaunches the command line; called in-process (CliRunner: another argv) it says so."""
    from typer.testing import CliRunner

    from edgesnn.cli import app

    r = CliRunner().invoke(app, ["quantize", str(tmp_path), "--method", "qpsnn", "--out", str(tmp_path / "q"),
                                 "--nproc-per-node", "2"])
    assert r.exit_code == 1 and r.output.strip() == ("error: --nproc-per-node: relaunches the edgesnn command line; "
                                                     "from Python, run it under torchrun")
