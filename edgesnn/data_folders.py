"""Data sets in folders: class subfolders of images (torchvision's ImageFolder layout) and CIFAR-10/100
in their python format, with the user's input size, channels and normalisation as options on the spec.

    PATH[?OPTION=VALUE[&OPTION=VALUE...]]    e.g.  'photos?size=32x32&mean=0.49,0.48,0.45&std=0.25,0.24,0.26'

``size=WxH`` (or ``N`` for NxN) resizes every image to W wide and H high with Pillow's bilinear filter
(antialiased when shrinking, as torchvision's Resize on PIL images; the aspect ratio is not kept);
``channels=1|3`` converts to grayscale (Pillow's "L": 299/1000 R + 587/1000 G + 114/1000 B) or RGB;
``mean=M[,M,M]`` and ``std=S[,S,S]`` (one value for every channel, or one per channel) make the input
(pixel / 255 - mean) / std, in float32; ``labels=fine|coarse`` picks CIFAR-100's label set. The
options are part of the spec a checkpoint records, so export and verify see the same input.

Pixels are 8-bit: without mean/std they lie on the 1/255 grid and the exporter's int8 input is exact.
With a mean they are not on one grid of <= 256 levels that holds 0 (each channel has its own offset and
step), so the IR rounds them to 256 steps of the whole input's range; see docs/data.md.
Everything a folder declares (file count, decoded bytes, one image's pixels) is checked against the
limits before any image is decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesnn import limits, safe_pickle
from edgesnn.errors import EdgesnnError

# File names read as images; Pillow may only open them as these formats (not, e.g., EPS, which runs Ghostscript).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tif", ".tiff", ".webp")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "PPM", "TIFF", "WEBP")
GRAY_MODES = ("1", "L", "LA", "La")
DEEP_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # more than 8 bits per pixel: not on the 1/255 grid
MAX_IMAGES = 2_000_000  # files in one image folder (ImageNet-1k's training set has 1,281,167)
MAX_SIDE = 4096  # size=WxH
MAX_NORM = 1e4  # |mean| and std, 1/MAX_NORM <= std: the normalised input stays far inside float32
MAX_CIFAR_FILE_BYTES = 1 << 30  # CIFAR-100's train file, the largest, has 155 MiB
# Bytes per decoded value while a set is built: the uint8 pixels, the float32 samples, the split's copies
# and the tensors' copies (edgesnn.data._split and _tensor).
BYTES_PER_VALUE = 13
OPTIONS_HELP = "size=WxH, channels=1|3, mean=M[,M,M], std=S[,S,S], labels=fine|coarse (CIFAR-100)"
FOLDER_FORMS = "DIR/<class>/<image>, DIR/{train,test|val}/<class>/<image>, or a CIFAR-10/100 python folder"


@dataclass(frozen=True)
class Options:
    size: tuple[int, int] | None = None  # (width, height)
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None
    given: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- the spec

def load(spec: str):
    """The data set a folder spec names, or None when it names no folder (edgesnn.data.load then says
    what is accepted)."""
    path, options = split_spec(spec)
    if not _is_dir(path):
        if options.given:
            raise EdgesnnError(f"{limits._short(spec)}: data options (after '?') apply to a folder of images or a "
                               f"CIFAR folder, and {limits._short(path)!r} is not a folder")
        return None
    root = Path(path)
    kind = cifar_kind(root)
    return from_cifar(root, kind, options) if kind else from_image_folder(root, options)


def split_spec(spec: str) -> tuple[str, Options]:
    """``PATH?key=value&...`` -> (PATH, its options); a path that exists whole (even with a '?') has none."""
    if "?" not in spec or _exists(spec):
        return spec, Options()
    path, _, query = spec.rpartition("?")
    return path, parse_options(query, spec)


def parse_options(query: str, where: str = "data") -> Options:
    values: dict[str, object] = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if key not in _PARSERS:
            raise EdgesnnError(f"{limits._short(where)}: unknown data option {limits._short(key, 40)!r}; the options "
                               f"are {OPTIONS_HELP}")
        if key in values:
            raise EdgesnnError(f"{limits._short(where)}: data option {key} given twice")
        parsed = _PARSERS[key](value) if eq else None
        if parsed is None:
            raise EdgesnnError(f"{limits._short(where)}: bad data option {limits._short(item, 60)!r}: {_FORMS[key]}")
        values[key] = parsed
    return Options(**values, given=tuple(values))


def _size(v: str):
    m = re.fullmatch(r"(\d{1,5})(?:x(\d{1,5}))?", v)
    if m:
        w = int(m.group(1))
        h = int(m.group(2) or w)
        if 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE:
            return w, h
    return None


def _floats(lo: float, hi: float):
    def parse(v: str):
        try:
            xs = tuple(float(t) for t in v.split(","))
        except ValueError:
            return None
        return xs if len(xs) in (1, 3) and all(lo <= x <= hi for x in xs) else None  # NaN fails too
    return parse


_PARSERS = {"size": _size, "channels": lambda v: {"1": 1, "3": 3}.get(v), "mean": _floats(-MAX_NORM, MAX_NORM),
            "std": _floats(1 / MAX_NORM, MAX_NORM), "labels": lambda v: v if v in ("fine", "coarse") else None}
_FORMS = {"size": f"size is WxH (width x height, each 1..{MAX_SIDE}) or N for NxN, e.g. size=32x32",
          "channels": "channels is 1 (grayscale) or 3 (RGB)",
          "mean": f"mean is one number (-{MAX_NORM:g}..{MAX_NORM:g}), or three separated by commas (one per channel)",
          "std": f"std is one number ({1 / MAX_NORM:g}..{MAX_NORM:g}), or three separated by commas (one per channel)",
          "labels": "labels is fine or coarse (CIFAR-100's two label sets)"}


def _exists(p: str) -> bool:
    try:
        return Path(p).exists()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _is_dir(p: str) -> bool:
    try:
        return Path(p).is_dir()
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------- image folders

def from_image_folder(root: Path, opts: Options):
    """Classes are the subfolders, sorted by name -> label 0, 1, ...; images directly inside each.
    ``train/`` and ``test/`` (or ``val/``), each holding the same class folders, are the split;
    otherwise edgesnn.data's fixed stratified split."""
    from edgesnn import data

    if opts.labels:
        raise EdgesnnError(f"{root}: labels= is an option of CIFAR-100 folders, not of image folders")
    if not any(_entries(root)):
        raise EdgesnnError(f"{root}: empty folder; expected {FOLDER_FORMS}")
    held = root / "test" if (root / "test").is_dir() else root / "val"
    if (root / "train").is_dir() and held.is_dir() and _class_names(root / "train", required=False):
        classes = _class_names(root / "train")
        other = _class_names(held)
        if other != classes:
            only_tr, only_te = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
            raise EdgesnnError(f"{root}: train/ and {held.name}/ hold different class folders (only in train: "
                               f"{limits._short(', '.join(only_tr) or '-', 60)}; only in {held.name}: "
                               f"{limits._short(', '.join(only_te) or '-', 60)})")
        parts = [_image_files(root / "train", classes), _image_files(held, classes)]
    else:
        classes = _class_names(root)
        parts = [_image_files(root, classes)]
    if len(classes) > limits.MAX_CLASSES:
        raise EdgesnnError(f"{root}: {len(classes):,} class folders, more than the {limits.MAX_CLASSES:,} allowed")
    files = [f for part in parts for f, _ in part]
    if len(files) > MAX_IMAGES:
        raise EdgesnnError(f"{root}: {len(files):,} images, more than the {MAX_IMAGES:,} a folder may hold")
    headers = [_header(f) for f in files]
    channels, (w, h) = _geometry(root, files, headers, opts)
    _check_channels(opts, channels, root)
    largest = max(sw * sh for (sw, sh), _ in headers)
    limits.check_memory(len(files) * channels * h * w * BYTES_PER_VALUE + largest * 4 * 2,
                        f"{root}: decoding {len(files):,} images of {channels}x{h}x{w}")
    mode = "L" if channels == 1 else "RGB"
    xs = []
    for part in parts:
        pixels = np.empty((len(part), h, w, channels), dtype=np.uint8)
        for i, (f, _) in enumerate(part):
            pixels[i] = _decode(f, mode, (w, h))
        xs.append(_finish(pixels, opts))
    ys = [np.array([label for _, label in part], dtype=np.int64) for part in parts]
    if len(parts) == 1:
        return data._split(root.name, xs[0], ys[0])
    return data.Dataset(root.name, *(data._tensor(a) for a in (xs[0], ys[0], xs[1], ys[1])))


