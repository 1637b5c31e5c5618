"""Atomic file writes: a failed write leaves nothing behind and an existing file untouched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgesnn.errors import EdgesnnError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same file system) that replaces ``path`` if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise EdgesnnError(f"{path}: is a folder, not a file path")
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, marker: str) -> Iterator[Path]:
    """A temporary sibling folder that replaces the folder ``path`` if the block succeeds.

    Only a folder of the same kind is replaced: an existing, non-empty ``path`` without the
    ``marker`` file every such folder holds is refused, so a mistyped --out never deletes a folder
    of the user's."""
    path = replaceable_dir(path, marker)
    _make_parent(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replaceable_dir(path: str | Path, marker: str) -> Path:
    """``path`` if a folder there may be (re)written: absent, empty, or holding ``marker`` (see atomic_dir).
    Commands call it before long work, so a bad --out fails at once."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgesnnError(f"{path}: exists and is not a folder")
    if path.is_dir() and not (path / marker).is_file() and any(path.iterdir()):
        raise EdgesnnError(f"{path}: a folder that edgesnn did not write (no {marker}) and not empty; "
                           "choose a new or empty folder for --out")
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_artifact_json(path: str | Path, required: tuple[str, ...], what: str) -> dict:
    """A JSON file an export wrote (project.json, lava.json, loihi2.json) with its ``required`` keys:
    a missing, unreadable or damaged file is one line for the user, not a traceback."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EdgesnnError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgesnnError(f"{path}: damaged {what}, not JSON ({e}); export it again") from None
    missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise EdgesnnError(f"{path}: not an edgesnn {what} (no {', '.join(map(repr, missing))}); export it again")
    return obj


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (manifests, provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _make_parent(path: Path) -> None:
    """The folder ``path`` goes in; a file in the way is the user's error, not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EdgesnnError(f"{path}: cannot be written, a file is in the way of its folder {path.parent}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
