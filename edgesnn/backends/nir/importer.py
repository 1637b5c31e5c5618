"""NIR file -> edgesnn checkpoint (model "nir", see models/nirnet.py), ready for quantize and export.

A NIR network runs in time; edgesnn's SFA neurons fire once, with an integer count. The mapping
(README, NIR) reads a window of T steps with the input presented at every step:

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

import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from edgesnn import checkpoint, models
from edgesnn import data as datasets
from edgesnn.backends.nir import program as prog
from edgesnn.errors import EdgesnnError
from edgesnn.files import sha256_file
from edgesnn.train import evaluate

SYNAPSES = ("Affine", "Linear", "Conv2d")
NEURONS = ("IF", "LIF", "CubaLIF")
SUPPORTED = "Affine, Linear, Conv2d, SumPool2d, AvgPool2d, Flatten, IF, LIF, CubaLIF (between one Input and one Output)"
DEFAULT_DT = 1e-4  # snnTorch's export convention (tau = dt / (1 - beta))
MAX_TIMESTEPS = 127  # the IR's spike tensors are int8 counts in [0, D]


def import_nir(path: str | Path, out: str | Path, data_spec: str | None = None, timesteps: int | None = None,
               dt: float | None = None, use_metadata: bool = True) -> dict:
    """Write the checkpoint ``out`` for the NIR file ``path``; returns what was imported."""
    r = read_model(path, data_spec, timesteps, dt, use_metadata)
    model, config, ds = r.pop("model"), r.pop("config"), r.pop("dataset")
    metrics = {"test_accuracy": evaluate(model, ds.x_test, ds.y_test), "test_samples": int(len(ds.y_test)),
               "nir": {"file": str(path), "exact": r["exact"], "timesteps": r["timesteps"]}}
    checkpoint.save(model, config, out, metrics)
    return {"checkpoint": str(out), **r, "test_accuracy": metrics["test_accuracy"],
            "test_samples": metrics["test_samples"]}


def read_model(path: str | Path, data_spec: str | None = None, timesteps: int | None = None,
               dt: float | None = None, use_metadata: bool = True) -> dict:
    """The model, config and data set a NIR file imports to (``import_nir`` without the checkpoint
    files; ``verify`` rebuilds an edgesnn file's program through it), and what was imported."""
    path = Path(path)
    graph = read_graph(path)
    program = read_program(graph, path) if use_metadata else None
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
    layers, state = mapper.run(chain[1:-1], list(ds.in_shape), flat)
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
        "data": data_spec, "timesteps": 1,
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
            "timesteps": int(timesteps), "dt": None if program is not None else dt, "data": data_spec,
            "nodes": len(chain), "layers": len(layers), "notes": mapper.notes}


def read_graph(path: Path):
    """nir.read with every failure as one line; a node type nir itself does not know is named."""
    import h5py
    import nir

    if not path.is_file():
        raise EdgesnnError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise EdgesnnError(f"{path}: not a NIR file (NIR graphs are HDF5 files written by nir.write)")
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f or "type" not in f["node"]:
                raise EdgesnnError(f"{path}: not a NIR file (an HDF5 file without a NIR graph)")
            _check_types(f["node"], path, nir)
    except OSError as e:
        raise EdgesnnError(f"{path}: unreadable NIR file ({e})") from None
    try:
        graph = nir.read(path, type_check=False)
    except EdgesnnError:
        raise
    except Exception as e:  # noqa: BLE001 - nir's reader raises whatever its node constructors do
        raise EdgesnnError(f"{path}: invalid NIR file ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise EdgesnnError(f"{path}: the file holds a single {type(graph).__name__} node, not a NIR graph")
    return graph


def _check_types(group, path: Path, nir, prefix: str = "") -> None:
    """Every node's type must be one nir knows, or nir.read fails with a bare assertion."""
    for name, node in group.get("nodes", {}).items():
        kind = node["type"][()] if "type" in node else b""
        kind = kind.decode("utf8", "replace") if isinstance(kind, bytes) else str(kind)
        try:
            nir.ir.str2NIRNode(kind)
        except (AssertionError, KeyError):
            raise EdgesnnError(f"{path}: node '{prefix}{name}' has type '{kind}', which nir {nir.__version__} does not "
                               f"know; edgesnn imports {SUPPORTED}") from None
        if kind == "NIRGraph":
            _check_types(node, path, nir, f"{prefix}{name}/")


def read_program(graph, path: Path) -> dict | None:
    """The checked edgesnn program in a NIR graph's metadata, or None when it has none."""
    raw = (graph.metadata or {}).get("edgesnn")
    if raw is None:
        return None
    try:
        return prog.check(json.loads(raw.decode() if isinstance(raw, bytes) else raw), str(path))
    except (TypeError, ValueError, UnicodeDecodeError) as e:
        raise EdgesnnError(f"{path}: unreadable 'edgesnn' metadata ({type(e).__name__}); import with --float") from None


def _hints(graph) -> dict:
    """Timesteps and data an edgesnn NIR file names, read leniently (for --float, which ignores the rest)."""
    try:
        program = json.loads((graph.metadata or {}).get("edgesnn"))
    except (TypeError, ValueError):
        return {}
    hints, node = {}, program
    for key in ("ir", "meta", "source", "data"):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, str):
        hints["data"] = node
    if isinstance(program, dict) and isinstance(program.get("timesteps"), int):
        hints["timesteps"] = program["timesteps"]
    return hints


