"""--data as a folder: class subfolders of images (read with Pillow) and CIFAR-10/100's python files
(read through a restricted unpickler), with the user's size, channels and normalisation as options on
the spec. Malformed and hostile folders and pickles are one error line, and nothing a pickle names runs.
Every file here is written in its real format: PNGs by Pillow, CIFAR batches as the official ones are
structured (dicts with b'data', a uint8 array, and b'labels'), by pickle.dump and, for the original
Python 2 files, opcode by opcode."""

import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from edgesnn import data, data_folders, ir, pipeline, safe_pickle
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError
from edgesnn.export import input_quantization

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def edgesnn(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_images(root, by_class):
    for name, images in by_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(images):
            Image.fromarray(a).save(root / name / f"{i:03d}.png")


def digit_images(per_class):
    """sklearn's digits as 8-bit images (0..16 -> 0..255), the first ``per_class`` of each digit."""
    d = load_digits()
    pixels = np.round(d.images * 255 / 16).astype(np.uint8)
    return {WORDS[k]: pixels[d.target == k][:per_class] for k in range(10)}


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "digits-png"
    images = digit_images(40)
    write_images(root, images)
    (root / "README.txt").write_text("not a class")  # files beside the class folders are not classes
    (root / "seven" / "notes.txt").write_text("not an image")  # nor files that are not images
    (root / "seven" / ".DS_Store").write_bytes(b"\0")
    return root, images


def test_class_folders_are_labels_by_sorted_name_and_pixels_are_8_bit_over_255(digit_folder):
    root, images = digit_folder
    ds = data.load(str(root))
    names = sorted(images)  # eight, five, four, nine, one, seven, six, three, two, zero
    x = np.concatenate([images[n] for n in names]).astype(np.float32)[:, None] / np.float32(255)
    y = np.repeat(np.arange(10), 40)
    want = data._split(root.name, x, y)  # the project's fixed stratified split, seed 0
    assert ds.in_shape == (1, 8, 8) and ds.num_classes == 10 and len(ds.y_test) == 100
    for a, b in ((ds.x_train, want.x_train), (ds.y_train, want.y_train), (ds.x_test, want.x_test),
                 (ds.y_test, want.y_test)):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_train_and_test_subfolders_are_the_split_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    rgb = {c: rng.integers(0, 256, (3, 5, 6, 3), dtype=np.uint8) for c in ("b", "a")}
    gray = {c: rng.integers(0, 256, (2, 5, 6), dtype=np.uint8) for c in ("b", "a")}
    write_images(tmp_path / "set" / "train", rgb)
    write_images(tmp_path / "set" / "val", gray)  # grayscale images among RGB ones: all become RGB
    ds = data.load(str(tmp_path / "set"))
    assert ds.x_train.shape == (6, 3, 5, 6) and ds.x_test.shape == (4, 3, 5, 6)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 0, 1, 1]
    want = np.concatenate([rgb["a"], rgb["b"]]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    assert torch.equal(ds.x_train, torch.from_numpy(want))
    g = np.concatenate([gray["a"], gray["b"]]).astype(np.float32) / np.float32(255)
    assert torch.equal(ds.x_test, torch.from_numpy(np.repeat(g[:, None], 3, axis=1)))
    write_images(tmp_path / "set" / "test", {"a": gray["a"], "c": gray["b"]})  # test/ is taken before val/
    r = edgesnn("train", "--data", tmp_path / "set", "--out", tmp_path / "ck")
    assert r.exit_code == 1 and "train/ and test/ hold different class folders (only in train: b; only in test: c)" \
        in r.output and not (tmp_path / "ck").exists(), r.output


def test_size_channels_mean_and_std_options(tmp_path):
    rng = np.random.default_rng(1)
    images = {c: rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8) for c in ("x", "y")}
    write_images(tmp_path / "f" / "train", images)
    write_images(tmp_path / "f" / "test", images)
    ds = data.load(f"{tmp_path / 'f'}?size=4x3&channels=1&mean=0.5&std=0.25")
    assert ds.x_train.shape == (8, 1, 3, 4)  # W=4 wide, H=3 high
    first = Image.fromarray(images["x"][0]).convert("L").resize((4, 3), Image.Resampling.BILINEAR)
    want = (np.asarray(first).astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    assert np.array_equal(ds.x_train[0, 0].numpy(), want)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = data.load(f"{tmp_path / 'f'}?mean={','.join(map(str, mean))}&std={','.join(map(str, std))}")
    x = images["x"][1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    want = (x - np.float32(mean).reshape(3, 1, 1)) / np.float32(std).reshape(3, 1, 1)
    assert ds.x_train.shape == (8, 3, 6, 5) and np.array_equal(ds.x_train[1].numpy(), want)


def test_the_int8_input_is_exact_for_8_bit_pixels_and_rounded_when_normalised(tmp_path):
    """docs/data.md: 8-bit pixels / 255 (or / std alone) lie on a grid of 256 levels with 0, so the exporter's
    int8 input is exact; (x - mean) / std does not, and the IR rounds it, by at most half an input step."""
    rng = np.random.default_rng(4)
    gray = np.stack([rng.permutation(256).astype(np.uint8).reshape(16, 16) for _ in range(4)])
    write_images(tmp_path / "f", {"a": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
                                  "b": np.repeat(gray[..., None], 3, axis=3)})  # R = G = B: every level, also as L
    imagenet = "mean=0.485,0.456,0.406&std=0.229,0.224,0.225"
    for options, exact in (("", True), ("?channels=1", True), ("?std=0.3081", True), ("?mean=0.5&std=0.5", False),
                           ("?channels=1&mean=0.1307&std=0.3081", False), ("?" + imagenet, False)):
        x = data.load(f"{tmp_path / 'f'}{options}").x_train.numpy()
        assert len(np.unique(x)) >= 256  # every 8-bit level occurs
        scale, zp = input_quantization(x)
        q = np.clip(np.round(x / np.float32(scale)) + zp, -128, 127)
        error = np.abs((q - zp) * np.float32(scale) - x).max()
        # on the grid up to float32 rounding, or off it by up to half a step
        assert (error < 1e-3 * scale if exact else 0.25 * scale < error <= 0.5001 * scale), (options, error, scale)


def test_train_through_the_cli_records_the_folder_spec_with_its_options(digit_folder, tmp_path):
    root, _ = digit_folder
    spec = f"{root}?channels=3&std=0.5"
    r = edgesnn("train", "--model", "cnn", "--data", spec, "--epochs", "1", "--out", tmp_path / "ck")
    assert r.exit_code == 0 and "on 100 samples" in r.output, r.output
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    metrics = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert config["data"] == spec and config["input_shape"] == [3, 8, 8] and config["num_classes"] == 10
    assert metrics["test_samples"] == 100


def test_export_and_verify_an_ir_calibrated_on_an_image_folder(digit_folder, tmp_path):
    root, _ = digit_folder
    pipeline.train_model("mlp", str(root), 6, tmp_path / "ck")
    path = pipeline.export_model(tmp_path / "ck", "ir", tmp_path / "ir")  # calibrates on the folder it records
    graph = ir.load(path)
    spec = graph.tensors[graph.input]
    assert (spec.scale, spec.zero_point) == (float(np.float32(1 / 255)), -128)  # 8-bit pixels: the 1/255 grid
    x = data.load(str(root)).x_test
    q = graph.quantize_input(data.to_nhwc(x)).astype(np.float32)
    assert np.abs((q - spec.zero_point) * np.float32(spec.scale) - data.to_nhwc(x)).max() < 1e-6  # exact input
    v = pipeline.verify(path, str(root))
    assert v["samples"] == 100 and v["accuracy"] >= 0.7 and v["agreement"] >= 0.95, v


# ---------------------------------------------------------------- CIFAR

def cifar10(root, rows=3, seed=0, **files):
    """A CIFAR-10 folder in the real format, ``rows`` images per batch; ``files`` replace a file's bytes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = {b"batch_label": f"batch {i + 1} of 5".encode(), b"labels": rng.integers(0, 10, rows).tolist(),
                         b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                         b"filenames": [f"img_{i}_{j}.png".encode() for j in range(rows)]}
    meta = {b"num_cases_per_batch": rows, b"label_names": [w.encode() for w in WORDS], b"num_vis": 3072}
    for name, d in {**batches, "batches.meta": meta}.items():
        raw = files.get(name)
        if raw is None:
            with open(root / name, "wb") as f:
                pickle.dump(d, f)
        else:
            (root / name).write_bytes(raw)
    return batches


def _s(b: bytes) -> bytes:  # a Python 2 str, as cPickle wrote it: SHORT_BINSTRING or BINSTRING
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def _i(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def py2_array(a, shape=None, dtype=b"u1", reconstruct_shape=(0,)):
    """A uint8 array as Python 2's cPickle (protocol 2) wrote numpy arrays into the CIFAR files."""
    shape = a.shape if shape is None else shape
    dt = b"cnumpy\ndtype\n" + _s(dtype) + _i(0) + _i(1) + b"\x87R(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0) + b"tb"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(" + b"".join(map(_i, reconstruct_shape)) + b"t"
            + _s(b"b") + b"\x87R(" + _i(1) + b"(" + b"".join(map(_i, shape)) + b"t" + dt + b"\x89" + _s(a.tobytes()) + b"tb")


def py2_pickle(d: dict, **array_kw) -> bytes:
    def value(v):
        if isinstance(v, bytes):
            return _s(v)
        if isinstance(v, np.ndarray):
            return py2_array(v, **array_kw)
        if isinstance(v, list):
            return b"](" + b"".join(_i(e) if isinstance(e, int) else _s(e) for e in v) + b"e"
        return _i(v)
    return b"\x80\x02}(" + b"".join(_s(k) + value(v) for k, v in d.items()) + b"u."


def test_cifar10_batches_are_the_train_split_and_test_batch_the_test_split(tmp_path):
    batches = cifar10(tmp_path / "cifar-10-batches-py")
    ds = data.load(str(tmp_path / "cifar-10-batches-py"))
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    train = [batches[f"data_batch_{k}"] for k in range(1, 6)]
    assert ds.y_train.tolist() == sum((b[b"labels"] for b in train), [])
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    row = batches["data_batch_2"][b"data"][1]  # 1024 red, then green, then blue values, each plane row-major
    for c, r, col in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert ds.x_train[4, c, r, col].item() == np.float32(row[c * 1024 + r * 32 + col]) / np.float32(255)
    assert torch.equal(ds.x_test, torch.from_numpy(batches["test_batch"][b"data"].reshape(3, 3, 32, 32)
                                                   .astype(np.float32) / np.float32(255)))


def test_cifar10_written_by_python_2_as_the_original_files(tmp_path):
    rng = np.random.default_rng(3)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 9, 0],
             b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"filenames": [b"a.png", b"b.png", b"c.png"]}
    raw = py2_pickle(batch)
    official = pickle.loads(raw, encoding="bytes")  # what the official loader makes of these bytes (our own file)
    assert np.array_equal(official[b"data"], batch[b"data"]) and official[b"labels"] == [3, 9, 0]
    got = safe_pickle.load(_write(tmp_path / "b", raw), 1 << 20)
    assert got.keys() == official.keys() and np.array_equal(got[b"data"], batch[b"data"])
    assert got[b"data"].dtype == np.uint8 and got[b"labels"] == [3, 9, 0] and got[b"filenames"] == batch[b"filenames"]
    fortran = np.asfortranarray(batch[b"data"][:, :6])  # numpy pickles its bytes column by column
    got = safe_pickle.load(_write(tmp_path / "f", pickle.dumps({b"data": fortran})), 1 << 20)
    assert np.array_equal(got[b"data"], batch[b"data"][:, :6])
    meta = py2_pickle({b"num_cases_per_batch": 3, b"label_names": [w.encode() for w in WORDS], b"num_vis": 3072})
    cifar10(tmp_path / "c", **{"data_batch_1": raw, "batches.meta": meta})
    ds = data.load(str(tmp_path / "c"))
    assert ds.y_train[:3].tolist() == [3, 9, 0]
    assert torch.equal(ds.x_train[:3], torch.from_numpy(batch[b"data"].reshape(3, 3, 32, 32) / np.float32(255)))


