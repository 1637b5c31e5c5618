"""A NIR file checked as HDF5 before ``nir.read`` reads it: nir reads every dataset into memory
and recurses into nested graphs, so a file that declares a 144 GiB weight, 2^28 edges or a graph
nested 100,000 deep would exhaust memory or the stack there. The walk here is iterative and reads
only shapes, dtypes, link kinds and the node types; the limits are edgesnn.limits' (SECURITY.md).

libhdf5 itself is not safe on a damaged file: a flipped bit in a global heap makes it loop forever
inside one C call, where no signal handler runs, and other damage can crash it. So
:func:`check_path` runs the walk, and then reads every dataset once, in a child process
(edgesnn.proc: its own process group, killed on a timeout or an interrupt) that must finish
within TIME_LIMIT seconds (30 s, plus one per 10 MiB of file); nir.read in edgesnn then reads
only what already parsed there. The child runs this file by path (``python -P check.py FILE
SETTINGS``, the parent's limits as JSON) and prints its result as one JSON line: importing
edgesnn.backends.nir would import torch, this module needs only h5py, numpy, nir and
edgesnn.limits.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgesnn import limits, proc
from edgesnn.errors import EdgesnnError

SUPPORTED = "Affine, Linear, Conv2d, SumPool2d, AvgPool2d, Flatten, IF, LIF, CubaLIF (between one Input and one Output)"
MAX_OBJECTS = 16 * limits.MAX_GRAPH_NODES  # groups and datasets in the file: a node has a handful
IMPORT_BYTES_PER_WEIGHT = 48  # the importer's float64 copies, the torch model and its state dict, per weight
VLEN_BYTES = 64  # a variable-length string becomes a Python object: count its overhead, its bytes are the file's
TIME_LIMIT = 30.0  # seconds the child may take (SECURITY.md): a file of kilobytes takes a quarter, mostly imports
READ_RATE = 10 << 20  # bytes a second: a big file gets one more second per 10 MiB (a slow SD card)
_LIMITS = ("MAX_DEPTH", "MAX_GRAPH_NODES", "MAX_TENSOR_RANK")  # what the child takes from the parent's edgesnn.limits


def check_path(path: Path) -> None:
    """Check the NIR file ``path`` (:func:`check_file`) and read each of its datasets once, in a
    child process; its refusal is raised here, and a child that does not finish in time or crashes
    is a damaged file."""
    settings = {"limits": {name: getattr(limits, name) for name in _LIMITS}, "max_objects": MAX_OBJECTS,
                "memory": limits.memory_budget()}
    seconds = TIME_LIMIT + path.stat().st_size / READ_RATE
    try:
        r = proc.run([sys.executable, "-P", __file__, str(path), json.dumps(settings)], timeout=seconds)
    except subprocess.TimeoutExpired:
        raise EdgesnnError(f"{path}: damaged HDF5 file (reading it did not finish in {seconds:.0f} s)") from None
    if r.returncode < 0:
        raise EdgesnnError(f"{path}: damaged HDF5 file (reading it crashed: {_signal_name(-r.returncode)})")
    lines = r.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"the HDF5 check of {path} printed no result (exit status {r.returncode}): "
                           f"{r.stderr[-2000:]}") from None
    if "error" in result:
        raise EdgesnnError(result["error"])


def check_and_read(path: Path) -> None:
    """The child's work: refuse what is not an HDF5 file, :func:`check_file`, then read every
    dataset, each failure one line naming ``path``."""
    import h5py
    import nir

    if not h5py.is_hdf5(path):
        raise EdgesnnError(f"{path}: not a NIR file (NIR graphs are HDF5 files written by nir.write)")
    try:
        with h5py.File(path, "r") as f:
            check_file(f, path, nir)
            _read_datasets(f)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged HDF5 file raises OSError, KeyError, RuntimeError, ...
        raise EdgesnnError(f"{path}: unreadable NIR file ({type(e).__name__}: {one_line(e)})") from None


def check_file(f, path: Path, nir) -> None:
    """Walk the open h5py file ``f`` without recursion; refuse, in one line naming ``path``: links
    (soft or to other files), nesting deeper than limits.MAX_DEPTH, more nodes or edges than
    limits.MAX_GRAPH_NODES, node types nir does not know, and datasets whose declared sizes (with
    the file itself, and what importing the weights takes) exceed the memory budget. It uses
    h5py's low-level objects: the high-level ones cost several times more per node."""
    import h5py

    root = _open(f.id, b"node", "", path) if "node" in f else None
    if not isinstance(root, h5py.h5g.GroupID) or b"type" not in root:
        raise EdgesnnError(f"{path}: not a NIR file (an HDF5 file without a NIR graph)")
    total = path.stat().st_size  # variable-length strings live in the file; nir reads them all
    nodes = objects = weights = 0
    stack = [(root, "/node", 1, "")]  # (group, its HDF5 path, depth, node name; None: not a node)
    while stack:
        gid, name, depth, node = stack.pop()
        is_node = node is not None
        if depth > limits.MAX_DEPTH:
            raise EdgesnnError(f"{path}: groups nested more than {limits.MAX_DEPTH} deep (at {limits._short(name)})")
        objects += len(gid)
        if objects > MAX_OBJECTS:
            raise EdgesnnError(f"{path}: more than {MAX_OBJECTS:,} HDF5 groups and datasets")
        if is_node:
            _check_type(gid, node or "(the graph)", path, nir)
        for key in gid:
            item = _open(gid, key, name, path)
            if isinstance(item, h5py.h5d.DatasetID):
                shape = item.shape or ()  # None: an empty (null) dataspace
                total += _declared_bytes(item, shape, key, name, path)
                if is_node and key == b"weight":
                    weights += math.prod(shape)
                if is_node and key == b"edges" and shape[:1] and shape[0] > limits.MAX_GRAPH_NODES:
                    raise EdgesnnError(f"{path}: {shape[0]:,} edges, more than the {limits.MAX_GRAPH_NODES:,} a "
                                       f"graph may have")
            elif is_node and key == b"nodes":  # a graph's nodes: each member is a node (a graph nests here)
                child = f"{name}/nodes"
                nodes += len(item)
                objects += len(item)
                if nodes > limits.MAX_GRAPH_NODES:
                    raise EdgesnnError(f"{path}: more than {limits.MAX_GRAPH_NODES:,} nodes, the most a graph may have")
                for k in item:
                    label = k.decode("utf8", "replace")
                    member = _open(item, k, child, path)
                    if not isinstance(member, h5py.h5g.GroupID):
                        raise EdgesnnError(f"{path}: {limits._short(f'{child}/{label}')} is not a NIR node (a group)")
                    stack.append((member, f"{child}/{label}", depth + 2, f"{node}/{label}" if node else label))
            else:
                stack.append((item, f"{name}/{key.decode('utf8', 'replace')}", depth + 1, None))
    limits.check_memory(total + IMPORT_BYTES_PER_WEIGHT * weights, f"{path}: reading and importing its datasets")


