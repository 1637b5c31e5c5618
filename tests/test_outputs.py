"""Outputs that never lose data (edgesnn/files.py): a folder is replaced by swapping the new one in
before the old one is deleted, on a mount point by swapping its entries; a kill at any moment leaves
either a valid folder or one that is refused and finished by the next command; two writers of one
output: the second is refused; a full or read-only disk is one line. Also: tampered project.json,
lava.json and loihi2.json are refused, and a stale manifest entry never deletes a fresh stage."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesnn import files, pipeline
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError

NAMES = [f"f{i:02d}.c" for i in range(20)]


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(r, fragment: str) -> None:
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


def write_version(folder: Path, version: int, marker: str = "m.json") -> None:
    for name in NAMES:
        (folder / name).write_text(str(version))
    (folder / marker).write_text(str(version))


def version_of(folder: Path, marker: str = "m.json") -> int:
    """The version a valid folder holds; fails if it holds its marker but is not complete and consistent."""
    version = (folder / marker).read_text()
    assert sorted(files.user_entries(folder)) == sorted([*NAMES, marker]), sorted(os.listdir(folder))
    assert all((folder / n).read_text() == version for n in NAMES), "a folder with its marker mixes versions"
    return int(version)


def leftovers(parent: Path) -> list[str]:
    return sorted(e for e in os.listdir(parent) if e.startswith("."))


# ---------------------------------------------------------------- replacing a folder

def test_a_folder_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    out = tmp_path / "out"
    for version in (1, 2):
        with files.atomic_dir(out, "m.json") as tmp:
            assert tmp.parent == tmp_path  # built beside the output
            write_version(tmp, version)
    assert version_of(out) == 2
    with pytest.raises(RuntimeError):
        with files.atomic_dir(out, "m.json") as tmp:
            write_version(tmp, 3)
            raise RuntimeError("the export failed")
    assert version_of(out) == 2 and leftovers(tmp_path) == []


def test_without_rename_exchange_the_old_folder_is_renamed_aside_then_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "exchange", _fails(errno.ENOSYS))
    out = tmp_path / "out"
    for version in (1, 2):
        with files.atomic_dir(out, "m.json") as tmp:
            write_version(tmp, version)
    assert version_of(out) == 2 and leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EXDEV])
def test_where_no_rename_reaches_the_folder_its_entries_are_swapped_inside_it(tmp_path, monkeypatch, code):
    """A mount point (EBUSY) or a bind mount (EXDEV): nothing is deleted before the fallback."""
    out = tmp_path / "out"
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 1)
    monkeypatch.setattr(files, "exchange", _fails(code))
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 2)
    assert version_of(out) == 2 and leftovers(tmp_path) == [] and leftovers(out) == []


def test_a_second_rename_that_fails_puts_the_old_folder_back_first(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 1)
    monkeypatch.setattr(files, "exchange", _fails(errno.ENOSYS))
    rename = os.rename

    def second_fails(src, dst):
        if Path(dst) == out and Path(src).name.startswith(".out.edgesnn-new-"):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", second_fails)
    with files.atomic_dir(out, "m.json") as tmp:  # the old folder goes back, then the swap inside it
        write_version(tmp, 2)
    assert version_of(out) == 2 and leftovers(tmp_path) == [] and leftovers(out) == []


def _fails(code):
    def exchange(a, b):
        raise OSError(code, os.strerror(code))

    return exchange


def test_leftovers_of_a_killed_command_are_cleaned_by_the_next_one(tmp_path):
    out = tmp_path / "out"
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 1)
    for junk in (".out.edgesnn-new-x1", ".out.edgesnn-old-x2", ".out.k3j_9ab2"):  # the last: an earlier version's
        (tmp_path / junk / "half").mkdir(parents=True)
    (out / ".model.ir.abc123de.edgesnn-tmp").write_text("half a file")
    (out / files.NEW).mkdir()
    (tmp_path / ".other.k3j_9ab2").mkdir()  # another output's: not touched
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 2)
    assert version_of(out) == 2 and leftovers(out) == [] and leftovers(tmp_path) == [".other.k3j_9ab2"]
    shared = tmp_path / "shared"  # a folder of the user's that an export writes a file into
    shared.mkdir()
    (shared / ".model.ir.abc123de.edgesnn-tmp").write_text("half a file")
    (shared / ".theirs.abc123de.tmp").write_text("another program's")
    with files.output_lock(shared):
        pass
    assert leftovers(shared) == [".theirs.abc123de.tmp"]


def test_an_output_renamed_aside_by_a_killed_swap_is_put_back(tmp_path):
    aside = tmp_path / ".out.edgesnn-old-1234"
    aside.mkdir()
    write_version(aside, 1)
    with files.output_lock(tmp_path / "out") as real:
        assert version_of(real) == 1
    assert leftovers(tmp_path) == []


def test_a_folder_with_other_files_is_refused_and_an_interrupted_swap_is_not(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(EdgesnnError, match="a folder that edgesnn did not write"):
        with files.atomic_dir(mine, "m.json"):
            pytest.fail("entered")
    assert os.listdir(mine) == ["notes.txt"]
    work_only = tmp_path / "work-only"  # only what a killed command left: still edgesnn's
    (work_only / files.NEW).mkdir(parents=True)
    with files.atomic_dir(work_only, "m.json") as tmp:
        write_version(tmp, 1)
    assert version_of(work_only) == 1


# ---------------------------------------------------------------- killed at random points

CHILD = """
import os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from edgesnn import files
mode, out = sys.argv[1], Path(sys.argv[2])
if mode == "inside":
    files._renames_in_place = lambda real: False
