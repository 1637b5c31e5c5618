"""``edgesnn run RECIPE``: every stage of a recipe, in order, into one output folder.

Stages: train, quantize (if the recipe compresses), one export per target (each verified), one
profile per (export, board). DIR/manifest.json lists every artifact (path relative to DIR, sha256,
stage), each stage's key (a hash of its settings and its inputs' hashes) and the tool versions. A
stage whose key is unchanged and whose files are all present with their recorded hashes is
skipped. Each stage writes through the project's atomic writers and the manifest is rewritten
(atomically) after each stage, so a killed run leaves only complete files the manifest lists.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from edgesnn import pipeline
from edgesnn.checkpoint import write_json
from edgesnn.recipes import Recipe

MANIFEST = "manifest.json"
VERIFY_SAMPLES = {"lava": 50}  # Lava's simulation is slow; every other target verifies the whole split
TOOLS = ("edgesnn", "torch", "numpy", "brevitas", "onnx", "onnxruntime", "ai-edge-litert", "tflite-micro",
         "apache-tvm", "lava-nc")


def run_recipe(recipe: Recipe, out: Path, on_stage=None) -> dict:
    """Run (or skip) each stage; returns the manifest plus a ``summary`` list."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(out)
    manifest = {"recipe": recipe.model_dump(), "versions": _versions(), "stages": {}, "artifacts": []}
    summary = []

    def stage(name: str, settings: dict, inputs: list[Path], produce) -> tuple[list[Path], bool]:
        key = _hash_json({"settings": settings, "inputs": [_sha256(p) for p in _files(inputs)]})
        previous = [a for a in old.get("artifacts", []) if a["stage"] == name]
        intact = previous and all((out / a["path"]).is_file() and _sha256(out / a["path"]) == a["sha256"]
                                  for a in previous)
        skipped = old.get("stages", {}).get(name) == key and bool(intact)
        if on_stage:
            on_stage(name, skipped)
        if not skipped:
            produce()
            files = _files([out / p for p in _outputs(name, recipe)])
            previous = [{"path": str(f.relative_to(out)), "sha256": _sha256(f), "stage": name} for f in files]
        manifest["stages"][name] = key
        manifest["artifacts"] += previous
        write_json(out / MANIFEST, manifest)
        return [out / a["path"] for a in previous], skipped

    ckpt = out / "checkpoint"
    stage("train", recipe.train.model_dump() | {"model": recipe.model.model_dump(), "data": recipe.data}, [],
          lambda: pipeline.train_model(recipe.model.name, recipe.data, recipe.train.epochs, ckpt, D=recipe.model.D,
                                       lr=recipe.train.lr, seed=recipe.train.seed, model_kwargs=recipe.model.kwargs))
    source = ckpt
    if recipe.quantize:
        from edgesnn.quantize import Options, quantize_checkpoint

        q = recipe.quantize
        source = out / "compressed"
        stage("quantize", q.model_dump(), [ckpt], lambda: quantize_checkpoint(
            ckpt, q.method, source, Options(weight_bits=q.weight_bits, membrane_bits=q.membrane_bits, prune=q.prune,
                                            epochs=q.epochs, lr=q.lr, seed=recipe.train.seed)))
    for e in recipe.export:
        folder = out / e.folder()
        name = f"export:{e.folder()}"

        def export_and_verify(e=e, folder=folder):
            path = pipeline.export_model(source, e.target, folder, board=e.board, event_driven=e.event_driven,
                                         lava_mode=e.lava_mode)
            r = pipeline.verify(path, recipe.data, samples=VERIFY_SAMPLES.get(e.target))
            write_json(folder / "verify.json", r)

        stage(name, e.model_dump(), [source], export_and_verify)
        verified = json.loads((folder / "verify.json").read_text())
        summary.append({"export": e.folder(), "mismatches": verified["mismatches"],
                        "accuracy": verified.get("accuracy", verified.get("ir_accuracy")),
                        "bytes": sum(f.stat().st_size for f in _files([folder]) if f.name != "verify.json")})
    for p in recipe.profile:
        target = next(e for e in recipe.export if e.folder() == p.export)
        artifact = _artifact(out / p.export, target.target)
        report = out / f"profile-{p.export}-{p.board}.json"

        def do_profile(artifact=artifact, board=p.board, report=report):
            from edgesnn.profile import profile

            write_json(report, profile(artifact, board, recipe.data))

        stage(f"profile:{p.export}:{p.board}", p.model_dump(), [out / p.export], do_profile)
        r = json.loads(report.read_text())
        summary.append({"export": p.export, "board": p.board, "fits": r["fits"], "energy_45nm_pj": r["energy_45nm_pj"],
                        "energy_board_pj": r["energy_board_pj"]})
    manifest["summary"] = summary
    write_json(out / MANIFEST, manifest)
    return manifest


def _artifact(folder: Path, target: str) -> Path:
    return {"ir": folder / "model.ir", "tflite": folder / "model.tflite", "onnx": folder / "model.onnx"}.get(target, folder)


def _outputs(stage: str, recipe: Recipe) -> list[str]:
    if stage == "train":
        return ["checkpoint"]
    if stage == "quantize":
        return ["compressed"]
    kind, *rest = stage.split(":")
    return [rest[0]] if kind == "export" else [f"profile-{rest[0]}-{rest[1]}.json"]


def _files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and "build" not in f.relative_to(p).parts)
        elif p.is_file():
            out.append(p)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _versions() -> dict:
    found = {}
    for tool in TOOLS:
        try:
            found[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            found[tool] = None
    return found
