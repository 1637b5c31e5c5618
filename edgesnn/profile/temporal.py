"""Profile of a temporal graph (state over T real timesteps, edgesnn.ir.state): the same figures as a static
profile, each per timestep and per sequence, from a run of the golden interpreter over the data set's test
sequences, one step at a time (``state.Stepper``, every tensor of every step kept), plus the memory of the
states that carry from one step to the next.

Per step means the mean over every sample and step; per sequence the mean over samples of the sum over
the T steps, so per sequence = T x per step. SOPs are counted as for a static graph (spikes x fan-out, one
accumulate per spike per synapse), one step's spikes at a time: a count s > 1 (``max_spike``) is s spikes. A
``recurrent`` op's weight reads the previous step's spikes (its state), so it is a row too: its SOPs are
those spikes x its output channels, its MACs its weight's size.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgesnn import artifact_data, spikes
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from edgesnn.profile import memory, ops
from edgesnn.profile.energy import energy_45nm
from edgesnn.progress import step

ROW_KINDS = ops.ROW_KINDS + ("recurrent",)
NEURONS = ("lif", "cuba_lif")
BATCH = 64  # sequences run at once while counting (every tensor of every step of a batch is held)


def load_sequences(artifact: Path, graph: g.Graph, data_spec: str | None) -> tuple[str, np.ndarray]:
    """(the spec, its test split as input integers (N, T, ...)): ``--data`` or the set the artifact records,
    read with its time axis; another T or frame is one line."""
    spec = artifact_data.resolve(artifact, data_spec, graph=graph)
    try:
        ds = datasets.load(spec, True, temporal=True)
    except EdgesnnError as e:
        if data_spec is not None:
            raise
        raise EdgesnnError(f"{artifact}: the data set it records cannot be read ({e}); pass --data") from None
    if ds.steps is None:
        raise EdgesnnError(f"data {spec}: this model runs over sequences (N, T={graph.sequence.steps}, ...), and the data "
                           f"set has static samples {tuple(ds.in_shape)}")
    try:
        return spec, st.quantize_sequence(graph, datasets.to_nhwc(np.asarray(ds.x_test, np.float32)))
    except EdgesnnError as e:
        raise EdgesnnError(f"data {spec}: {e}") from None


def states(graph: g.Graph) -> list[dict]:
    """Every state: its name, shape, dtype, width in bits, and bytes (elements x its dtype's size, batch 1)."""
    return [{"name": name, "shape": list(s.shape), "dtype": s.dtype, "bits": s.bits,
             "bytes": math.prod(s.shape) * np.dtype(g.DTYPES[s.dtype]).itemsize} for name, s in graph.states.items()]


def layer_ops(graph: g.Graph, xq: np.ndarray, code: str) -> list[dict]:
    """Per conv/dense/batch_matmul/transpose/recurrent op: ``macs`` and ``sops`` per step (and
    ``macs_per_sequence``, ``sops_per_sequence``), ``sops_by_code`` per step and ``sops_by_code_per_sequence``,
    ``counted_as``, and ``firing_rate``: the mean spikes per neuron per step of the neurons the op drives
    (the lif/cuba_lif reading its output, directly or through a recurrent op; None: it drives none)."""
    steps, n = graph.sequence.steps, len(xq)
    carriers = spikes.count_tensors(graph)
    rows = [op for op in graph.ops if op.kind in ROW_KINDS]
    sops = {op.name: {k: 0 for k in spikes.CODES} for op in rows}  # integer totals over samples and steps
    neurons = {op.name: op.output for op in graph.ops if op.kind in NEURONS}
    spikes_out = dict.fromkeys(neurons, 0)
    products = {op.name: 0.0 for op in rows if op.kind == "batch_matmul"}
    fans = {op.name: ops.fan_out(graph, op) for op in rows if op.kind in ("conv2d", "dense") and op.inputs[0] in carriers}
    with step(f"profile: operations and firing rates over {n} sequences of {steps} steps"):
        for first in range(0, n, BATCH):
            batch = xq[first:first + BATCH]
            stepper = st.Stepper(graph)
            stepper.reset(len(batch), first)
            for t in range(steps):
                before = dict(stepper.states)  # step() replaces each state's array: these are the previous step's
                try:
                    values = stepper.step(batch[:, t], keep_all=True)
                except OverflowError as e:
                    raise EdgesnnError(f"integer overflow while running the IR: {e}") from None
                for op in rows:
                    if op.name in fans:
                        src = op.inputs[0]
                        counts = np.abs(values[src].reshape(len(batch), -1).astype(np.int64)) // carriers[src].unit
                        for k in spikes.CODES:
                            sops[op.name][k] += int((spikes.spike_ops(counts, k) * fans[op.name]).sum())
                    elif op.kind == "recurrent":
                        prev = before[op.state]  # the source as it was at the previous step (zero at the first)
                        if op.source in carriers:
                            counts = np.abs(prev.reshape(len(batch), -1).astype(np.int64)) // carriers[op.source].unit
                            for k in spikes.CODES:
                                sops[op.name][k] += int(spikes.spike_ops(counts, k).sum()) * int(op.weight.shape[0])
                    elif op.kind == "batch_matmul":
                        row = {}
                        ops._product(graph, op, values, carriers, row)
                        products[op.name] += row["nonzero_products"] * len(batch)
                        for k in (row.get("sops_by_code") or {}):
                            sops[op.name][k] += row["sops_by_code"][k] * len(batch)
                for name, tensor in neurons.items():
                    spikes_out[name] += int(values[tensor].astype(np.int64).sum())
    out = []
    for op in rows:
        mac = ops.macs(graph, op) if op.kind != "recurrent" else int(op.weight.size)
        spiking = op.name in fans or (op.kind == "recurrent" and op.source in carriers) or (
            op.kind == "batch_matmul" and all(i in carriers for i in op.inputs))
        row = {"name": op.name, "kind": op.kind, "macs": mac, "macs_per_sequence": mac * steps, "sops": None,
               "sops_per_sequence": None, "firing_rate": None, "timesteps": None, "sops_by_code": None,
               "sops_by_code_per_sequence": None,
               "counted_as": ops.MOVES_DATA if op.kind == "transpose" else ops.ADDITIONS if spiking else ops.MACS}
        if spiking:
            row["sops_by_code"] = {k: sops[op.name][k] / (n * steps) for k in spikes.CODES}
            row["sops_by_code_per_sequence"] = {k: sops[op.name][k] / n for k in spikes.CODES}
            row["sops"], row["sops_per_sequence"] = row["sops_by_code"][code], row["sops_by_code_per_sequence"][code]
            fed = [op.source] if op.kind == "recurrent" else op.inputs if op.kind == "batch_matmul" else op.inputs[:1]
            row["timesteps"] = {k: max(spikes.num_steps(carriers[i].D, k) for i in fed) for k in spikes.CODES}
        if op.name in products:
            row["nonzero_products"] = products[op.name] / (n * steps)
        neuron = _driven_neuron(graph, op)
        if neuron is not None:
            size = math.prod(graph.tensors[neuron.output].shape)
            row["firing_rate"] = spikes_out[neuron.name] / (n * steps * size)
        out.append(row)
    return out


def _driven_neuron(graph: g.Graph, op: g.Op):
    """The spiking neuron op reading ``op``'s output, directly or through recurrent/requantize/reshape ops."""
    name = op.output
    for _ in range(len(graph.ops)):
        readers = [o for o in graph.ops if name in o.inputs]
        if len(readers) != 1:
            return None
        if readers[0].kind in NEURONS:
            return readers[0]
        if readers[0].kind not in ("recurrent", "requantize", "reshape"):
            return None
        name = readers[0].output
    return None


def totals(layers: list[dict], steps: int) -> dict:
    """The whole graph's operations and 45 nm energy, per step and per sequence, from the rows."""
    per_seq = [dict(r, macs=r["macs_per_sequence"], sops=r["sops_per_sequence"],
                    sops_by_code=r["sops_by_code_per_sequence"]) for r in layers]
    step_e, seq_e = energy_45nm(layers), energy_45nm(per_seq)
    out = {"macs": sum(r["macs"] for r in layers), "sops": sum(r["sops"] or 0.0 for r in layers),
           "sops_by_code": {k: sum((r["sops_by_code"] or {}).get(k, 0.0) for r in layers) for k in spikes.CODES},
           **step_e}
    out.update({
        "macs_per_step": out["macs"], "macs_per_sequence": sum(r["macs"] for r in per_seq),
        "sops_per_step": out["sops"], "sops_per_sequence": sum(r["sops"] or 0.0 for r in per_seq),
        "sops_by_code_per_sequence": {k: sum((r["sops_by_code"] or {}).get(k, 0.0) for r in per_seq) for k in spikes.CODES},
        "energy_45nm_pj_per_step": step_e["energy_45nm_pj"], "energy_45nm_pj_per_sequence": seq_e["energy_45nm_pj"],
        "energy_ann_45nm_pj_per_step": step_e["energy_ann_45nm_pj"],
        "energy_ann_45nm_pj_per_sequence": seq_e["energy_ann_45nm_pj"]})
    if "energy_45nm_pj_by_code" in seq_e:
        out["energy_45nm_pj_by_code_per_sequence"] = seq_e["energy_45nm_pj_by_code"]
    return out


def target_state(target, artifact: Path, graph: g.Graph, target_memory: dict) -> tuple[int, bool, str]:
    """(the state's bytes on the target, whether the RAM figure profile's fit reads already holds them, how
    they were counted). An MCU project's own figure (project.json ``state_bytes``: each state in its dtype,
    aligned) is in its build's .bss; a .tflite file keeps every state as an int32 input tensor (and its
    ``:next`` output), in TFLite Micro's arena when that was measured."""
    ir_bytes = sum(s["bytes"] for s in states(graph))
    if target.name == "mcu":
        from edgesnn.backends.mcu import read_project

        own = read_project(artifact).get("state_bytes")
        if own is not None:
            return int(own), "ram" in target_memory, "the MCU project (project.json state_bytes, static array edgesnn_state)"
    if target.name == "lava" and target_memory.get("ir_state_slots") is not None:  # loihi2.json: a 24-bit slot each
        return 3 * int(target_memory["ir_state_slots"]), True, (
            "the states on Loihi 2's 24-bit neuron state (loihi2.json ir_state_slots x 3 bytes), in the neuro cores "
            "counted")
    if target.name == "tflite":
        elements = sum(math.prod(s.shape) for s in graph.states.values())
        return 4 * elements, "tflm_arena_bytes" in target_memory, "int32 state input tensors of the .tflite file"
    return ir_bytes, False, "the IR's states (elements x dtype size)"


def add_state_to_fit(fit: dict, state_bytes: int, included: bool) -> dict:
    """RAM needed = the activation figure + the states, unless that figure already holds them."""
    need = fit.get("needed_bytes")
    if included or not need or "ram" not in need:
        return fit
    need = dict(need, ram=need["ram"] + state_bytes)
    have = fit["available_bytes"]
    margin = {k: (have[k] - need[k]) if have.get(k) is not None else None for k in need}
    return dict(fit, needed_bytes=need, margin_bytes=margin, fits=all(m is None or m >= 0 for m in margin.values()))


# ---- --measure ---------------------------------------------------------------------------------

_CHILD = """
import json, sys, time
import numpy as np
from edgesnn.ir import load
from edgesnn.ir import state as st
kind, artifact, ir, inputs, repeats = sys.argv[1:6]
xq, graph = np.load(inputs), load(ir)
if kind == "ir":
    def run():
        for i in range(len(xq)):
            st.run_sequence(graph, xq[i:i + 1])
else:
    from edgesnn.backends.tflite import runtime as rt
    from edgesnn.backends.tflite import state as ts
    def run():
        ts.run_sequences(artifact, graph, xq, rt.LITERT_DEFAULT)
run()
times = []
for _ in range(int(repeats)):
    t0 = time.perf_counter()
    run()
    times.append((time.perf_counter() - t0) * 1000 / (len(xq) * graph.sequence.steps))
print(json.dumps({"latencies_ms": times}))
"""

HOW = {"ir": "the golden interpreter, one sequence at a time (state.run_sequence), per step",
       "tflite": "LiteRT's default kernels, one invoke per step with the state fed back "
                 "(edgesnn.backends.tflite.state.run_sequences), per step",
       "mcu": "the project's host build: its harness times each edgesnn_step"}


def measure_steps(target, artifact: Path, xq: np.ndarray) -> tuple[list[float], int]:
    """(ms per timestep of each timed pass, peak resident bytes), or EdgesnnError naming why not."""
    from edgesnn.measure_child import REPEATS
    from edgesnn.profile.measure import _measure_c, _run_child

    if target.name == "mcu":
        return _measure_c(artifact, xq)  # the harness steps whole sequences and reports the mean per step
    if target.name not in ("ir", "tflite"):
        raise EdgesnnError(f"the {target.name} target cannot be timed per timestep here")
    if target.name == "tflite":
        from edgesnn.device import check_runnable

        check_runnable(artifact)
    ir = artifact if target.name == "ir" else artifact.with_name(artifact_data.IR_FILE)
    with tempfile.TemporaryDirectory(prefix="edgesnn-measure-") as tmp:
        np.save(Path(tmp) / "inputs.npy", xq)
        stdout, rss = _run_child([sys.executable, "-c", _CHILD, target.name, str(Path(artifact).resolve()),
                                  str(Path(ir).resolve()), str(Path(tmp) / "inputs.npy"), str(REPEATS)])
    return json.loads(stdout.strip().splitlines()[-1])["latencies_ms"], rss


def measure(target, artifact: Path, xq: np.ndarray, steps: int) -> dict:
    """``--measure`` of a temporal artifact: the latency per timestep and per sequence (T x), or one line
    (``latency_note``) saying why this target is not timed per step."""
    import platform

    from edgesnn.profile.measure import NO_SENSOR, SAMPLES, machine, power_sensor

    sensor = power_sensor()
    try:
        with step(f"profile: measure {target.name} latency per timestep here"), sensor.sampling() as samples:
            latencies, rss = measure_steps(target, Path(artifact), xq[:SAMPLES])
    except EdgesnnError as e:
        return {"latency_note": f"latency per timestep not measured: {e}"}
    lat = float(np.median(latencies))
    out = {"latency_ms_median": lat, "latency_ms_per_step": lat, "latency_ms_per_sequence": lat * steps,
           "latency_ms_runs": [float(v) for v in latencies], "latency_method": HOW[target.name],
           "peak_rss_bytes": int(rss), "power_sensor": sensor.name, "measure_samples": int(min(len(xq), SAMPLES)),
           "measured_on": f"{platform.node()} ({platform.machine()})", **machine()}
    if samples:
        watts = float(np.mean(samples))
        out.update({"power_w_mean": watts, "energy_mj_per_inference_measured": watts * lat,
                    "energy_mj_per_step_measured": watts * lat, "energy_mj_per_sequence_measured": watts * lat * steps})
    else:
        out["power_note"] = sensor.problem or NO_SENSOR
    return out


# ---- board energy --------------------------------------------------------------------------------

def board_energy(board, target, artifact: Path, xq: np.ndarray, r: dict, steps: int,
                 graph: g.Graph | None = None) -> dict:
    """The board's own energy per step and per sequence: an MCU project's instructions per step counted on
    QEMU x the board's energy per cycle; a CPU board's latency per step x its power (energy.cpu_board); a
    neuromorphic chip's per-operation model over the sequences, of the target that runs on it (Loihi 2: the
    lava target, backends/lava/resources_state.py); otherwise a note saying there is no per-step model."""
    from edgesnn.profile.energy import cpu_board

    if board.kind == "mcu":
        e = _mcu_energy(board, target, artifact, xq)
    elif board.kind != "neuromorphic":
        e = cpu_board(board, r)
    else:
        from edgesnn import targets

        owner = next((t for t in [target, *targets.all_targets()] if board.kind in t.runs_on), None)
        e = owner.board_energy(board, artifact if owner is target else None, graph, xq) if owner and graph else None
        e = e or {"energy_board_pj": None,
                  "energy_board_note": f"no per-timestep energy model of {board.name} for a model over sequences"}
    pj = e.get("energy_board_pj")
    e["energy_board_pj_per_step"] = pj
    e["energy_board_pj_per_sequence"] = None if pj is None else pj * steps
    return e


def _mcu_energy(board, target, artifact: Path, xq: np.ndarray) -> dict:
    cycle = (board.energy_pj or {}).get("cycle")
    if target.name != "mcu" or not board.qemu_machine:
        return {"energy_board_pj": None, "energy_board_note": "instructions per step are counted on QEMU from an MCU "
                                                              "project for a board with a QEMU machine: export "
                                                              "--target mcu for it and profile that folder"}
    from edgesnn.backends.mcu import read_project
    from edgesnn.backends.mcu.sequences import verify_sequences

    if read_project(artifact)["kind"] != "mcu":
        return {"energy_board_pj": None, "energy_board_note": "the project is not a Cortex-M build"}
    arm = verify_sequences(artifact, None, qemu=True, samples=6, trust_code=True, xq=xq)["runs"]["arm"]
    e = {"energy_board_pj": None, "instructions_per_step": arm["instructions_per_step"]}
    if cycle is None:
        e["energy_board_note"] = f"{board.name} has no energy per cycle in its board file"
    else:
        e["energy_board_pj"] = arm["instructions_per_step"] * cycle
        e["energy_board_note"] = "QEMU instructions per timestep x energy per cycle (1 instruction per cycle)"
    return e


# ---- the whole profile ---------------------------------------------------------------------------

def profile(artifact: Path, target, graph: g.Graph, target_memory: dict, board, code: str, data_spec: str | None,
            measure_it: bool) -> dict:
    """edgesnn.profile.profile for a temporal graph (the same keys, per step, plus per-sequence ones)."""
    from edgesnn.profile import _fit

    steps = graph.sequence.steps
    data_spec, xq = load_sequences(artifact, graph, data_spec)
    layers = layer_ops(graph, xq, code)
    state_list = states(graph)
    state_bytes = sum(s["bytes"] for s in state_list)
    target_bytes, included, how = target_state(target, artifact, graph, target_memory)
    result = {
        "artifact": str(artifact), "target": target.name, "board": board.name, "data": data_spec,
        "samples": int(len(xq)), "steps": steps, "readout": dict(graph.sequence.readout),
        "params": memory.params(graph), "weight_bytes": memory.weight_bytes(graph),
        "peak_activation_bytes": memory.peak_activation_bytes(graph),
        "neuron_state_bytes": state_bytes, "state_bytes": state_bytes, "states": state_list,
        "target_state_bytes": target_bytes, "target_state_note": how + (
            "" if "cores" in target_memory else ", inside the RAM figure" if included else ", added to the RAM figure"),
        "target_memory": target_memory, "spike_code": code, **totals(layers, steps), "layers": layers,
    }
    try:  # a board counted in other units than bytes (Loihi 2's cores) is its target's own fit
        fit = _fit(board, target, result, graph, np.zeros((1, *graph.tensors[graph.input].shape), np.float32))
    except EdgesnnError as e:
        raise EdgesnnError(f"{board.name}: no fit of a model over sequences ({e})") from None
    result.update(add_state_to_fit(fit, target_bytes, included))
    if measure_it:
        result.update(measure(target, Path(artifact), xq, steps))
        if "latency_note" not in result and target.name == "mcu":
            result["latency_note"] = "MCU: the host build's harness, per edgesnn_step"
    result.update(board_energy(board, target, Path(artifact), xq, result, steps, graph))
    return result


# ---- the command's text ----------------------------------------------------------------------------

def summary(r: dict):
    """(a rich table per layer, the lines after it) of a temporal profile: every figure per timestep and per
    sequence of ``steps`` steps, with units. The verdict line is the caller's."""
    from rich.table import Table

    t, code = r["steps"], r["spike_code"]
    table = Table(title=f"{r['artifact']} ({r['target']}) per layer, {r['samples']} sequences of T={t} steps")
    for col in ("layer", "op", "MACs/step", "MACs/seq", f"SOPs/step ({code})", "SOPs/seq", "spikes/neuron/step",
                "counted as"):
        table.add_column(col, justify="left" if col in ("layer", "op", "counted as") else "right")
    for row in r["layers"]:
        table.add_row(row["name"], row["kind"], str(row["macs"]), str(row["macs_per_sequence"]),
                      "-" if row["sops"] is None else f"{row['sops']:.1f}",
                      "-" if row["sops_per_sequence"] is None else f"{row['sops_per_sequence']:.1f}",
                      "-" if row["firing_rate"] is None else f"{row['firing_rate']:.3f}", row["counted_as"])
    lines = [
        f"weights {r['weight_bytes']} B, peak activations {r['peak_activation_bytes']} B, state {r['state_bytes']} B "
        f"({len(r['states'])} states; on the target {r['target_state_bytes']} B: {r['target_state_note']})",
        f"per step: MACs {r['macs_per_step']}, SOPs {r['sops_per_step']:.1f}, energy (45 nm) "
        f"{r['energy_45nm_pj_per_step'] / 1e6:.4f} uJ vs ANN {r['energy_ann_45nm_pj_per_step'] / 1e6:.4f} uJ",
        f"per sequence (T={t}): MACs {r['macs_per_sequence']}, SOPs {r['sops_per_sequence']:.1f}, energy (45 nm) "
        f"{r['energy_45nm_pj_per_sequence'] / 1e6:.4f} uJ vs ANN {r['energy_ann_45nm_pj_per_sequence'] / 1e6:.4f} uJ"]
    pj = r.get("energy_board_pj_per_step")
    board_e = "unknown" if pj is None else (f"{pj / 1e6:.4f} uJ per step, "
                                            f"{r['energy_board_pj_per_sequence'] / 1e6:.4f} uJ per sequence")
    lines.append(f"energy on {r['board']}: {board_e} ({r['energy_board_note']})")
    if r.get("loihi2"):  # a neuromorphic board: its resource model per layer (backends/lava/resources_state.py)
        lo = r["loihi2"]
        lines.append(f"Loihi 2: {lo['cores']} cores, {lo['neurons']} neurons, {lo['state_slots']} 24-bit state slots "
                     f"({lo['ir_state_slots']} hold the IR's states), {lo['synops_per_step']:.1f} synaptic ops per "
                     f"step, {lo['synops_per_sequence']:.1f} per sequence")
        lines += [f"Loihi 2 {row['name']} ({row['op']}): " + (
            "Loihi's CUBA neuron (Lava's bit-accurate LIF)" if row["mapping"] == "loihi-cuba" else
            f"estimate: {row['neuron_model']}, not Loihi's CUBA neuron ({row['why']})")
            for row in lo["layers"] if row["mapping"] in ("loihi-cuba", "estimate")]
    if "latency_ms_per_step" in r:
        power = f"; {r['power_note']}" if "power_note" in r else f", {r['power_w_mean']:.2f} W ({r['power_sensor']})"
        lines.append(f"measured here: {r['latency_ms_per_step']:.4f} ms per step, {r['latency_ms_per_sequence']:.4f} ms "
                     f"per sequence (median of {len(r['latency_ms_runs'])} passes; {r['latency_method']}), peak RSS "
                     f"{r['peak_rss_bytes'] / 2**20:.1f} MiB{power}")
    elif "latency_note" in r:
        lines.append(r["latency_note"])
    return table, lines
