"""``--target tflite``: the integer-only .tflite written from the IR, with the IR beside it; verify runs it
in each installed TFLite runtime (no torch: edgesnn.device) and compares every output integer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.targets import Option, Target

TFLITE_FILE, IR_FILE = "model.tflite", "model.ir"
RUNTIME = Option("runtime", "the runtime the file must run in: litert (default: LiteRT and TFLite Micro) or "
                 "tflite-runtime (2.14, older Raspberry Pi images; a graph it cannot run, e.g. int16 streams, is "
                 "refused naming the op)", choices=("litert", "tflite-runtime"), strict=True,
                 refused="{flag}: chooses the TFLite runtime of --target {owners}, not of {target}")


class TFLiteTarget(Target):
    name, artifact, describes, rank = "tflite", "model.tflite", "a .tflite file", 10
    help = "integer-only .tflite, with its model.ir"
    file, files = TFLITE_FILE, (TFLITE_FILE, IR_FILE)
    export_options = (RUNTIME,)
    stateful = True  # a temporal graph: its state as inputs and outputs, one invoke per step (state.py)

    def prepare(self, options, spell=None):
        from edgesnn.backends.tflite import check_runtime

        check_runtime(options["runtime"])  # a bad runtime fails before any work
        return options

    def export(self, graph, out, board, options, calibration):
        """The .tflite and the IR it was lowered from (verify compares the two), in one commit."""
        from edgesnn.backends.tflite import export_tflite
        from edgesnn.files import atomic_files

        with atomic_files(out, self.files) as tmp:
            export_tflite(graph, tmp / TFLITE_FILE, options["runtime"])  # an op it cannot run fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / TFLITE_FILE

    def recognizes(self, path):
        return path.suffix == ".tflite"

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        from edgesnn import device
        from edgesnn.backends.tflite import state

        if device.beside_ir(Path(artifact), ir)[0].stateful:  # over sequences: every readout integer vs the IR's
            return state.verify(artifact, data, ir, samples)
        return device.verify(artifact, data, ir, samples=samples, trust_code=trust_code)

    def profile_graph(self, artifact, trust_code):
        from edgesnn.backends.tflite import MICRO, micro_available, run
        from edgesnn.ir import load as load_ir

        ir = artifact.with_name(IR_FILE)
        if not ir.is_file():
            raise EdgesnnError(f"{artifact}: no model.ir beside it to profile")
        graph = load_ir(ir)
        extra = {"file_bytes": artifact.stat().st_size}
        if micro_available():
            xq = graph.quantize_input(np.zeros((1, *graph.tensors[graph.input].shape), np.float32))  # sizes only
            extra["tflm_arena_bytes"] = run(artifact, xq, MICRO).arena_bytes
        return graph, extra

    def measure(self, artifact, xq):
        from edgesnn.profile.measure import _measure_python

        return _measure_python("tflite", artifact, xq)


TFLITE = TFLiteTarget()