def _read_datasets(f) -> None:
    """Read every dataset under /node once (all nir.read can read), one at a time. check_file has
    bounded the walk (depth, objects, declared bytes). A read that raises has finished, which is
    all this proves; whether that matters is nir.read's to say, in edgesnn's process."""
    import h5py

    stack = [f["node"].id]
    while stack:
        gid = stack.pop()
        for key in gid:
            item = h5py.h5o.open(gid, key)
            if isinstance(item, h5py.h5g.GroupID):
                stack.append(item)
            else:
                try:
                    h5py.Dataset(item)[()]
                except Exception:  # noqa: BLE001 - see the docstring
                    pass


def _open(gid, key: bytes, parent: str, path: Path):
    """The group or dataset linked as ``key`` in ``gid`` (``parent``: its path, for messages); soft
    and external links are refused (nir.write writes none; an external link reads another file)."""
    import h5py

    if gid.links.get_info(key).type != h5py.h5l.TYPE_HARD:
        raise EdgesnnError(f"{path}: {_name(parent, key)} is a link; a NIR file holds no links")
    item = h5py.h5o.open(gid, key)
    if not isinstance(item, (h5py.h5g.GroupID, h5py.h5d.DatasetID)):
        raise EdgesnnError(f"{path}: {_name(parent, key)} is neither a group nor a dataset")
    return item


def _name(parent: str, key: bytes) -> str:
    return limits._short(f"{parent}/{key.decode('utf8', 'replace')}")


def _check_type(gid, name: str, path: Path, nir) -> None:
    """A node's type: a scalar string nir knows, or nir.read fails with a bare assertion."""
    import h5py

    ds = _open(gid, b"type", name, path) if b"type" in gid else None
    if not isinstance(ds, h5py.h5d.DatasetID) or ds.shape != () or \
            (h5py.check_string_dtype(ds.dtype) is None and ds.dtype.kind != "S"):
        raise EdgesnnError(f"{path}: node {limits._short(repr(name))} has no type (a string)")
    kind = h5py.Dataset(ds)[()]
    kind = kind.decode("utf8", "replace") if isinstance(kind, bytes) else str(kind)
    try:
        nir.ir.str2NIRNode(kind)
    except (AssertionError, KeyError, ValueError):
        raise EdgesnnError(f"{path}: node {limits._short(repr(name))} has type {limits._short(repr(kind))}, which nir "
                           f"{nir.__version__} does not know; edgesnn imports {SUPPORTED}") from None


def _declared_bytes(ds, shape: tuple, key: bytes, parent: str, path: Path) -> int:
    """Bytes reading the dataset takes, from its declared shape and dtype alone."""
    import h5py

    count = math.prod(shape) if len(shape) <= limits.MAX_TENSOR_RANK else \
        limits.elements(list(shape), f"{path}: dataset {_name(parent, key)}")
    dtype = ds.dtype
    vlen = h5py.check_vlen_dtype(dtype) is not None or h5py.check_string_dtype(dtype) is not None or dtype.kind == "O"
    return count * (max(dtype.itemsize, VLEN_BYTES) if vlen else dtype.itemsize)


def one_line(e: Exception) -> str:
    """An exception's text on one line (the NIR reader and h5py raise multi-line messages)."""
    return " ".join(str(e).split()) or type(e).__name__


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: list[str]) -> int:
    """The child (see the module docstring): prints ``{"ok": true}`` or ``{"error": "one line"}``."""
    global MAX_OBJECTS
    path, settings = Path(argv[0]), json.loads(argv[1])
    for name, value in settings["limits"].items():
        setattr(limits, name, value)
    MAX_OBJECTS = settings["max_objects"]
    os.environ[limits.MEMORY_ENV] = str(settings["memory"])
    try:
        check_and_read(path)
        result = {"ok": True}
    except EdgesnnError as e:
        result = {"error": str(e)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
