"""tflite-runtime 2.14: what older Raspberry Pi images run, and what edgesnn's .tflite files need from it.

It needs numpy < 2, which edgesnn's own environment cannot have, so scripts/setup.sh gives it a
small environment of its own inside edgesnn's (``<sys.prefix>/tflite-runtime``: tflite-runtime and
numpy, nothing else), and :func:`run` runs a file there in a subprocess (:mod:`.runner214`).

Measured (tests/test_tflite_runtime_214.py keeps this honest): of every operator and tensor-type
combination the lowering writes, 2.14 refuses one — QUANTIZE from int8 to int16 (its quantize
kernel requantizes int8 only into int8 or uint8: "quantize.cc:136 output->type == kTfLiteUInt8 ||
output->type == kTfLiteInt8 was not true ... (QUANTIZE) failed to prepare"). In an exported model
every int16 stream, window sum and product starts with one, so int8-only graphs (an int8-stream MLP
or CNN) run there; on them its reference kernels are bit-exact with the IR, and its default kernels
(XNNPACK) differ on some samples, like LiteRT's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from edgesnn import proc
from edgesnn.errors import EdgesnnError

VERSION = "2.14.0"
REFERENCE, DEFAULT = "tflite-runtime-reference", "tflite-runtime-default"
RESOLVERS = {REFERENCE: "BUILTIN_REF", DEFAULT: "AUTO"}
ENVIRONMENT = "tflite-runtime"  # the folder inside edgesnn's environment (sys.prefix) setup.sh creates
RUNNER = Path(__file__).with_name("runner214.py")

# (operator, input type, output type) 2.14 prepares and runs: every combination the lowering writes but one.
RUNS = {(op, t, t) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAXIMUM", "MINIMUM", "PAD", "RESHAPE",
                              "TRANSPOSE", "BATCH_MATMUL", "MAX_POOL_2D") for t in ("int8", "int16")}
RUNS |= {("MUL", "int8", "int8"), ("QUANTIZE", "int8", "int8"), ("QUANTIZE", "int16", "int8"),
         ("QUANTIZE", "int16", "int16"),
         # an int32 window sum: written by QUANTIZE, summed by STRIDED_SLICE and ADD, read back by QUANTIZE
         ("QUANTIZE", "int16", "int32"), ("QUANTIZE", "int32", "int8"), ("RESHAPE", "int32", "int32"),
         ("STRIDED_SLICE", "int32", "int32"), ("ADD", "int32", "int32")}
CANNOT_RUN = {("QUANTIZE", "int8", "int16"): "its QUANTIZE requantizes int8 only into int8 (quantize.cc: "
                                             "'output->type == kTfLiteUInt8 || output->type == kTfLiteInt8 was not true')"}


def python() -> Path | None:
    """The environment's interpreter, or None when setup has not created it."""
    exe = Path(sys.prefix) / ENVIRONMENT / "bin" / "python"
    return exe if exe.is_file() else None


def available() -> bool:
    return python() is not None


class CannotRun(EdgesnnError):
    """tflite-runtime refused the file (it does not prepare or invoke): reported per file, not a failure."""


def check(model) -> None:
    """Refuse, naming the IR op and the operator, a lowered model (flatbuffer.Model) that tflite-runtime
    2.14 cannot run; before anything is written."""
    for index, op in enumerate(model.operators):
        key = (op.opcode, model.tensors[op.inputs[0]].dtype, model.tensors[op.outputs[0]].dtype)
        if key in RUNS:
            continue
        why = CANNOT_RUN.get(key, "a combination never run in it")
        raise EdgesnnError(f"tflite: {op.source or 'the graph'} needs {op.opcode} {key[1]} -> {key[2]} (operator {index}), "
                           f"which tflite-runtime {VERSION} cannot run: {why}; LiteRT and TFLite Micro run it "
                           "(export without --runtime tflite-runtime)")


def run(data: bytes, inputs: list[np.ndarray], runtime: str = REFERENCE) -> tuple[list[np.ndarray], str]:
    """(one batch per model output, runtime name) for one integer batch per model input;
    :class:`CannotRun` when tflite-runtime refuses the file. ``data``: the validated bytes of a .tflite file."""
    exe = python()
    if exe is None:
        raise EdgesnnError(f"tflite-runtime {VERSION} is not installed: scripts/setup.sh creates its environment at "
                           f"{Path(sys.prefix) / ENVIRONMENT}")
    with tempfile.TemporaryDirectory(prefix="edgesnn-tflite-runtime-") as tmp:
        request, result = Path(tmp) / "request.npz", Path(tmp) / "result.npz"
        np.savez(request, model=np.frombuffer(data, np.uint8), resolver=RESOLVERS[runtime],
                 **{f"input_{i}": x for i, x in enumerate(inputs)})
        done = proc.run([str(exe), "-I", str(RUNNER), str(request), str(result)])  # its own process group
        if done.returncode < 0:  # killed by a signal: its kernels crashed on this (validated) file
            raise CannotRun(f"tflite-runtime {VERSION} crashed on it (signal {-done.returncode})")
        if done.returncode != 0 or not result.is_file():
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise EdgesnnError(f"tflite-runtime {VERSION} failed in {exe}: {last}")
        with np.load(result, allow_pickle=False) as r:
            kernels = "reference kernels" if runtime == REFERENCE else "default kernels (XNNPACK delegate)"
            name = f"{r['runtime']}, {kernels}"
            if "error" in r.files:
                raise CannotRun(f"{name} cannot {r['stage']} it: {r['error']}")
            return [r[f"output_{i}"] for i in range(len(r.files) - 1)], name
