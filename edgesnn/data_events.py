"""Event recordings from local files, binned into frames with ``tonic``: N-MNIST, DVS Gesture and SHD.

    nmnist:DIR[?OPTIONS]       DIR/Train/<digit>/*.bin and DIR/Test/... (the official zips unpacked;
                               DIR may also be tonic's save_to folder holding NMNIST/)
    dvsgesture:DIR[?OPTIONS]   DIR/ibmGestureTrain/user<NN>_<lighting>/<label>.npy and ibmGestureTest/
                               (tonic's DVS Gesture archives unpacked; or save_to holding DVSGesture/)
    shd:DIR[?OPTIONS]          DIR/shd_train.h5 and DIR/shd_test.h5 (the .gz files unpacked; or save_to
                               holding SHD/)

Nothing is downloaded: tonic's dataset classes download whenever they count fewer files than the full
set (N-MNIST: 10,000 .bin files), so the files are read with tonic's own readers instead
(``tonic.io.read_mnist_file``; DVS Gesture's .npy rows x, y, p, t in ms and SHD's HDF5 spikes/times in s,
spikes/units, labels, turned into events exactly as tonic's ``__getitem__`` does) and binned with
``tonic.transforms.ToFrame``:

- ``bins=T`` (the default, 10): ``ToFrame(n_time_bins=T)``, T frames between the first and last event.
- ``window=US&steps=T``: ``ToFrame(time_window=US, start_time=0, end_time=T * US)``: T frames of US
  microseconds from time 0 (events later are dropped; a short recording ends in empty frames).
- ``pool=K`` (a power of two): ``tonic.transforms.Downsample(spatial_factor=1/K)`` first (DVS Gesture's
  128x128 at K=4 is 32x32; SHD's 700 channels at K=4 are 175).

Samples are float32 event counts, (N, T, 2, H, W) for the cameras and (N, T, channels) for SHD; the
recordings' own train/test split is kept. Every file's size and every event's coordinates are checked
before they are used, and the frames against the memory budget before they are allocated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn import data_temporal, limits
from edgesnn.errors import EdgesnnError

DEFAULT_BINS = 10
MAX_STEPS = 100_000
MAX_FILES = 2_000_000
MAX_FILE_BYTES = 1 << 30
MAX_SECONDS = 1e9  # SHD spike times (s): beyond it the microseconds tonic makes leave int64's exact range
BYTES_PER_VALUE = 12  # int16 frames, float32 samples and the tensors' copy
OPTIONS_HELP = "bins=T, or window=US&steps=T; pool=K (a power of two)"


@dataclass(frozen=True)
class Kind:
    name: str
    sensor: tuple[int, int, int]  # tonic's sensor_size: (width, height, polarities)
    classes: int
    folder: str  # tonic's location_on_system: save_to/<folder>


KINDS = {
    "nmnist": Kind("nmnist", (34, 34, 2), 10, "NMNIST"),
    "dvsgesture": Kind("dvsgesture", (128, 128, 2), 11, "DVSGesture"),
    "shd": Kind("shd", (700, 1, 1), 20, "SHD"),
}


@dataclass(frozen=True)
class Options:
    bins: int | None = None
    window: float | None = None
    steps: int | None = None
    pool: int = 1

    @property
    def t(self) -> int:
        return self.steps if self.window is not None else self.bins


def is_event_spec(spec: str) -> bool:
    return spec.partition(":")[0] in KINDS and ":" in spec


def split(spec: str) -> tuple[Kind, str, Options]:
    """``KIND:PATH?key=value&...`` -> (kind, PATH, options); a path that exists whole keeps its '?'."""
    name, _, rest = spec.partition(":")
    kind = KINDS[name]
    if not rest or rest.startswith("?"):
        raise EdgesnnError(f"{limits._short(spec)}: name the folder of the recordings: {name}:DIR ({LAYOUTS[name]})")
    if "?" not in rest or Path(rest).exists():
        return kind, rest, _options({}, spec)
    path, _, query = rest.rpartition("?")
    values = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if key not in ("bins", "window", "steps", "pool"):
            raise EdgesnnError(f"{limits._short(spec)}: unknown data option {limits._short(key, 40)!r}; the options of "
                               f"event data are {OPTIONS_HELP}")
        if key in values:
            raise EdgesnnError(f"{limits._short(spec)}: data option {key} given twice")
        values[key] = value if eq else None
    return kind, path, _options(values, spec)


def _options(values: dict, spec: str) -> Options:
    def number(key, cast, ok):
        v = values.get(key)
        if v is None and key not in values:
            return None
        try:
            n = cast(v)
        except (TypeError, ValueError):
            n = None
        if n is None or not ok(n):
            raise EdgesnnError(f"{limits._short(spec)}: bad data option {key}={limits._short(v, 40)}: {_FORMS[key]}")
        return n

    bins = number("bins", int, lambda n: 1 <= n <= MAX_STEPS)
    window = number("window", float, lambda n: math.isfinite(n) and 0 < n <= 1e12)
    steps = number("steps", int, lambda n: 1 <= n <= MAX_STEPS)
    pool = number("pool", int, lambda n: 1 <= n <= 64 and n & (n - 1) == 0)
    if window is not None and bins is not None:
        raise EdgesnnError(f"{limits._short(spec)}: give bins=T or window=US&steps=T, not both")
    if (window is None) != (steps is None):
        raise EdgesnnError(f"{limits._short(spec)}: window=US needs steps=T (the frames kept), and steps=T needs window=US")
    return Options(bins=DEFAULT_BINS if bins is None and window is None else bins, window=window, steps=steps,
                   pool=pool or 1)


_FORMS = {"bins": f"an integer number of frames in 1..{MAX_STEPS:,}",
          "window": "a frame's length in microseconds, a positive number",
          "steps": f"an integer number of frames in 1..{MAX_STEPS:,}",
          "pool": "a power of two in 1..64 (the sensor pooled by K in each direction)"}


def recorded(spec: str) -> str:
    """The spec with its path made absolute (options kept), as a checkpoint records it."""
    kind, path, _ = split(spec)
    return f"{kind.name}:{Path(path).resolve()}{spec[len(kind.name) + 1 + len(path):]}"


def frame_shape(kind: Kind, options: Options) -> tuple[int, ...]:
    """One frame: (P, H, W) for a camera, (channels,) for SHD, after pooling."""
    w, h, p = kind.sensor
    k = options.pool
    w, h = -(-w // k), -(-h // k)
    return (w,) if kind.name == "shd" else (p, h, w)


def load(spec: str, temporal: bool = True):
    """The recordings a spec names, binned: a temporal :class:`edgesnn.data.Dataset` (``steps`` = T)."""
    from edgesnn import data

    kind, path, options = split(spec)
    if not temporal:
        raise data_temporal.static_refusal(spec, ("N", options.t, *frame_shape(kind, options)))
    root = _root(kind, Path(path))
    parts = []
    for train in (True, False):
        items = READERS[kind.name][0](root, train)
        parts.append(items)
    shape = frame_shape(kind, options)
    count = sum(len(items) for items in parts)
    limits.check_memory(count * options.t * math.prod(shape) * BYTES_PER_VALUE,
                        f"{limits._short(spec)}: {count:,} recordings of {options.t} frames {shape}")
    arrays = []
    for items in parts:
        x = np.zeros((len(items), options.t, *shape), np.float32)
        y = np.zeros(len(items), np.int64)
        for i, (where, label) in enumerate(items):
            events = READERS[kind.name][1](where)
            name = _shd_where(where) if kind.name == "shd" else where
            x[i] = _frames(kind, events, options, name).reshape(options.t, *shape)
            y[i] = label
        arrays += [data._tensor(x), data._tensor(y)]
    return data.Dataset(kind.name, *arrays, steps=options.t)


def _root(kind: Kind, root: Path) -> Path:
    if not root.is_dir():
        raise EdgesnnError(f"{root}: no such folder ({kind.name} reads a folder of its recordings: {LAYOUTS[kind.name]})")
    return root / kind.folder if (root / kind.folder).is_dir() else root


def _frames(kind: Kind, events: np.ndarray, options: Options, where) -> np.ndarray:
    """tonic's ToFrame over the (pooled) events; coordinates checked against the sensor first."""
    from tonic.transforms import Downsample, ToFrame

    w, h, p = kind.sensor
    for axis, size in (("x", w), ("y", h), ("p", p)):
        if axis == "p" and p == 1:
            continue  # one polarity: tonic's ToFrame counts every event in it (SHD's events carry p = 1)
        if axis in events.dtype.names and len(events) and (events[axis].min() < 0 or events[axis].max() >= size):
            raise EdgesnnError(f"{where}: an event has {axis} = {int(events[axis].max() if events[axis].max() >= size else events[axis].min())}, "
                               f"outside the {kind.name} sensor's 0..{size - 1}")
    if len(events) and not np.isfinite(events["t"].astype(np.float64)).all():
        raise EdgesnnError(f"{where}: an event has a timestamp that is not a finite number")
    events = events[np.argsort(events["t"], kind="stable")]  # tonic slices by searchsorted on t
    sensor = kind.sensor
    if options.pool > 1:
        events = Downsample(spatial_factor=1.0 / options.pool)(events)
        sensor = (-(-w // options.pool), -(-h // options.pool), p)
    if options.window is not None:
        to_frame = ToFrame(sensor_size=sensor, time_window=options.window, start_time=0,
                           end_time=options.window * options.steps)
    else:
        to_frame = ToFrame(sensor_size=sensor, n_time_bins=options.bins)
    frames = to_frame(events)
    if frames.shape[0] != options.t:  # tonic's own count; a recording shorter than one window gives 1 frame
        fixed = np.zeros((options.t, *frames.shape[1:]), frames.dtype)
        fixed[:min(options.t, len(frames))] = frames[:options.t]
        frames = fixed
    return frames


# ---------------------------------------------------------------- N-MNIST

def _nmnist_list(root: Path, train: bool) -> list[tuple[Path, int]]:
    folder = root / ("Train" if train else "Test")
    if not folder.is_dir():
        raise EdgesnnError(f"{root}: no {folder.name}/ folder; nmnist reads {LAYOUTS['nmnist']}")
    items = []
    for cls in sorted(folder.iterdir()):
        if cls.is_dir() and not cls.name.startswith("."):
            if not re.fullmatch(r"[0-9]", cls.name):
                raise EdgesnnError(f"{cls}: an N-MNIST class folder is named by its digit, 0..9")
            items += [(f, int(cls.name)) for f in sorted(cls.iterdir()) if f.suffix == ".bin" and f.is_file()]
        _check_count(items, folder)
    if not items:
        raise EdgesnnError(f"{folder}: no .bin recordings in its digit folders 0..9")
    return items


def _nmnist_read(path: Path) -> np.ndarray:
    """Orchard's 40-bit events (x, y, polarity bit + 23-bit time, in 5 bytes; y = 240 marks a
    timestamp overflow), through tonic.io.read_mnist_file."""
    from tonic.datasets import NMNIST
    from tonic.io import read_mnist_file

    size = _file_size(path)
    if size % 5:
        raise EdgesnnError(f"{path}: not an N-MNIST .bin file ({size:,} bytes, not whole 5-byte events)")
    return read_mnist_file(str(path), dtype=NMNIST.dtype)


# ---------------------------------------------------------------- DVS Gesture

def _dvsgesture_list(root: Path, train: bool) -> list[tuple[Path, int]]:
    folder = root / ("ibmGestureTrain" if train else "ibmGestureTest")
    if not folder.is_dir():
        raise EdgesnnError(f"{root}: no {folder.name}/ folder; dvsgesture reads {LAYOUTS['dvsgesture']}")
    items = []
    for user in sorted(folder.iterdir()):
        if user.is_dir() and not user.name.startswith("."):
            if not re.fullmatch(r"user\d+_.+", user.name):
                raise EdgesnnError(f"{user}: a DVS Gesture recording folder is named user<NN>_<lighting>")
            for f in sorted(user.iterdir()):
                if f.suffix == ".npy" and f.is_file():
                    if not re.fullmatch(r"\d{1,2}", f.stem) or int(f.stem) >= KINDS["dvsgesture"].classes:
                        raise EdgesnnError(f"{f}: a DVS Gesture gesture file is named by its label, 0..10 (.npy)")
                    items.append((f, int(f.stem)))
        _check_count(items, folder)
    if not items:
        raise EdgesnnError(f"{folder}: no .npy gestures in its user<NN>_<lighting> folders")
    return items


def _dvsgesture_read(path: Path) -> np.ndarray:
    """Rows (x, y, p, t in ms), made tonic's events as its DVSGesture.__getitem__ does (t * 1000)."""
    from numpy.lib import format as npy
    from numpy.lib.recfunctions import unstructured_to_structured
    from tonic.datasets import DVSGesture

    _file_size(path)
    try:
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype.kind not in "iuf" or len(shape) != 2 or shape[1] != 4:
                raise EdgesnnError(f"{path}: a DVS Gesture .npy holds rows x, y, p, t (n, 4) of numbers, this one "
                                   f"{dtype} {shape}")
            limits.check_memory(math.prod(shape) * 8 * 3, f"{path}: reading its events")
        events = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise EdgesnnError(f"{path}: not a readable .npy file ({limits._short(e)})") from None
    events = events.astype(np.float64)
    events[:, 3] *= 1000  # ms -> us, as tonic
    if len(events) and not np.isfinite(events).all():
        raise EdgesnnError(f"{path}: an event holds a value that is not a finite number")
    for column, (lo, hi) in enumerate(((0, 127), (0, 127), (0, 1), (-2**62, 2**62))):
        if len(events) and (events[:, column].min() < lo or events[:, column].max() > hi):
            raise EdgesnnError(f"{path}: column {'xypt'[column]} outside the DVS Gesture range {lo}..{hi}")
    return unstructured_to_structured(events, DVSGesture.dtype)


# ---------------------------------------------------------------- SHD

def _shd_list(root: Path, train: bool) -> list[tuple[tuple[Path, int], int]]:
    import h5py

    path = root / ("shd_train.h5" if train else "shd_test.h5")
    if not path.is_file():
        raise EdgesnnError(f"{root}: no {path.name}; shd reads {LAYOUTS['shd']}")
    try:
        with h5py.File(path, "r") as f:
            for key in ("spikes/times", "spikes/units", "labels"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise EdgesnnError(f"{path}: no dataset {key!r}; an SHD file holds spikes/times, spikes/units, labels")
            n = len(f["labels"])
            if f["labels"].ndim != 1 or f["spikes/times"].shape != (n,) or f["spikes/units"].shape != (n,):
                raise EdgesnnError(f"{path}: labels, spikes/times and spikes/units must be 1-D with one entry per "
                                   f"recording (labels {f['labels'].shape}, times {f['spikes/times'].shape}, "
                                   f"units {f['spikes/units'].shape})")
            if f["labels"].dtype.kind not in "iu":
                raise EdgesnnError(f"{path}: labels must be integers, not {f['labels'].dtype}")
            labels = f["labels"][()].astype(np.int64)
    except OSError as e:
        raise EdgesnnError(f"{path}: not a readable HDF5 file ({limits._short(e)})") from None
    if n == 0:
        raise EdgesnnError(f"{path}: no recordings")
    if labels.min() < 0 or labels.max() >= KINDS["shd"].classes:
        raise EdgesnnError(f"{path}: labels must be the 20 SHD classes 0..19, found {int(labels.min())}..{int(labels.max())}")
    if n > MAX_FILES:
        raise EdgesnnError(f"{path}: {n:,} recordings, more than the {MAX_FILES:,} allowed")
    return [((path, i), int(labels[i])) for i in range(n)]


def _shd_read(where: tuple[Path, int]) -> np.ndarray:
    """One recording as tonic's HSD.__getitem__ makes it: t = times (s) * 1e6, x = units, p = 1."""
    import h5py
    from tonic.datasets import SHD
    from tonic.io import make_structured_array

    path, i = where
    try:
        with h5py.File(path, "r") as f:
            times, units = f["spikes/times"][i], f["spikes/units"][i]
    except (OSError, TypeError, ValueError) as e:
        raise EdgesnnError(f"{path}: recording {i}: unreadable ({limits._short(e)})") from None
    times, units = np.asarray(times), np.asarray(units)
    if times.ndim != 1 or times.shape != units.shape or times.dtype.kind not in "iuf" or units.dtype.kind not in "iu":
        raise EdgesnnError(f"{path}: recording {i}: spikes/times and spikes/units must be number lists of one length")
    seconds = times.astype(np.float64)
    if len(seconds) and not (np.isfinite(seconds).all() and np.abs(seconds).max() < MAX_SECONDS):
        raise EdgesnnError(f"{path}: recording {i}: spike times must be finite numbers of seconds below {MAX_SECONDS:g}")
    return make_structured_array(times.astype(np.float64) * 1e6, units, 1, dtype=SHD.dtype)


def _shd_where(where) -> str:
    return f"{where[0]} recording {where[1]}"


# ---------------------------------------------------------------- common

def _file_size(path: Path) -> int:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise EdgesnnError(f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} one recording may have")
    return size


def _check_count(items: list, folder: Path) -> None:
    if len(items) > MAX_FILES:
        raise EdgesnnError(f"{folder}: more than {MAX_FILES:,} recordings")


READERS = {"nmnist": (_nmnist_list, _nmnist_read), "dvsgesture": (_dvsgesture_list, _dvsgesture_read),
           "shd": (_shd_list, _shd_read)}
LAYOUTS = {"nmnist": "DIR/Train/<digit>/*.bin and DIR/Test/<digit>/*.bin",
           "dvsgesture": "DIR/ibmGestureTrain/user<NN>_<lighting>/<label>.npy and DIR/ibmGestureTest/...",
           "shd": "DIR/shd_train.h5 and DIR/shd_test.h5"}
