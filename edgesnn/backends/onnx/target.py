"""``--target onnx``: the integer ONNX file written from the IR, with the IR beside it; verify runs it
in onnxruntime and compares every output integer with the IR's golden interpreter."""

from __future__ import annotations

from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.targets import Target

ONNX_FILE, IR_FILE = "model.onnx", "model.ir"


class ONNXTarget(Target):
    name, artifact, describes, rank = "onnx", "model.onnx", "an ONNX file (.onnx)", 20
    help = "integer ONNX from the IR, with its model.ir"
    file, files = ONNX_FILE, (ONNX_FILE, IR_FILE)
    profiled = False
    not_profiled = "an ONNX file runs on no board edgesnn profiles"
    stateful = True  # a temporal graph: its state as inputs and outputs, one run per step (state.py)

    def export(self, graph, out, board, options, calibration):
        """The ONNX file and the IR it was lowered from (verify compares the two), in one commit."""
        from edgesnn.backends.onnx import export_integer
        from edgesnn.files import atomic_files

        with atomic_files(out, self.files) as tmp:
            export_integer(graph, tmp / ONNX_FILE)  # an op the lowering cannot express fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / ONNX_FILE

    def recognizes(self, path):
        """Every .onnx file but a QCDQ one (edgesnn.from_torch.qcdq): one that says nothing is asked about here."""
        return path.suffix == ".onnx" and not _qcdq(path)

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        """Every output integer in onnxruntime vs the golden interpreter of its IR (``ir``, default model.ir
        beside it), over the whole test split. A file that does not say what it is: an integer file with
        --ir, a QCDQ file with --checkpoint."""
        from edgesnn import artifact_data
        from edgesnn import data as datasets
        from edgesnn.backends.onnx import INTEGER, compare, file_format
        from edgesnn.device import beside_ir

        if not artifact.is_file():
            raise EdgesnnError(f"{artifact}: no such file")
        try:
            import onnx  # noqa: F401 - a board's install (edgesnn[device]) has neither
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise EdgesnnError(f"{artifact}: verifying an ONNX file needs {e.name}: pip install onnx onnxruntime") from None
        kind = file_format(artifact)
        if kind is None and ir is None and ckpt is None:
            raise EdgesnnError(f"{artifact}: the ONNX file does not say what it was exported from; pass --ir PATH (an "
                               "integer ONNX file) or --checkpoint DIR (a QCDQ file)")
        if kind != INTEGER and ir is None:  # a file that says nothing, with --checkpoint: compared as QCDQ
            from edgesnn.from_torch.qcdq import verify_qcdq

            return verify_qcdq(artifact, data, ckpt, trust_code)
        graph, ir = beside_ir(artifact, ir)  # a checkpoint, as for a .tflite, plays no part
        if graph.stateful:  # over sequences: every readout integer and every step's output vs the IR's
            from edgesnn.backends.onnx.state import verify as verify_sequences

            return verify_sequences(artifact, graph, ir, data, samples)
        data, ds = artifact_data.load(artifact, data, graph=graph)
        r = compare(artifact, graph, datasets.to_nhwc(ds.x_test))
        y = ds.y_test.numpy()
        return {"artifact": str(artifact), "ir": str(ir), "data": data, **r,
                "ir_accuracy": float((graph.run(datasets.to_nhwc(ds.x_test)).argmax(1) == y).mean())}


def _qcdq(path: Path) -> bool:
    if not path.is_file():
        return False
    from edgesnn.backends.onnx import QCDQ, file_format

    try:
        return file_format(path) == QCDQ
    except (EdgesnnError, ImportError):  # not an ONNX file, or no onnx here: the onnx target's verify says so
        return False


ONNX = ONNXTarget()
