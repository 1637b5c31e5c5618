"""What a board runs, without torch: ``verify`` of a .tflite file (against its model.ir) or of an exported
C project, in numpy and the target's own runtime (LiteRT or tflite-runtime; the compiled C).

``pip install edgesnn[device]`` installs exactly what this path and ``profile`` (edgesnn.profile) need;
torch is never imported on it, and tests/test_device_torch_free.py runs it with torch blocked. The
data are read as numpy arrays (``edgesnn.data.load(spec, arrays=True)``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from pathlib import Path

import numpy as np

from edgesnn import artifact_data
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.files import check_not_interrupted
from edgesnn.ir import load as load_ir

IR_FILE = "model.ir"
PROJECT_FILE = "project.json"  # edgesnn.backends.mcu.project.PROJECT_FILE
# what a command that needs torch says on an install without it (edgesnn.cli)
TRAIN_INSTALL = ("pip install 'edgesnn[train]' (or edgesnn[all]); edgesnn[device] alone runs verify and profile of "
                 ".tflite files and MCU projects")


def handles(artifact: Path) -> bool:
    """A .tflite file or an MCU project folder: verified here, without torch."""
    artifact = Path(artifact)
    return artifact.suffix == ".tflite" or (artifact.is_dir() and (artifact / PROJECT_FILE).is_file())


def verify(artifact: Path, data_spec: str | None = None, ir: Path | None = None, qemu: bool = False,
           samples: int | None = None, trust_code=False, spike_code: str | None = None) -> dict:
    """A .tflite file: every output integer in each installed runtime vs the golden interpreter of its IR
    (``ir``, default model.ir beside it). An MCU project folder: built and run (host; with ``qemu`` also the
    board's emulated core), its Makefile only with ``trust_code`` True. ``data_spec`` None: the data set
    the artifact records. The same results as :func:`edgesnn.pipeline.verify`, which calls this."""
    artifact = Path(artifact)
    if samples is not None and samples < 1:
        raise EdgesnnError(f"--samples must be at least 1, got {samples}")
    check_not_interrupted(artifact if artifact.is_dir() else artifact.parent)  # a stopped export's half-swapped files
    if spike_code is not None:
        raise EdgesnnError(f"{artifact}: --spike-code chooses how a Lava folder runs; other artifacts run what they "
                           "were exported as (export --target mcu --spike-code builds the code in)")
    if artifact.is_dir() and (artifact / PROJECT_FILE).is_file():
        from edgesnn.backends.mcu import sequences, verify_mcu

        if sequences.is_temporal(artifact):  # edgesnn_reset / edgesnn_step over the test sequences
            return sequences.verify(artifact, data_spec, qemu, samples, trust_code)
        check_build_tools(artifact)
        spec, ds = artifact_data.load(artifact, data_spec, arrays=True)
        r = verify_mcu(artifact, datasets.to_nhwc(ds.x_test), qemu=qemu, samples=samples, trust_code=trust_code is True)
        return {"data": spec, **with_accuracy(r, artifact, ds)}
    if artifact.suffix == ".tflite":
        return _verify_tflite(artifact, data_spec, ir)
    raise EdgesnnError(f"{artifact}: the device path verifies a .tflite file or an MCU project folder")


def _verify_tflite(artifact: Path, data_spec: str | None, ir: Path | None) -> dict:
    from edgesnn.backends.tflite import available_runtimes, compare

    graph, ir = beside_ir(artifact, ir)
    check_runnable(artifact)
    data_spec, ds = artifact_data.load(artifact, data_spec, arrays=True, graph=graph)
    x = datasets.to_nhwc(ds.x_test)
    skipped = not_run_here()
    r = compare(artifact, graph, x, [name for name in available_runtimes() if name not in skipped])
    r["cannot_run"] = {**skipped, **r["cannot_run"]}  # printed by the CLI, one line each
    return {"artifact": str(artifact), "ir": str(ir), "data": data_spec, **r,
            "ir_accuracy": float((graph.run(x).argmax(1) == np.asarray(ds.y_test)).mean())}


def with_accuracy(r: dict, folder: Path, ds) -> dict:
    """A target bit-exact with its IR has the IR's accuracy on the samples it ran: say so."""
    if r["mismatches"] == 0 and (folder / IR_FILE).is_file():
        n = r["samples"]
        pred = load_ir(folder / IR_FILE).run(datasets.to_nhwc(ds.x_test[:n])).argmax(1)
        r["accuracy"] = float((pred == np.asarray(ds.y_test)[:n]).mean())
    return r


def beside_ir(artifact: Path, ir: Path | None):
    """(graph, path) of the IR a file was written from: ``ir``, or model.ir beside it."""
    if not artifact.is_file():
        raise EdgesnnError(f"{artifact}: no such file")
    ir = Path(ir) if ir is not None else artifact.with_name(IR_FILE)
    if not ir.is_file():
        raise EdgesnnError(f"{artifact}: no IR to compare with at {ir}; pass --ir PATH")
    return load_ir(ir), ir


def check_build_tools(project: Path) -> None:
    """An MCU project is built where it runs, with make and the C compiler (the Makefile's ``cc``): one line
    naming what is missing and how a board gets it, before any work."""
    missing = [tool for tool in ("make", "cc") if shutil.which(tool) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise EdgesnnError(f"{project}: building the C project needs make and a C compiler (cc); "
                           f"{' and '.join(missing)} {verb} not installed: sudo apt-get install build-essential "
                           "(Raspberry Pi OS, Jetson Linux, Debian)")


def check_runnable(artifact: Path) -> None:
    """A .tflite file the installed in-process runtime cannot run is one line naming the operator and what to
    install (a board with only tflite-runtime 2.14 and an int16-stream file), before any work; so is no runtime."""
    from edgesnn.backends.tflite.runtime import _interpreter_module, read_model

    _, runtime = _interpreter_module()
    problem = refusal(read_model(artifact), runtime)
    if problem:
        raise EdgesnnError(f"{artifact}: {problem}")


def refusal(data: bytes, runtime: str) -> str | None:
    """Why ``runtime`` (the installed TFLite runtime's name) cannot run the validated .tflite bytes, naming
    the operator and what to install; None when it can. Measured for tflite-runtime 2.14 (runtime214.CANNOT_RUN)."""
    if not runtime.startswith("tflite-runtime"):
        return None
    import tflite

    from edgesnn.backends.tflite.runtime214 import CANNOT_RUN

    model = tflite.Model.GetRootAs(data, 0)
    ops = {v: k for k, v in vars(tflite.BuiltinOperator).items() if isinstance(v, int)}
    types = {v: k.lower() for k, v in vars(tflite.TensorType).items() if isinstance(v, int)}
    graph = model.Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = ops.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        key = (name, types.get(graph.Tensors(op.Inputs(0)).Type()), types.get(graph.Tensors(op.Outputs(0)).Type()))
        if key in CANNOT_RUN:
            return (f"{runtime} cannot run its {key[0]} {key[1]} -> {key[2]} (operator {i}): {CANNOT_RUN[key]}; "
                    "install ai-edge-litert (pip install ai-edge-litert), which runs it, or export it with "
                    "--stream-dtype int8 --runtime tflite-runtime")
    return None


# ---- the machine this runs on ---------------------------------------------------------------------

def emulator() -> str | None:
    """What emulates this interpreter, or None on real hardware: an Arm interpreter whose /proc/cpuinfo is an
    x86 one runs under qemu-user (which passes the host's through), as in tests/test_device_aarch64.py."""
    machine = platform.machine()
    if not (machine in ("aarch64", "arm64") or machine.startswith("arm")):
        return None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    if re.search(r"^vendor_id\s*:|^flags\s*:.*\bsse2\b", cpuinfo, re.M):
        return f"qemu-user ({machine} emulated on an x86-64 host)"
    return None


def machine_model() -> str | None:
    """The board this runs on, as its device tree names it ("Raspberry Pi 4 Model B Rev 1.4", "NVIDIA Jetson
    Orin Nano Developer Kit"); None on a machine without one (a PC). ``EDGESNN_SYSFS`` relocates /sys."""
    path = Path(os.environ.get("EDGESNN_SYSFS", "/sys")) / "firmware" / "devicetree" / "base" / "model"
    try:
        return path.read_bytes().split(b"\0")[0].decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def not_run_here() -> dict[str, str]:
    """TFLite runtimes left out on this machine, with why: under qemu-user LiteRT's default kernels (XNNPACK)
    crash the emulator (a segmentation fault that would end edgesnn), so only its reference kernels run."""
    from edgesnn.backends.tflite import LITERT_DEFAULT

    emulated = emulator()
    if emulated is None:
        return {}
    return {LITERT_DEFAULT: f"under {emulated} its default kernels (XNNPACK) crash the emulator, so only the "
                            "reference kernels ran; on the board both run"}
