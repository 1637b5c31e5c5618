"""``edgesnn run RECIPE``: every stage of a recipe, in order, into one output folder.

Stages: train, quantize (if the recipe compresses), one export per target (each verified), one
profile per (export, board). DIR/manifest.json lists every artifact (path relative to DIR, sha256,
stage), each stage's key (a hash of its settings and its inputs' hashes) and the tool versions. A
stage whose key is unchanged and whose files are all present with their recorded hashes is
skipped.

A run killed at any point (any signal, power loss) leaves in DIR only complete files the manifest
lists. Each stage is built in a work folder beside DIR (``.DIR.edgesnn-work``, same file system;
``DIR/.edgesnn-work`` when DIR is a mount point, e.g. an SD card, which no rename can reach from beside it)
and committed in three steps: its old files leave the manifest, then DIR (renamed out, never
deleted in place); its new files enter the manifest (atomic replace); then its output is renamed
into DIR. A kill between the last two leaves listed files missing, which the next run redoes.
Artifacts name each other by relative paths, so DIR can be moved and its files do not depend on
where it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

from edgesnn import pipeline, targets, threads, verdict
from edgesnn.errors import EdgesnnError
from edgesnn.files import output_lock, sha256_file, user_entries, work_folder
from edgesnn.limits import read_json
from edgesnn.progress import step
from edgesnn.models.custom import Trust, is_factory, make_model, named_code, require_trust, trusts
from edgesnn.recipes import Recipe

MANIFEST = "manifest.json"
# test samples a target's verify runs in a run (Target.run_samples: Lava's simulation is slow); the others: all
VERIFY_SAMPLES = {t.name: t.run_samples for t in targets.all_targets() if t.run_samples}
TOOLS = ("edgesnn", "torch", "numpy", "brevitas", "onnx", "onnxruntime", "ai-edge-litert", "tflite-micro",
         "apache-tvm", "lava-nc")


def run_recipe(recipe: Recipe, out: Path, on_stage=None, trust_code: Trust = False) -> dict:
    """Run (or skip) each stage; returns the manifest, with a ``summary`` list: per export its
    verify result (``mismatches``, ``samples`` compared, ``accuracy`` on them, ``passed`` at verify's
    default --min-agreement) and ``bytes`` in flash (:func:`flash_bytes`, ``bytes_counted`` says how);
    per profile the fit and energies. Progress: one step, advanced per stage (edgesnn.progress).

    ``on_stage(name, skipped)`` is called as each stage starts. ``trust_code``: True, or the names
    the user gave (``--model``, ``--neuron-map``): a recipe naming other user code is refused before
    anything is written. The run's own MCU projects are built without it (the run wrote them)."""
    out = Path(out)
    for name in _imported_names(recipe, trust_code):
        require_trust(name, trust_code, f"recipe {recipe.name!r}: model", model_option=True)
    not_a_run = f"{out}: not an edgesnn run folder (no {MANIFEST}) and not empty; choose a new or empty folder for --out"
    if out.exists() and not out.is_dir():
        raise EdgesnnError(not_a_run)
    with output_lock(out, "run"):  # one run per folder: a second would delete this one's work folder
        old = _read_manifest(out)
        if not old and user_entries(out):
            raise EdgesnnError(not_a_run)
        work = work_folder(out, "edgesnn-work")  # beside DIR; inside it when DIR is a mount point
        try:
            with threads.pinned(recipe.threads), step(f"run {recipe.name}", total=len(stage_names(recipe))) as bar:
                return _Run(recipe, out, work, old, on_stage, trust_code, bar).all()
        finally:
            shutil.rmtree(work, ignore_errors=True)


def stage_names(recipe: Recipe) -> list[str]:
    """The recipe's stages, in the order they run."""
    return (["train"] + (["quantize"] if recipe.quantize else []) + [f"export:{e.folder()}" for e in recipe.export]
            + [p.stage() for p in recipe.profile])


def _imported_names(recipe: Recipe, trust_code: Trust) -> list[str]:
    """What the recipe's model would import. A neuron-map key such as ``head.lif`` is a class path
    or a layer of the model, which imports nothing; telling which takes building the model, done
    only when its factory is trusted anyway: on the meta device (no weights allocated), or for real
    when the factory cannot build there (snnTorch's neurons read tensor values as they build)."""
    m = recipe.model
    names = named_code(m.name, m.neuron_map)
    if len(names) < 2 or not is_factory(m.name) or not trusts(trust_code, m.name):
        return names
    import torch

    from edgesnn import data, models

    ds = data.load(recipe.data, arrays=True)
    kwargs = {**models.default_kwargs(m.name, ds.in_shape, ds.num_classes, m.D, trust_code), **m.kwargs}
    where = f"recipe {recipe.name!r}: model"
    try:
        with torch.device("meta"):
            model = make_model(m.name, kwargs, trust_code, where)  # as the factory builds it, no neuron mapped
    except EdgesnnError:
        raise
    except Exception:  # noqa: BLE001 - a factory that cannot build on the meta device (make_model re-raises it)
        model = make_model(m.name, kwargs, trust_code, where)
    layers = dict(model.named_modules())
    return [n for n in names if n not in layers]


