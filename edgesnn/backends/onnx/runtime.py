"""onnxruntime (CPU) for both ONNX files: loading, metadata, and the integer file's run and check
against the golden interpreter (what ``edgesnn verify model.onnx`` reports for it)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from edgesnn import limits
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g

ORT_LOG_SEVERITY = 3  # errors only
RUNTIME = "onnxruntime"
FORMAT_KEY, INTEGER, QCDQ = "edgesnn.format", "integer", "qcdq"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_TYPES = {"tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32"}


def session(path: Path):
    """An onnxruntime CPU session on ``path`` (one thread: the integer results do not depend on it)."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise EdgesnnError(f"{path}: no such ONNX file")
    opts = ort.SessionOptions()
    opts.log_severity_level = ORT_LOG_SEVERITY
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EdgesnnError(f"{path}: onnxruntime cannot load it: {one_line(e)}") from None


def read_metadata(path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise EdgesnnError(f"{path}: not a readable ONNX file ({one_line(e)})") from None
    return {p.key: p.value for p in proto.metadata_props}


def run(path: Path, graph: g.Graph, xq: np.ndarray) -> list[np.ndarray]:
    """The integer file on the integer input batch ``xq``; one array per output, in chunks that keep
    the int64 temporaries within the memory budget."""
    if len(xq) == 0:
        raise EdgesnnError("no samples to run")
    if graph.stateful:
        raise EdgesnnError(f"{path}: a model over sequences runs one step at a time with its states "
                           "(edgesnn.backends.onnx.state.run_sequences)")
    sess = session(path)
    _check_signature(path, sess, graph)
    name = sess.get_inputs()[0].name
    sizes = [math.prod(s.shape) for s in graph.tensors.values()]
    per_sample = 8 * (sum(sizes) + 16 * max(sizes, default=0))  # every tensor, and one op's int64 temporaries
    chunk = max(1, min(len(xq), limits.memory_budget() // max(per_sample, 1), 1024))
    parts = [sess.run(None, {name: np.ascontiguousarray(xq[i:i + chunk])}) for i in range(0, len(xq), chunk)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(graph.outputs))]


def compare(path: Path, graph: g.Graph, x: np.ndarray) -> dict:
    """Every output integer of the file in onnxruntime vs the golden interpreter, on float inputs
    ``x`` (NHWC) quantized as the IR quantizes them. ``mismatches``: samples with any integer different."""
    import onnxruntime as ort

    xq = graph.quantize_input(x)
    got = run(path, graph, xq)  # first: it checks the file against the IR
    golden = graph.run_integer(xq)
    differs = np.zeros(len(xq), bool)
    elements = 0
    for out, name in zip(got, graph.outputs):
        bad = out != golden[name]
        differs |= bad.reshape(len(xq), -1).any(1)
        elements += int(bad.sum())
    first, want = got[0], golden[graph.outputs[0]]
    runtime = f"onnxruntime {ort.__version__} (CPU execution provider)"
    row = {"runtime": runtime, "mismatches": int(differs.sum()), "mismatched_elements": elements,
           "argmax_mismatches": int((first.argmax(-1) != want.argmax(-1)).sum()) if first.ndim == 2 else None}
    return {"samples": int(len(xq)), "runtime": runtime, "mismatches": row["mismatches"],
            "bit_exact": row["mismatches"] == 0, "not_bit_exact_in": [runtime] if row["mismatches"] else [],
            "mismatched_elements": elements, "runtimes": {RUNTIME: row}, "file_bytes": Path(path).stat().st_size}


def _check_signature(path: Path, sess, graph: g.Graph) -> None:
    """The file takes the IR's input and gives its outputs (dtype and per-sample shape), or one line says not."""
    want = [graph.input], graph.outputs
    for kind, args, names in (("input", sess.get_inputs(), want[0]), ("output", sess.get_outputs(), want[1])):
        if len(args) != len(names):
            raise EdgesnnError(f"{path}: has {len(args)} {kind}(s), its IR {len(names)}: not the file of this IR")
        for arg, name in zip(args, names):
            spec = graph.tensors[name]
            shape = list(arg.shape[1:]) if arg.shape else None
            if _ORT_TYPES.get(arg.type) != spec.dtype or shape != list(spec.shape):
                raise EdgesnnError(f"{path}: {kind} {arg.name!r} is {arg.type} {arg.shape}, the IR's {name!r} is "
                                   f"{spec.dtype} {['batch', *spec.shape]}: not the file of this IR")


def one_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    msg = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."