def _entries(folder: Path):
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        raise EdgesnnError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


def _class_names(folder: Path, required: bool = True) -> list[str]:
    names = [p.name for p in _entries(folder) if p.is_dir()]
    if not names and required:
        raise EdgesnnError(f"{folder}: no class subfolders; expected {FOLDER_FORMS}")
    return names


def _image_files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        found = [p for p in _entries(folder / name) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not found:
            raise EdgesnnError(f"{folder / name}: no images (files ending in {', '.join(IMAGE_SUFFIXES)})")
        out += [(p, label) for p in found]
        if len(out) > MAX_IMAGES:
            raise EdgesnnError(f"{folder}: more than {MAX_IMAGES:,} images; a folder may hold at most that many")
    return out


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height), mode from the image's header alone (nothing decoded yet)."""
    from PIL import Image

    try:
        with Image.open(path, formats=PIL_FORMATS) as im:
            size, mode = im.size, im.mode
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise EdgesnnError(f"{path}: not a readable image ({limits._short(e)})") from None
    if mode in DEEP_MODES:
        raise EdgesnnError(f"{path}: a {mode} image (more than 8 bits per pixel) is not read; save it with 8 bits "
                           f"per channel")
    return size, mode


def _geometry(root: Path, files: list[Path], headers, opts: Options) -> tuple[int, tuple[int, int]]:
    """Channels (1 when every image is grayscale, else 3, unless channels= says) and (width, height)."""
    channels = opts.channels or (1 if all(mode in GRAY_MODES for _, mode in headers) else 3)
    if opts.size:
        return channels, opts.size
    sizes = [s for s, _ in headers]
    first = sizes[0]
    for f, s in zip(files, sizes):
        if s != first:
            raise EdgesnnError(f"{root}: images of different sizes ({files[0]} is {first[0]}x{first[1]}, {f} "
                               f"{s[0]}x{s[1]}); pass size=WxH, e.g. '{root}?size={first[0]}x{first[1]}'")
    return channels, first


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path, formats=PIL_FORMATS) as im:
            return _pixels(im, mode, size)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise EdgesnnError(f"{path}: not a readable image ({limits._short(e)})") from None