class _Run:
    def __init__(self, recipe: Recipe, out: Path, work: Path, old: dict, on_stage, trust_code: Trust = False,
                 bar=None):
        self.recipe, self.out, self.work, self.on_stage, self.bar = recipe, out, work, on_stage, bar
        self.trust = trust_code
        self.manifest = {"recipe": recipe.model_dump(), "versions": _versions(),
                         "stages": dict(old.get("stages", {})), "artifacts": list(old.get("artifacts", []))}
        self.count = 0

    def all(self) -> dict:
        recipe, out = self.recipe, self.out
        summary = []
        m = recipe.model
        n = threads.current()  # the recipe's pin, else --threads / EDGESNN_THREADS: another count trains another
        pin = {} if n == 1 else {"threads": n}  # model, so it is in the keys (1, the default, keeps the keys as they were)
        model_key = m.model_dump(exclude=set() if m.weights else {"weights", "strip_prefix"})  # none: the keys as they were
        self.stage("train", recipe.train.model_dump() | {"model": model_key, "data": recipe.data} | pin,
                   [Path(m.weights)] if m.weights else [], "checkpoint",  # the weights file's sha256 is in the key
                   lambda dst: pipeline.train_model(m.name, recipe.data, recipe.train.epochs, dst, D=m.D, lr=recipe.train.lr,
                                                    seed=recipe.train.seed, model_kwargs=m.kwargs, neuron_map=m.neuron_map,
                                                    weights=m.weights, strip_prefix=tuple(m.strip_prefix)))
        source = "checkpoint"
        if recipe.quantize:
            from edgesnn.quantize import quantize_checkpoint

            q = recipe.quantize
            self.stage("quantize", q.key() | pin, [out / "checkpoint"], "compressed", lambda dst: quantize_checkpoint(
                out / "checkpoint", q.method, dst, q.options(seed=recipe.train.seed),
                trust_code=self.trust, source_ref="../checkpoint"))  # relative: the same bytes in any DIR
            source = "compressed"
        for e in recipe.export:
            folder = e.folder()

            def export_and_verify(dst: Path, e=e) -> None:
                t = targets.get(e.target)
                path = pipeline.export_model(out / source, e.target, dst, source_ref=f"../{source}",
                                             trust_code=self.trust, **e.target_options())
                # a build (an MCU project's Makefile) is the one this stage just wrote; checkpoints keep the run's trust
                r = verdict.judge(pipeline.verify(path, recipe.data, ckpt=out / source, samples=t.run_samples,
                                                  trust_code=True if t.builds_code else self.trust))
                for scratch in t.scratch:  # e.g. the MCU verify's compiler output: not an artifact
                    shutil.rmtree(dst / scratch, ignore_errors=True)
                _write_json(dst / "verify.json", self.relative(r, dst.parent))

            name = f"export:{folder}"
            settings = e.key()  # an option set "when-set" is in the key only when given: the keys as they were
            self.stage(name, settings, [out / source], folder, export_and_verify)
            verified = read_json(out / folder / "verify.json", "verify result")
            nbytes, counted = flash_bytes(out / folder, e.target)
            summary.append({"export": folder, "mismatches": verified["mismatches"], "samples": verified["samples"],
                            "accuracy": verified.get("accuracy", verified.get("ir_accuracy")),
                            "passed": verified.get("passed"), "bytes": nbytes, "bytes_counted": counted})
        for p in recipe.profile:
            target = next(e for e in recipe.export if e.folder() == p.export)
            report = p.file()

            def do_profile(dst: Path, p=p, target=target) -> None:
                from edgesnn.profile import profile

                copy = dst.parent / "inputs"  # profiling an MCU project builds it: never inside DIR
                shutil.copytree(out / p.export, copy / p.export)
                r = profile(targets.get(target.target).path_in(copy / p.export), p.board, recipe.data,
                            trust_code=True)  # this run's own export (an MCU project's Makefile is edgesnn's)
                _write_json(dst, self.relative(r, copy))

            name = p.stage()
            self.stage(name, p.model_dump(), [out / p.export], report, do_profile)
            r = read_json(out / report, "profile result")
            summary.append({"export": p.export, "board": p.board, "fits": r["fits"],
                            "energy_45nm_pj": r["energy_45nm_pj"], "energy_board_pj": r["energy_board_pj"]})
        self.forget_all_but(stage_names(recipe))
        self.manifest["summary"] = summary
        self.save()
        return self.manifest

    def stage(self, name: str, settings: dict, inputs: list[Path], output: str, produce) -> None:
        """Skip the stage, or ``produce(path)`` its ``output`` (a folder or file name in DIR) in the work folder."""
        key = _hash_json({"settings": settings, "inputs": [sha256_file(p) for p in _files(inputs)]})
        entries = [a for a in self.manifest["artifacts"] if a["stage"] == name]
        intact = bool(entries) and all(self.intact(a) for a in entries)
        skipped = self.manifest["stages"].get(name) == key and intact
        if self.on_stage:
            self.on_stage(name, skipped)
        if self.bar is not None:
            self.bar.advance(int(skipped), info=f"{'skipped' if skipped else 'running'} {name}")
        if skipped:
            return
        self.record(name, None, [])
        self.discard(self.out / output)
        self.count += 1
        dst = self.work / f"stage-{self.count}"
        dst.mkdir()
        produce(dst / output)
        self.record(name, key, [{"path": f.relative_to(dst).as_posix(), "sha256": sha256_file(f), "stage": name}
                                for f in _files([dst / output])])
        os.replace(dst / output, self.out / output)
        if self.bar is not None:
            self.bar.advance()

    def record(self, name: str, key: str | None, entries: list[dict]) -> None:
        self.manifest["artifacts"] = [a for a in self.manifest["artifacts"] if a["stage"] != name] + entries
        if key is None:
            self.manifest["stages"].pop(name, None)
        else:
            self.manifest["stages"][name] = key
        self.save()

    def forget_all_but(self, stages: list[str]) -> None:
        """Drop what stages no longer in the recipe left (their manifest entries first, then files)."""
        stale = [a for a in self.manifest["artifacts"] if a["stage"] not in stages]
        kept = {a["path"] for a in self.manifest["artifacts"] if a["stage"] in stages}
        for name in {a["stage"] for a in stale} | (set(self.manifest["stages"]) - set(stages)):
            self.record(name, None, [])
        in_use = {Path(p).parts[0] for p in kept}  # what current stages wrote: a stale entry never deletes it
        for a in stale:
            top = Path(a["path"]).parts[0]
            if top not in in_use:
                self.discard(self.out / top)
            elif a["path"] not in kept:
                self.discard(self.out / a["path"])

    def discard(self, path: Path) -> None:
        """Move ``path`` out of DIR in one rename, then delete it there."""
        if path.is_symlink() or path.exists():
            self.count += 1
            trash = self.work / f"discard-{self.count}"
            os.replace(path, trash)
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash)
            else:
                trash.unlink()

    def intact(self, a: dict) -> bool:
        f = self.out / a["path"]
        return f.is_file() and not f.is_symlink() and sha256_file(f) == a["sha256"]

    def save(self) -> None:
        """manifest.json replaced in one rename from the work folder (no temporary file in DIR)."""
        tmp = self.work / MANIFEST
        tmp.write_text(json.dumps(self.manifest, indent=2) + "\n")
        os.replace(tmp, self.out / MANIFEST)

    def relative(self, obj, staged: Path):
        """Paths in a report, relative to DIR: the staged copy stands for DIR itself."""
        roots = sorted({str(staged), str(staged.resolve()), str(self.out), str(self.out.resolve())}, key=len, reverse=True)

        def fix(v):
            if isinstance(v, dict):
                return {k: fix(x) for k, x in v.items()}
            if isinstance(v, list):
                return [fix(x) for x in v]
            if isinstance(v, str):
                for root in roots:
                    if v == root:
                        return "."
                    if v.startswith(root + os.sep):
                        return v[len(root) + 1:]
            return v

        return fix(obj)


