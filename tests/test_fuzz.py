"""Fuzzing (issue 8): recipes, board files, IR files and checkpoints, valid and corrupted.

The only failure allowed is the project's own error (EdgesnnError: one line, naming the file);
the CLI exits 0 or 1 and never prints a traceback. Pickle checkpoints are never unpickled.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgesnn import boards, checkpoint, data, pipeline, recipes
from edgesnn import ir as edgesnn_ir
from edgesnn.cli import app
from edgesnn.errors import EdgesnnError

N = int(os.environ.get("EDGESNN_FUZZ_EXAMPLES", "60"))  # raise it for a longer local fuzzing run
FUZZ = settings(deadline=None, max_examples=N, suppress_health_check=list(HealthCheck))
BOARD_TEXTS = {p.stem: p.read_text() for p in sorted(boards.BOARDS_DIR.glob("*.yaml"))}
BOARD_DICTS = {k: yaml.safe_load(v) for k, v in BOARD_TEXTS.items()}


def _one_line_naming(e: EdgesnnError, path: Path) -> None:
    msg = str(e)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg


# ---------------------------------------------------------------- boards

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def board_texts(draw) -> str:
    """A shipped board file, mutated: keys dropped, values retyped, unknown keys, bytes garbled/truncated."""
    name = draw(st.sampled_from(sorted(BOARD_TEXTS)))
    how = draw(st.sampled_from(["valid", "dict", "dict", "dict", "bytes", "truncate"]))
    if how == "valid":
        return BOARD_TEXTS[name]
    if how == "truncate":
        text = BOARD_TEXTS[name]
        return text[: draw(st.integers(0, len(text)))]
    if how == "bytes":
        raw = bytearray(BOARD_TEXTS[name].encode())
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return raw.decode("utf-8", errors="surrogateescape")
    d = copy.deepcopy(BOARD_DICTS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "retype", "unknown", "kind", "targets"]))
        keys = sorted(d)
        if op == "drop" and keys:
            d.pop(draw(st.sampled_from(keys)))
        elif op == "retype" and keys:
            d[draw(st.sampled_from(keys))] = draw(_json_values)
        elif op == "unknown":
            d[draw(st.text(min_size=1, max_size=8))] = draw(_json_values)
        elif op == "kind":
            d["kind"] = draw(st.sampled_from([*boards.KINDS, "fpga", 3, None, ["mcu"]]))
        elif op == "targets":
            d["targets"] = draw(st.lists(st.sampled_from([*boards.TARGETS, "gpu", 1]), max_size=4))
    top = draw(st.sampled_from(["mapping", "mapping", "mapping", "list", "scalar"]))
    obj = d if top == "mapping" else [d] if top == "list" else draw(_json_values)
    return yaml.safe_dump(obj, allow_unicode=True)


def _write_board(text: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="fuzzboard")) / "board.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


def test_every_shipped_board_loads():
    for name in BOARD_TEXTS:
        assert isinstance(boards.load(boards.BOARDS_DIR / f"{name}.yaml"), boards.Board)


@FUZZ
@given(board_texts())
def test_board_load_fuzz(text):
    path = _write_board(text)
    try:
        board = boards.load(path)
    except EdgesnnError as e:
        _one_line_naming(e, path)
    else:
        assert isinstance(board, boards.Board)


@pytest.mark.slow
@settings(FUZZ, max_examples=max(N // 2, 1))
@given(board_texts())
def test_board_cli_fuzz(text):
    path = _write_board(text)
    result = CliRunner().invoke(app, ["boards", str(path)])
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.output.strip().startswith("error:") and str(path) in result.output


# ---------------------------------------------------------------- IR files


@pytest.fixture(scope="module")
def ir_file(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("fuzzir")
    pipeline.train_model("mlp", "digits", 1, tmp / "ckpt")
    path = pipeline.export_model(tmp / "ckpt", "ir", tmp / "model.ir")
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def two_digits() -> np.ndarray:
    return data.to_nhwc(data.digits().x_test[:2])


def _split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join_safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _check_ir(raw: bytes, x: np.ndarray) -> None:
    path = Path(tempfile.mkdtemp(prefix="fuzzir")) / "model.ir"
    path.write_bytes(raw)
    try:
        graph = edgesnn_ir.load(path)
    except EdgesnnError as e:
        _one_line_naming(e, path)
        event("refused at load")
        return
    try:
        out = graph.run(x)
    except EdgesnnError as e:
        assert "\n" not in str(e), str(e)
        event("refused at run")
        return
    event("ran")
    assert isinstance(out, np.ndarray) and out.shape[0] == len(x)


@pytest.mark.slow  # trains a small model once (module fixture)
def test_ir_valid_runs(ir_file, two_digits):
    path = Path(tempfile.mkdtemp()) / "model.ir"
    path.write_bytes(ir_file)
    assert edgesnn_ir.load(path).run(two_digits).shape == (2, 10)


@pytest.mark.slow  # trains a small model once (module fixture)
@FUZZ
@given(st.data())
def test_ir_bytes_fuzz(ir_file, two_digits, data):
    raw = bytearray(ir_file)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if how == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "truncate":
            del raw[i:]
        elif how == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif how == "delete":
            del raw[i : i + data.draw(st.integers(1, 16))]
    _check_ir(bytes(raw), two_digits)


_bad_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.sampled_from([2**31, -(2**31) - 1, 10**30, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(-(2**40), 2**40), max_size=5), st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(obj, prefix=()):
    """Every (path) to a value inside a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate_json(doc, data):
    """One edit of the graph JSON: replace a value, delete a key/item, add an unknown key or op, rename."""
    paths = [p for p in _paths(doc) if p]
    target = data.draw(st.sampled_from(paths))
    parent = doc
    for k in target[:-1]:
        parent = parent[k]
    key = target[-1]
    how = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown", "kind", "ref", "dup"]))
    if how == "replace":
        parent[key] = data.draw(_bad_values)
    elif how == "delete":
        del parent[key]
    elif how == "unknown" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=6))] = data.draw(_bad_values)
    elif how == "kind":
        op = data.draw(st.sampled_from(doc["ops"])) if isinstance(doc.get("ops"), list) and doc["ops"] else None
        if isinstance(op, dict):
            op["kind"] = data.draw(st.sampled_from(["conv2d", "dense", "reduce_sum", "mul", "requantize", "add",
                                                     "sum_pool2d", "max_pool2d", "reshape", "softmax", ""]))
    elif how == "ref":
        names = sorted(doc.get("tensors", {})) if isinstance(doc.get("tensors"), dict) else []
        parent[key] = data.draw(st.sampled_from([*names, "nope", ""])) if names else "nope"
    elif how == "dup" and isinstance(doc.get("ops"), list) and doc["ops"]:
        doc["ops"].insert(data.draw(st.integers(0, len(doc["ops"]))), copy.deepcopy(data.draw(st.sampled_from(doc["ops"]))))


