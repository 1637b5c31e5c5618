"""NIR file -> edgesnn checkpoint (model "nir", see models/nirnet.py), ready for quantize and export.

A NIR network runs in time; edgesnn's SFA neurons fire once, with an integer count. The mapping
(docs/nir.md) reads a window of T steps with the input presented at every step:

- each neuron integrates g·I per step (IF: g = r; LIF: g = dt·r/tau, leak beta = 1 - dt/tau;
  CubaLIF: the synaptic filter's mean gain over the window times the LIF's) and fires when it
  passes its threshold theta, at most once a step, with reset by subtraction. Summed over the
  window that is s = clamp(floor(S / theta), 0, T) for a total input S: an SFA neuron with D = T
  and pre-activation u = S / theta - 1/2 (floor(x) = round_half_up(x - 1/2)). A leak loses about
  (1 - beta)·theta/2 a step (the membrane sits halfway to threshold on average), so u loses
  T(1 - beta)/2 more: first order, exact for IF.
- the synapse before a neuron absorbs it: weights x g/theta (x T for one reading the image,
  which arrives every step), bias x T·g/theta minus the offsets (divided by a sum pool's window
  when one sits in between). A neuron just before the Output is read out by its input (the
  logits its counts rank; no count ties).

A file written by edgesnn carries its exact integer program in the graph metadata ("edgesnn");
then the same mapping gives back the IR's real-valued model, and the program itself comes back
bit for bit (see program.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from edgesnn import checkpoint, limits, models
from edgesnn import data as datasets
from edgesnn.backends.nir import import_state
from edgesnn.backends.nir import program as prog
from edgesnn.backends.nir.check import SUPPORTED, check_path, one_line
from edgesnn.errors import EdgesnnError
from edgesnn.files import atomic_files, one_writer, sha256_file, write_json
from edgesnn.train import evaluate

SYNAPSES = ("Affine", "Linear", "Conv2d")
NEURONS = ("IF", "LIF", "CubaLIF")
DEFAULT_DT = 1e-4  # snnTorch's export convention (tau = dt / (1 - beta))
MAX_TIMESTEPS = 127  # the IR's spike tensors are int8 counts in [0, D]


@one_writer
def import_nir(path: str | Path, out: str | Path, data_spec: str | None = None, timesteps: int | None = None,
               dt: float | None = None, use_metadata: bool = True, min_agreement: float | None = None) -> dict:
    """Write the checkpoint ``out`` for the NIR file ``path`` (a graph over sequences: ``out/model.ir``, the
    temporal IR graph, see import_state.py); returns what was imported."""
    path = Path(path)
    graph = read_graph(path)
    program = read_program(graph, path) if use_metadata else None
    temporal = program is not None and program["ir"].get("sequence") is not None
    if temporal or (timesteps is None and (import_state.is_temporal(graph, program)
                                           or (program is None and import_state.has_time_axis(data_spec)))):
        return _import_temporal(path, out, graph, program, data_spec, timesteps, dt, min_agreement)
    if min_agreement is not None:
        raise EdgesnnError("--min-agreement applies to graphs over sequences (LI, CubaLI, I nodes, a recurrent cycle, "
                           "or a file edgesnn exported from a temporal model)")
    r = read_model(path, data_spec, timesteps, dt, use_metadata, graph=graph)
    model, config, ds = r.pop("model"), r.pop("config"), r.pop("dataset")
    metrics = {"test_accuracy": evaluate(model, ds.x_test, ds.y_test), "test_samples": int(len(ds.y_test)),
               "nir": {"file": str(path), "exact": r["exact"], "timesteps": r["timesteps"]}}
    checkpoint.save(model, config, out, metrics)
    return {"checkpoint": str(out), **r, "test_accuracy": metrics["test_accuracy"],
            "test_samples": metrics["test_samples"]}


def _import_temporal(path: Path, out, graph, program, data_spec, timesteps, dt, min_agreement) -> dict:
    """A graph over sequences -> ``out/model.ir`` and ``out/import.json`` (what the check measured)."""
    if timesteps is not None:
        raise EdgesnnError(f"{path}: a graph over sequences runs one step per frame of the data; drop --timesteps "
                           f"(the sequence length is the data's T)")
    if program is not None and dt is not None:
        raise EdgesnnError(f"{path}: its edgesnn metadata holds the exact integer program; drop --dt, or import "
                           f"with --float to take it as a float graph")
    try:
        r = import_state.read_temporal(path, graph, program, data_spec, dt, min_agreement, _hints(graph).get("data"))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, IndexError, AttributeError, KeyError) as e:
        # the mapping checks what it reads; a node value it did not foresee is still one line
        raise EdgesnnError(f"{path}: invalid NIR node values ({type(e).__name__}: {limits._short(e)})") from None
    ir = r.pop("graph")
    report = {"file": str(path.resolve()), "sha256": sha256_file(path), **r}
    with atomic_files(out, ("model.ir", "import.json")) as tmp:
        ir.save(tmp / "model.ir")
        write_json(tmp / "import.json", report)
    return {"checkpoint": str(Path(out) / "model.ir"), "file": str(path), "timesteps": r["steps"], **r}


def read_model(path: str | Path, data_spec: str | None = None, timesteps: int | None = None,
               dt: float | None = None, use_metadata: bool = True, graph=None) -> dict:
    """The model, config and data set a NIR file imports to (``import_nir`` without the checkpoint
    files; ``verify`` rebuilds an edgesnn file's program through it), and what was imported."""
    path = Path(path)
    graph = graph if graph is not None else read_graph(path)  # verify passes the graph it has read
    program = read_program(graph, path) if use_metadata else None
    if program is not None and program["ir"].get("sequence") is not None:
        raise EdgesnnError(f"{path}: a graph over sequences (neurons with state over time); edgesnn import does not "
                           f"read one yet (`edgesnn verify` runs its program against the IR it was exported from)")
    hints = _hints(graph)  # an edgesnn file names its window and data (also for --float, which ignores the rest)
    data_spec = data_spec or hints.get("data")
    if program is not None and timesteps is not None and timesteps != program["timesteps"]:
        raise EdgesnnError(f"{path}: its edgesnn metadata fixes {program['timesteps']} timesteps; drop "
                           f"--timesteps, or import with --float to take it as a float graph")
    timesteps = timesteps if timesteps is not None else hints.get("timesteps")
    if timesteps is None:
        raise EdgesnnError(f"{path} has no edgesnn metadata: pass --timesteps T, the number of steps the network "
                           f"runs per sample (the input is presented at every step)")
    if isinstance(timesteps, bool) or not 1 <= int(timesteps) <= MAX_TIMESTEPS:
        raise EdgesnnError(f"--timesteps must be between 1 and {MAX_TIMESTEPS}, got {timesteps}")
    dt = DEFAULT_DT if dt is None else float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise EdgesnnError(f"--dt must be a positive number of seconds, got {dt}")
    data_spec = data_spec or "digits"
    ds = datasets.load(data_spec)

    chain = node_chain(graph, path)
    batch, flat = _input_layout(chain[0][1], ds.in_shape, path)
    mapper = _Mapper(int(timesteps), dt, batch, path, (program or {}).get("neurons", {}))
    try:
        layers, state = mapper.run(chain[1:-1], list(ds.in_shape), flat)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, IndexError, AttributeError, KeyError) as e:
        # the mapper checks what it reads; a node value it did not foresee is still one line
        raise EdgesnnError(f"{path}: invalid NIR node values ({type(e).__name__}: {limits._short(e)})") from None
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise EdgesnnError(f"{path}: its parameters give non-finite (or beyond float32) weights in {bad[0]!r}")
    out_size = math.prod(mapper.shape)
    if len(mapper.shape) != 1 or out_size != ds.num_classes:
        raise EdgesnnError(f"{path}: the graph outputs shape {mapper.shape}, but {data_spec} has {ds.num_classes} "
                           f"classes (a flat vector of {ds.num_classes} scores is needed)")

    kwargs = models.resolved_kwargs("nir", {"in_shape": list(ds.in_shape), "layers": layers})
    model = models.build("nir", kwargs)
    model.load_state_dict(state, strict=True)
    model.eval()
    config = {
        "model": "nir", "kwargs": kwargs, "D": max([l["D"] for l in layers if l["kind"] == "spike"], default=1),
        "neuron": "multispike", "normalize": False, "input_shape": list(ds.in_shape), "num_classes": ds.num_classes,
        "data": datasets.recorded(data_spec), "timesteps": 1,
        "nir": {"file": str(path.resolve()), "sha256": sha256_file(path), "timesteps": int(timesteps),
                "exact": program is not None},
    }
    if program is None:
        config["nir"]["dt"] = dt
    else:
        program["weights"] = {op: {**ref, "layer": mapper.layer_of.get(ref.get("node"))}
                              for op, ref in program["weights"].items()}
        missing = [ref["node"] for ref in program["weights"].values() if ref["layer"] is None]
        if missing:
            raise EdgesnnError(f"{path}: its edgesnn metadata names weights of node(s) {missing}, which are not "
                               f"synapses of the graph; import it with --float")
        config["nir"].update(program=program, weights_sha256=prog.weights_digest(model))
        if prog.exact_graph(model, config, {}) is None:  # checks every weight against the program's grid
            raise EdgesnnError(f"{path}: internal: the imported program does not apply to its own weights")
    return {"model": model, "config": config, "dataset": ds, "file": str(path), "exact": program is not None,
            "timesteps": int(timesteps), "dt": None if program is not None else dt, "data": datasets.recorded(data_spec),
            "nodes": len(chain), "layers": len(layers), "notes": mapper.notes}


