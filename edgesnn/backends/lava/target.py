"""``--target lava``: edgesnn's Lava process graph (Loihi 2 fixed point), a netx file and a Loihi 2
resource and energy report; verify runs it in Lava's CPU simulation, every output integer compared
with the IR. The Loihi 2 report also gives the energy and neuro cores of any IR on a neuromorphic board."""

from __future__ import annotations

from pathlib import Path

from edgesnn.errors import EdgesnnError
from edgesnn.targets import SPIKE_CODE, Option, Target

MODES = ("graded", "rate-burst", "bit-plane")  # edgesnn.backends.lava.network.MODES (tests check they agree)
NETWORK_FILE, NETX_FILE, REPORT_FILE = "lava.json", "model.net", "loihi2.json"  # as in edgesnn.backends.lava
LAVA_MODE = Option("lava_mode", "SFA neurons as graded spikes (default), or spike trains: rate-burst or bit-plane "
                   "(the same as --spike-code)", choices=MODES, recipe="always", recipe_default="graded")
VERIFY_MODE = Option("lava_mode", "Lava folder: graded, rate-burst or bit-plane (default: the exported mode)",
                     choices=MODES)
VERIFY_CODE = Option("spike_code", "Lava folder: run spike trains of this code, rate-burst or bit-plane (default: "
                     "the exported mode)", choices=SPIKE_CODE.choices, strict=True,
                     refused="{artifact}: --spike-code chooses how a Lava folder runs; other artifacts run what they "
                             "were exported as (export --target mcu --spike-code builds the code in)")


