"""``--target nir``: a NIR graph for snnTorch, Norse, Sinabs, ... with the exact integer program in its
metadata, written next to the IR it was lowered from; verify reads the program back and compares every
output integer with the IR, and reports how the nodes alone rank the classes."""

from __future__ import annotations

from pathlib import Path

from edgesnn.targets import Target

NIR_FILE, IR_FILE = "model.nir", "model.ir"


class NIRTarget(Target):
    name, artifact, describes, rank = "nir", "model.nir", "a NIR file (.nir)", 30
    help = "NIR graph for snnTorch, Norse, Sinabs, ...; exact program in its metadata"
    file, files = NIR_FILE, (NIR_FILE, IR_FILE)
    profiled = False
    stateful = True  # LIF, CubaLIF, LI nodes and recurrent Affine cycles, the program over sequences (lower_state.py)
    not_profiled = "a NIR file runs on no board of its own"

    def export(self, graph, out, board, options, calibration):
        """The NIR file and the IR it was lowered from, in one commit."""
        from edgesnn.backends.nir import export_nir
        from edgesnn.files import atomic_files

        with atomic_files(out, self.files) as tmp:
            export_nir(graph, tmp / NIR_FILE)  # an op NIR cannot express fails before any file
            graph.save(tmp / IR_FILE)
        return Path(out) / NIR_FILE

    def recognizes(self, path):
        return path.suffix == ".nir"

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        from edgesnn import artifact_data
        from edgesnn.backends.nir.verify import verify_nir
        from edgesnn.device import beside_ir

        graph, ir = beside_ir(artifact, ir)
        data = artifact_data.resolve(artifact, data, graph=graph)
        return {**verify_nir(artifact, graph, data, samples if graph.stateful else None), "ir": str(ir)}


NIR = NIRTarget()