def read_graph(path: Path):
    """nir.read with every failure as one line. The file is first walked as HDF5 and read once in a
    child process (check.py): sizes, counts, depth, links and node types, so nir's reader, which
    loads everything and recurses, only sees a file within the limits, and one that libhdf5 has
    already read without hanging or crashing."""
    import nir

    if not path.is_file():
        raise EdgesnnError(f"{path}: no such file")
    check_path(path)
    try:
        graph = nir.read(path, type_check=False)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - nir's reader raises whatever its node constructors do
        raise EdgesnnError(f"{path}: invalid NIR file ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise EdgesnnError(f"{path}: the file holds a single {type(graph).__name__} node, not a NIR graph")
    return graph


def read_program(graph, path: Path) -> dict | None:
    """The checked edgesnn program in a NIR graph's metadata, or None when it has none."""
    raw = (graph.metadata or {}).get("edgesnn") if isinstance(graph.metadata, dict) else None
    if raw is None:
        return None
    if not isinstance(raw, (str, bytes)):
        raise EdgesnnError(f"{path}: its 'edgesnn' metadata is a {type(raw).__name__}, not JSON text; import with --float")
    return prog.check(limits.loads_json(raw, f"{path}: its 'edgesnn' metadata"), str(path))


def _hints(graph) -> dict:
    """Timesteps and data an edgesnn NIR file names, read leniently (for --float, which ignores the rest)."""
    raw = (graph.metadata or {}).get("edgesnn") if isinstance(graph.metadata, dict) else None
    try:
        program = limits.loads_json(raw, "metadata")
    except EdgesnnError:
        return {}
    hints, node = {}, program
    for key in ("ir", "meta", "source", "data"):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, str):
        hints["data"] = node
    if isinstance(program, dict) and isinstance(program.get("timesteps"), int) and not isinstance(program["timesteps"], bool):
        hints["timesteps"] = program["timesteps"]
    return hints