class LavaTarget(Target):
    name, artifact, describes, rank = "lava", "a Lava folder", "a Lava folder", 50
    help = "Lava process graph, netx file, Loihi 2 report"
    files, replaces_folder = (NETWORK_FILE, "model.ir", REPORT_FILE, NETX_FILE), True
    export_options = (LAVA_MODE, SPIKE_CODE)
    verify_options = (VERIFY_MODE, VERIFY_CODE)
    runs_on = ("neuromorphic",)
    run_samples = 50  # Lava's simulation is slow: a recipe's verify runs the first 50 samples
    stateful = True  # a model over sequences: its state in the processes, zeroed per sequence (sequences.py)

    def prepare(self, options, spell=None):
        """The spike code names the spike-train mode: given together, they must agree (a bad one fails first)."""
        from edgesnn.backends.lava import resolve_mode

        spell = spell or (lambda name: "--" + name.replace("_", "-"))
        mode, code = options["lava_mode"], options["spike_code"]
        from edgesnn.spikes import code_name

        if mode in MODES and code is not None and mode != code_name(code):
            raise EdgesnnError(f"{spell('lava_mode')} {mode} and {spell('spike_code')} {code} disagree: the spike code "
                               f"is the Lava mode of spike trains (give one of them)")
        options["lava_mode"] = resolve_mode(mode, code) or "graded"
        return options

    def export(self, graph, out, board, options, calibration):
        from edgesnn.backends.lava import export_lava

        if graph.stateful:  # the Loihi 2 report counts the test sequences of the data set the graph records
            data, calibration, note = _sequences(graph, Path(out))
            export_lava(graph, Path(out), options["lava_mode"], calibration, data, note)
            return Path(out)
        export_lava(graph, Path(out), options["lava_mode"], calibration)
        return Path(out)

    def summary(self, artifact):
        """The Loihi 2 report and what netx can run, as export wrote them."""
        import json

        network = json.loads((Path(artifact) / NETWORK_FILE).read_text())
        if "steps" in network:  # a model over sequences: which model runs each stateful op
            return [f"lava: {p['name']} ({p['kind']}): {p['model']}" + ("" if p["lif"] else f": {p['why']}")
                    for p in network["processes"] if p["kind"] in ("lif", "cuba_lif", "li", "recurrent")] + \
                   [_sequence_line(json.loads((Path(artifact) / REPORT_FILE).read_text()))] + \
                   ((network.get("netx_summary") or {}).get("lines") or [f"netx: no model.net: {network['netx_note']}"])
        r = json.loads((Path(artifact) / REPORT_FILE).read_text())
        lines = [f"Loihi 2 ({r['mode']}): {r['neurons']} neurons, {r['synapses']} synapses, {r['cores']} cores, "
                 f"{r['synops_per_inference']:.0f} synaptic ops and {r['energy_uj_per_inference']:.2f} uJ per inference "
                 f"(energy figures: see loihi2.json)"]
        return lines + ((network.get("netx_summary") or {}).get("lines") or [f"netx: no model.net: {network['netx_note']}"])

    def recognizes(self, path):
        return path.is_dir() and (path / NETWORK_FILE).is_file()

    def verify(self, artifact, data, *, ckpt, ir, samples, trust_code, options):
        from edgesnn import artifact_data
        from edgesnn import data as datasets
        from edgesnn.backends.lava import resolve_mode, verify_lava
        from edgesnn.device import with_accuracy

        mode = resolve_mode(options["lava_mode"], options["spike_code"])
        if _stateful(artifact):  # over sequences: every step's output and the readout vs the IR's
            from edgesnn.backends.lava import TIMEOUT_S
            from edgesnn.backends.lava.sequences import verify

            if mode not in (None, "graded"):
                raise EdgesnnError(f"{artifact}: a model over sequences runs graded spikes only, not {mode}")
            return verify(artifact, data, samples, TIMEOUT_S)
        spec, ds = artifact_data.load(artifact, data)
        return {"data": spec, **with_accuracy(verify_lava(artifact, datasets.to_nhwc(ds.x_test), samples, mode),
                                              artifact, ds)}

    def profile_graph(self, artifact, trust_code):
        from edgesnn.backends.lava import ReportFile
        from edgesnn.files import read_artifact_json
        from edgesnn.ir import load as load_ir

        _has_report(artifact)
        graph = load_ir(artifact / "model.ir")
        if graph.stateful:  # per step and per sequence (resources_state.py)
            from edgesnn.backends.lava.resources_state import SequenceReportFile

            report = read_artifact_json(artifact / REPORT_FILE, SequenceReportFile, "Loihi 2 report")
            return graph, {k: report[k] for k in ("cores", "chips", "neurons", "synaptic_memory_bits", "state_slots",
                                                  "ir_state_slots", "energy_uj_per_step", "energy_uj_per_sequence")}
        report = read_artifact_json(artifact / REPORT_FILE, ReportFile, "Loihi 2 report")  # types and ranges checked
        extra = {k: report[k] for k in ("cores", "chips", "neurons", "synaptic_memory_bits", "energy_uj_per_inference")}
        return graph, extra

    def spike_code(self, artifact):
        from edgesnn import spikes
        from edgesnn.backends.lava import NetworkFile
        from edgesnn.files import read_artifact_json

        mode = read_artifact_json(artifact / NETWORK_FILE, NetworkFile, "Lava network file")["mode"]
        return mode if mode in spikes.CODES else None

    def measure(self, artifact, xq):
        from edgesnn.profile.measure import _measure_lava

        return _measure_lava(artifact, xq)

    def board_energy(self, board, artifact, graph, x):
        """Loihi 2's per-synaptic-op and per-neuron-update figures over ``x``, in the folder's own mode
        (another target's artifact: graded spikes). A temporal graph's ``x``: integer sequences (N, T, ...),
        the energy per step (resources_state.board_energy)."""
        if board.kind != "neuromorphic":
            return None
        if graph.stateful:
            from edgesnn.backends.lava.resources_state import board_energy

            return board_energy(graph, x)
        from edgesnn.backends.lava.resources import loihi2_report

        mode = (self.spike_code(artifact) if artifact is not None else None) or "graded"
        report = loihi2_report(graph, x[:256], mode=mode)
        return {"energy_board_pj": report["energy_pj_per_inference"],
                "energy_board_note": "Loihi 2 per-synaptic-op and per-neuron-update figures (see "
                                     "edgesnn/shipped/boards/loihi2.yaml)"}

    def board_fit(self, board, target_memory, graph, x):
        """Neuro cores, one layer per core (backends/lava/resources.py): the folder's report, else counted on ``x``."""
        if board.kind != "neuromorphic":
            return None
        from edgesnn.backends.lava.resources import loihi2_report

        if graph.stateful:  # no data needed: cores count neurons, memory and state
            from edgesnn.backends.lava.resources_state import cores as sequence_cores

            cores = target_memory.get("cores") or sequence_cores(graph)
        else:
            cores = target_memory.get("cores") or loihi2_report(graph, x[:64])["cores"]
        have = int(board.figures["neuro_cores_per_chip"]["value"])
        return {"fits": cores <= have, "needed_cores": cores, "available_cores": have, "margin_cores": have - cores,
                "needed_bytes": {}, "available_bytes": {}, "margin_bytes": {}}

    def flash_bytes(self, folder):
        from edgesnn.limits import read_json

        _has_report(folder)
        report = read_json(Path(folder) / REPORT_FILE, "Loihi 2 report")
        return -(-int(report["synaptic_memory_bits"]) // 8), "Loihi 2 synaptic memory (loihi2.json)"


def _stateful(folder: Path) -> bool:
    """Whether a Lava folder holds a model over sequences (its model.ir says so)."""
    from edgesnn.ir import load as load_ir

    return (Path(folder) / "model.ir").is_file() and load_ir(Path(folder) / "model.ir").stateful


def _has_report(folder: Path) -> None:
    if not (Path(folder) / REPORT_FILE).is_file() and _stateful(folder):
        raise EdgesnnError(f"{folder}: no {REPORT_FILE} (a model over sequences exported by an older edgesnn): export "
                           f"it again")


def _sequences(graph, out: Path) -> tuple[str | None, object, str | None]:
    """(spec, input integers (N, T, ...), None) of the first test sequences of the data set a temporal graph
    records, or (spec, None, why) when there is none to read: the report then holds no activity."""
    from edgesnn import artifact_data
    from edgesnn.backends.lava.resources_state import SAMPLES

    try:
        spec = artifact_data.resolve(out, None, graph=graph)
    except EdgesnnError:
        return None, None, "the graph records no data set"
    try:
        return spec, artifact_data.test_sequences(out, spec, graph, SAMPLES)[1], None
    except EdgesnnError as e:
        return spec, None, f"its data set cannot be read here ({e})"


def _sequence_line(r: dict) -> str:
    """Export's line about a temporal graph's loihi2.json."""
    head = (f"Loihi 2: {r['neurons']} neurons, {r['synapses']} synapses, {r['cores']} cores, {r['state_slots']} "
            f"24-bit state slots")
    if r.get("synops_per_step") is None:
        return f"{head}; {r['activity_note']}"
    estimated = (f"; estimates for {', '.join(r['estimated_layers'])} (edgesnn's own neuron models, not Loihi's CUBA)"
                 if r["estimated_layers"] else "")
    return (f"{head}; per step {r['synops_per_step']:.0f} synaptic ops, {r['energy_uj_per_step']:.4f} uJ; per sequence "
            f"(T={r['steps']}) {r['synops_per_sequence']:.0f}, {r['energy_uj_per_sequence']:.3f} uJ over "
            f"{r['samples']} test sequences{estimated} (see loihi2.json)")


LAVA = LavaTarget()