@pytest.mark.slow  # trains a small model once (module fixture)
@FUZZ
@given(st.data())
def test_ir_header_fuzz(ir_file, two_digits, data):
    header, body = _split_safetensors(ir_file)
    meta = header["__metadata__"]
    doc = json.loads(meta["edgesnn_ir"])
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_json(doc, data)
    meta["edgesnn_ir"] = json.dumps(doc)
    _check_ir(_join_safetensors(header, body), two_digits)


@pytest.mark.slow  # trains a small model once (module fixture)
@FUZZ
@given(st.data())
def test_ir_tensor_table_fuzz(ir_file, two_digits, data):
    """The safetensors side: tensor dtypes, shapes, offsets and the other metadata keys."""
    header, body = _split_safetensors(ir_file)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(header)))
        if key == "__metadata__":
            meta = header[key]
            k = data.draw(st.sampled_from([*sorted(meta), "extra"]))
            how = data.draw(st.sampled_from(["drop", "value"]))
            if how == "drop":
                meta.pop(k, None)
            else:
                meta[k] = data.draw(st.sampled_from(["", "2", "3", "4", "edgesnn-ir", "{}", "[]", "null", "{\"x\":1}"]))
            continue
        entry = header[key]
        how = data.draw(st.sampled_from(["dtype", "shape", "offsets", "rename", "drop"]))
        if how == "dtype":
            entry["dtype"] = data.draw(st.sampled_from(["U8", "I8", "I16", "I32", "I64", "F16", "F32", "F64", "BOOL"]))
        elif how == "shape":
            entry["shape"] = data.draw(st.lists(st.integers(0, 300), max_size=3))
        elif how == "offsets":
            a = data.draw(st.integers(0, len(body)))
            entry["data_offsets"] = [a, data.draw(st.integers(a, len(body)))]
        elif how == "rename":
            header[data.draw(st.sampled_from([f"{key}x", "output.weight", "output.bias", "features.2.shift"]))] = header.pop(key)
        else:
            header.pop(key)
    _check_ir(_join_safetensors(header, body), two_digits)


