"""Run one artifact over samples and time it, in a fresh interpreter for ``profile --measure``.

Kept outside edgesnn.profile (whose package imports the data sets, hence torch) so that the
process's peak resident memory is the artifact's runtime: numpy, and LiteRT for a .tflite.
Prints one JSON line: the mean milliseconds per inference of each timed pass.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgesnn.errors import EdgesnnError

REPEATS = 7  # timed passes over the samples


def main(target: str, artifact: str, inputs: str, batch: str = "1", repeats: str = str(REPEATS)) -> None:
    """``batch`` samples per call (a .tflite file has batch 1: it runs them one by one, as a board does);
    one call warms up, then ``repeats`` timed passes over all the inputs."""
    xq, batch, repeats = np.load(inputs), int(batch), int(repeats)
    infer = _runner(target, Path(artifact))
    batches = [xq[i:i + batch] for i in range(0, len(xq), batch)]
    infer(batches[0])  # warm up
    latencies = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            infer(b)
        latencies.append((time.perf_counter() - t0) * 1000 / len(xq))
    print(json.dumps({"latencies_ms": latencies}))


def _runner(target: str, artifact: Path):
    """A function running one batch (batch first) in the target's runtime."""
    if target in ("tflite", "tflite-reference"):
        from edgesnn.backends.tflite.runtime import interpreter_for

        # "tflite": the default kernels, what a board runs by default; "tflite-reference": the reference kernels
        interp = interpreter_for(artifact, reference=target == "tflite-reference")
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

        def infer(batch):
            for sample in batch:
                interp.set_tensor(inp, sample[None])
                interp.invoke()
                interp.get_tensor(out)
    elif target == "onnx":  # an integer model.onnx: onnxruntime takes the whole batch in one call
        from edgesnn.backends.onnx.runtime import session

        sess = session(artifact)
        name = sess.get_inputs()[0].name

        def infer(batch):
            return sess.run(None, {name: np.ascontiguousarray(batch)})
    else:  # "ir", or a Lava folder timed as its IR (Lava's simulation is not a deployment)
        from edgesnn.ir import load

        graph = load(artifact if target == "ir" else artifact / "model.ir")

        def infer(batch):
            return graph.run_integer(batch)
    return infer


if __name__ == "__main__":
    try:
        main(*sys.argv[1:6])
    except EdgesnnError as e:  # one line for the parent (edgesnn.profile.measure) to report
        sys.exit(str(e))
