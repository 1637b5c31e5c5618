"""A NIR graph with state over time (LIF, CubaLIF, LI, CubaLI, IF, I, a neuron's recurrent Affine onto
itself) -> a temporal IR graph (edgesnn/ir/state.py), checked against the graph's own float semantics.

A file edgesnn wrote carries its exact integer program: it comes back bit for bit (program.from_nodes).
Any other file is mapped (docs/nir.md, "Importing temporal graphs"): per step under forward Euler with
the step dt, a neuron's leak is ``beta = 1 - dt/tau`` -> the 12-bit decay ``round(4096·dt/tau)``, and its
input gain (LIF: ``dt·r/tau``; CubaLIF: ``dt·w_in/tau_syn · dt·r/tau_mem``; IF and I: ``r``) and 1/threshold
fold into the Affine before it, so every IR threshold is 1 on a grid of LEVELS steps. The integers come
from edgesnn's own temporal model and exporter (int8 weights per channel, int16 states), so the result
is what ``temporal-dense`` deploys.

The mapping is then checked: simulate_state.py runs the NIR graph's float semantics on the data's test
sequences and the import is refused when the IR's readout argmax agrees on less than ``min_agreement``
of them, or when the float graph itself is silent (its readout tied on most sequences), with the likely
cause named (dt, input gain / w_in / norm_input, or r conventions).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from edgesnn import data as datasets
from edgesnn import limits
from edgesnn.backends.nir import program as prog
from edgesnn.backends.nir.simulate_state import simulate_sequence
from edgesnn.errors import EdgesnnError
from edgesnn.ir import state as st

TEMPORAL_KINDS = ("LI", "CubaLI", "I")  # nodes only a temporal graph has
NEURON_KINDS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "I")
SPIKING = ("IF", "LIF", "CubaLIF")
KNOWN = ("Input", "Output", "Flatten", "Affine", "Linear") + NEURON_KINDS
MIN_AGREEMENT = 0.95  # the default share of test sequences whose readout argmax must agree
MIN_UNTIED = 0.5  # below this share of untied float readouts the graph is called silent
MAX_DOMINANT = 0.9  # ... and so it is when one class comes first on more than this share
LEVELS = 256  # a spiking neuron's threshold on its membrane's grid
STATE_BITS = 16
CALIBRATION_SAMPLES = 512
SUPPORTED = ("Input -> [Flatten] -> (Affine | Linear -> IF | LIF | CubaLIF | LI | CubaLI | I)+ -> Output, "
             "an Affine from a spiking neuron back onto itself (recurrence)")


def is_temporal(graph, program: dict | None) -> bool:
    """Whether a NIR graph is one over sequences: edgesnn's metadata says so, it has a node only temporal
    graphs have, or an edge closes a cycle."""
    if program is not None:
        return program["ir"].get("sequence") is not None
    if any(type(n).__name__ in TEMPORAL_KINDS for n in graph.nodes.values()):
        return True
    return _has_cycle(graph)


def has_time_axis(data_spec: str | None) -> bool:
    """Whether ``--data`` names a set of sequences: then a plain LIF chain is read over its time axis too."""
    return data_spec is not None and datasets.load(data_spec, temporal=True).steps is not None


def _has_cycle(graph) -> bool:
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    colour: dict[str, int] = {}
    for root in graph.nodes:
        if root in colour:
            continue
        stack = [(root, iter(succ.get(root, [])))]
        colour[root] = 1
        while stack:
            name, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[name] = 2
                stack.pop()
            elif colour.get(nxt) == 1:
                return True
            elif nxt not in colour:
                colour[nxt] = 1
                stack.append((nxt, iter(succ.get(nxt, []))))
    return False


def read_temporal(path: Path, graph, program: dict | None, data_spec: str | None, dt: float | None,
                  min_agreement: float | None, hinted_data: str | None = None) -> dict:
    """The IR graph a temporal NIR file imports to and what the check measured."""
    min_agreement = MIN_AGREEMENT if min_agreement is None else float(min_agreement)
    if not 0.0 <= min_agreement <= 1.0:
        raise EdgesnnError(f"--min-agreement must be in 0..1, got {min_agreement}")
    spec = data_spec or hinted_data or "digits-events"
    ds = datasets.load(spec, temporal=True)
    if ds.steps is None:
        raise EdgesnnError(f"{path}: a graph over sequences (neurons with state), but data set {spec!r} has static "
                           f"samples {tuple(ds.in_shape)}; pass --data with a time axis (digits-events, an .npz "
                           f"(N, T, ...), nmnist:DIR, ...)")
    if program is not None:
        ir = prog.from_nodes(graph, program, str(path))
        if not ir.stateful:
            raise EdgesnnError(f"{path}: internal: its edgesnn program is not a temporal graph")
        st.check_sequence_shape(ir, datasets.to_nhwc(ds.x_test[:1].numpy()))
        x, y = ds.x_test.numpy(), ds.y_test.numpy()
        pred = _readout(ir, x).argmax(1)
        return {"graph": ir, "exact": True, "dt": None, "data": datasets.recorded(spec), "steps": ir.sequence.steps,
                "test_accuracy": float((pred == y).mean()), "test_samples": int(len(y)), "layers": len(ir.ops),
                "notes": ["exact integer program from its edgesnn metadata"]}
    dt_given = dt is not None
    dt = _check_dt(1e-4 if dt is None else dt)
    layers, readout, flat = _parse(graph, path, ds.frame_shape)
    mapped = [_map_neuron(layer, dt, dt_given, path) for layer in layers]
    features = math.prod(ds.frame_shape)
    for m in mapped:
        if m["weight"].shape[1] != features:
            raise EdgesnnError(f"{m['where']}: its synapse's weight {list(m['weight'].shape)} does not take the "
                               f"{features} values before it")
        features = m["channels"]
    if features != ds.num_classes:
        raise EdgesnnError(f"{path}: the graph reads out {features} values, but {spec} has {ds.num_classes} classes "
                           f"(pass the right --data)")
    x_train, x_test, y = ds.x_train.numpy(), ds.x_test.numpy(), ds.y_test.numpy()
    as_input = (lambda a: a.reshape(*a.shape[:2], -1)) if flat else (lambda a: a)  # noqa: E731 - the Input's layout
    with _simulated_dt(graph, mapped):
        li_scale = _li_scale(graph, as_input(x_train[:CALIBRATION_SAMPLES]), path) if not mapped[-1]["spiking"] else None
        model = _model(ds.frame_shape, mapped, readout, li_scale, ds.x_train)
        from edgesnn.temporal.export import export

        ir = export(model, int(ds.steps))
        ir.meta.update({"source": {"nir": str(path)}, "data": datasets.recorded(spec)})
        try:
            want = simulate_sequence(graph, as_input(x_test))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise EdgesnnError(f"{path}: its nodes cannot be simulated ({type(e).__name__}: {limits._short(e)})") from None
    want = want.reshape(len(y), -1)
    got = _readout(ir, x_test)
    check = _agreement(want, got)
    report = {"graph": ir, "exact": False, "dt": dt, "data": datasets.recorded(spec), "steps": int(ds.steps),
              "test_accuracy": float((got.argmax(1) == y).mean()), "test_samples": int(len(y)), "layers": len(ir.ops),
              "float_accuracy": float((want.argmax(1) == y).mean()), **check, "min_agreement": min_agreement}
    if check["untied"] < MIN_UNTIED:
        raise EdgesnnError(f"{path}: the graph's own float simulation gives tied readouts on "
                           f"{1 - check['untied']:.0%} of {len(y)} test sequences (its neurons hardly fire or all "
                           f"fire); likely cause: {_cause(mapped, dt, dt_given, silent=True)}")
    if want.shape[1] > 2 and check["dominant"] > MAX_DOMINANT:
        raise EdgesnnError(f"{path}: the graph's own float simulation ranks one class first on {check['dominant']:.0%} "
                           f"of the test sequences (its input hardly reaches the readout); likely cause: "
                           f"{_cause(mapped, dt, dt_given, silent=True)}")
    if check["agreement"] < min_agreement:
        raise EdgesnnError(f"{path}: the imported integer model agrees with the graph's float simulation on "
                           f"{check['agreement']:.1%} of {check['compared']} test sequences, below --min-agreement "
                           f"{min_agreement:g}; likely cause: {_cause(mapped, dt, dt_given, silent=False)}")
    report["notes"] = [f"checked: the IR's readout argmax agrees with the NIR graph's float simulation (dt {dt:g} s) "
                       f"on {check['agreement']:.1%} of {check['compared']} untied test sequences; the float graph's "
                       f"accuracy {report['float_accuracy']:.4f}, the IR's {report['test_accuracy']:.4f}"]
    return report


def _check_dt(dt) -> float:
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise EdgesnnError(f"--dt must be a positive number of seconds, got {dt}")
    return dt


def _readout(ir, x: np.ndarray) -> np.ndarray:
    (out,) = ir.outputs
    return np.asarray(ir.run_sequence(datasets.to_nhwc(x))[out], np.float64).reshape(len(x), -1)


def _agreement(want: np.ndarray, got: np.ndarray) -> dict:
    """Argmax agreement over the samples whose float readout has one largest entry (a tie has no argmax)."""
    top = want.max(1, keepdims=True)
    untied = (want == top).sum(1) == 1
    n = int(untied.sum())
    agree = float((want.argmax(1) == got.argmax(1))[untied].mean()) if n else 0.0
    counts = np.bincount(want.argmax(1)[untied], minlength=want.shape[1]) if n else np.zeros(1)
    return {"agreement": agree, "compared": n, "untied": n / max(len(want), 1),
            "dominant": float(counts.max() / n) if n else 1.0}


# ---------------------------------------------------------------- the graph

def _parse(graph, path: Path, frame_shape) -> tuple[list[dict], str, bool]:
    """[{synapse, neuron, recurrent}] from the Input to the Output, the readout the Output names, and whether
    the Input takes flattened frames."""
    kinds = {k: type(n).__name__ for k, n in graph.nodes.items()}
    odd = next((k for k, kind in kinds.items() if kind not in KNOWN), None)
    if odd is not None:
        raise EdgesnnError(f"{path}: node '{odd}' has type {kinds[odd]}, which edgesnn cannot import in a temporal "
                           f"graph; supported: {SUPPORTED}")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise EdgesnnError(f"{path}: edge ({a!r}, {b!r}) names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    ins = [k for k, kind in kinds.items() if kind == "Input"]
    outs = [k for k, kind in kinds.items() if kind == "Output"]
    if len(ins) != 1 or len(outs) != 1:
        raise EdgesnnError(f"{path}: the graph has {len(ins)} Input and {len(outs)} Output nodes; edgesnn imports "
                           f"graphs with one of each")
    recurrent = {}  # neuron -> its recurrent synapse: a synapse reading that neuron and feeding it back
    for k, kind in kinds.items():
        if kind in ("Affine", "Linear") and len(pred[k]) == 1 and succ[k] == pred[k]:
            neuron = pred[k][0]
            if kinds[neuron] not in SPIKING or neuron in recurrent:
                raise EdgesnnError(f"{path}: node '{k}' feeds {kinds[neuron]} node '{neuron}' back onto itself; "
                                   f"edgesnn imports one recurrent Affine per spiking neuron (IF, LIF, CubaLIF)")
            recurrent[neuron] = k
    feedback = set(recurrent.values())
    flat = _check_input(graph.nodes[ins[0]], path, frame_shape)
    layers, name, synapse = [], ins[0], None
    seen = {name}
    while name != outs[0]:
        nxt = [s for s in succ[name] if s not in feedback]
        if len(nxt) != 1:
            raise EdgesnnError(f"{path}: node '{name}' feeds {len(nxt)} nodes {limits._short(nxt)}; edgesnn imports a "
                               f"chain ({SUPPORTED})")
        name = nxt[0]
        if name in seen:
            raise EdgesnnError(f"{path}: node '{name}' closes a loop other than a neuron's recurrent Affine")
        seen.add(name)
        kind = kinds[name]
        inputs = [p for p in pred[name] if p not in feedback]
        if len(inputs) != 1:
            raise EdgesnnError(f"{path}: node '{name}' ({kind}) has {len(inputs)} inputs; edgesnn imports a chain "
                               f"({SUPPORTED})")
        where = f"{path}: node '{name}' ({kind})"
        if kind == "Flatten":
            if layers or synapse is not None:
                raise EdgesnnError(f"{where}: a Flatten is imported only in front of the first synapse")
        elif kind in ("Affine", "Linear"):
            if synapse is not None:
                raise EdgesnnError(f"{where}: two synapses in a row; each must be followed by a neuron")
            synapse = (name, graph.nodes[name])
        elif kind in NEURON_KINDS:
            if synapse is None:
                raise EdgesnnError(f"{where}: a neuron must follow an Affine or Linear")
            if layers and not layers[-1]["spiking"]:
                raise EdgesnnError(f"{path}: node '{layers[-1]['name']}' ({layers[-1]['kind']}, no spikes) must be "
                                   f"the last neuron; it feeds '{name}'")
            rec = recurrent.get(name)
            layers.append({"name": name, "kind": kind, "node": graph.nodes[name], "spiking": kind in SPIKING,
                           "synapse": synapse, "recurrent": (rec, graph.nodes[rec]) if rec else None})
            synapse = None
    if not layers or synapse is not None:
        raise EdgesnnError(f"{path}: the Output must read a neuron (a synapse or nothing before it is not "
                           f"imported); supported: {SUPPORTED}")
    meta = graph.nodes[outs[0]].metadata or {}
    readout = meta.get("readout", "mean")
    readout = readout.decode() if isinstance(readout, bytes) else str(readout)
    if layers[-1]["spiking"]:
        readout = "count"
    elif readout not in ("last", "mean"):
        readout = "mean"  # a sum or mean over T: the same argmax
    return layers, readout, flat


def _check_input(node, path: Path, frame_shape) -> bool:
    """The Input's shape must be one frame, or its flattening (then True), with or without a leading batch
    of 1 (as Norse's and NIRTorch's exporters keep it)."""
    declared = (node.input_type or {}).get("input") if isinstance(node.input_type, dict) else None
    shape = None if declared is None else [int(d) for d in np.atleast_1d(np.asarray(declared)).tolist()]
    frame = [int(d) for d in frame_shape]
    for batch in (0, 1):
        if shape is not None and shape[:batch] == [1] * batch and shape[batch:] in (frame, [math.prod(frame)]):
            return shape[batch:] != frame
    raise EdgesnnError(f"{path}: the graph's input has shape {shape}, one frame of the data is {frame} "
                       f"(pass the right --data)")


def _param(node, field: str, channels: int, where: str) -> np.ndarray:
    """A neuron parameter as one float per channel: a 0-d value (Norse, snnTorch scalars) or a size-1
    array is broadcast, as NIR's type inference would not."""
    v = getattr(node, field, None)
    a = np.asarray(v if v is not None else np.nan)
    if a.dtype.kind not in "iuf":
        raise EdgesnnError(f"{where}: {field} must be numbers, got {limits._short(v)}")
    a = a.astype(np.float64).reshape(-1)
    if a.size not in (1, channels) or not np.isfinite(a).all():
        raise EdgesnnError(f"{where}: {field} must be finite, one value or one per channel ({channels}), got "
                           f"{limits._short(v)}")
    return np.broadcast_to(a, (channels,)).copy()


