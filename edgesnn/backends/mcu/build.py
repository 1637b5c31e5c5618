"""Build the generated project with make and run it: on the host, on QEMU's Cortex-M machines
(semihosting for the data, -icount for instruction counts) and under qemu-aarch64. make and QEMU
run through edgesnn.proc, so an interrupt or a timeout leaves no compiler or emulator running."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgesnn.backends.mcu.cost import HELIUM_CORES
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.progress import step
from edgesnn.proc import run as run_child  # its own process group: killed whole on error, timeout or interrupt

# QEMU machine -> the harness's timer (base address of CMSDK APB timer 0, or None: SysTick, where
# the machine has no CMSDK timer) and its clock: hw/arm/mps2.c, mps2-tz.c, armsse.c, nrf51_soc.c.
# Under -icount shift=0 a virtual ns is one instruction, so the timer counts instructions.
MACHINES = {"mps2-an385": (0x40000000, 25_000_000), "mps2-an386": (0x40000000, 25_000_000),
            "mps2-an500": (0x40000000, 25_000_000), "mps2-an505": (0x50000000, 20_000_000),
            "mps3-an547": (None, 32_000_000), "microbit": (None, 16_000_000)}
CORES = {"mps2-an385": "cortex-m3", "mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7",  # the core each emulates
         "mps2-an505": "cortex-m33", "mps3-an547": "cortex-m55", "microbit": "cortex-m0"}
TARGETS = {"host": ("host", "build/host/model"), "arm": ("arm", "build/arm/model.elf"),
           "aarch64": ("aarch64", "build/aarch64/model"), "arm-lib": ("arm-lib", "build/arm/libedgesnn_model.a")}
QEMU_FLAGS = ["-nographic", "-monitor", "none", "-serial", "none", "-icount", "shift=0",
              "-semihosting-config", "enable=on,target=native"]
TOOLS = {"host": "cc", "arm": "arm-none-eabi-gcc", "aarch64": "aarch64-linux-gnu-gcc", "arm-lib": "arm-none-eabi-gcc"}
RUNNERS = {"arm": "qemu-system-arm", "aarch64": "qemu-aarch64"}


def board_mk(cpu: str, machine: str | None, kind: str = "mcu") -> str:
    """The board's part of the Makefile: its CPU, the QEMU machine, and the harness's timer and linker
    script (a board without an emulated machine: SysTick counting cycles, a link-check memory map)."""
    base, hz = MACHINES.get(machine, (None, None))
    timer = (f"-DTIMER0_BASE=0x{base:08x}u " if base is not None else "") + (f"-DTIMER_HZ={hz}u" if hz else "")
    return (f"CPU := {cpu}\nMACHINE := {machine or 'none'}\nBUILD := {'arm' if kind == 'mcu' else 'aarch64'}\n"
            f"PLAT := {'plat_mps2' if base is not None else 'plat_systick'}\nTIMER := {timer}\n"
            f"LDSCRIPT := {f'{machine}.ld' if machine in MACHINES else 'cortex-m.ld'}\n"
            + (_CPU_FLAGS.format(cpu=cpu) if kind != "mcu" else "")
            + (_HELIUM_ABI if cpu in HELIUM_CORES else ""))


# An application CPU's project (kernels_cpu): -O3 and the CPU's vector extensions (AVX-512 VNNI / AVX2 on
# the host that builds it, the board's -mcpu for aarch64: +dotprod on a Cortex-A76 or A78AE).
_CPU_FLAGS = "HOST_FLAGS := -O3 -march=native\nA64_FLAGS := -O3 -mcpu={cpu}\n"
# A core with Helium builds for the hard-float ABI, as its firmware does: GCC has no MVE under soft float,
# and the cost model's coefficients for these cores (cost.py) are those of the Helium build.
_HELIUM_ABI = "ARM_ABI ?= -mfloat-abi=hard\n"


def no_machine(board: str, cpu: str | None, machine: str | None) -> str:
    """Why ``verify --qemu`` cannot run a board: one line naming its core and the cores QEMU runs."""
    what = (f"board {board} names QEMU machine {machine!r}, which edgesnn does not run" if machine
            else f"no QEMU machine emulates {cpu}, the core of board {board}")
    emulated = ", ".join(f"{core} ({m})" for m, core in CORES.items())
    return f"verify --qemu: {what}; QEMU runs {emulated}; verify without --qemu builds and runs it on this machine"


def build(project: Path, target: str) -> Path:
    make_target, binary = TARGETS[target]
    _need(TOOLS[target], target)
    with step(f"make {make_target}"):
        r = run_child(["make", "-s", "-C", str(project), make_target])
    if r.returncode != 0:
        raise EdgesnnError(f"{project}: the {target} build failed: {_tail(r.stderr or r.stdout)}")
    return Path(project) / binary


def run(project: Path, target: str, inputs: np.ndarray, out_dtype: str, out_size: int, machine: str | None = None,
        timeout: float = 600) -> tuple[np.ndarray, dict]:
    """Outputs (samples x out_size) and the harness's statistics (cost per inference). ``inputs``:
    the model's input integers, int16 for an int16 input (any other dtype is written as int8)."""
    if target == "arm" and machine not in MACHINES:  # before the build (verify_mcu says it first, naming the core)
        raise EdgesnnError(f"no QEMU machine edgesnn runs is {machine!r}; it runs {', '.join(MACHINES)}")
    if target in RUNNERS:
        _need(RUNNERS[target], target)
    binary = build(project, target)
    work = Path(project) / "build" / f"run-{target}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    in_dtype = np.int16 if np.asarray(inputs).dtype == np.int16 else np.int8  # the model's input integers
    np.ascontiguousarray(inputs, dtype=in_dtype).tofile(work / "inputs.bin")
    if target == "host":
        cmd = [str(binary.resolve())]
    elif target == "arm":
        cmd = [RUNNERS[target], "-M", machine, *QEMU_FLAGS, "-kernel", str(binary.resolve())]
    else:
        cmd = [RUNNERS[target], str(binary.resolve())]
    try:
        r = run_child(cmd, timeout=timeout, cwd=work)
    except subprocess.TimeoutExpired:
        raise EdgesnnError(f"{' '.join(cmd[:3])}: no result after {timeout:.0f} s") from None
    if r.returncode != 0:
        raise EdgesnnError(f"{target} run failed with status {r.returncode}: {_tail(r.stdout + r.stderr)}")
    dtype = g.DTYPES[out_dtype]  # the harness writes edgesnn_output_t: int8, int16 or an int32 window sum
    outputs = np.fromfile(work / "outputs.bin", dtype=dtype)
    if outputs.size != len(inputs) * out_size:
        raise EdgesnnError(f"{target} run wrote {outputs.size} outputs for {len(inputs)} samples")
    return outputs.reshape(len(inputs), out_size), _stats((work / "stats.txt").read_text())


