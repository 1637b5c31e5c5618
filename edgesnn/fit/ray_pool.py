"""``edgesnn fit --ray ADDRESS|auto``: trials as Ray tasks on an existing cluster, scheduled by Ray.

The study stays with the fit (asked and told here; its SQLite file never travels); each Ray task
runs one trial in a child process on whichever node Ray picks (edgesnn.fit.trial.run_child), one CPU
each, and returns its metrics. The checkpoint and the fit folder must be at the same path on every
node (a shared file system: NFS under Slurm, a ReadWriteMany volume on Kubernetes); a node that
cannot see them fails its trial with a line saying so. An address nothing answers at is one error
line within :data:`CONNECT_SECONDS`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import socket
import threading
from pathlib import Path

from edgesnn.errors import EdgesnnError

CONNECT_SECONDS = 20.0


def _check_reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that accepts no TCP connection is refused at once."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EdgesnnError(f"--ray {address!r}: give the cluster's HOST:PORT (the head's GCS port, 6379 by default) "
                           "or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=min(5.0, CONNECT_SECONDS)):
            pass
    except OSError as e:
        raise EdgesnnError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


def connect(address: str) -> None:
    """ray.init(address) within CONNECT_SECONDS, or one EdgesnnError."""
    try:
        import ray
    except ImportError:
        raise EdgesnnError("--ray needs Ray: pip install 'edgesnn[fit]'") from None
    if address != "auto":
        _check_reachable(address)
    outcome: list = []
    # joined from a thread (to bound the wait), Ray leaves SIGTERM to edgesnn and warns that it does
    logging.getLogger("ray._private.worker").setLevel(logging.ERROR)

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - any failure to join is the one error line below
            outcome.append(e)

    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    if not outcome:
        raise EdgesnnError(f"--ray {address}: no Ray cluster answered within {CONNECT_SECONDS:g} s")
    if outcome[0] is not None:
        e = outcome[0]
        last = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise EdgesnnError(f"--ray {address}: cannot join the Ray cluster ({last})")


def _remote_trial(recipe_dict: dict, folder: str, board_spec: str, trust_code, timeout, threads) -> dict:
    """The task's body on a Ray worker: the same child process a local trial runs in."""
    from edgesnn.fit import trial
    from edgesnn.fit.space import recipe_class

    recipe = recipe_class().model_validate(recipe_dict)
    weights = Path(recipe.model.weights or "")
    if recipe.model.weights and not weights.is_file():
        return {"error": f"{socket.gethostname()}: {weights} is not there; the checkpoint and the fit folder must be "
                         "on a file system every Ray node mounts at the same path"}
    import ray

    trust = trust_code if isinstance(trust_code, bool) else set(trust_code)
    result = trial.run_child(recipe, Path(folder), board_spec, trust, timeout, threads)
    return {**result, "ray_node": ray.get_runtime_context().get_node_id()}


class RayPool:
    """Trials as Ray tasks: as many at once as the cluster has CPUs (one each)."""

    def __init__(self, address: str):
        import ray

        connect(address)
        self.ray = ray
        self.task = ray.remote(num_cpus=1, max_retries=0)(_remote_trial)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.jobs = max(1, cpus)
        self.where = f"Ray cluster at {address} ({cpus} CPUs)"

    def submit(self, recipe, folder, board_spec, trust_code, timeout, threads) -> cf.Future:
        trust = trust_code if isinstance(trust_code, bool) else sorted(trust_code)
        ref = self.task.remote(recipe.model_dump(), str(folder), board_spec, trust, timeout, threads)
        return ref.future()

    def close(self) -> None:
        self.ray.shutdown()
