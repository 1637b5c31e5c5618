"""The exact integer program a NIR file carries for edgesnn: the IR minus its weights.

NIR holds real-valued weights and nothing else. The program holds what NIR has no place for —
bit widths, weight codes, per-channel weight scales, int32 biases, requantization multipliers
and shifts, clamps, D — in the IR file's own JSON schema, plus which NIR node holds each op's
weights. The weights come back from those nodes: every real weight is an integer times its
channel's scale, so dividing and rounding recovers the integer, and the remainder proves it
(a weight edited after export is off the grid and refused). The rebuilt graph is validated by
the IR file's own schema check, so an imported program is held to exactly what an IR file is.

An imported checkpoint keeps the program in config.json with a digest of its weights: export
uses the program while the weights are those it was built from, and the ordinary SFA export
once they change (e.g. after `edgesnn quantize`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from edgesnn import limits
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import packing
from edgesnn.ir.serialize import check_counts, graph_from_header, to_header  # the IR file's own format and checks

FORMAT, VERSION = "edgesnn-nir-program", 1
_GRID_TOLERANCE = 1e-3  # of one weight step: float32 round trips stay far below, any edit far above


def flatten_order(hwc) -> np.ndarray:
    """perm[i] = the IR (H, W, C) flat index of torch's (C, H, W) flat index i."""
    h, w, c = (int(d) for d in hwc)
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()


def real_weight(op: g.Op) -> np.ndarray:
    """An IR conv2d/dense weight as real numbers in the IR's layout: widened integer x channel scale."""
    w = packing.widen(op.weight, op.weight_bits, op.weight_code).astype(np.float64)
    return w * np.asarray(op.weight_scale, np.float64).reshape(-1, *([1] * (w.ndim - 1)))


def to_torch_layout(w: np.ndarray, kind: str, hwc) -> np.ndarray:
    """IR layout -> torch/NIR layout: OHWI -> OIHW; dense columns from (H, W, C) to (C, H, W) order."""
    if kind == "conv2d":
        return w.transpose(0, 3, 1, 2)
    return w if hwc is None else w[:, flatten_order(hwc)]


def from_torch_layout(w: np.ndarray, kind: str, hwc) -> np.ndarray:
    if kind == "conv2d":
        return w.transpose(0, 2, 3, 1)
    return w if hwc is None else w[:, np.argsort(flatten_order(hwc))]


def encode(graph: g.Graph, weight_nodes: dict[str, dict], timesteps: int, neurons: dict[str, int]) -> dict:
    """The program of ``graph``: ``weight_nodes[op] = {"node": NIR node id, "hwc": [H, W, C] or None}``
    (the dense layer's input was flattened from that HWC tensor); ``neurons[node id] = D``."""
    header, packed = to_header(graph)
    weights = {f"{op.name}.weight" for op in graph.ops if "weight" in op.arrays()}  # held by the NIR nodes
    arrays = {k: {"dtype": arr.dtype.name, "values": arr.ravel().tolist(), "shape": list(arr.shape)}
              for k, arr in packed.items() if k not in weights}
    return json.loads(json.dumps({"format": FORMAT, "version": VERSION, "ir_version": g.IR_VERSION,
                                  "timesteps": int(timesteps), "ir": header, "arrays": arrays,
                                  "weights": weight_nodes, "neurons": neurons}, default=_plain))


def check(program, where: str) -> dict:
    """A program read from a file: the right format and versions, before anything uses it."""
    if not isinstance(program, dict) or program.get("format") != FORMAT:
        raise EdgesnnError(f"{where}: the 'edgesnn' metadata is not an edgesnn NIR program")
    if program.get("version") != VERSION:
        raise EdgesnnError(f"{where}: edgesnn NIR program version {program.get('version')}, but this edgesnn reads "
                           f"version {VERSION}; re-export it, or import with --float")
    if program.get("ir_version") != g.IR_VERSION:
        raise EdgesnnError(f"{where}: its integer program is IR version {program.get('ir_version')}, but this edgesnn "
                           f"reads version {g.IR_VERSION}; re-export it, or import with --float")
    for key, kind in (("ir", dict), ("arrays", dict), ("weights", dict), ("neurons", dict), ("timesteps", int)):
        if not isinstance(program.get(key), kind):
            raise EdgesnnError(f"{where}: the edgesnn NIR program has no valid {key!r}")
    return program