def _map_neuron(layer: dict, dt: float, dt_given: bool, path: Path) -> dict:
    """Decays, input gain and threshold of one neuron layer; its synapse's float weights."""
    name, kind, node = layer["name"], layer["kind"], layer["node"]
    where = f"{path}: node '{name}' ({kind})"
    syn_name, syn = layer["synapse"]
    w = np.asarray(syn.weight, np.float64)
    if w.ndim != 2 or not np.isfinite(w).all():
        raise EdgesnnError(f"{path}: node '{syn_name}': the weight must be a finite 2-d matrix, got shape "
                           f"{list(w.shape)}")
    channels = w.shape[0]
    bias = _param(syn, "bias", channels, f"{path}: node '{syn_name}'") if type(syn).__name__ == "Affine" \
        else np.zeros(channels)
    meta = node.metadata or {}
    if not dt_given and "dt" in meta:  # an edgesnn file read with --float names its own step
        dt = _check_dt(np.asarray(meta["dt"]).reshape(-1)[0])
    p = lambda f: _param(node, f, channels, where)  # noqa: E731
    out = {"name": name, "kind": kind, "spiking": layer["spiking"], "channels": channels, "dt": dt, "where": where,
           "weight": w, "bias": bias, "recurrent": None, "r": p("r"), "w_in": None, "tau": None, "tau_syn": None}
    if kind not in ("IF", "I") and not np.allclose(p("v_leak"), 0):
        raise EdgesnnError(f"{where}: v_leak must be 0 (the IR's neurons rest at 0)")
    if layer["spiking"]:
        if node.v_reset is not None and not np.allclose(p("v_reset"), 0):
            raise EdgesnnError(f"{where}: v_reset must be 0 (the IR resets to 0 or by subtraction)")
        reset = meta.get("reset", "zero")
        out["reset"] = "subtract" if (reset.decode() if isinstance(reset, bytes) else str(reset)) == "subtract" else "zero"
        out["threshold"] = p("v_threshold")
        if (out["threshold"] <= 0).any():
            raise EdgesnnError(f"{where}: v_threshold must be positive")
    gain, d_v, d_i = out["r"].copy(), np.zeros(channels), None
    if kind in ("LIF", "LI"):
        out["tau"] = p("tau")
        d_v = _decay(out["tau"], dt, where, "tau")
        gain = gain * dt / out["tau"]
    elif kind in ("CubaLIF", "CubaLI"):
        out["tau"], out["tau_syn"], out["w_in"] = p("tau_mem"), p("tau_syn"), p("w_in")
        d_v = _decay(out["tau"], dt, where, "tau_mem")
        d_i = _decay(out["tau_syn"], dt, where, "tau_syn")
        gain = gain * dt / out["tau"] * out["w_in"] * dt / out["tau_syn"]
    if not (gain > 0).all():
        raise EdgesnnError(f"{where}: the input gain (r, w_in) must be positive")
    out.update(gain=gain, d_v=d_v, d_i=d_i)
    scale = gain / out["threshold"] if layer["spiking"] else gain
    out["weight"], out["bias"] = w * scale[:, None], bias * scale
    if layer["recurrent"] is not None:
        rec_name, rec = layer["recurrent"]
        wr = np.asarray(rec.weight, np.float64)
        if wr.shape != (channels, channels) or not np.isfinite(wr).all():
            raise EdgesnnError(f"{path}: node '{rec_name}': a recurrent weight must be a finite "
                               f"{channels}x{channels} matrix, got {list(wr.shape)}")
        if type(rec).__name__ == "Affine":  # its bias enters every step, as the forward synapse's
            out["bias"] = out["bias"] + _param(rec, "bias", channels, f"{path}: node '{rec_name}'") * scale
        out["recurrent"] = wr * scale[:, None]
        if kind != "LIF" and kind != "IF":
            raise EdgesnnError(f"{where}: recurrence is imported onto IF and LIF neurons only")
    return out