def _pixels(im, mode: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8: converted to ``mode`` (L or RGB; alpha dropped, as torchvision's loader), then
    resized to ``size`` (width, height) with Pillow's bilinear filter."""
    from PIL import Image

    if im.mode != mode:
        im = im.convert(mode)
    if im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _check_channels(opts: Options, channels: int, where: Path) -> None:
    """mean= and std= give one value, or one per channel (checked before anything is decoded)."""
    for name, values in (("mean", opts.mean), ("std", opts.std)):
        if values is not None and len(values) not in (1, channels):
            have = "1 channel (give one value)" if channels == 1 else f"{channels} channels (give 1 or {channels})"
            raise EdgesnnError(f"{where}: {name} has {len(values)} values but the images have {have}")


def _finish(pixels: np.ndarray, opts: Options) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], then (x - mean) / std per channel if given."""
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    if opts.mean is not None:
        np.subtract(x, np.asarray(opts.mean, dtype=np.float32).reshape(1, -1, 1, 1), out=x)
    if opts.std is not None:
        np.divide(x, np.asarray(opts.std, dtype=np.float32).reshape(1, -1, 1, 1), out=x)
    return x


# ---------------------------------------------------------------- CIFAR-10/100

@dataclass(frozen=True)
class _Cifar:
    name: str
    meta: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    names: dict  # labels option -> key in meta
    labels: dict  # labels option -> key in each batch


CIFAR = {
    "CIFAR-10": _Cifar("CIFAR-10", "batches.meta", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                       {"fine": b"label_names"}, {"fine": b"labels"}),
    "CIFAR-100": _Cifar("CIFAR-100", "meta", ("train",), ("test",),
                        {"fine": b"fine_label_names", "coarse": b"coarse_label_names"},
                        {"fine": b"fine_labels", "coarse": b"coarse_labels"}),
}
CIFAR_SIDE = 32
CIFAR_ROW = 3 * CIFAR_SIDE * CIFAR_SIDE  # 1024 red, 1024 green, 1024 blue values, each plane row-major


def cifar_kind(root: Path) -> str | None:
    """CIFAR-10's folder (cifar-10-batches-py) has batches.meta; CIFAR-100's (cifar-100-python) the
    files meta and train."""
    if (root / "batches.meta").is_file():
        return "CIFAR-10"
    if (root / "meta").is_file() and (root / "train").is_file():
        return "CIFAR-100"
    return None


def from_cifar(root: Path, kind: str, opts: Options):
    """The files' own train/test split; labels index the meta file's label names."""
    from edgesnn import data

    fmt = CIFAR[kind]
    which = opts.labels or "fine"
    if which not in fmt.labels:
        raise EdgesnnError(f"{root}: labels={which}: {kind} has one label set (labels= is for CIFAR-100)")
    files = [root / n for n in (fmt.meta, *fmt.train, *fmt.test)]
    for f in files:
        if not f.is_file():
            raise EdgesnnError(f"{root}: a {kind} folder needs {', '.join(p.name for p in files)}; {f.name} is missing")
    sizes = [f.stat().st_size for f in files]
    w, h = opts.size or (CIFAR_SIDE, CIFAR_SIDE)
    channels = opts.channels or 3
    _check_channels(opts, channels, root)
    rows = sum(sizes) // CIFAR_ROW + 1  # the data dominates each file: an upper bound on the images
    # the file, pickletools' copy and decoded str while scanning; the unpickled bytes; then the samples
    limits.check_memory(3 * max(sizes) + sum(sizes) + rows * channels * h * w * BYTES_PER_VALUE,
                        f"{root}: reading {kind} ({sum(sizes):,} bytes of files)")
    meta = safe_pickle.load(files[0], MAX_CIFAR_FILE_BYTES)
    names = meta.get(fmt.names[which]) if isinstance(meta, dict) else None
    if not (isinstance(names, list) and 1 <= len(names) <= limits.MAX_CLASSES
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise EdgesnnError(f"{files[0]}: not {kind}'s meta file: expected a dict whose {fmt.names[which]!r} is a list "
                           f"of label names")
    parts = []
    for batch in (fmt.train, fmt.test):
        xs, ys = zip(*(_cifar_batch(root / n, kind, fmt.labels[which], len(names)) for n in batch))
        pixels = np.concatenate(xs).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)  # NHWC
        if (w, h) != (CIFAR_SIDE, CIFAR_SIDE) or channels != 3:
            pixels = _cifar_resized(pixels, "L" if channels == 1 else "RGB", (w, h))
        if len(pixels) == 0:
            raise EdgesnnError(f"{root}: no images in {', '.join(batch)}")
        parts += [_finish(pixels, opts), np.concatenate(ys)]
    return data.Dataset(root.name, *(data._tensor(a) for a in parts))


def _cifar_batch(path: Path, kind: str, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = safe_pickle.load(path, MAX_CIFAR_FILE_BYTES)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        found = sorted(map(repr, d)) if isinstance(d, dict) else type(d).__name__
        raise EdgesnnError(f"{path}: not a {kind} batch: expected a dict with b'data' and {label_key!r}, found "
                           f"{limits._short(found)}")
    x, labels = d[b"data"], d[label_key]
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != CIFAR_ROW:
        shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise EdgesnnError(f"{path}: b'data' must be an (N, {CIFAR_ROW}) uint8 array (32x32 red, green and blue "
                           f"planes per row), found {shape}")
    if not isinstance(labels, list) or len(labels) != len(x) or not all(type(v) is int for v in labels):
        raise EdgesnnError(f"{path}: {label_key!r} must be a list of {len(x):,} integer labels, one per row of b'data'")
    bad = next((v for v in labels if not 0 <= v < n_classes), None)
    if bad is not None:
        raise EdgesnnError(f"{path}: label {limits._short(bad)} in {label_key!r} is outside 0..{n_classes - 1} (the "
                           f"meta file names {n_classes} labels)")
    return x, np.array(labels, dtype=np.int64)


def _cifar_resized(pixels: np.ndarray, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    c = 1 if mode == "L" else 3
    out = np.empty((len(pixels), size[1], size[0], c), dtype=np.uint8)
    for i, p in enumerate(pixels):
        out[i] = _pixels(Image.fromarray(np.ascontiguousarray(p)), mode, size)
    return out