if mode == "two-renames":
    def exchange(a, b):
        raise OSError(38, "no exchange")
    files.exchange = exchange
names = [f"f{{i:02d}}.c" for i in range(20)]
version = 0
while True:
    version += 1
    if mode == "pair":
        with files.atomic_files(out, ("a.tflite", "model.ir")) as tmp:
            (tmp / "a.tflite").write_text(str(version))
            (tmp / "model.ir").write_text(str(version))
    else:
        with files.atomic_dir(out, "m.json") as tmp:
            for n in names:
                (tmp / n).write_text(str(version))
            (tmp / "m.json").write_text(str(version))
    if version == 1:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("mode", ["beside", "two-renames", "inside", "pair"])
def test_killed_at_random_points_a_folder_is_valid_or_refused_and_the_next_command_finishes(tmp_path, mode):
    """SIGKILL while a folder is replaced over and over: a folder holding its marker is always complete
    and of one version (never half-deleted); a half-swapped one is refused by readers; the next command
    cleans every leftover. ``pair``: a .tflite and its model.ir beside the user's own file."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).resolve().parents[1])))
    out = tmp_path / "out"
    out.mkdir()
    if mode == "pair":
        (out / "notes.txt").write_text("precious")
    rng = random.Random(mode)
    for _ in range(12):
        p = subprocess.Popen([sys.executable, str(script), mode, str(out)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.05))  # a random point of its loop
        p.kill()
        p.wait()
        _check_after_kill(out, mode)
        if mode == "pair":
            with files.atomic_files(out, ("a.tflite", "model.ir")) as tmp:  # the next command
                (tmp / "a.tflite").write_text("0")
                (tmp / "model.ir").write_text("0")
            assert (out / "notes.txt").read_text() == "precious"
        else:
            with files.atomic_dir(out, "m.json") as tmp:  # the next command
                write_version(tmp, 0)
            assert version_of(out) == 0
        assert leftovers(tmp_path) == [] and leftovers(out) == []


def _check_after_kill(out: Path, mode: str) -> None:
    if mode == "pair":
        assert (out / "notes.txt").read_text() == "precious"
        if (out / files.SWAP).is_file():
            with pytest.raises(EdgesnnError, match="stopped while replacing its files"):
                files.check_not_interrupted(out)
        else:
            assert (out / "a.tflite").read_text() == (out / "model.ir").read_text()
        return
    if not out.exists():  # only between two renames: the old folder is whole beside it
        assert mode == "two-renames"
        (aside,) = out.parent.glob(".out.edgesnn-old-*")
        version_of(aside)
    elif (out / "m.json").is_file():
        version_of(out)
    else:
        assert mode == "inside" and (out / files.SWAP).is_file(), sorted(os.listdir(out))


# ---------------------------------------------------------------- one writer per output

def test_a_second_writer_of_an_output_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    with files.atomic_dir(out, "m.json") as tmp:
        write_version(tmp, 1)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # another process's lock, as output_lock takes it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(EdgesnnError, match="another edgesnn command is writing to this folder"):
            with files.atomic_dir(out, "m.json") as tmp:
                pytest.fail("entered")
        r = edgesnn("export", tmp_path / "any-checkpoint", "--target", "mcu", "--board", "nucleo-f446re", "--out", out)
        one_error_line(r, f"{out}: another edgesnn command is writing to this folder")
    finally:
        os.close(fd)
    assert version_of(out) == 1 and leftovers(tmp_path) == []


def test_two_concurrent_mcu_exports_into_one_folder(trained, tmp_path):
    """Each ends with status 0, or 1 and the one-line refusal; the folder is one whole project."""
    out = tmp_path / "mcu"
    cmd = [sys.executable, "-m", "edgesnn", "export", str(trained["mlp"]), "--target", "mcu", "--board",
           "nucleo-f446re", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, stderr in results:
        assert "Traceback" not in stderr
        assert code == 0 or (code == 1 and stderr.strip().splitlines() == [
            f"error: {out}: another edgesnn command is writing to this folder; wait for it to end, or choose another --out"])
    assert 0 in [code for code, _ in results]
    assert json.loads((out / "project.json").read_text())["board"] == "nucleo-f446re"
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- .tflite / .nir with their model.ir

def test_a_tflite_and_its_ir_are_one_commit_and_the_users_files_stay(trained, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    pipeline.export_model(trained["mlp"], "tflite", out)
    first = (out / "model.tflite").read_bytes()
    pipeline.export_model(trained["cnn"], "tflite", out)
    assert (out / "notes.txt").read_text() == "precious" and (out / "model.tflite").read_bytes() != first
    assert sorted(os.listdir(out)) == ["model.ir", "model.tflite", "notes.txt"]
    (out / files.SWAP).write_text('{"whole": false, "marker": null}\n')  # as a swap killed midway leaves it
    with pytest.raises(EdgesnnError, match="stopped while replacing its files"):
        pipeline.verify(out / "model.tflite", "digits")


def test_a_failed_nir_export_leaves_the_previous_pair(trained, tmp_path, monkeypatch):
    out = tmp_path / "nir"
    pipeline.export_model(trained["mlp"], "nir", out)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def save_fails(graph, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from edgesnn.ir import graph as g

    monkeypatch.setattr(g.Graph, "save", save_fails)  # the second file of the pair cannot be written
    with pytest.raises(EdgesnnError, match=r"nir: cannot write \(No space left on device\)"):
        pipeline.export_model(trained["cnn"], "nir", out)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before and leftovers(tmp_path) == []


# ---------------------------------------------------------------- errors of the file system

def test_write_errors_are_one_line_and_other_errors_are_not_hidden(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(EdgesnnError, match=r"x.bin: cannot write \(No space left on device\)"):
        with files.atomic_path(tmp_path / "x.bin"):
            full()
    with pytest.raises(EdgesnnError, match=r"out: cannot write \(No space left on device\)"):
        with files.atomic_dir(tmp_path / "out", "m.json"):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(FileNotFoundError):  # reading an input is not a write error
        with files.atomic_dir(tmp_path / "out", "m.json"):
            open(tmp_path / "no-such-input")
    monkeypatch.setattr(files.tempfile, "mkstemp", lambda **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "x")))
    with pytest.raises(EdgesnnError, match=r"y.bin: cannot write \(Permission denied\)"):
        files.write_bytes(tmp_path / "y.bin", b"data")
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == []


MOUNTED = """
import json, os, sys
from pathlib import Path
from typer.testing import CliRunner
from edgesnn.cli import app
root, ckpt = Path(sys.argv[1]), sys.argv[2]
results = {}
def run(name, *args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    results[name] = [r.exit_code, r.stderr.strip().splitlines(), repr(r.exception)]
card, link = root / "card", root / "link-to-card"
run("lava-1", "export", ckpt, "--target", "lava", "--out", card)
first = (card / "model.ir").read_bytes()
run("lava-2", "export", ckpt, "--target", "lava", "--lava-mode", "rate-burst", "--out", card)
results["lava-mode"] = json.loads((card / "lava.json").read_text())["mode"]
results["card"] = sorted(os.listdir(card))
run("verify", "verify", card, "--samples", "2")
run("lava-link", "export", ckpt, "--target", "lava", "--out", link)
results["link"] = [os.path.islink(link), sorted(os.listdir(link))]
run("bind", "export", ckpt, "--target", "lava", "--out", root / "bound")
results["bound"] = sorted(os.listdir(root / "bound"))
run("run", "run", root / "tiny.yaml", "--out", root / "runcard")
run("run-again", "run", root / "tiny.yaml", "--out", root / "runcard")
results["runcard"] = sorted(os.listdir(root / "runcard"))
run("read-only", "export", ckpt, "--target", "ir", "--out", root / "ro" / "x")
run("full-lava", "export", ckpt, "--target", "lava", "--out", root / "full" / "lava")
run("full-train", "train", "--model", "mlp", "--epochs", "1", "--out", root / "full" / "ck")
results["full"] = sorted(os.listdir(root / "full"))
results["root"] = sorted(e for e in os.listdir(root) if e.startswith("."))
print(json.dumps(results))
"""

TINY = """name: tiny
data: digits
model: {name: mlp, D: 4, kwargs: {hidden: [16]}}
train: {epochs: 1}
export:
  - {target: ir}
"""


def test_on_real_mount_points_outputs_are_replaced_and_disk_errors_are_one_line(trained, tmp_path):
    """A tmpfs mounted at --out (an SD card), a symlink to it, a bind mount, a read-only and a full
    file system, in a mount namespace of their own (root, unshare); skipped where that is impossible."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (root) for real mount points")
    for d in ("card", "bound", "bound-src", "runcard", "ro", "full"):
        (tmp_path / d).mkdir()
    (tmp_path / "link-to-card").symlink_to(tmp_path / "card")
    (tmp_path / "tiny.yaml").write_text(TINY)
    script = tmp_path / "mounted.py"
    script.write_text(MOUNTED)
    t = tmp_path
    shell = textwrap.dedent(f"""
        set -e
        mount --make-rprivate /
        mount -t tmpfs none {t}/card
        mount -t tmpfs none {t}/runcard
        mount --bind {t}/bound-src {t}/bound
        mount -t tmpfs -o ro none {t}/ro
        mount -t tmpfs -o size=16k none {t}/full
        exec {sys.executable} {script} {t} {trained['mlp']}
    """)
    r = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode and "mount" in r.stderr and "permission denied" in r.stderr.lower():
        pytest.skip(f"cannot mount here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for name in ("lava-1", "lava-2", "verify", "lava-link", "bind", "run", "run-again"):
        assert res[name][0] == 0, (name, res[name])
    assert res["lava-mode"] == "rate-burst"
    assert res["card"] == ["lava.json", "loihi2.json", "model.ir", "model.net"]
    assert res["link"] == [True, ["lava.json", "loihi2.json", "model.ir", "model.net"]]
    assert res["bound"] == ["lava.json", "loihi2.json", "model.ir", "model.net"]
    assert res["runcard"] == ["checkpoint", "ir", "manifest.json"]
    for name, fragment in (("read-only", "x: cannot write (Read-only file system)"),
                           ("full-lava", "full/lava/model.ir: cannot write (No space left on device)"),
                           ("full-train", "full/ck: cannot write (No space left on device)")):
        code, lines, _ = res[name]
        assert code == 1 and lines[-1].startswith("error: ") and fragment in lines[-1], (name, res[name])
        assert sum(line.startswith("error") for line in lines) == 1
    assert res["full"] == [] and res["root"] == []


# ---------------------------------------------------------------- tampered artifact JSON

@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("tamper")
    return {"lava": pipeline.export_model(trained["mlp"], "lava", root / "lava"),
            "mcu": pipeline.export_model(trained["mlp"], "mcu", root / "mcu", board="nucleo-f446re")}


def _tampered(exported, tmp_path, target: str, name: str, edit) -> Path:
    dst = tmp_path / target
    shutil.copytree(exported[target], dst)
    data = json.loads((dst / name).read_text())
    edit(data)
    (dst / name).write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("command,target,name,edit,fragment", [
    ("profile", "lava", "loihi2.json", lambda d: d.update(cores=-5),
     "loihi2.json: invalid Loihi 2 report: cores: Input should be greater than or equal to 0 (got -5)"),
    ("profile", "lava", "loihi2.json", lambda d: d.update(neurons="many"), "invalid Loihi 2 report: neurons"),
    ("profile", "lava", "loihi2.json", lambda d: d.update(energy_uj_per_inference=True), "energy_uj_per_inference"),
    ("verify", "lava", "lava.json", lambda d: d.update(mode=["graded"]), "invalid Lava network file: mode"),
    ("verify", "mcu", "project.json", lambda d: d["kernels"][0].pop("event_driven"),
     "project.json: invalid MCU project file: kernels[0].event_driven: Field required"),
    ("profile", "mcu", "project.json", lambda d: d.update(kind="arm"), "invalid MCU project file: kind"),
    ("profile", "mcu", "project.json", lambda d: d.update(arena_bytes=-1), "arena_bytes: Input should be greater"),
    ("verify", "mcu", "project.json", lambda d: d.update(qemu_machine=5), "qemu_machine"),
    ("verify", "mcu", "project.json", lambda d: d.pop("board"), "not an edgesnn MCU project file (no 'board')"),
])
def test_tampered_artifact_json_is_refused_in_one_line(exported, tmp_path, command, target, name, edit, fragment):
    folder = _tampered(exported, tmp_path, target, name, edit)
    extra = ["--board", "loihi2" if target == "lava" else "nucleo-f446re"] if command == "profile" else ["--samples", 1]
    one_error_line(edgesnn(command, folder, *extra), fragment)


# ---------------------------------------------------------------- run: a stale manifest entry

def test_a_stale_manifest_entry_never_deletes_a_fresh_stage(tmp_path):
    """An entry of a stage no longer in the recipe (an edited recipe, an older edgesnn) that names a file
    of a current stage: the entry goes, the current stage's files stay listed and present."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "out"
    assert edgesnn("run", recipe, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
    manifest["artifacts"].append({"path": "ir/model.ir", "sha256": "0" * 64, "stage": "export:gone"})
    manifest["artifacts"].append({"path": "ir/old-notes.txt", "sha256": "0" * 64, "stage": "export:gone"})
    manifest["stages"]["export:gone"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "ir" / "old-notes.txt").write_text("from the gone stage")
    r = edgesnn("run", recipe, "--out", out)
    assert r.exit_code == 0, r.output
    after = json.loads((out / "manifest.json").read_text())
    assert {a["path"]: a["sha256"] for a in after["artifacts"]} == listed and "export:gone" not in after["stages"]
    assert (out / "ir" / "model.ir").is_file() and not (out / "ir" / "old-notes.txt").exists()
    assert files.sha256_file(out / "ir" / "model.ir") == listed["ir/model.ir"]