def _decay(tau: np.ndarray, dt: float, where: str, label: str) -> np.ndarray:
    """The exact decay 4096·dt/tau; refuses what no 12-bit decay can hold."""
    if (tau <= 0).any():
        raise EdgesnnError(f"{where}: {label} must be positive")
    d = st.DECAY_UNITY * dt / tau
    if (d > st.DECAY_UNITY - 0.5).any():
        raise EdgesnnError(f"{where}: {label} {tau.min():g} s is at most --dt {dt:g} s, so a step forgets everything "
                           f"(decay rounds to 4096 or Euler overshoots); likely cause: dt (pass the file's --dt: "
                           f"snnTorch's 1e-4 s, Norse's and Rockpool's 1e-3 s; Norse 1.1 writes tau = dt/tau_inv, "
                           f"divide its taus by its dt)")
    return d


def _model(frame_shape, mapped: list[dict], readout: str, li_scale, x_train):
    """edgesnn's temporal model with the mapped weights and integer decays; calibrated on the data."""
    from edgesnn.temporal.model import SpikingSequence
    from edgesnn.temporal.neurons import LI, LIF, RLIF, CubaLIF, QLinear

    layers = []
    features = math.prod(frame_shape)
    for m in mapped:
        lin = QLinear(features, m["channels"])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(m["weight"], dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(m["bias"], dtype=torch.float32))
        c = m["channels"]
        if not m["spiking"]:
            neuron = LI(c, beta=1.0, bits=STATE_BITS, scale=li_scale, alpha=None if m["d_i"] is None else 1.0)
        else:
            kw = dict(threshold=1.0, levels=LEVELS, bits=STATE_BITS, reset=m["reset"])
            if m["recurrent"] is not None:
                neuron = RLIF(c, beta=1.0, **kw)
                with torch.no_grad():
                    neuron.recurrent.weight.copy_(torch.as_tensor(m["recurrent"], dtype=torch.float32))
            elif m["d_i"] is not None:
                neuron = CubaLIF(c, alpha=1.0, beta=1.0, **kw)
            else:
                neuron = LIF(c, beta=1.0, **kw)
        neuron.decay_v = _decay_buffer(m["d_v"])
        if m["d_i"] is not None:
            neuron.decay_i = _decay_buffer(m["d_i"])
        layers += [lin, neuron]
        features = c
    model = SpikingSequence(frame_shape, layers, readout=readout)
    model.calibrate(x_train)
    model.eval()
    return model


