"""ONNX backend: two files for two kinds of reader.

- ``export --target onnx`` (:func:`export_integer`): the integer model, written from the IR alone.
  :mod:`.lower` maps each IR op to ONNX integer ops (ConvInteger, MatMulInteger, int64 arithmetic)
  and :mod:`.requant` writes the IR's fixed-point requantization in ONNX ops, once. onnxruntime
  computes every output integer the golden interpreter computes; ``verify`` checks that over the
  whole test split (:func:`compare`). The file takes and gives integers (NHWC); their scales and
  zero points are in its metadata (``edgesnn.input``, ``edgesnn.outputs``).
- ``export --target onnx-qcdq`` (:mod:`edgesnn.from_torch.qcdq`: it starts from torch and needs Brevitas): the
  torch model through Brevitas's QCDQ export, for tools that want QuantizeLinear/DequantizeLinear.
  Weights of quantized layers only; activations float. ``verify`` compares it with torch.

The metadata key ``edgesnn.format`` (``integer`` or ``qcdq``) tells ``verify`` which file it holds.
target.py is the onnx target (edgesnn.targets).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgesnn.backends.onnx.runtime import FORMAT_KEY, INTEGER, QCDQ, compare, one_line, read_metadata, run
from edgesnn.errors import EdgesnnError
from edgesnn.files import write_bytes
from edgesnn.ir import graph as g

__all__ = ["export_integer", "compare", "run", "lower", "read_metadata", "file_format", "integer_metadata",
           "FORMAT_KEY", "INTEGER", "QCDQ", "OPSET", "MAX_DEPTH"]


def __getattr__(name: str):
    """The lowering imports onnx, which a board's install (edgesnn[device]) does not have: only when asked for."""
    if name in ("MAX_DEPTH", "OPSET", "lower"):
        import importlib

        return getattr(importlib.import_module("edgesnn.backends.onnx.lower"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_integer(graph: g.Graph, path: Path) -> Path:
    """Lower, check with ``onnx.checker`` (full check), then write ``path`` atomically: an op the
    lowering cannot express raises before any file exists."""
    import onnx

    from edgesnn.backends.onnx.lower import lower

    model = lower(graph, integer_metadata(graph))
    if model.ByteSize() >= 2**31:
        raise EdgesnnError("onnx: the model is larger than 2 GB, which one ONNX file cannot hold")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - the checker's and shape inference's errors alike
        raise EdgesnnError(f"onnx: the lowered graph fails onnx.checker: {one_line(e)}") from None
    return write_bytes(path, model.SerializeToString())


def integer_metadata(graph: g.Graph) -> dict[str, str]:
    """What the integer file records: its format, the IR version and layout, the quantization of its
    input and outputs, and (as the QCDQ file does) the checkpoint and data it came from."""
    def describe(name: str) -> dict:
        s = graph.tensors[name]
        return {"name": name, "dtype": s.dtype, "shape": ["batch", *s.shape], "scale": float(s.scale),
                "zero_point": int(s.zero_point)}

    source = graph.meta.get("source") or {}
    meta = {FORMAT_KEY: INTEGER, "edgesnn.ir_version": str(g.IR_VERSION), "edgesnn.layout": g.LAYOUT,
            "edgesnn.input": json.dumps(describe(graph.input)),
            "edgesnn.outputs": json.dumps([describe(name) for name in graph.outputs])}
    for key in ("checkpoint", "data"):
        if isinstance(source.get(key), str):
            meta[f"edgesnn.{key}"] = source[key]
    if graph.stateful:  # a temporal graph's states and sequence (state.py)
        from edgesnn.backends.onnx.state import metadata

        meta.update(metadata(graph))
    return meta


def file_format(path: Path) -> str | None:
    """``integer`` or ``qcdq`` as the file's metadata says (a QCDQ file from before the key existed
    names its checkpoint); None for a file edgesnn did not describe."""
    meta = read_metadata(path)
    if meta.get(FORMAT_KEY) in (INTEGER, QCDQ):
        return meta[FORMAT_KEY]
    return QCDQ if "edgesnn.checkpoint" in meta else None