def _write(path, raw):
    path.write_bytes(raw)
    return path


def test_cifar100_fine_and_coarse_labels_resized_to_gray(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    sets = {}
    for name, rows in (("train", 6), ("test", 2)):
        sets[name] = {b"filenames": [b"x"] * rows, b"batch_label": name.encode(), b"fine_labels": rng.integers(0, 100, rows).tolist(),
                      b"coarse_labels": rng.integers(0, 20, rows).tolist(), b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8)}
        with open(root / name, "wb") as f:
            pickle.dump(sets[name], f)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": [b"c%d" % i for i in range(20)]}, f)
    ds = data.load(str(root))
    assert ds.y_train.tolist() == sets["train"][b"fine_labels"] and ds.x_train.shape == (6, 3, 32, 32)
    ds = data.load(f"{root}?labels=coarse&size=16x8&channels=1")
    assert ds.y_test.tolist() == sets["test"][b"coarse_labels"] and ds.x_test.shape == (2, 1, 8, 16)
    rgb = sets["test"][b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0)
    want = Image.fromarray(rgb).convert("L").resize((16, 8), Image.Resampling.BILINEAR)
    assert np.array_equal(ds.x_test[1, 0].numpy(), np.asarray(want).astype(np.float32) / np.float32(255))


# ---------------------------------------------------------------- bad and hostile input

