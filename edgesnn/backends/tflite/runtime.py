"""Run a .tflite file in the real runtimes, one sample at a time (the file has batch 1, as on a device).

- LiteRT (`ai-edge-litert`) with the *reference* op resolver: the kernels whose arithmetic the IR
  is defined by; this is the bit-exact check.
- LiteRT with its default kernels (optimized builtins + the XNNPACK delegate): what a Raspberry Pi
  or Jetson runs by default; differences are measured and reported, not hidden.
- `tflite-runtime` (old board images that only have it) is used when `ai-edge-litert` is missing.
- tflite-runtime 2.14 in its own environment (:mod:`.runtime214`), reference and default kernels,
  where scripts/setup.sh created it: what older Raspberry Pi images run.
- TFLite Micro (`tflite-micro`), whose recording allocator reports the arena the model needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn.backends.tflite import runtime214
from edgesnn.backends.tflite.validate import MAX_BYTES, validate
from edgesnn.errors import EdgesnnError
from edgesnn.limits import read_bytes

LITERT_REFERENCE, LITERT_DEFAULT, MICRO = "litert-reference", "litert-default", "tflite-micro"
# what the runtimes' Python layers raise on a file they cannot take (after validation, a backstop)
_RUNTIME_ERRORS = (struct.error, TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError)
RUNTIMES = (LITERT_REFERENCE, LITERT_DEFAULT, MICRO, runtime214.REFERENCE, runtime214.DEFAULT)


@dataclass
class Result:
    outputs: list[np.ndarray]  # one array per model output, batch first
    runtime: str  # package and version that ran it
    arena_bytes: int | None = None  # TFLite Micro only


def run(path: Path, xq: np.ndarray, runtime: str = LITERT_REFERENCE) -> Result:
    """Integer input batch (without the batch-1 axis per sample) -> integer output batches."""
    if runtime == MICRO:
        return _run_micro(path, xq)
    if runtime in (LITERT_REFERENCE, LITERT_DEFAULT):
        return _run_litert(path, xq, reference=runtime == LITERT_REFERENCE)
    if runtime in runtime214.RESOLVERS:  # runtime214.CannotRun when it refuses the file
        return Result(*runtime214.run(read_model(path), [xq], runtime))
    raise EdgesnnError(f"unknown TFLite runtime {runtime!r}; available: {', '.join(RUNTIMES)}")


def available() -> list[str]:
    """The runtimes ``verify`` runs a file in here: LiteRT's two kernel sets, TFLite Micro and
    tflite-runtime 2.14's two where they are installed."""
    return [LITERT_REFERENCE, LITERT_DEFAULT] + [MICRO] * micro_available() + \
        [runtime214.REFERENCE, runtime214.DEFAULT] * runtime214.available()


def micro_available() -> bool:
    """The tflite-micro wheel exists for x86_64 Linux only; boards verify with LiteRT."""
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreter_module():
    """ai_edge_litert's interpreter, or tflite_runtime's on boards that only have the old wheel."""
    try:
        from ai_edge_litert import interpreter

        from importlib.metadata import version

        return interpreter, f"ai-edge-litert {version('ai-edge-litert')}"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter  # noqa: F401

        import tflite_runtime

        return interpreter, f"tflite-runtime {tflite_runtime.__version__}"
    except ImportError:
        raise EdgesnnError("running .tflite files needs ai-edge-litert (pip install ai-edge-litert) "
                           "or, on old board images, tflite-runtime") from None


def read_model(path: Path) -> bytes:
    """The bytes of a .tflite file, validated (validate.py) before any runtime reads them."""
    path = Path(path)
    data = read_bytes(path, "TFLite flatbuffer", MAX_BYTES)
    validate(data, str(path))
    return data


def interpreter_for(path: Path, reference: bool):
    """A LiteRT interpreter with its tensors allocated: reference kernels, or the default ones."""
    module, _ = _interpreter_module()
    data = read_model(path)
    resolver = module.OpResolverType.BUILTIN_REF if reference else module.OpResolverType.AUTO
    try:
        with _quiet_stderr():  # LiteRT announces its XNNPACK delegate on the C stderr
            interp = module.Interpreter(model_content=data, experimental_op_resolver_type=resolver, num_threads=1)
            interp.allocate_tensors()
    except _RUNTIME_ERRORS as e:
        raise EdgesnnError(f"{path}: LiteRT cannot load it: {_first_line(e)}") from None
    return interp


def _run_litert(path: Path, xq: np.ndarray, reference: bool) -> Result:
    _, name = _interpreter_module()
    interp = interpreter_for(path, reference)
    try:
        inp = interp.get_input_details()[0]
        outs = interp.get_output_details()
        results = [[] for _ in outs]
        for sample in xq:
            interp.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
            interp.invoke()
            for r, o in zip(results, outs):
                r.append(interp.get_tensor(o["index"])[0])
    except _RUNTIME_ERRORS as e:
        raise EdgesnnError(f"{path}: LiteRT cannot run it: {_first_line(e)}") from None
    kernels = "reference kernels" if reference else "default kernels (XNNPACK delegate)"
    return Result([np.stack(r) for r in results], f"{name}, {kernels}")


def _run_micro(path: Path, xq: np.ndarray) -> Result:
    try:
        from importlib.metadata import version

        from tflite_micro.python.tflite_micro import runtime as micro
    except ImportError:
        raise EdgesnnError("TFLite Micro needs the tflite-micro package (pip install tflite-micro, x86_64)") from None
    data = read_model(path)  # TFLite Micro trusts the buffer it is given: it is validated first
    try:
        outputs = _output_count(data)
        interp = micro.Interpreter.from_bytes(data, arena_size=max(64 * 1024, 16 * len(data)))
    except _RUNTIME_ERRORS as e:
        raise EdgesnnError(f"{path}: TFLite Micro cannot load it: {_first_line(e)}") from None
    try:
        results = [[] for _ in range(outputs)]
        for sample in xq:
            interp.set_input(sample[None], 0)
            interp.invoke()
            for i, r in enumerate(results):
                r.append(np.array(interp.get_output(i))[0])
    except _RUNTIME_ERRORS as e:
        raise EdgesnnError(f"{path}: TFLite Micro cannot run it: {_first_line(e)}") from None
    return Result([np.stack(r) for r in results], f"tflite-micro {version('tflite-micro')}", _arena_bytes(interp))


def _output_count(data: bytes) -> int:
    import tflite

    return tflite.Model.GetRootAs(data, 0).Subgraphs(0).OutputsLength()


_ARENA = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")


def _arena_bytes(interp) -> int:
    """The recording allocator's total, which TFLite Micro prints to the C stderr (fd 2)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp, _redirect_fd(2, tmp.fileno()):
        interp.print_allocations()
        os.fsync(2)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    m = _ARENA.search(text)
    if m is None:
        raise EdgesnnError(f"TFLite Micro did not report its arena size (it printed: {text.strip()[:200]!r})")
    return int(m.group(1))


@contextlib.contextmanager
def _quiet_stderr():
    with open(os.devnull, "wb") as null, _redirect_fd(2, null.fileno()):
        yield


@contextlib.contextmanager
def _redirect_fd(fd: int, to: int):
    saved = os.dup(fd)
    try:
        os.dup2(to, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
