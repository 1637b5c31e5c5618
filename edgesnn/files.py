"""Outputs that never lose data, and the JSON files exports write.

A file (:func:`atomic_path`) is written beside its path and renamed over it.

A folder (:func:`atomic_dir`; :func:`atomic_files` for some files of a folder, committed together)
is built in a work folder and committed so that the old output is never deleted before the new one
is in place:

- beside the output (``.NAME.edgesnn-new-*``, same file system): swapped with it in one
  ``renameat2(RENAME_EXCHANGE)`` (on a file system without it: the old folder renamed aside to
  ``.NAME.edgesnn-old-*``, the new one renamed in), then the old folder is deleted under its work name;
- where no rename can replace the folder (a mount point such as an SD card, a bind mount, a parent
  folder that cannot be written): built inside it (``.edgesnn-new``), then its entries are swapped:
  the old ones move into ``.edgesnn-old`` (the marker file first), the new ones move in (the marker
  last), and ``.edgesnn-old`` is deleted. ``.edgesnn-swap`` records the swap while it runs: a swap
  stopped by a kill is finished by the next command on that output, and until then readers refuse
  the folder (:func:`check_not_interrupted`); a half-swapped folder never holds its marker.

Every writer of a folder output holds :func:`output_lock` (a flock on the folder), so a second command
on the same output is refused with one line; the holder first cleans what a killed command left there.
Errors of the file system while writing (full disk, read-only, permission denied) are one line naming
the output.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import errno
import fcntl
import hashlib
import inspect
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.limits import read_json

NEW, OLD, READY, MOVING, SWAP = ".edgesnn-new", ".edgesnn-old", ".edgesnn-ready", ".edgesnn-moving", ".edgesnn-swap"
_TMP_SUFFIX = ".edgesnn-tmp"
_TMP_FILE = re.compile(r"\..+\.[a-z0-9_]{8}\.edgesnn-tmp")  # atomic_path's name for a file being written
# errors that mean "this output cannot be written", wherever a library reports them
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
_held: dict[str, list[int]] = {}  # output folder -> the locked descriptors this process holds (output_lock)
_made: set[str] = set()  # output folders this process made (no one can be working inside them)
_staged: dict[Path, Path] = {}  # work folder -> the output it becomes: messages name the output


# ---------------------------------------------------------------- files

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same file system) that replaces ``path`` if the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise EdgesnnError(f"{path}: is a folder, not a file path")
    _make_parent(path)
    with _writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        os.close(fd)
    try:
        with _writing(path, body=True):
            yield Path(tmp)
        with _writing(path):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def dumps_json(obj, where) -> str:
    """JSON text of ``obj``; NaN or Infinity (which JSON cannot hold) is an error naming its key."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError:
        key, value = _non_finite(obj, "") or ("", "not finite")
        raise EdgesnnError(f"{where}: {key or 'the value'} is {value}, which JSON cannot hold; nothing written") from None


def _non_finite(obj, key: str):
    if isinstance(obj, float) and not math.isfinite(obj):
        return key, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