def node_chain(graph, path: Path) -> list[tuple[str, object]]:
    """The nodes from the Input to the Output, in order; refuses other node types and any branching."""
    import nir

    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if not isinstance(node, (nir.Input, nir.Output)) and kind not in SYNAPSES + NEURONS + ("SumPool2d", "AvgPool2d", "Flatten"):
            raise EdgesnnError(f"{path}: node '{name}' has type {kind}, which edgesnn cannot import; supported: {SUPPORTED}")
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
    chain, name = [], inputs[0]
    while True:
        chain.append((name, graph.nodes[name]))
        if name == outputs[0]:
            break
        nxt = succ.get(name, [])
        if len(nxt) != 1:
            raise EdgesnnError(f"{path}: node '{name}' feeds {len(nxt)} nodes {nxt}; edgesnn imports chains "
                               f"(each node feeding the next)" if nxt else f"{path}: node '{name}' feeds nothing")
        if len(pred.get(nxt[0], [])) != 1 or any(nxt[0] == n for n, _ in chain):
            raise EdgesnnError(f"{path}: node '{nxt[0]}' has {len(pred.get(nxt[0], []))} inputs (or closes a loop); "
                               f"edgesnn imports chains (each node feeding the next)")
        name = nxt[0]
    if len(chain) != len(graph.nodes):
        stray = sorted(set(graph.nodes) - {n for n, _ in chain})
        raise EdgesnnError(f"{path}: node(s) {stray} are not on the path from Input to Output")
    return chain


