"""``--target mcu``: a self-contained C project for a board (bare-metal Cortex-M or aarch64 Linux),
its kernels from TVM or CMSIS-NN; verify builds and runs it here and in QEMU, every output integer
compared with the IR; profile counts its build's sizes and, on QEMU, its instructions."""

from __future__ import annotations

from pathlib import Path

from edgesnn.boards import BUILD_KINDS
from edgesnn.targets import SPIKE_CODE, Option, Target

KERNELS_REFUSED = "--kernels/--cmsis-nn: choose the kernels of --target {owners}, not of {target}"
EVENT_DRIVEN = Option("event_driven", "event-driven conv/dense layers: auto (per layer, the form the cost model of the "
                      "board's core finds cheaper), none, all, or comma-separated layer names",
                      default="auto", choices=("auto", "none", "all"),
                      other="LAYER,...", recipe="always")
KERNELS = Option("kernels", "kernel source: tvm (generated for every layer) or cmsis-nn (the int8 "
                 "conv/depthwise/dense layers CMSIS-NN covers call it; needs --cmsis-nn)", default="tvm",
                 choices=("tvm", "cmsis-nn"), strict=True, refused=KERNELS_REFUSED)
CMSIS_NN = Option("cmsis_nn", "with --kernels cmsis-nn, the CMSIS-NN folder (Include/, Source/) the project's "
                  "Makefile compiles", type=Path, strict=True, refused=KERNELS_REFUSED)
QEMU = Option("qemu", "MCU project: also run the board's build on QEMU (Cortex-M, or aarch64)", type=bool,
              default=False)
NO_QEMU = "needs an MCU project (export --target mcu) for a board QEMU emulates"


class MCUTarget(Target):
    name, artifact, describes, rank = "mcu", "an MCU project folder", "an MCU project folder", 40
    help = "C project"
    files, replaces_folder = ("project.json", "model.ir", "Makefile"), True
    export_options = (EVENT_DRIVEN, SPIKE_CODE, KERNELS, CMSIS_NN)
    verify_options = (QEMU,)
    builds_for, runs_on = BUILD_KINDS, ("mcu",)
    kernel_sources = ("tvm", "cmsis-nn")
    scratch, builds_code = ("build",), True  # the compiler's output is no part of the project
    stateful = True  # a temporal graph: edgesnn_reset / edgesnn_step, its state in a static arena (stateful.py)

    def prepare(self, options, spell=None):
        from edgesnn.spikes import code_name

        if options["spike_code"] is not None:
            options["spike_code"] = code_name(options["spike_code"])
        if options["kernels"] != "tvm" or options["cmsis_nn"] is not None:  # a bad kernel source or folder
            from edgesnn.backends.mcu.cmsis_nn import check_kernels

            check_kernels(options["kernels"], options["cmsis_nn"])
        return options

    def export(self, graph, out, board, options, calibration):
        from edgesnn.backends.mcu import export_mcu

        export_mcu(graph, board, Path(out), options["event_driven"], calibration, options["spike_code"],
                   options["kernels"], options["cmsis_nn"])
        return Path(out)

    def recognizes(self, path):
        return path.is_dir() and (path / self.files[0]).is_file()

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        """Built and run here (host), with --qemu also on the board's emulated core; no torch (edgesnn.device)."""
        from edgesnn import device
        from edgesnn.backends.mcu import sequences

        if sequences.is_temporal(artifact):  # every step's output and the readout, over the test sequences
            return sequences.verify(artifact, data, options["qemu"], samples, trust_code)
        return device.verify(artifact, data, ir, qemu=options["qemu"], samples=samples, trust_code=trust_code)

    def profile_graph(self, artifact, trust_code):
        from edgesnn.backends.mcu import read_project, require_trusted_project
        from edgesnn.backends.mcu.build import cortex_m_sizes
        from edgesnn.ir import load as load_ir

        info = read_project(artifact)
        require_trusted_project(artifact, trust_code)  # profiling builds it (sizes, instruction counts, --measure)
        extra = {"arena_bytes": info["arena_bytes"], "const_bytes": info["const_bytes"]}
        if info["kind"] == "mcu":  # every Cortex-M board builds (no QEMU machine: a link-check memory map)
            built = cortex_m_sizes(artifact)
            extra.update(built["image"])  # the whole verification image: harness, startup, newlib stdio
            extra.update({f"library_{k}_bytes": v for k, v in built["library"].items()})  # the model alone
        return load_ir(artifact / "model.ir"), extra

    def spike_code(self, artifact):
        from edgesnn.backends.mcu import read_project

        return read_project(artifact).get("spike_code")

    def measure(self, artifact, xq):
        from edgesnn.profile.measure import _measure_c

        return _measure_c(artifact, xq)

    def board_energy(self, board, artifact, graph, x):
        """Instructions counted on QEMU x the board's energy per cycle (one instruction per cycle assumed)."""
        if board.kind != "mcu":
            return None
        from edgesnn.backends.mcu import read_project, verify_mcu

        e = {"energy_board_pj": None}
        cycle = (board.energy_pj or {}).get("cycle")
        if artifact is None or not board.qemu_machine or read_project(artifact)["kind"] != "mcu":
            e["energy_board_note"] = NO_QEMU  # a Linux board's project runs under qemu-aarch64
            return e
        arm = verify_mcu(artifact, x, qemu=True, samples=20, trust_code=True)["runs"]["arm"]  # profile checked trust
        e["instructions_per_inference"] = arm["instructions_per_inference"]
        if cycle is None:
            e["energy_board_note"] = f"{board.name} has no energy per cycle in its board file"
        else:
            e["energy_board_pj"] = arm["instructions_per_inference"] * cycle
            e["energy_board_note"] = "QEMU instructions per inference x energy per cycle (1 instruction per cycle)"
        return e

    def flash_bytes(self, folder):
        from edgesnn.backends.mcu import read_project

        return int(read_project(folder)["const_bytes"]), "model constants (project.json const_bytes)"


MCU = MCUTarget()