def write_json(path: str | Path, obj) -> None:
    """Atomic JSON write (temp file + rename); NaN or Infinity is refused before anything is written."""
    text = dumps_json(obj, path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# ---------------------------------------------------------------- folders

@contextlib.contextmanager
def atomic_dir(path: str | Path, marker: str) -> Iterator[Path]:
    """A work folder that replaces the folder ``path`` if the block succeeds (see the module docstring).

    Only a folder of the same kind is replaced: an existing, non-empty ``path`` without the
    ``marker`` file every such folder holds is refused, so a mistyped --out never deletes a folder
    of the user's."""
    path = replaceable_dir(path, marker)
    with output_lock(path) as real:
        replaceable_dir(path, marker)  # again: a stopped swap has been finished meanwhile
        with _commit(path, real, marker, names=None) as tmp:
            yield tmp


@contextlib.contextmanager
def atomic_files(path: str | Path, names: tuple[str, ...]) -> Iterator[Path]:
    """A work folder whose entries ``names`` replace those in the folder ``path`` together, if the block
    succeeds (a .tflite or .nir file and the model.ir it was written from).

    A folder this command made is replaced whole; an existing one (it may hold the user's files, or be
    a shell's current folder) gets the new entries by the recorded swap of the module docstring."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgesnnError(f"{path}: exists and is not a folder")
    with output_lock(path) as real:
        whole = str(real) in _made
        with _commit(path, real, marker=None, names=None if whole else names) as tmp:
            yield tmp


def replaceable_dir(path: str | Path, marker: str) -> Path:
    """``path`` if a folder there may be (re)written: absent, empty, or holding ``marker`` (see atomic_dir).
    Commands call it before long work, so a bad --out fails at once."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgesnnError(f"{path}: exists and is not a folder")
    if path.is_dir() and not (path / marker).is_file() and not (path / SWAP).is_file() and user_entries(path):
        raise EdgesnnError(f"{path}: a folder that edgesnn did not write (no {marker}) and not empty; "
                           "choose a new or empty folder for --out")
    return path


def user_entries(folder: Path) -> list[str]:
    """The entries of ``folder`` except edgesnn's own work entries (``.edgesnn-*``, files being written)."""
    return [e for e in os.listdir(folder) if not e.startswith(".edgesnn-") and not _TMP_FILE.fullmatch(e)]


def check_not_interrupted(folder: str | Path) -> None:
    """Refuse a folder whose entries a stopped command was swapping (some old, some new)."""
    if (Path(folder) / SWAP).is_file():
        raise EdgesnnError(f"{folder}: a command writing this folder was stopped while replacing its files; "
                           "run it again (the next export into the folder finishes the replacement)")


def work_folder(folder: Path, name: str) -> Path:
    """A fresh work folder whose entries can be renamed into ``folder``: beside it (``.FOLDER.NAME``), or
    inside it (``FOLDER/.NAME``) where it is a mount point or its parent cannot be written."""
    folder = Path(folder)
    beside, inside = folder.parent / f".{folder.name}.{name}", folder / f".{name}"
    with _writing(folder):
        for w in (beside, inside, folder / ".edgesnn-probe"):
            _remove(w)  # what a killed command left
        if _renames_in_place(folder):
            try:
                beside.mkdir()
                probe = beside / ".probe"
                probe.mkdir()
                os.rename(probe, folder / ".edgesnn-probe")  # EXDEV when ``folder`` is a bind mount
                os.rmdir(folder / ".edgesnn-probe")
                return beside
            except OSError:
                _remove(beside)
        inside.mkdir()
    return inside


# ---------------------------------------------------------------- one writer per output

def one_writer(fn):
    """``fn``'s ``out`` folder is locked (:func:`output_lock`) from start to end: a second command
    writing the same folder is refused at once, instead of racing this one to replace it."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with output_lock(signature.bind(*args, **kwargs).arguments["out"]):
            return fn(*args, **kwargs)

    return locked


@contextlib.contextmanager
def output_lock(path: str | Path, who: str = "command") -> Iterator[Path]:
    """Hold an exclusive flock on the folder ``path`` (made if absent; removed again if the block leaves
    it empty) and yield its real path. A second edgesnn process on the same output is refused with one
    line; the kernel drops the lock when the process dies, however it dies. The holder first cleans what
    a killed command left. Re-entrant within a process."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if str(real) in _held:
        yield real
        return
    if real.exists() and not real.is_dir():
        raise EdgesnnError(f"{path}: exists and is not a folder")
    _make_parent(real)
    _restore_aside(real)
    fd, created = _lock(path, real, who)
    _held[str(real)] = [fd]
    if created:
        _made.add(str(real))
    try:
        with _writing(path):
            _clean(real)
        yield real
    finally:
        fds = _held.pop(str(real))
        _made.discard(str(real))
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(real)  # only if empty: the command failed before writing anything
        for fd in fds:
            os.close(fd)


def _lock(path: Path, real: Path, who: str) -> tuple[int, bool]:
    """A descriptor of ``real`` holding its flock, and whether this call made the folder. The lock is
    retried when the folder was replaced (or removed) between open and flock."""
    for _ in range(100):
        made = None
        if not real.is_dir():
            with _writing(path):
                with contextlib.suppress(FileExistsError):
                    real.mkdir()
                    made = os.stat(real).st_ino
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EdgesnnError(f"{path}: another edgesnn {who} is writing to this folder; wait for it to end, "
                               "or choose another --out") from None
        mine = os.fstat(fd)
        try:
            now = os.stat(real)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd, made == mine.st_ino
        os.close(fd)
    raise EdgesnnError(f"{path}: the folder keeps being replaced by another program; try again")


def _restore_aside(real: Path) -> None:
    """A swap by two renames killed between them left the output renamed aside: put it back."""
    if os.path.lexists(real):
        return
    with contextlib.suppress(OSError):
        for old in sorted(real.parent.glob(f".{real.name}.edgesnn-old-*"), key=os.path.getmtime, reverse=True):
            os.rename(old, real)
            return


def _clean(real: Path) -> None:
    """What a killed command left for this output: work folders beside it, a swap inside it to finish,
    temporary files inside it."""
    legacy = re.compile(rf"\.{re.escape(real.name)}\.[a-z0-9_]{{8}}")  # earlier versions' mkdtemp names
    try:
        siblings = list(os.scandir(real.parent))
    except OSError:
        siblings = []
    for e in siblings:
        ours = e.name.startswith((f".{real.name}.edgesnn-new-", f".{real.name}.edgesnn-old-"))
        if ours or (legacy.fullmatch(e.name) and e.is_dir(follow_symlinks=False)):
            _remove(Path(e.path))
    finish_swap(real)
    for e in os.scandir(real):
        if _TMP_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False):
            os.unlink(e.path)