def sizes(path: Path) -> dict:
    """.text/.data/.bss of a Cortex-M build, from arm-none-eabi-size (Berkeley format): of an image,
    or summed over the objects of a static library (the model alone)."""
    _need("arm-none-eabi-size", "arm")
    r = run_child(["arm-none-eabi-size", str(path)], timeout=60)
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
    try:
        if r.returncode != 0 or not rows:
            raise ValueError
        text, data, bss = (sum(int(row[i]) for row in rows) for i in range(3))
    except (IndexError, ValueError):
        raise EdgesnnError(f"{path}: arm-none-eabi-size could not read it: {_tail(r.stderr or r.stdout)}") from None
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def cortex_m_sizes(project: Path) -> dict:
    """Build the Cortex-M library and verification image; the sections of each: ``library`` (the
    model alone, what a firmware links) and ``image`` (harness, startup and newlib stdio included)."""
    return {"library": sizes(build(project, "arm-lib")), "image": sizes(build(project, "arm"))}


def _stats(line: str) -> dict:
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return {k: (v if k == "unit" else int(v)) for k, v in fields.items()}


def _need(tool: str, target: str) -> None:
    if shutil.which(tool) is None:
        raise EdgesnnError(f"the {target} build needs {tool}, which is not installed (scripts/setup.sh installs it)")


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ("error" in ln.lower() or "overflowed" in ln) and not ln.startswith("collect2")]
    return (errors or lines or ["no output"])[0][:300]
