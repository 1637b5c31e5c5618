"""``--target onnx-qcdq``: Brevitas's QCDQ ONNX file of the torch model (quantized weights, float
activations), verified against torch. The one target whose export reads the torch model, not the IR
(``source = "torch"``); the export itself is :mod:`edgesnn.from_torch.qcdq` (torch and Brevitas)."""

from __future__ import annotations

from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.targets import Target

ONNX_FILE = "model.onnx"


class QCDQTarget(Target):
    name, artifact, describes, rank = "onnx-qcdq", "model.onnx", "an ONNX file (.onnx)", 21
    help = "Brevitas QCDQ of the torch model: quantized weights, float activations"
    file, files, source = ONNX_FILE, (ONNX_FILE,), "torch"
    profiled = False
    not_profiled = "a QCDQ ONNX file runs on no board edgesnn profiles"

    def export_from_torch(self, model, example, out, meta, options):
        from edgesnn.from_torch.qcdq import export_qcdq

        Path(out).mkdir(parents=True, exist_ok=True)
        return export_qcdq(model, example[:2], Path(out) / ONNX_FILE, metadata=meta)

    def recognizes(self, path):
        """A .onnx file whose metadata says QCDQ (an anonymous one is the onnx target's to ask about)."""
        if path.suffix != ".onnx" or not path.is_file():
            return False
        from edgesnn.backends.onnx import QCDQ, file_format

        try:
            return file_format(path) == QCDQ
        except (EdgesnnError, ImportError):
            return False

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        if ir is not None:
            raise EdgesnnError(f"{artifact}: a QCDQ ONNX file is compared with torch (--checkpoint), not with an IR")
        from edgesnn.from_torch.qcdq import verify_qcdq

        return verify_qcdq(artifact, data, ckpt, trust_code)


QCDQ = QCDQTarget()