def node_chain(graph, path: Path) -> list[tuple[str, object]]:
    """The nodes from the Input to the Output, in order; refuses other node types and any branching."""
    import nir

    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if not isinstance(node, (nir.Input, nir.Output)) and kind not in SYNAPSES + NEURONS + ("SumPool2d", "AvgPool2d", "Flatten"):
            hint = (" (with --timesteps; without it, a graph with LI, CubaLI or I nodes is imported over sequences)"
                    if kind in import_state.TEMPORAL_KINDS else "")
            raise EdgesnnError(f"{path}: node '{name}' has type {kind}, which edgesnn cannot import; supported: "
                               f"{SUPPORTED}{hint}")
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgesnnError(f"{path}: the graph has {len(inputs)} Input and {len(outputs)} Output nodes; edgesnn "
                           f"imports graphs with one of each")
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise EdgesnnError(f"{path}: edge ({a!r}, {b!r}) names a node the graph does not have")
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    chain, seen, name = [], set(), inputs[0]
    while True:  # iterative, and linear in the chain's length
        chain.append((name, graph.nodes[name]))
        seen.add(name)
        if name == outputs[0]:
            break
        nxt = succ.get(name, [])
        if len(nxt) != 1:
            raise EdgesnnError(f"{path}: node '{name}' feeds {len(nxt)} nodes {limits._short(nxt)}; edgesnn imports chains "
                               f"(each node feeding the next)" if nxt else f"{path}: node '{name}' feeds nothing")
        if len(pred.get(nxt[0], [])) != 1 or nxt[0] in seen:
            raise EdgesnnError(f"{path}: node '{nxt[0]}' has {len(pred.get(nxt[0], []))} inputs (or closes a loop); "
                               f"edgesnn imports chains (each node feeding the next)")
        name = nxt[0]
    if len(chain) != len(graph.nodes):
        stray = sorted(set(graph.nodes) - seen)
        raise EdgesnnError(f"{path}: node(s) {limits._short(stray)} are not on the path from Input to Output")
    return chain


