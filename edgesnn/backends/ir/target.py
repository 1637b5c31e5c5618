"""``--target ir``: model.ir, the integer graph every other target reads; verify runs its golden
interpreter over the test split against the torch model it came from (argmax agreement; a temporal
graph over the test sequences, every output integer, against torch's integer forward)."""

from __future__ import annotations

from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.targets import Target

IR_FILE = "model.ir"


class IRTarget(Target):
    name, help, artifact, describes, rank = (
        "ir", "the integer graph", "model.ir", "an edgesnn IR file (.ir)", 0)
    file, files = IR_FILE, (IR_FILE,)
    stateful = True  # a graph over sequences is written as is; verify runs it against torch's integer forward

    def export(self, graph, out, board, options, calibration):
        path = Path(out) / IR_FILE
        graph.save(path)
        return path

    def recognizes(self, path):
        return path.suffix == ".ir"

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        """The golden interpreter over the whole test split vs the torch model the IR names (or ``ckpt``)."""
        from edgesnn import artifact_data, checkpoint, pipeline
        from edgesnn import data as datasets
        from edgesnn.ir import load as load_ir
        from edgesnn.train import predict

        graph = load_ir(artifact)
        if graph.stateful:  # over sequences: every output integer vs torch's integer forward (edgesnn.temporal)
            from edgesnn.temporal import pipeline as temporal

            return temporal.verify_ir(Path(artifact), graph, data, ckpt, samples, trust_code)
        source = ckpt or pipeline.named_checkpoint(artifact, graph.meta.get("source", {}).get("checkpoint"))
        if source is None:
            raise EdgesnnError(f"{artifact}: the IR does not name its checkpoint; pass --checkpoint DIR")
        model, config = checkpoint.load(source, trust_code=trust_code)
        data, ds = artifact_data.load(artifact, data, graph=graph, ckpt=source)
        pipeline.check_input_shape(config, ds, data, source)
        x, y = ds.x_test, ds.y_test.numpy()
        ir_out = graph.run(datasets.to_nhwc(x))
        if ir_out.ndim != 2:
            raise EdgesnnError(f"{artifact}: output shape {ir_out.shape[1:]} is not a class score vector")
        ir_pred = ir_out.argmax(1)
        torch_pred = predict(model, x).numpy()
        mismatches = int((ir_pred != torch_pred).sum())
        return {
            "artifact": str(artifact), "runtime": "edgesnn golden interpreter (numpy, integer-only)",
            "data": data, "samples": int(len(y)), "mismatches": mismatches,
            "agreement": 1.0 - mismatches / len(y), "accuracy": float((ir_pred == y).mean()),
            "torch_accuracy": float((torch_pred == y).mean()), "checkpoint": str(source),
        }

    def profile_graph(self, artifact, trust_code):
        from edgesnn.ir import load as load_ir

        return load_ir(artifact), {}

    def flash_bytes(self, folder):
        from edgesnn import pipeline

        return int(pipeline.inspect(self.path_in(folder))["bytes"]), "IR constants (weights, biases, requantization)"


IR = IRTarget()
