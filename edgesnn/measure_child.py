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

REPEATS = 7  # timed passes over the samples


def main(target: str, artifact: str, inputs: str) -> None:
    xq = np.load(inputs)
    if target == "tflite":
        from edgesnn.backends.tflite.runtime import interpreter_for

        interp = interpreter_for(Path(artifact), reference=False)  # what a board runs by default
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

        def infer(sample):
            interp.set_tensor(inp, sample[None])
            interp.invoke()
            return interp.get_tensor(out)
    else:  # "ir", or a Lava folder timed as its IR (Lava's simulation is not a deployment)
        from edgesnn.ir import load

        graph = load(Path(artifact) if target == "ir" else Path(artifact) / "model.ir")

        def infer(sample):
            return graph.run_integer(sample[None])
    infer(xq[0])  # warm up
    latencies = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for sample in xq:
            infer(sample)
        latencies.append((time.perf_counter() - t0) * 1000 / len(xq))
    print(json.dumps({"latencies_ms": latencies}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