def _input_layout(node, in_shape, path: Path) -> tuple[int, bool]:
    """(batch dims, flat): the Input's shape is the data's sample shape or its flattening, either
    with or without a leading batch dimension of 1."""
    declared = (node.input_type or {}).get("input") if isinstance(node.input_type, dict) else None
    shape = None if declared is None else _integers(declared, f"{path}: the Input node", "shape")
    for batch in (0, 1):
        if shape is not None and len(shape) > batch and shape[:batch] == [1] * batch:
            if shape[batch:] in (list(in_shape), [math.prod(in_shape)]):
                return batch, shape[batch:] != list(in_shape)
    raise EdgesnnError(f"{path}: the graph's input has shape {shape}, the data set's samples {list(in_shape)} "
                       f"(pass the right --data)")


class _Mapper:
    """Walks the chain, building the layer list and its weights, folding each neuron into its synapse."""

    def __init__(self, T: int, dt: float, batch: int, path: Path, program_neurons: dict[str, int]):
        self.T, self.dt, self.batch, self.path = T, dt, batch, path
        self.program_neurons = program_neurons
        self.layers: list[dict] = []
        self.names: set[str] = set()  # the layers' names (a set: a chain may be long)
        self.state: dict[str, np.ndarray] = {}  # float64 until the end: one rounding to float32
        self.layer_of: dict[str, str] = {}
        self.notes: list[str] = []
        self.shape: list[int] = []

    def run(self, nodes, in_shape, flat: bool):
        self.shape = list(in_shape)
        if flat and len(self.shape) != 1:  # the graph takes the flattened sample
            self.add("input_flatten", {"kind": "flatten"})
            self.shape = [math.prod(self.shape)]
        reads_input = True  # the value is the image, presented at every step
        synapse, window = None, 1  # the synapse a neuron folds into, and the sum pools' window since it
        for i, (name, node) in enumerate(nodes):
            kind = type(node).__name__
            where = f"{self.path}: node '{name}' ({kind})"
            if kind in SYNAPSES:
                synapse, window = self.synapse(name, node, kind, reads_input, where), 1
                reads_input = False
            elif kind in NEURONS:
                if synapse is None:
                    raise EdgesnnError(f"{where}: a neuron must follow a synapse (Affine, Linear or Conv2d), "
                                       f"with at most pooling in between")
                if i == len(nodes) - 1:
                    self.notes.append(f"output neuron '{name}' is read out by its input (the logits its spike "
                                      f"counts rank)")
                    break
                self.neuron(name, node, kind, synapse, window, where)
                synapse = None
            elif kind in ("SumPool2d", "AvgPool2d"):
                k = self.pool(name, node, kind, where)
                window = window * k if kind == "SumPool2d" else window
            else:  # Flatten
                if self.flatten(name, node, where):
                    synapse = None  # a neuron's per-channel factors no longer line up with its synapse's
        return self.layers, {k: torch.as_tensor(v, dtype=torch.float32) for k, v in self.state.items()}

    def add(self, node_name: str, spec: dict, tensors: dict | None = None) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", node_name) or "layer"
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        self.layers.append({"name": name, **spec})
        self.layer_of[node_name] = name
        for k, v in (tensors or {}).items():
            self.state[f"{name}.{k}"] = np.ascontiguousarray(v, dtype=np.float64)
        return name

    def synapse(self, name: str, node, kind: str, reads_input: bool, where: str) -> str:
        w = _real(node.weight, where, "weight")
        rho = self.T if reads_input else 1  # summed over the window, the image is T times itself
        if kind == "Conv2d":
            if len(self.shape) != 3 or w.ndim != 4:
                raise EdgesnnError(f"{where}: needs a (C, H, W) input and a 4-d weight, got {self.shape} and {list(w.shape)}")
            groups = _integers(node.groups, where, "groups", sizes=(1,), low=1)[0]
            c, h, wd = self.shape
            if w.shape[1] * groups != c or w.shape[0] % groups:
                raise EdgesnnError(f"{where}: weight {list(w.shape)} with {groups} group(s) does not fit input {self.shape}")
            if _pair(node.dilation, where, "dilation", low=1) != [1, 1]:
                raise EdgesnnError(f"{where}: dilation {_pair(node.dilation, where, 'dilation', low=1)} is not supported")
            kh, kw = w.shape[2:]
            stride = _pair(node.stride, where, "stride", low=1)
            padding = _conv_padding(node.padding, (kh, kw), stride, where)
            spec = {"kind": "conv2d", "in": c, "out": int(w.shape[0]), "kernel": [int(kh), int(kw)], "stride": stride,
                    "padding": padding, "groups": groups, "bias": True}
            self.shape = [int(w.shape[0]), (h + 2 * padding[0] - kh) // stride[0] + 1,
                          (wd + 2 * padding[1] - kw) // stride[1] + 1]
            if min(self.shape) < 1:
                raise EdgesnnError(f"{where}: the kernel does not fit the input {[c, h, wd]}")
        else:
            if w.ndim != 2:
                raise EdgesnnError(f"{where}: needs a 2-d weight, got {list(w.shape)}")
            if self.shape != [w.shape[1]]:
                raise EdgesnnError(f"{where}: weight {list(w.shape)} needs a flat input of {w.shape[1]}, got shape "
                                   f"{self.shape} (a Flatten node is missing?)")
            spec = {"kind": "linear", "in": int(w.shape[1]), "out": int(w.shape[0]), "bias": True}
            self.shape = [int(w.shape[0])]
        bias = np.zeros(w.shape[0]) if kind == "Linear" else _broadcast(node.bias, (w.shape[0],), where, "bias")
        return self.add(name, spec, {"weight": w * rho, "bias": bias * self.T})

    def neuron(self, name: str, node, kind: str, synapse: str, window: int, where: str) -> None:
        """Fold g/theta and the offsets into ``synapse``'s weight and bias; add the SFA neuron."""
        gain, threshold, beta = self.dynamics(node, kind, where)
        per_channel = [_per_channel(p, self.shape, where, label) for p, label in
                       ((gain, "gain"), (threshold, "threshold"), (beta, "leak"))]
        gain, threshold, beta = per_channel
        if (threshold <= 0).any() or (gain <= 0).any():
            raise EdgesnnError(f"{where}: thresholds and input gains must be positive")
        scale = gain / threshold
        offset = (0.5 + self.T * (1.0 - beta) / 2.0) / window
        w = self.state[f"{synapse}.weight"]
        self.state[f"{synapse}.weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        self.state[f"{synapse}.bias"] = self.state[f"{synapse}.bias"] * scale - offset
        D = _integers(self.program_neurons.get(name, self.T), where, "its D in the edgesnn metadata", sizes=(1,), low=1)[0]
        self.add(name, {"kind": "spike", "D": D})
        if (beta < 1).any():
            self.notes.append(f"neuron '{name}' ({kind}) leaks; its count is approximated to first order")

    def dynamics(self, node, kind: str, where: str):
        """(input gain per step, threshold, membrane decay per step) of a NIR neuron, elementwise."""
        dt, T = self.dt, self.T
        if kind != "IF" and not np.allclose(_real(node.v_leak, where, "v_leak"), 0):
            raise EdgesnnError(f"{where}: v_leak must be 0 (a resting potential has no SFA form)")
        if node.v_reset is not None and not np.allclose(_real(node.v_reset, where, "v_reset"), 0):
            raise EdgesnnError(f"{where}: v_reset must be 0 (the SFA neuron resets by subtracting its threshold)")
        if kind == "IF":  # r is the gain per step, as snnTorch reads it
            return _real(node.r, where, "r"), _real(node.v_threshold, where, "v_threshold"), np.ones(1)
        tau = _real(node.tau if kind == "LIF" else node.tau_mem, where, "tau")
        if (tau < dt).any():
            raise EdgesnnError(f"{where}: a membrane time constant {tau.min():g} s below --dt {dt:g} s")
        gain = dt * _real(node.r, where, "r") / tau
        if kind == "CubaLIF":
            tau_syn = _real(node.tau_syn, where, "tau_syn")
            if (tau_syn < dt).any():
                raise EdgesnnError(f"{where}: a synaptic time constant {tau_syn.min():g} s below --dt {dt:g} s")
            alpha = 1.0 - dt / tau_syn
            steps = np.arange(1, T + 1).reshape(-1, *([1] * alpha.ndim))
            mean_gain = ((1.0 - alpha**steps) / np.where(alpha < 1, 1.0 - alpha, 1.0)).mean(axis=0)
            mean_gain = np.where(alpha < 1, mean_gain, (T + 1) / 2.0)  # alpha = 1: the current only grows
            gain = gain * _real(node.w_in, where, "w_in") * dt / tau_syn * mean_gain
        return gain, _real(node.v_threshold, where, "v_threshold"), 1.0 - dt / tau

    def pool(self, name: str, node, kind: str, where: str) -> int:
        if len(self.shape) != 3:
            raise EdgesnnError(f"{where}: needs a (C, H, W) input, got {self.shape}")
        kernel, stride = _pair(node.kernel_size, where, "kernel_size", low=1), _pair(node.stride, where, "stride", low=1)
        if _pair(node.padding, where, "padding", low=0) != [0, 0]:
            raise EdgesnnError(f"{where}: padded pooling is not supported")
        c, h, w = self.shape
        if kernel[0] > h or kernel[1] > w:
            raise EdgesnnError(f"{where}: kernel {kernel} does not fit input {self.shape}")
        self.shape = [c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1]
        self.add(name, {"kind": "sum_pool2d" if kind == "SumPool2d" else "avg_pool2d", "kernel": kernel, "stride": stride})
        return kernel[0] * kernel[1]

    def flatten(self, name: str, node, where: str) -> bool:
        """Whether the rank changed (a Flatten of a flat vector is nothing)."""
        rank = len(self.shape)
        start = _integers(node.start_dim, where, "start_dim", sizes=(1,))[0] - self.batch
        end = _integers(node.end_dim, where, "end_dim", sizes=(1,))[0]
        end = end - self.batch if end >= 0 else end
        if start not in (0, -rank) or end not in (-1, rank - 1):
            raise EdgesnnError(f"{where}: flattens dims {start + self.batch}..{end if end < 0 else end + self.batch} of {self.shape}; edgesnn "
                               f"imports a Flatten of the whole sample")
        if rank == 1:
            return False
        self.add(name, {"kind": "flatten"})
        self.shape = [math.prod(self.shape)]
        return True


def _pair(v, where: str, label: str, low: int = 0) -> list[int]:
    a = _integers(v, where, label, sizes=(1, 2), low=low, what="one or two integers")
    return a * 2 if len(a) == 1 else a


def _integers(v, where: str, label: str, sizes=None, low: int | None = None, what: str = "integers") -> list[int]:
    """A NIR parameter as Python ints: a scalar or a vector of whole numbers in [low, 2**31)
    (``sizes``: allowed lengths); anything else (text, NaN, 2**40, a matrix) is refused in one line."""
    a = np.asarray(v) if not isinstance(v, (str, bytes)) else np.asarray([])
    ok = a.dtype.kind in "iuf" and a.ndim <= 1 and (sizes is None or a.size in sizes) and a.size > 0
    with np.errstate(invalid="ignore"):
        ok = ok and bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)) and np.all(np.abs(a) < 2**31))
    values = [int(x) for x in np.atleast_1d(a)] if ok else []
    if not ok or (low is not None and min(values) < low):
        bound = f" >= {low}" if low is not None else ""
        raise EdgesnnError(f"{where}: {label} must be {what}{bound}, got {limits._short(v)}")
    return values


