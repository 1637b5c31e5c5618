"""Valid base artifacts, built once per session, which every generator mutates.

A small spiking CNN (conv with padding, pooling, dense head: every op kind the loaders check)
trained for one epoch on digits, exported to ir, tflite, nir, mcu (host board) and lava; a
one-stage recipe and the run folder it produced; a board file; an .npz data set. Built in a
fresh interpreter (``python artifacts.py ROOT``), never in the fork server's parent, so no torch
thread pool exists when the server forks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)  # the venv's python (tests and scripts run in it)

# Recipe of the base run folder: a tiny MLP, one epoch, IR only, so a valid mutation reruns in seconds.
RECIPE = """\
# hostile-input base recipe: the smallest run (one epoch, one export)
name: hostile-base
data: digits
model: {name: mlp, D: 4, kwargs: {hidden: [16]}}
train: {epochs: 1, lr: 0.003, seed: 0}
export:
  - {target: ir}
profile:
  - {export: ir, board: host}
"""

# name -> path relative to the root, for every base artifact
LAYOUT = {
    "checkpoint": "ckpt",            # folder: config.json, model.safetensors, metrics.json
    "ir": "ir/model.ir",
    "tflite": "tflite/model.tflite",  # beside its model.ir
    "nir": "nir/model.nir",           # beside its model.ir
    "mcu": "mcu",                     # folder with project.json (rp2040: built and run on the host)
    "lava": "lava",                   # folder with lava.json and loihi2.json
    "recipe": "recipe.yaml",
    "run": "run",                     # folder with manifest.json, from recipe.yaml
    "board": "board.yaml",
    "npz": "data.npz",
    "imported": "imported",           # checkpoint folder written by `edgesnn import model.nir`
}


def build(root: Path) -> dict[str, Path]:
    """Write every base artifact under ``root`` (in this process: call it in a fresh interpreter)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from edgesnn import data, pipeline
    from edgesnn.backends.nir import import_nir
    from edgesnn.recipes import load as load_recipe
    from edgesnn.run import run_recipe

    root.mkdir(parents=True, exist_ok=True)
    p = {k: root / v for k, v in LAYOUT.items()}
    pipeline.train_model("cnn", "digits", 3, p["checkpoint"], model_kwargs={"channels": [4, 8], "hidden": 16})
    for target in ("ir", "tflite", "nir"):
        pipeline.export_model(p["checkpoint"], target, p[target].parent)
    pipeline.export_model(p["checkpoint"], "mcu", p["mcu"], board="rp2040")
    pipeline.export_model(p["checkpoint"], "lava", p["lava"])
    import_nir(p["nir"], p["imported"], None, None, None, use_metadata=True)
    p["recipe"].write_text(RECIPE)
    run_recipe(load_recipe(str(p["recipe"])), p["run"])
    shutil.copy(REPO / "edgesnn" / "shipped" / "boards" / "rp2040.yaml", p["board"])
    ds = data.digits()
    x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()])[:400]
    y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()])[:400]
    np.savez(p["npz"], x=x, y=y)
    (root / "ready.json").write_text(json.dumps({k: str(v) for k, v in p.items()}))
    return p


def ensure(root: Path, timeout: float = 900) -> dict[str, Path]:
    """The base artifacts under ``root``, built in a fresh interpreter unless already there."""
    ready = root / "ready.json"
    if not ready.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        r = subprocess.run([str(PYTHON), __file__, str(root)], env=env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0 or not ready.is_file():
            raise RuntimeError(f"building the base artifacts failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return {k: Path(v) for k, v in json.loads(ready.read_text()).items()}


if __name__ == "__main__":
    build(Path(sys.argv[1]))