def _decay_buffer(d: np.ndarray) -> torch.Tensor:
    q = np.clip(np.round(d), 0, st.DECAY_UNITY).astype(np.int64)
    return torch.as_tensor(q[:1] if (q == q[0]).all() else q)


class _simulated_dt:
    """Within the block each neuron node's metadata names the dt (and reset) the import used, which is
    what simulate_state.py reads; the nodes get their own metadata back afterwards."""

    def __init__(self, graph, mapped: list[dict]):
        self.graph, self.mapped, self.saved = graph, mapped, {}

    def __enter__(self):
        for m in self.mapped:
            node = self.graph.nodes[m["name"]]
            self.saved[m["name"]] = node.metadata
            node.metadata = {**(node.metadata or {}), "dt": m["dt"], **({"reset": m["reset"]} if m["spiking"] else {})}
        return self

    def __exit__(self, *exc):
        for name, meta in self.saved.items():
            self.graph.nodes[name].metadata = meta


def _li_scale(graph, x: np.ndarray, path: Path) -> float:
    """The LI readout's grid: the power of two putting the largest membrane of the float simulation on the
    training sequences at most a quarter of the 16-bit range (the rest is headroom for other data)."""
    out = next(k for k, n in graph.nodes.items() if type(n).__name__ == "Output")
    node = graph.nodes[out]
    saved = node.metadata
    node.metadata = {**(saved or {}), "readout": "last"}
    try:
        peak = max(float(np.abs(simulate_sequence(graph, x[:, :t])).max()) for t in range(1, x.shape[1] + 1))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise EdgesnnError(f"{path}: its nodes cannot be simulated ({type(e).__name__}: {limits._short(e)})") from None
    finally:
        node.metadata = saved
    top = (1 << (STATE_BITS - 1)) - 1
    return 2.0 ** math.ceil(math.log2(max(peak, 1e-30) * 4 / top))