def _input_layout(node, in_shape, path: Path) -> tuple[int, bool]:
    """(batch dims, flat): the Input's shape is the data's sample shape or its flattening, either
    with or without a leading batch dimension of 1."""
    shape = [int(d) for d in np.atleast_1d(node.input_type["input"])] if node.input_type.get("input") is not None else None
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
        while any(layer["name"] == name for layer in self.layers):
            n += 1
            name = f"{base}_{n}"
        self.layers.append({"name": name, **spec})
        self.layer_of[node_name] = name
        for k, v in (tensors or {}).items():
            self.state[f"{name}.{k}"] = np.ascontiguousarray(v, dtype=np.float64)
        return name

    def synapse(self, name: str, node, kind: str, reads_input: bool, where: str) -> str:
        w = np.asarray(node.weight, np.float64)
        rho = self.T if reads_input else 1  # summed over the window, the image is T times itself
        if kind == "Conv2d":
            if len(self.shape) != 3 or w.ndim != 4:
                raise EdgesnnError(f"{where}: needs a (C, H, W) input and a 4-d weight, got {self.shape} and {list(w.shape)}")
            groups = int(np.asarray(node.groups).item())
            c, h, wd = self.shape
            if w.shape[1] * groups != c or w.shape[0] % groups:
                raise EdgesnnError(f"{where}: weight {list(w.shape)} with {groups} group(s) does not fit input {self.shape}")
            if _pair(node.dilation, where, "dilation") != [1, 1]:
                raise EdgesnnError(f"{where}: dilation {_pair(node.dilation, where, 'dilation')} is not supported")
            kh, kw = w.shape[2:]
            stride = _pair(node.stride, where, "stride")
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
        D = int(self.program_neurons.get(name, self.T))
        self.add(name, {"kind": "spike", "D": D})
        if (beta < 1).any():
            self.notes.append(f"neuron '{name}' ({kind}) leaks; its count is approximated to first order")

    def dynamics(self, node, kind: str, where: str):
        """(input gain per step, threshold, membrane decay per step) of a NIR neuron, elementwise."""
        dt, T = self.dt, self.T
        if kind != "IF" and not np.allclose(node.v_leak, 0):
            raise EdgesnnError(f"{where}: v_leak must be 0 (a resting potential has no SFA form)")
        if node.v_reset is not None and not np.allclose(node.v_reset, 0):
            raise EdgesnnError(f"{where}: v_reset must be 0 (the SFA neuron resets by subtracting its threshold)")
        if kind == "IF":  # r is the gain per step, as snnTorch reads it
            return np.asarray(node.r, np.float64), np.asarray(node.v_threshold, np.float64), np.ones(1)
        tau = np.asarray(node.tau if kind == "LIF" else node.tau_mem, np.float64)
        if (tau < dt).any():
            raise EdgesnnError(f"{where}: a membrane time constant {tau.min():g} s below --dt {dt:g} s")
        gain = dt * np.asarray(node.r, np.float64) / tau
        if kind == "CubaLIF":
            tau_syn = np.asarray(node.tau_syn, np.float64)
            if (tau_syn < dt).any():
                raise EdgesnnError(f"{where}: a synaptic time constant {tau_syn.min():g} s below --dt {dt:g} s")
            alpha = 1.0 - dt / tau_syn
            steps = np.arange(1, T + 1).reshape(-1, *([1] * alpha.ndim))
            mean_gain = ((1.0 - alpha**steps) / np.where(alpha < 1, 1.0 - alpha, 1.0)).mean(axis=0)
            mean_gain = np.where(alpha < 1, mean_gain, (T + 1) / 2.0)  # alpha = 1: the current only grows
            gain = gain * np.asarray(node.w_in, np.float64) * dt / tau_syn * mean_gain
        return gain, np.asarray(node.v_threshold, np.float64), 1.0 - dt / tau

    def pool(self, name: str, node, kind: str, where: str) -> int:
        if len(self.shape) != 3:
            raise EdgesnnError(f"{where}: needs a (C, H, W) input, got {self.shape}")
        kernel, stride = _pair(node.kernel_size, where, "kernel_size"), _pair(node.stride, where, "stride")
        if _pair(node.padding, where, "padding") != [0, 0]:
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
        start, end = int(node.start_dim) - self.batch, int(node.end_dim)
        end = end - self.batch if end >= 0 else end
        if start not in (0, -rank) or end not in (-1, rank - 1):
            raise EdgesnnError(f"{where}: flattens dims {node.start_dim}..{node.end_dim} of {self.shape}; edgesnn "
                               f"imports a Flatten of the whole sample")
        if rank == 1:
            return False
        self.add(name, {"kind": "flatten"})
        self.shape = [math.prod(self.shape)]
        return True


def _pair(v, where: str, label: str) -> list[int]:
    a = np.atleast_1d(np.asarray(v))
    if a.size not in (1, 2) or a.dtype.kind not in "iuf" or not np.all(a == np.round(a)):
        raise EdgesnnError(f"{where}: {label} must be one or two integers, got {v!r}")
    a = [int(x) for x in a]
    return a * 2 if len(a) == 1 else a


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
    try:
        return np.broadcast_to(np.asarray(v, np.float64), shape).copy()
    except ValueError:
        raise EdgesnnError(f"{where}: {label} of shape {list(np.shape(v))} does not fit {list(shape)}") from None


def _per_channel(p: np.ndarray, shape: list[int], where: str, label: str) -> np.ndarray:
    """One value per output channel: per-element parameters must not vary over a feature map."""
    full = _broadcast(p, tuple(shape), where, label)
    if len(shape) != 3:
        return full.reshape(-1)
    flat = full.reshape(shape[0], -1)
    if not np.allclose(flat, flat[:, :1]):
        raise EdgesnnError(f"{where}: its {label} varies within a channel; edgesnn folds one value per channel")
    return flat[:, 0].copy()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__