# ---------------------------------------------------------------- commits

@contextlib.contextmanager
def _commit(path: Path, real: Path, marker: str | None, names: tuple[str, ...] | None) -> Iterator[Path]:
    """The work folder of one commit into ``real``: the whole folder (``names`` None) or only ``names``."""
    beside = names is None and _renames_in_place(real)
    with _writing(path):
        if beside:
            tmp = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}.edgesnn-new-"))
        else:
            tmp = real / NEW
            _remove(tmp)
            tmp.mkdir()
    _staged[tmp] = path
    try:
        with _writing(path, body=True):
            yield tmp
        with _writing(path):
            os.chmod(tmp, os.stat(real).st_mode & 0o7777)  # the folder keeps its mode (mkdtemp makes 0700)
            if beside:
                _swap_beside(real, tmp, marker)
            else:
                _swap_inside(real, tmp, marker, whole=names is None)
    finally:
        del _staged[tmp]
        _remove(tmp)


def _swap_beside(real: Path, tmp: Path, marker: str | None) -> None:
    """``tmp`` (complete, beside ``real``) becomes ``real``; the old folder is deleted after."""
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the new folder is locked from the moment it is the output
    _held[str(real)].append(fd)
    try:
        try:
            exchange(tmp, real)
            old = tmp  # now holds the old folder
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            old = _two_renames(real, tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EBUSY):
            raise
        inside = real / NEW  # a mount point (EBUSY) or another mount (EXDEV): nothing moved; swap inside it
        _remove(inside)
        shutil.copytree(tmp, inside, symlinks=True)
        _swap_inside(real, inside, marker, whole=True)
        return
    _remove(old)


def _two_renames(real: Path, tmp: Path) -> Path:
    """Without RENAME_EXCHANGE: ``real`` renamed aside, ``tmp`` renamed in; stopped between the two (an
    error, a signal), the old folder goes back. Returns where the old folder is."""
    aside = real.parent / f".{real.name}.edgesnn-old-{secrets.token_hex(4)}"
    try:
        os.rename(real, aside)
        os.rename(tmp, real)
    except BaseException:
        if not os.path.lexists(real) and os.path.lexists(aside):
            os.rename(aside, real)
        raise
    return aside


def _swap_inside(real: Path, new: Path, marker: str | None, whole: bool) -> None:
    """Swap the entries of ``new`` (= real/.edgesnn-new, complete) into ``real``, recorded in .edgesnn-swap."""
    state = real / SWAP
    with atomic_path(state) as tmp:
        tmp.write_text(json.dumps({"whole": whole, "marker": marker}) + "\n")
    os.rename(new, real / READY)
    try:
        finish_swap(real)
    except BaseException:
        with contextlib.suppress(Exception):  # a signal stopped it: finish now (a second one is not raised)
            finish_swap(real)
        raise