def flash_bytes(folder: Path, target: str) -> tuple[int, str]:
    """What an export puts in a device's flash, and how it was counted (:meth:`edgesnn.targets.Target.flash_bytes`):
    the file where the file is what is deployed (.tflite, .onnx, .nir), the model constants where code is built
    around them (the IR's weights, biases and requantization parameters; an MCU project's constant arrays; Loihi
    2's synaptic memory). Never the folder's size on disk (sources, the IR beside a file, reports)."""
    return targets.get(target).flash_bytes(Path(folder))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")  # inside a stage's work folder: committed by rename


def _files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            out.append(p)
    return out


def _hash_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _read_manifest(out: Path) -> dict:
    """The previous run's manifest; one that is unreadable or lists paths outside DIR is refused."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        m = read_json(path, "run manifest")  # size and nesting bounded
        ok = isinstance(m, dict) and isinstance(m.get("artifacts"), list) and isinstance(m.get("stages"), dict)
        ok = ok and all(isinstance(a, dict) and {"path", "sha256", "stage"} <= set(a) and _safe(a["path"])
                        and isinstance(a["sha256"], str) and isinstance(a["stage"], str) for a in m["artifacts"])
        ok = ok and all(isinstance(k, str) and isinstance(v, str) for k, v in m["stages"].items())
    except (EdgesnnError, TypeError):
        ok = False
    if not ok:
        raise EdgesnnError(f"{path}: not a manifest edgesnn wrote (or it names paths outside {out}); "
                           "remove it or choose another --out")
    return m


def _safe(rel) -> bool:
    """A manifest path: relative, inside DIR, no '..', no hidden first part."""
    parts = Path(rel).parts if isinstance(rel, str) else ()
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts and not parts[0].startswith(".")


def _versions() -> dict:
    found = {}
    for tool in TOOLS:
        try:
            found[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            found[tool] = None
    return found