def rebuild(program: dict, weights: dict[str, np.ndarray], biases: dict[str, np.ndarray], where: str) -> g.Graph:
    """The IR of ``program`` with each weighted op's integers recovered from ``weights[op]`` (real
    values in torch layout); refuses weights off the program's grid and real ``biases[op]`` that are
    not the program's int32 biases (to within float32 rounding)."""
    header = json.loads(json.dumps(program["ir"]))  # a private copy: the schema check pops fields
    try:
        check_counts(header)
        arrays = {k: _array(v) for k, v in program["arrays"].items()}
    except (EdgesnnError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise EdgesnnError(f"{where}: invalid edgesnn NIR program arrays ({type(e).__name__}: {limits._short(e)})") from None
    try:
        for entry in header.get("ops", []):
            if entry.get("kind") in ("conv2d", "dense", "recurrent"):
                arrays[f"{entry['name']}.weight"] = _integer_weight(entry, program, arrays, weights, where)
                if entry["kind"] == "recurrent":  # its Affine adds nothing but W times the step before's spikes
                    _check_no_bias(entry, program, biases, where)
                else:
                    _check_bias(entry, header, program, arrays, biases, where)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:  # a field of the wrong type
        raise EdgesnnError(f"{where}: invalid edgesnn NIR program ({type(e).__name__}: {limits._short(e, 300)})") from None
    try:
        return graph_from_header(header, arrays)
    except (EdgesnnError, KeyError, TypeError, ValueError) as e:
        raise EdgesnnError(f"{where}: invalid edgesnn NIR program ({type(e).__name__}: {limits._short(e, 300)})") from None


_ARRAY_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32", "float64")


def _array(entry) -> np.ndarray:
    """One of the program's small arrays: a plain dtype (a "V4000000000" one would allocate 4 GB an
    element) and a shape whose size is the values' count."""
    if not isinstance(entry, dict) or entry.get("dtype") not in _ARRAY_DTYPES or not isinstance(entry.get("values"), list):
        raise ValueError(f"each array needs a dtype among {', '.join(_ARRAY_DTYPES)} and a list of values")
    if limits.elements(entry.get("shape"), "array") != len(entry["values"]):
        raise ValueError(f"shape {limits._short(entry.get('shape'))} does not hold {len(entry['values'])} values")
    return np.asarray(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])


def _integer_weight(entry: dict, program: dict, arrays: dict, weights: dict, where: str) -> np.ndarray:
    name = entry["name"]
    ref = program["weights"].get(name)
    if not isinstance(ref, dict) or name not in weights:
        raise EdgesnnError(f"{where}: the edgesnn NIR program names no weights for op {name!r}")
    bits, code = entry.get("weight_bits", 8), entry.get("weight_code", "signed")
    scale = arrays.get(f"{name}.weight_scale")
    shape = entry.get("weight_shape")
    w = from_torch_layout(np.asarray(weights[name], np.float64), entry["kind"], ref.get("hwc"))
    if scale is None or list(w.shape) != list(shape or []):
        raise EdgesnnError(f"{where}: node {ref.get('node')!r} has weights of shape {list(w.shape)}, the program "
                           f"expects {shape} (op {name!r})")
    step = scale.astype(np.float64).reshape(-1, *([1] * (w.ndim - 1)))
    widened = np.rint(w / step)
    shift = packing.widening_shift(bits, code)
    on_grid = np.abs(w - widened * step) <= _GRID_TOLERANCE * step
    q = widened.astype(np.int64) >> shift
    if not on_grid.all() or not np.array_equal(q << shift, widened.astype(np.int64)):
        raise EdgesnnError(f"{where}: node {ref.get('node')!r} has weights off the {bits}-bit integer grid its edgesnn "
                           f"metadata records (changed after export?); import it with --float to take it as a float graph")
    try:
        packing.check_weights(q, bits, code)
        return packing.pack(q, bits, code)
    except ValueError as e:
        raise EdgesnnError(f"{where}: node {ref.get('node')!r}: {e}") from None