def finish_swap(real: Path) -> None:
    """Finish the swap recorded in ``real``/.edgesnn-swap, from wherever it stopped; without a record,
    remove work entries a killed command left (a half-built .edgesnn-new, a half-deleted .edgesnn-old)."""
    real = Path(real)
    state, new, ready, moving, old = (real / n for n in (SWAP, NEW, READY, MOVING, OLD))
    if not state.is_file():
        for junk in (new, ready, moving, old):
            _remove(junk)
        return
    try:
        record = read_json(state, "swap record")
        whole, marker = bool(record["whole"]), record["marker"]
        if marker is not None and not isinstance(marker, str):  # None: a multi-file commit (atomic_files)
            raise TypeError(marker)
    except (EdgesnnError, KeyError, TypeError):
        raise EdgesnnError(f"{state}: damaged record of an unfinished swap; remove it and export again") from None
    if new.is_dir() and not ready.is_dir() and not moving.is_dir():
        os.rename(new, ready)  # stopped between the record and the rename: the new entries are complete
    if ready.is_dir():  # phase 1: the old entries leave, the marker first
        old.mkdir(exist_ok=True)
        leaving = ([e for e in os.listdir(real) if not e.startswith(".")] if whole
                   else [e for e in os.listdir(ready) if os.path.lexists(real / e)])
        for e in sorted(leaving, key=lambda e: e != marker):
            os.rename(real / e, _free(old, e))
        os.rename(ready, moving)
    if moving.is_dir():  # phase 2: the new entries come in, the marker last
        for e in sorted(os.listdir(moving), key=lambda e: e == marker):
            if os.path.lexists(real / e):
                old.mkdir(exist_ok=True)
                os.rename(real / e, _free(old, e))
            os.rename(moving / e, real / e)
        os.rmdir(moving)
    os.unlink(state)
    _remove(old)
    _remove(new)


def _free(folder: Path, name: str) -> Path:
    path, n = folder / name, 0
    while os.path.lexists(path):
        n += 1
        path = folder / f"{name}.{n}"
    return path


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); OSError(ENOSYS) where there is none."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _renames_in_place(real: Path) -> bool:
    """Whether a folder beside ``real`` can be renamed onto it: not a mount point, a writable parent."""
    return not os.path.ismount(real) and os.access(real.parent, os.W_OK | os.X_OK)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# ---------------------------------------------------------------- errors of writing

@contextlib.contextmanager
def _writing(path: Path, body: bool = False) -> Iterator[None]:
    """An OSError of writing ``path`` as one line. ``body``: code that writes the output's content, where
    other errors are not the file system's, and libraries report a full disk in their own exceptions."""
    try:
        yield
    except EdgesnnError:
        raise
    except Exception as e:
        code = _errno_of(e)
        if (body and code not in _WRITE_ERRNOS) or not (isinstance(e, OSError) or code in _WRITE_ERRNOS):
            raise
        raise EdgesnnError(f"{_shown(path)}: cannot write ({os.strerror(code) if code else _first_line(e)})") from None


def _shown(path: Path) -> Path:
    """``path``, or where it goes when it is inside a work folder (the user never named that)."""
    for tmp, out in _staged.items():
        if Path(path).is_relative_to(tmp):
            return out / Path(path).relative_to(tmp)
    return path


def _errno_of(e: BaseException) -> int | None:
    if isinstance(e, OSError) and e.errno:
        return e.errno
    m = re.search(r"(?:\[Errno |os error )(\d+)", str(e))  # shutil.Error, safetensors, h5py
    return int(m.group(1)) if m else None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ---------------------------------------------------------------- JSON files exports write

def read_artifact_json(path: str | Path, schema, what: str) -> dict:
    """A JSON file an export wrote (project.json, lava.json, loihi2.json), checked against ``schema``
    (a pydantic model: required keys, types, ranges; other keys are kept): a missing, damaged or
    tampered file is one line for the user, not a traceback or a wrong number."""
    from pydantic import ValidationError

    from edgesnn.limits import MAX_ARTIFACT_JSON_BYTES

    path = Path(path)
    obj = read_json(path, what, MAX_ARTIFACT_JSON_BYTES, where=f"{path}: damaged {what}")
    required = [k for k, f in schema.model_fields.items() if f.is_required()]
    missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise EdgesnnError(f"{path}: not an edgesnn {what} (no {', '.join(map(repr, missing))}); export it again")
    try:
        schema.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        got = json.dumps(err.get("input"), default=str)
        got = got if len(got) <= 40 else got[:37] + "..."
        raise EdgesnnError(f"{path}: invalid {what}: {where}: {err['msg'][:100]} (got {got}); "
                           "export it again") from None
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
    except OSError as e:
        raise EdgesnnError(f"{path.parent}: cannot make the folder ({e.strerror or e})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