class _Run:  # what a hostile pickle would run
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _batch(changes=None):
    d = {b"batch_label": b"b", b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8), b"filenames": [b"a", b"b"]}
    return pickle.dumps({**d, **(changes or {})})


def _bad_folder(case, tmp, marker):
    """(folder or spec, the error the CLI must print) for one malformed or hostile case."""
    root = tmp / "d"
    if case == "empty":
        root.mkdir()
        return root, f"{root}: empty folder; expected DIR/<class>/<image>"
    if case == "no-classes":
        root.mkdir()
        (root / "a.png").write_bytes(b"")
        return root, f"{root}: no class subfolders"
    if case == "class-without-images":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "x.txt").write_text("")
        return root, f"{root / 'cat'}: no images (files ending in .png, .jpg"
    if case == "corrupt-image":
        write_images(root, {"a": [np.zeros((4, 4), np.uint8)] * 2})
        (root / "a" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        return root, f"{root / 'a' / '001.png'}: not a readable image"
    if case == "truncated-image":
        write_images(root, {"a": [np.arange(4096, dtype=np.uint32).reshape(64, 64).astype(np.uint8)] * 2})
        raw = (root / "a" / "001.png").read_bytes()
        (root / "a" / "001.png").write_bytes(raw[: len(raw) // 2])
        return root, f"{root / 'a' / '001.png'}: not a readable image"
    if case == "sizes-differ":
        write_images(root, {"a": [np.zeros((4, 4), np.uint8)], "b": [np.zeros((5, 4), np.uint8)]})
        return root, f"images of different sizes ({root / 'a' / '000.png'} is 4x4, {root / 'b' / '000.png'} 4x5); " \
                     f"pass size=WxH, e.g. '{root}?size=4x4'"
    if case == "16-bit":
        (root / "a").mkdir(parents=True)
        Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(root / "a" / "x.png")
        return root, "a I;16 image (more than 8 bits per pixel) is not read"
    if case == "bad-option":
        write_images(root, {"a": [np.zeros((4, 4), np.uint8)]})
        return f"{root}?size=4x4&std=0", "bad data option 'std=0': std is one number (0.0001..10000)"
    if case == "mean-count":
        write_images(root, {"a": [np.zeros((4, 4), np.uint8)]})
        return f"{root}?mean=0.1,0.2,0.3", "mean has 3 values but the images have 1 channel (give one value)"
    if case == "options-on-npz":
        return "x.npz?size=3", "data options (after '?') apply to a folder of images or a CIFAR folder"
    if case == "nothing":
        return tmp / "nowhere", "to a folder of class subfolders of images or to a CIFAR-10/100 python folder"
    # CIFAR-10 folders with one bad file
    files = {
        "missing-batch": {}, "not-a-dict": {"data_batch_1": pickle.dumps([1, 2])},
        "no-labels": {"data_batch_2": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})},
        "row-size": {"test_batch": _batch({b"data": np.zeros((2, 100), np.uint8)})},
        "label-count": {"test_batch": _batch({b"labels": [1]})},
        "label-range": {"data_batch_1": _batch({b"labels": [1, 10]})},
        "no-test-images": {"test_batch": _batch({b"data": np.zeros((0, 3072), np.uint8), b"labels": []})},
        "meta": {"batches.meta": pickle.dumps({b"label_names": b"not a list"})},
        "global": {"data_batch_1": pickle.dumps(_Run(marker), protocol=2)},  # GLOBAL 'posix system'; REDUCE
        "stack-global": {"data_batch_1": pickle.dumps({b"data": _Run(marker), b"labels": []}, protocol=4)},
        "object-dtype": {"test_batch": pickle.dumps({b"data": np.array([1, None], dtype=object), b"labels": []})},
        "int64-data": {"test_batch": _batch({b"data": np.zeros((2, 3072), np.int64)})},
        "huge-reconstruct": {"test_batch": py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]},
                                                      reconstruct_shape=(1 << 30, 1 << 30))},
        "shape-mismatch": {"test_batch": py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]},
                                                    shape=(2, 3072))},
        "truncated": {"test_batch": _batch()[:-50]},
        "bytes8-bomb": {"test_batch": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xx."},
        "memo-bomb": {"test_batch": b"\x80\x02}r" + struct.pack("<I", 1 << 31) + b"."},
        "newobj": {"test_batch": b"\x80\x02cnumpy\nndarray\n)\x81."},
        "not-pickle": {"test_batch": b"PK\x03\x04 a zip"},
    }[case]
    if case == "missing-batch":
        cifar10(root)
        (root / "data_batch_3").unlink()
    else:
        cifar10(root, **files)
    return root, {
        "missing-batch": "a CIFAR-10 folder needs batches.meta, data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
                         "data_batch_5, test_batch; data_batch_3 is missing",
        "not-a-dict": "data_batch_1: not a CIFAR-10 batch: expected a dict with b'data' and b'labels', found list",
        "no-labels": "data_batch_2: not a CIFAR-10 batch: expected a dict with b'data' and b'labels', found [\"b'data'\"]",
        "row-size": "test_batch: b'data' must be an (N, 3072) uint8 array (32x32 red, green and blue planes per row), "
                    "found (2, 100)",
        "label-count": "test_batch: b'labels' must be a list of 2 integer labels, one per row of b'data'",
        "label-range": "data_batch_1: label 10 in b'labels' is outside 0..9 (the meta file names 10 labels)",
        "no-test-images": "d: no images in test_batch",
        "meta": "batches.meta: not CIFAR-10's meta file: expected a dict whose b'label_names' is a list of label names",
        "global": "data_batch_1: the pickle references posix.system, which is refused (only numpy's uint8 arrays are "
                  "accepted): nothing was run",
        "stack-global": "data_batch_1: the pickle references posix.system, which is refused",
        "object-dtype": "test_batch: not a readable pickle of data (dtype O8 is refused (only uint8 arrays are accepted))",
        "int64-data": "test_batch: not a readable pickle of data (dtype i8 is refused",
        "huge-reconstruct": "test_batch: not a readable pickle of data (_reconstruct is accepted only as numpy pickles an array)",
        "shape-mismatch": "test_batch: not a readable pickle of data (array of shape (2, 3072) with 3072 bytes of data)",
        "truncated": "test_batch: not a pickle file (",
        "bytes8-bomb": "test_batch: not a pickle file (expected 1099511627776 bytes in a bytes8, but only 3 remain)",
        "memo-bomb": "test_batch: pickle memo index 2,147,483,648 at byte 3 is out of range",
        "newobj": "test_batch: pickle opcode NEWOBJ at byte 18 is refused",
        "not-pickle": "test_batch: not a pickle file (",
    }[case]