@pytest.mark.slow  # trains a small model once (module fixture)
@FUZZ
@given(st.data())
def test_ir_array_values_fuzz(ir_file, two_digits, data):
    """Well-formed files with extreme numbers in the arrays (bias, multiplier, shift, weights) and scales."""
    header, body = _split_safetensors(ir_file)
    body = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        entry = header[key]
        a, b = entry["data_offsets"]
        dtype = {"I32": np.int32, "F32": np.float32, "U8": np.uint8}[entry["dtype"]]
        arr = np.frombuffer(bytes(body[a:b]), dtype=dtype).copy()
        info = np.iinfo(dtype) if dtype != np.float32 else None
        if info is not None:
            special = [info.min, info.max, 0, -1, 1, 31, 32, -31, -32, 63, 2**30]
            value = data.draw(st.sampled_from(special) | st.integers(int(info.min), int(info.max)))
            value = int(np.clip(value, info.min, info.max))
        else:
            value = data.draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
        if data.draw(st.booleans()):
            arr[:] = value
        else:
            arr[data.draw(st.integers(0, len(arr) - 1))] = value
        body[a:b] = arr.tobytes()
    meta = header["__metadata__"]
    doc = json.loads(meta["edgesnn_ir"])
    if data.draw(st.booleans()):
        spec = doc["tensors"][data.draw(st.sampled_from(sorted(doc["tensors"])))]
        field = data.draw(st.sampled_from(["scale", "zero_point", "spike_D"]))
        spec[field] = data.draw(st.sampled_from([0, -1, 1e-45, 1e-30, 1e30, 3.5e38, 1e300, -128, 127, 128, 2**31, 2**63]))
    meta["edgesnn_ir"] = json.dumps(doc)
    _check_ir(_join_safetensors(header, bytes(body)), two_digits)


# ---------------------------------------------------------------- pickle checkpoints

MARKER = Path(tempfile.gettempdir()) / "edgesnn-fuzz-pickle-ran"


class _Malicious:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzzckpt") / "ckpt"
    pipeline.train_model("mlp", "digits", 1, out)
    return out


def _pickled_checkpoints(real_ckpt: Path, tmp: Path) -> list[Path]:
    model, _ = checkpoint.load(real_ckpt)
    made = []
    for name, write in [
        ("torchsave", lambda p: torch.save(model.state_dict(), p)),
        ("torchsave_legacy", lambda p: torch.save(model.state_dict(), p, _use_new_zipfile_serialization=False)),
        ("malicious", lambda p: p.write_bytes(pickle.dumps(_Malicious()))),
        ("malicious_proto0", lambda p: p.write_bytes(pickle.dumps(_Malicious(), protocol=0))),
        ("malicious_torch", lambda p: torch.save({"w": _Malicious()}, p)),
    ]:
        folder = tmp / name
        folder.mkdir()
        (folder / checkpoint.CONFIG).write_text((real_ckpt / checkpoint.CONFIG).read_text())
        write(folder / checkpoint.WEIGHTS)
        made.append(folder)
        file_only = tmp / f"{name}.pt"  # the pickle passed as the checkpoint itself
        write(file_only)
        made.append(file_only)
    return made


