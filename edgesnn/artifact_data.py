"""The data an artifact runs on: ``--data`` when given, else the data set the artifact records.

Every command that needs samples (verify, profile) asks here, so a model whose input is not the
bundled digits' 1x8x8 runs on its own data without ``--data``, and a same-shape model is never
silently measured on digits. What each artifact records:

- a checkpoint folder: ``config.json``'s ``data`` (what ``train`` or ``quantize`` was given);
- an IR file: ``meta.source.data`` (the checkpoint's, written by ``export``), else the ``data`` of
  the checkpoint it names (``meta.source.checkpoint``, relative to the IR's folder);
- model.tflite and model.nir: the IR beside them; an MCU project or a Lava folder: its model.ir;
- model.onnx: its ``edgesnn.data`` metadata, else the checkpoint it names (an integer ONNX file: the
  IR beside it, which the caller passes).

The artifact's record comes first, then a ``--checkpoint`` given by hand: the record is the data the
artifact was calibrated on. Paths are recorded absolute (:func:`edgesnn.data.recorded`).
"""

from __future__ import annotations

from pathlib import Path

from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError

IR_FILE = "model.ir"
CONFIG = "config.json"  # edgesnn.checkpoint.CONFIG (that module imports torch: read only for a checkpoint)


def resolve(artifact: Path, data_spec: str | None = None, *, graph=None, ckpt: Path | None = None,
            ir: Path | None = None) -> str:
    """``data_spec`` if given, else the spec ``artifact`` records (see the module). ``graph``: the
    artifact's IR when the caller has loaded it (not read twice); ``ckpt``: a checkpoint given by
    hand, asked after the artifact; ``ir``: the IR a .tflite or .nir file was written from."""
    if data_spec is not None:
        if not str(data_spec).strip():
            raise EdgesnnError("--data is empty: name a data set, or leave it out for the one the artifact records")
        return data_spec
    artifact = Path(artifact)
    spec = _recorded(artifact, graph, ir)
    if spec is None and ckpt is not None:
        spec = _read_config(ckpt).get("data")
    if not isinstance(spec, str) or not spec:
        raise EdgesnnError(f"{artifact}: records no data set; pass --data (a built-in set, an .npz file or a "
                           f"data folder)")
    return spec


def load(artifact: Path, data_spec: str | None = None, arrays: bool = False, **kw) -> tuple[str, datasets.Dataset]:
    """(the spec, its data set): :func:`resolve`, then :func:`edgesnn.data.load`; a recorded spec that
    cannot be read here (a moved file) says where it came from and that ``--data`` overrides it.
    ``arrays``: numpy arrays, torch not imported (edgesnn.device)."""
    spec = resolve(artifact, data_spec, **kw)
    if data_spec is not None:
        return spec, datasets.load(spec, arrays)
    try:
        return spec, datasets.load(spec, arrays)
    except EdgesnnError as e:
        raise EdgesnnError(f"{artifact}: the data set it records cannot be read ({e}); pass --data") from None


def test_sequences(artifact: Path, data_spec: str | None, graph, samples: int | None = None):
    """A temporal graph's first ``samples`` test sequences as input integers: (spec, xq, y). The data set is
    ``data_spec`` or the one the artifact records; static samples, another T or frame, or an empty split is
    one error line."""
    import numpy as np

    from edgesnn.ir import state

    spec = resolve(artifact, data_spec, graph=graph)
    ds = datasets.load(spec, temporal=True)
    if ds.steps is None:
        raise EdgesnnError(f"{artifact}: a model over sequences, but data set {spec!r} has static samples "
                           f"{tuple(ds.in_shape)}")
    x, y = ds.x_test[:samples], np.asarray(ds.y_test)[:samples]
    if not len(x):
        raise EdgesnnError(f"{spec}: the test split is empty")
    return spec, state.quantize_sequence(graph, datasets.to_nhwc(np.asarray(x, np.float32))), y


def _recorded(artifact: Path, graph, ir: Path | None) -> str | None:
    if graph is not None:  # the artifact's IR, read by the caller
        return _from_ir(Path(getattr(graph, "path", None) or artifact), graph)
    if artifact.is_dir():
        if (artifact / CONFIG).is_file():
            return _read_config(artifact).get("data")
        return _from_ir(artifact / IR_FILE, graph)  # an MCU project or a Lava folder
    if artifact.suffix == ".ir":
        return _from_ir(artifact, graph)
    if artifact.suffix in (".tflite", ".nir"):
        return _from_ir(Path(ir) if ir is not None else artifact.with_name(IR_FILE), graph)
    if artifact.suffix == ".onnx" and artifact.is_file():
        from edgesnn.backends.onnx import read_metadata

        meta = read_metadata(artifact)
        return meta.get("edgesnn.data") or _from_checkpoint(artifact, meta.get("edgesnn.checkpoint"))
    return None


def _from_ir(path: Path, graph) -> str | None:
    if graph is None:  # a missing IR is the artifact's defect: its own error, not "records no data set"
        from edgesnn.ir import load as load_ir

        graph = load_ir(path)
    source = graph.meta.get("source") or {}  # its types are checked when the IR is read
    return source.get("data") or _from_checkpoint(path, source.get("checkpoint"))


def _from_checkpoint(artifact: Path, ref: str | None) -> str | None:
    """The data the checkpoint an artifact names records (a relative name is read from the artifact's folder)."""
    if not ref:
        return None
    folder = artifact.parent / ref
    if not (folder / CONFIG).is_file():
        return None
    return _read_config(folder).get("data")


def _read_config(folder) -> dict:
    from edgesnn import checkpoint

    return checkpoint.read_config(folder)
