"""Writers for hostile files of each format: safetensors headers, .npz/.npy headers and zip
bombs, NIR (HDF5) graphs edited in place, YAML alias bombs. Each builds bytes (or a file) that
the real format readers would accept up to the point of the attack.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- safetensors (checkpoints, IR)


def split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    """(header dict, tensor data) of a safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join_safetensors(header: dict | str, body: bytes, pad_to: int | None = None) -> bytes:
    """A safetensors file from a header (dict, or raw JSON text) and data; the header is padded with
    spaces to 8 bytes (or to ``pad_to``), as safetensors writes it."""
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"), allow_nan=True)
    raw = text.encode("utf-8", "surrogatepass")
    size = pad_to if pad_to is not None else len(raw) + (-len(raw) % 8)
    raw = raw.ljust(size, b" ")
    return struct.pack("<Q", len(raw)) + raw + body


def header_range(raw: bytes) -> tuple[int, int]:
    """Byte range of the length field and the JSON header: where mutations hurt most."""
    if len(raw) < 8:
        return 0, len(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    return 0, min(8 + n, len(raw))


def safetensors_with_header_length(tensors: dict[str, np.ndarray], metadata: dict, length_mod: int = 128) -> bytes:
    """A valid safetensors file whose header length is ``length_mod`` mod 256: its first byte is
    0x80, a pickle's first byte (issue 17: such files were refused as pickles)."""
    from safetensors.numpy import save

    base = dict(metadata)
    for pad in range(0, 4096):
        meta = {**base, "pad": "x" * pad}
        raw = save(tensors, metadata=meta)
        (n,) = struct.unpack("<Q", raw[:8])
        if n % 256 == length_mod:
            return raw
    raise AssertionError("no padding gives the asked header length")


# ---------------------------------------------------------------- .npy / .npz


def npy_bytes(header: dict | str, body: bytes = b"") -> bytes:
    """An .npy file (format 1.0) from its header dict or literal text, with ``body`` after it."""
    text = header if isinstance(header, str) else repr(header)
    text = text + " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1") + body


def npz_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    """A zip of raw .npy members (``name`` -> bytes of name.npy)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name if name.endswith(".npy") else f"{name}.npy", data)
    return out.getvalue()


def npz_arrays(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def npz_zip_bomb(elements: int = 2**30, dtype: str = "<f8") -> bytes:
    """An .npz whose ``x.npy`` member declares and inflates to ``elements`` zeros (8 GiB by
    default) from about a thousandth of that, beside a small valid ``y``. The deflate stream is one
    flushed 1 MiB block repeated; the CRC is left 0, since a reader that checks it has already
    inflated the whole member."""
    head = npy_bytes({"descr": dtype, "fortran_order": False, "shape": (elements,)})
    size = len(head) + elements * np.dtype(dtype).itemsize
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)
    n_blocks = (size - len(head)) >> 20
    tail = comp.compress(bytes(size - len(head) - (n_blocks << 20))) + comp.flush()
    deflated = first + block * n_blocks + tail
    y = npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (4,)}, bytes(32))
    return _raw_zip([("x.npy", deflated, size, 0, zipfile.ZIP_DEFLATED),
                     ("y.npy", y, len(y), zlib.crc32(y), zipfile.ZIP_STORED)])


def _raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip file from (name, stored data, uncompressed size, crc32, method), ZIP64 extra fields
    for sizes >= 4 GiB."""
    out, central = io.BytesIO(), []
    for name, data, size, crc, method in members:
        offset = out.tell()
        fname = name.encode()
        z64 = size >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if z64 else b""
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if z64 else 20, 0, method, 0, 0x21, crc,
                              0xFFFFFFFF if z64 else len(data), 0xFFFFFFFF if z64 else size, len(fname), len(extra)))
        out.write(fname + extra + data)
        central.append((fname, size, len(data), crc, method, offset, z64))
    cd_start = out.tell()
    for fname, size, csize, crc, method, offset, z64 in central:
        extra = struct.pack("<HHQQQ", 1, 24, size, csize, offset) if z64 else b""
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if z64 else 20, 0, method, 0, 0x21, crc,
                              0xFFFFFFFF if z64 else csize, 0xFFFFFFFF if z64 else size, len(fname), len(extra),
                              0, 0, 0, 0, 0xFFFFFFFF if z64 else offset))
        out.write(fname + extra)
    cd_size = out.tell() - cd_start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), cd_size, cd_start, 0))
    return out.getvalue()