def _real(v, where: str, label: str) -> np.ndarray:
    """A NIR parameter as finite float64 numbers: NaN or infinite weights would train and export as NaN."""
    a = np.asarray(v) if not isinstance(v, (str, bytes)) else np.asarray(None)
    if a.dtype.kind not in "iuf":
        raise EdgesnnError(f"{where}: {label} must be numbers, got {limits._short(v)}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise EdgesnnError(f"{where}: {label} holds NaN or infinite values")
    return a


def _conv_padding(padding, kernel, stride, where: str) -> list[int]:
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0]
        if padding == "same" and stride == [1, 1] and all(k % 2 for k in kernel):
            return [(kernel[0] - 1) // 2, (kernel[1] - 1) // 2]
        raise EdgesnnError(f"{where}: padding {padding!r} (stride {stride}, kernel {list(kernel)}) is not supported")
    return _pair(padding, where, "padding")


def _broadcast(v, shape, where: str, label: str) -> np.ndarray:
    a = _real(v, where, label)
    try:
        return np.broadcast_to(a, shape).copy()
    except ValueError:
        raise EdgesnnError(f"{where}: {label} of shape {list(a.shape)} does not fit {list(shape)}") from None


def _per_channel(p: np.ndarray, shape: list[int], where: str, label: str) -> np.ndarray:
    """One value per output channel: per-element parameters must not vary over a feature map."""
    full = _broadcast(p, tuple(shape), where, label)
    if len(shape) != 3:
        return full.reshape(-1)
    flat = full.reshape(shape[0], -1)
    if not np.allclose(flat, flat[:, :1]):
        raise EdgesnnError(f"{where}: its {label} varies within a channel; edgesnn folds one value per channel")
    return flat[:, 0].copy()