@pytest.mark.slow  # trains a small model once (module fixture)
def test_pickle_checkpoints_refused(real_ckpt, tmp_path):
    MARKER.unlink(missing_ok=True)
    for path in _pickled_checkpoints(real_ckpt, tmp_path):
        with pytest.raises(EdgesnnError) as e:
            checkpoint.load(path)
        _one_line_naming(e.value, path)
        if "proto0" not in path.name:  # protocol 0 has no magic bytes: refused as not a checkpoint / not safetensors
            assert "pickle" in str(e.value), str(e.value)
        assert not MARKER.exists(), f"{path}: a pickle was unpickled"
        result = CliRunner().invoke(app, ["inspect", str(path)])
        assert result.exit_code == 1, (path, result.output, result.exception)
        assert isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert not MARKER.exists(), f"{path}: a pickle was unpickled"


# ---------------------------------------------------------------- recipes

RECIPE_DICTS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(recipes.RECIPES_DIR.glob("*.yaml"))}
_ESCAPES = ["../x", "../../etc/passwd", "/tmp/evil", "a/b", "..", ".", ".hidden", "x/../../y.yaml", "~/b.yaml",
            "nucleo-f446re", "stm32h743", "C:\\x", "", " "]


def _mutate(draw, node):
    """One change somewhere inside a recipe: a dropped or unknown key, a retyped value, or a path-like string."""
    if isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node, key=str)))
        node[key] = _mutate(draw, node[key])
        return node
    if isinstance(node, list) and node and draw(st.booleans()):
        i = draw(st.integers(0, len(node) - 1))
        node[i] = _mutate(draw, node[i])
        return node
    op = draw(st.sampled_from(["retype", "escape", "drop", "unknown"]))
    if op == "drop" and isinstance(node, dict) and node:
        node.pop(draw(st.sampled_from(sorted(node, key=str))))
        return node
    if op == "unknown" and isinstance(node, dict):
        node[draw(st.text(min_size=1, max_size=8))] = draw(_json_values)
        return node
    return draw(st.sampled_from(_ESCAPES)) if op == "escape" else draw(_json_values)


@st.composite
def recipe_texts(draw) -> str:
    name = draw(st.sampled_from(sorted(RECIPE_DICTS)))
    d = copy.deepcopy(RECIPE_DICTS[name])
    for _ in range(draw(st.integers(0, 3))):
        d = _mutate(draw, d)
    text = yaml.safe_dump(d, allow_unicode=True)
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@FUZZ
@given(recipe_texts())
def test_recipe_load_fuzz(text):
    """A recipe loads (and then every output it names is one plain name inside the run folder) or is
    refused in one line naming the file."""
    path = Path(tempfile.mkdtemp(prefix="fuzzrecipe")) / "r.yaml"
    path.write_text(text)
    try:
        recipe = recipes.load(path)
    except EdgesnnError as e:
        event("refused")
        _one_line_naming(e, path)
        return
    event("valid")
    names = [e.folder() for e in recipe.export] + [p.file() for p in recipe.profile]
    out = path.parent / "out"
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith("."), name
        assert (out / name).resolve().parent == out.resolve()


@settings(FUZZ, max_examples=max(N // 2, 1))
@given(recipe_texts())
def test_recipe_cli_fuzz(text):
    """`edgesnn run` on a refused recipe: exit 1, one line, and no output folder."""
    root = Path(tempfile.mkdtemp(prefix="fuzzrecipe"))
    path = root / "r.yaml"
    path.write_text(text)
    try:
        recipes.load(path)
    except EdgesnnError:
        result = CliRunner().invoke(app, ["run", str(path), "--out", str(root / "out")])
        assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output
        assert not (root / "out").exists()
    else:
        event("valid (not run: it would train)")