# ---------------------------------------------------------------- YAML


def yaml_alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """Billion laughs: ``levels`` anchors, each a list of ``fan`` aliases of the one before, used
    as model.kwargs.hidden of a recipe (issue 17: nine levels of nine-fold aliases)."""
    lines = ["name: bomb", "data: digits", "anchors:", "  - &a0 [16]"]
    for i in range(1, levels + 1):
        lines.append(f"  - &a{i} [{', '.join(f'*a{i - 1}' for _ in range(fan))}]")
    lines += ["model:", "  name: mlp", f"  kwargs: {{hidden: *a{levels}}}", "train: {epochs: 1}", "export:",
              "  - {target: ir}"]
    return "\n".join(lines) + "\n"


def yaml_deep(depth: int, flow: bool = True) -> str:
    """A YAML document nested ``depth`` deep (flow style [[[...]]] or block style mappings)."""
    if flow:
        return "name: deep\nmodel: " + "[" * depth + "1" + "]" * depth + "\n"
    return "name: deep\nmodel:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(depth)) + "  " * (depth + 1) + "b: 1\n"


def yaml_wide(n: int) -> str:
    """A flat YAML list of ``n`` scalars (node-count bound, not depth)."""
    return "name: wide\nmodel: {name: mlp, kwargs: {hidden: [" + ", ".join("1" for _ in range(n)) + "]}}\n"


# ---------------------------------------------------------------- NIR (HDF5)


def h5_edit(raw: bytes, edit) -> bytes:
    """The bytes of an HDF5 file after ``edit(h5py.File)`` changed it (in a scratch copy)."""
    import h5py

    with tempfile.TemporaryDirectory(prefix="hostile-h5") as tmp:
        path = Path(tmp) / "g.nir"
        path.write_bytes(raw)
        with h5py.File(path, "r+") as f:
            edit(f)
        return path.read_bytes()


def h5_paths(raw: bytes) -> list[tuple[str, str]]:
    """(path, 'group'|'dataset') of every object of an HDF5 file, in sorted order."""
    import h5py

    out = []
    with tempfile.TemporaryDirectory(prefix="hostile-h5") as tmp:
        path = Path(tmp) / "g.nir"
        path.write_bytes(raw)
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.append((name, "group" if isinstance(obj, h5py.Group) else "dataset")))
    return sorted(out)


def h5_replace(f, name: str, value=None, shape=None, dtype=None, chunks=None) -> None:
    """Replace (or create) dataset ``name``: with ``value``, or with a declared ``shape`` and
    ``dtype`` whose data are never written (a chunked dataset of fill values: a few bytes on disk
    for any declared size)."""
    if name in f:
        del f[name]
    if value is not None:
        if isinstance(value, str):
            import h5py

            f.create_dataset(name, data=value, dtype=h5py.string_dtype())
        else:
            f.create_dataset(name, data=value)
        return
    f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks or tuple(min(d, 64) or 1 for d in shape),
                     compression="gzip")


def nir_chain(n_nodes: int, path: Path) -> Path:
    """A NIR file: input -> ``n_nodes`` Scale nodes in a chain -> output (a graph n deep), written
    with h5py directly, every Scale node a hard link to the first (seconds instead of minutes)."""
    import h5py

    str_dt = h5py.string_dtype()
    with h5py.File(path, "w", libver="latest") as f:  # compact groups: 100k nodes in seconds
        f.create_dataset("version", data="1.0.0", dtype=str_dt)
        node = f.create_group("node")
        node.create_dataset("type", data="NIRGraph", dtype=str_dt)
        nodes = node.create_group("nodes")
        one = np.ones(1, np.float32)
        for name, typ, field in (("input", "Input", "shape"), ("output", "Output", "shape")):
            g = nodes.create_group(name)
            g.create_dataset("type", data=typ, dtype=str_dt)
            g.create_dataset(field, data=np.array([1], np.int64))
        first = nodes.create_group("s0")
        first.create_dataset("type", data="Scale", dtype=str_dt)
        first.create_dataset("scale", data=one)
        for i in range(1, n_nodes):
            nodes[f"s{i}"] = first  # a hard link: each name reads as its own node, stored once
        names = ["input"] + [f"s{i}" for i in range(n_nodes)] + ["output"]
        edges = np.array([[a, b] for a, b in zip(names[:-1], names[1:])], dtype=object)
        node.create_dataset("edges", data=edges, dtype=str_dt)
    return path