BAD = ["empty", "no-classes", "class-without-images", "corrupt-image", "truncated-image", "sizes-differ", "16-bit",
       "bad-option", "mean-count", "options-on-npz", "nothing", "missing-batch", "not-a-dict", "no-labels", "row-size",
       "label-count", "label-range", "no-test-images", "meta", "global", "stack-global", "object-dtype", "int64-data", "huge-reconstruct",
       "shape-mismatch", "truncated", "bytes8-bomb", "memo-bomb", "newobj", "not-pickle"]


@pytest.mark.parametrize("case", BAD)
def test_bad_folders_and_files_are_one_error_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    spec, message = _bad_folder(case, tmp_path, marker)
    r = edgesnn("train", "--model", "mlp", "--data", spec, "--epochs", "1", "--out", tmp_path / "ck")
    assert r.exit_code == 1 and message in r.output, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output
    assert not (tmp_path / "ck").exists() and not marker.exists()


def test_a_pickle_nested_a_million_deep_is_refused_before_unpickling(tmp_path):
    """A tuple nested 10^6 deep used as a dict key crashes CPython's hash (a segfault, even under a
    restricted unpickler): the opcode scan refuses it first. In a child process, so a crash is a failure."""
    path = _write(tmp_path / "deep", b"\x80\x04}" + b")" + b"\x85" * 1_000_000 + b"Ns.")
    code = ("import sys; from edgesnn import safe_pickle; from edgesnn.errors import EdgesnnError\n"
            "try: safe_pickle.load(sys.argv[1], 1 << 30)\nexcept EdgesnnError as e: print(e); sys.exit(1)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"{path}: more than 256 tuples, lists and dicts" in r.stdout, (r.returncode, r.stderr)


def test_the_memory_budget_is_checked_before_any_image_is_decoded(digit_folder, tmp_path, monkeypatch):
    root, _ = digit_folder
    monkeypatch.setattr(data_folders, "_decode", lambda *a: pytest.fail("decoded before the memory check"))
    monkeypatch.setenv("EDGESNN_MEMORY_LIMIT", "100K")
    r = edgesnn("train", "--data", f"{root}?size=64x64", "--out", tmp_path / "ck")
    need = 400 * 64 * 64 * data_folders.BYTES_PER_VALUE + 8 * 8 * 4 * 2
    assert r.exit_code == 1 and f"{root}: decoding 400 images of 1x64x64 needs {need:,} bytes, more than the 102,400 " \
        f"allowed" in r.output and not (tmp_path / "ck").exists(), r.output
    cifar10(tmp_path / "c", rows=20)
    with pytest.raises(EdgesnnError, match=r"c: reading CIFAR-10 \([\d,]+ bytes of files\) needs [\d,]+ bytes, more than"):
        data.load(str(tmp_path / "c"))


def test_options_are_parsed_or_refused_in_one_line():
    assert data_folders.parse_options("size=32&channels=3&mean=0.5&std=0.25,0.5,1") == data_folders.Options(
        (32, 32), 3, (0.5,), (0.25, 0.5, 1.0), None, ("size", "channels", "mean", "std"))
    assert data_folders.split_spec("a/b?size=8x4") == ("a/b", data_folders.Options(size=(8, 4), given=("size",)))
    for query, message in (("size=0", "size is WxH"), ("size=4x", "size is WxH"), ("channels=2", "channels is 1"),
                           ("mean=nan", "mean is one number"), ("std=1,2", "std is one number"), ("mean=1e39", "mean is one number"),
                           ("labels=all", "labels is fine or coarse"), ("size", "bad data option 'size'"),
                           ("size=2&size=3", "data option size given twice"), ("", "unknown data option ''"),
                           ("colour=1", "unknown data option 'colour'; the options are size=WxH, channels=1|3")):
        with pytest.raises(EdgesnnError, match="^d: .*" + message.replace("|", r"\|").replace("(", r"\(")):
            data_folders.parse_options(query, "d")