def _check_bias(entry: dict, header: dict, program: dict, arrays: dict, biases: dict, where: str) -> None:
    """A real bias is the int32 bias times the accumulator scale (input scale x weight scale)."""
    name = entry["name"]
    try:
        s_in = np.float64(np.float32(header["tensors"][entry["inputs"][0]]["scale"]))
        acc_scale = s_in * arrays[f"{name}.weight_scale"].astype(np.float64)
        exact = arrays[f"{name}.bias"].astype(np.float64)
        steps = np.asarray(biases[name], np.float64) / acc_scale
    except (KeyError, IndexError, TypeError, ValueError):
        raise EdgesnnError(f"{where}: the edgesnn NIR program has no valid bias for op {name!r}") from None
    if steps.shape != exact.shape or (np.abs(steps - exact) > 0.5 + 1e-6 * np.abs(exact)).any():
        node = program["weights"][name].get("node")
        raise EdgesnnError(f"{where}: node {node!r} has biases that are not the int32 biases its edgesnn metadata "
                           f"records (changed after export?); import it with --float to take it as a float graph")


def _check_no_bias(entry: dict, program: dict, biases: dict, where: str) -> None:
    bias = np.asarray(biases.get(entry["name"], 0.0), np.float64)
    if bias.size and np.abs(bias).max() != 0:
        raise EdgesnnError(f"{where}: node {program['weights'][entry['name']].get('node')!r} (a recurrent weight) has "
                           f"a nonzero bias, which its edgesnn metadata does not record (changed after export?)")


def from_nodes(nir_graph, program: dict, where: str) -> g.Graph:
    """The IR of ``program`` with each weighted op's integers recovered straight from the NIR node its
    ``weights`` entry names (a temporal graph: no torch model in between, its Affines hold the IR's
    real weights and biases as they are)."""
    weights, biases = {}, {}
    for op, ref in program["weights"].items():
        node = nir_graph.nodes.get(ref.get("node")) if isinstance(ref, dict) else None
        if type(node).__name__ != "Affine":
            raise EdgesnnError(f"{where}: its edgesnn metadata names weights of node {limits._short(ref)} for op "
                               f"{op!r}, which is not an Affine node of the graph")
        weights[op], biases[op] = np.asarray(node.weight, np.float64), np.asarray(node.bias, np.float64)
    return rebuild(program, weights, biases, where)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes, bytes): whether the weights are still the imported ones."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def exact_graph(model: torch.nn.Module, config: dict, meta: dict) -> g.Graph | None:
    """The IR an imported checkpoint's program defines, while its weights are the imported ones; else None.

    ``meta`` (what the export records: source checkpoint, data) replaces the program's own."""
    nir_config = config.get("nir") or {}
    program = nir_config.get("program")
    if not program or config.get("quantization") or weights_digest(model) != nir_config.get("weights_sha256"):
        return None
    layers = {op: ref["layer"] for op, ref in program["weights"].items()}
    weights = {op: model.get_submodule(layer).weight.detach().double().numpy() for op, layer in layers.items()}
    biases = {op: model.get_submodule(layer).bias.detach().double().numpy() for op, layer in layers.items()}
    graph = rebuild(program, weights, biases, f"{nir_config.get('file', 'the imported NIR file')}")
    graph.meta = {**meta, "weight_bits": "as imported", "imported_from": {
        "nir": nir_config.get("file"), "original": program["ir"].get("meta", {}).get("source")}}
    return graph


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