# ---------------------------------------------------------------- the likely cause

def _cause(mapped: list[dict], dt: float, dt_given: bool, silent: bool) -> str:
    """One phrase naming what most likely made the import disagree (or the float graph silent)."""
    dt_note = f"--dt {dt:g} s" + ("" if dt_given else " (the default)")
    for m in mapped:
        for label, d in (("tau", m["d_v"]), ("tau_syn", m["d_i"])):
            if d is None or not (d > 0).any():
                continue
            off = np.abs(np.round(d) - d) / np.maximum(d, 1e-30)
            if (off > 0.25).any():
                return (f"dt: with {dt_note}, node '{m['name']}' has {label}/dt up to "
                        f"{(st.DECAY_UNITY / d[d > 0]).max():.0f}, so its 12-bit decay {d.min():.2f}/4096 rounds to "
                        f"{int(np.round(d.min()))}; pass the dt the file was written for")
    for m in mapped:
        if m["kind"] in ("CubaLIF", "CubaLI") and np.allclose(m["w_in"], 1) and (m["tau_syn"] / m["dt"] > 4).any():
            return (f"input gain / w_in: node '{m['name']}' has w_in = 1 with tau_syn/dt = "
                    f"{(m['tau_syn'] / m['dt']).max():.0f}, so NIR scales its input by dt/tau_syn; a tool that adds "
                    f"the input to the current unscaled (Norse, Rockpool) means w_in = tau_syn/dt: set it in the "
                    f"file, and pass the --dt it was written for (theirs: 1e-3 s)")
        if m["kind"] in ("LIF", "LI") and np.allclose(m["r"], 1) and (m["tau"] / m["dt"] > 4).any():
            return (f"r convention / norm_input: node '{m['name']}' has r = 1 with tau/dt = "
                    f"{(m['tau'] / m['dt']).max():.0f}, so NIR scales its input by dt/tau (Sinabs' norm_input=True); "
                    f"a LIF adding its input unscaled (Sinabs norm_input=False, snnTorch) has r = tau/dt")
        if m["spiking"] and (m["gain"] / m["threshold"] > 100).any():
            return (f"input gain: node '{m['name']}' has an input gain r·dt/tau (w_in) of "
                    f"{(m['gain'] / m['threshold']).max():g} thresholds per unit input: r or w_in may be in another "
                    f"tool's convention (r = tau/dt where r = 1 is meant)")
    if silent:
        return (f"input gain: the gain per step (r, w_in, dt/tau with {dt_note}) leaves the neurons below or far "
                f"above threshold; check r, w_in, norm_input and --dt")
    return (f"the integer model's resolution (int8 weights, {STATE_BITS}-bit states, decays in 1/4096): the float "
            f"graph's readouts are too close to rank alike; lower --min-agreement to accept it")
