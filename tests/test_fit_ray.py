"""edgesnn fit --ray: trials as Ray tasks on a local Ray head (127.0.0.1, two worker CPUs) started and
stopped here; an address where no cluster answers is one error line within a bounded wait."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesnn.cli import app
from edgesnn.fit.ray_pool import CONNECT_SECONDS
from edgesnn.limits import read_json

import ray  # noqa: E402,F401  (scripts/setup.sh installs it: a missing one fails, never skips)
from test_fit import BOARD, ckpt  # noqa: E402,F401 - the tiny checkpoint fixture and board file

RAY = Path(sys.executable).with_name("ray")


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs, in its own process group, which is ended after."""
    port, tmp = free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are bounded
    p = subprocess.Popen([str(RAY), "start", "--head", "--port", str(port), "--num-cpus", "2", "--node-ip-address",
                          "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", tmp,
                          "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # what SIGTERM left of the group (raylet, gcs_server, workers)
        except ProcessLookupError:
            pass
        p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def test_fit_on_a_ray_cluster(ckpt, ray_head, tmp_path):  # noqa: F811
    board = tmp_path / "b.yaml"
    board.write_text(BOARD.format(flash=8000))
    out = tmp_path / "f"
    r = edgesnn("fit", ckpt, "--board", board, "--out", out, "--trials", 2, "--method", "qpsnn", "--D", 2, "--D", 4,
                "--ray", ray_head)
    assert r.exit_code == 0, r.output
    fit = read_json(out / "fit.json", "fit")
    assert [t["state"] for t in fit["trials"]] == ["complete", "complete"]
    nodes = {t["metrics"]["ray_node"] for t in fit["trials"]}
    assert len(nodes) == 1 and len(next(iter(nodes))) == 56  # the head's node id (hex): ran as Ray tasks there
    for t in fit["trials"]:
        assert (out / t["folder"] / "manifest.json").is_file()


def test_unreachable_ray_address_is_one_line(ckpt, tmp_path):  # noqa: F811
    board = tmp_path / "b.yaml"
    board.write_text(BOARD.format(flash=8000))
    port = free_port()  # nothing listens there
    start = time.monotonic()
    r = edgesnn("fit", ckpt, "--board", board, "--out", tmp_path / "f", "--ray", f"127.0.0.1:{port}")
    assert r.exit_code == 1
    assert r.output.strip() == f"error: --ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused)"
    assert time.monotonic() - start < CONNECT_SECONDS + 30  # the space is built first (the model loaded)
    r = edgesnn("fit", ckpt, "--board", board, "--out", tmp_path / "f", "--ray", "nowhere")
    assert r.exit_code == 1 and r.output.strip().startswith("error: --ray 'nowhere': give the cluster's HOST:PORT")
