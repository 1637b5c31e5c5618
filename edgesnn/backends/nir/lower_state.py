"""A temporal IR graph (edgesnn/ir/state.py) -> NIR: standard neuron nodes with the state's own dynamics,
plus the exact integer program (program.py), as for a static graph.

The IR's neurons are Loihi's fixed-point ones: per step ``v = v·(1 - d/4096) + x`` (the decay rounded
toward zero), the real value of every tensor and state being scale · q. Read as NIR's continuous-time
neurons under forward Euler with a step dt, ``v += dt/tau·(v_leak - v + r·I)``, that is the leak
beta = 1 - dt/tau and the input gain dt·r/tau. So each node gets (docs/nir.md, "Temporal graphs")

- ``tau = dt·4096/d`` and ``r = tau/dt = 4096/d`` (gain 1: the IR adds its input unscaled), v_leak 0,
  dt = :data:`DT` (snnTorch's convention, edgesnn import's default --dt), recorded in each node's metadata;
- CubaLIF / CubaLI: the current's ``tau_syn = dt·4096/d_i`` and ``w_in = tau_syn/dt`` the same way;
- a neuron with no leak (d = 0 everywhere) is ``IF`` / ``I`` with r = 1 (the gain per step, as the
  static export's IF); v_threshold = threshold · scale; v_reset 0, and ``reset`` (subtract or zero)
  in the node's metadata, since NIR has only a reset to v_reset;
- a MultiSpike neuron (``max_spike`` > 1: up to D spikes per step) is refused: NIR's neurons spike 0/1;
- a ``recurrent`` op is an ``Affine`` (its real weight, bias 0) from the spikes it reads back to the
  neuron its output feeds: a cycle, which NIR allows, and which a step-by-step reader delays one step.

What NIR cannot say (integer weights, requantization, clamps, state widths and saturation, the
decay's rounding, the readout) stays in the program; the Output node's metadata names the readout.
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.nir.program import encode, real_weight, to_torch_layout
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st

DT = 1e-4  # seconds per step: snnTorch's export convention (tau = dt / (1 - beta)), importer.DEFAULT_DT
OPS = ("reshape", "dense", "recurrent", "lif", "cuba_lif", "li")
SUPPORTED = ("a temporal graph of reshape (flatten), dense, recurrent, lif, cuba_lif and li ops "
             "(the temporal-dense model)")


def lower(graph: g.Graph):
    """(nir.NIRGraph, program) of a temporal IR graph; refuses, naming the op, what NIR cannot express."""
    import nir

    if len(graph.outputs) != 1:
        raise EdgesnnError(f"the graph has {len(graph.outputs)} outputs {graph.outputs}; NIR export of a temporal "
                           f"graph writes one Output (one readout)")
    frame = graph.tensors[graph.input].shape
    nodes = {"input": nir.Input(input_type=np.array(_torch_shape(frame)))}
    edges: list[tuple[str, str]] = []
    sources: dict[str, list[str]] = {graph.input: ["input"]}  # IR tensor -> NIR nodes whose outputs sum to it
    flattened: dict[str, list[int]] = {}  # a flat tensor -> the (H, W, C) image it was flattened from
    weights, feedback = {}, []
    spiking = {op.output: op for op in graph.ops if op.kind in ("lif", "cuba_lif")}

    def add(name: str, node, inputs: list[str]) -> str:
        if name in nodes or name == "output":
            raise EdgesnnError(f"op '{name}': two NIR nodes would share its name")
        nodes[name] = node
        edges.extend((s, name) for s in inputs)
        return name

    for op in graph.ops:
        where = f"op '{op.name}' ({op.kind})"
        if op.kind not in OPS:
            raise EdgesnnError(f"{where} has no NIR form in a temporal graph; NIR export takes {SUPPORTED}")
        if len(op.inputs) != 1 or op.inputs[0] not in sources:
            raise EdgesnnError(f"{where} reads {op.inputs}; NIR export takes {SUPPORTED}, each op reading one tensor")
        ins = sources[op.inputs[0]]
        shape_in, spec_out = graph.tensors[op.inputs[0]].shape, graph.tensors[op.output]
        if op.kind == "reshape":
            if shape_in == spec_out.shape:
                sources[op.output] = ins
            elif len(shape_in) == 3 and len(spec_out.shape) == 1:
                flat = nir.Flatten(input_type={"input": np.array(_torch_shape(shape_in))}, start_dim=0, end_dim=-1)
                sources[op.output] = [add(op.name, flat, ins)]
                flattened[op.output] = list(shape_in)
            else:
                raise EdgesnnError(f"{where}: reshaping {tuple(shape_in)} to {tuple(spec_out.shape)} is not a flatten "
                                   f"of an (H, W, C) frame, the only reshape NIR export writes")
        elif op.kind == "dense":
            hwc = flattened.get(op.inputs[0])
            w = to_torch_layout(real_weight(op), "dense", hwc)
            acc_scale = np.float64(np.float32(graph.tensors[op.inputs[0]].scale)) * np.asarray(op.weight_scale, np.float64)
            bias = op.bias.astype(np.float64) * acc_scale
            name = add(op.name, nir.Affine(weight=w.astype(np.float32), bias=bias.astype(np.float32)), ins)
            weights[op.name] = {"node": name, "hwc": hwc}
            sources[op.output] = [name]
        elif op.kind == "recurrent":
            if op.source not in spiking:
                raise EdgesnnError(f"{where} feeds back {op.source!r}, which no lif or cuba_lif op writes; NIR export "
                                   f"takes recurrence from a layer's spikes (an Affine from its neuron node back)")
            w = real_weight(op)
            name = add(op.name, nir.Affine(weight=w.astype(np.float32), bias=np.zeros(len(w), np.float32)), [])
            weights[op.name] = {"node": name, "hwc": None}
            feedback.append((spiking[op.source].name, name))
            sources[op.output] = ins + [name]  # the neuron it feeds sums the current and the feedback
        else:
            sources[op.output] = [add(op.name, _neuron(nir, op, graph, where), ins)]
    for src, rec in feedback:
        edges.append((src, rec))  # the spikes of the step before, back through the recurrent Affine
    (out,) = graph.outputs
    readout = graph.sequence.readout[out]
    nodes["output"] = nir.Output(output_type=np.array(_torch_shape(graph.tensors[out].shape)),
                                 metadata={"readout": readout, "steps": int(graph.sequence.steps)})
    edges.extend((s, "output") for s in sources[out])
    program = encode(graph, weights, graph.sequence.steps, {})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False), program


def _neuron(nir, op, graph: g.Graph, where: str):
    """The NIR node of a lif, cuba_lif or li op (module docstring)."""
    shape = _torch_shape(graph.tensors[op.inputs[0]].shape)
    v = graph.states[op.v_state]
    full = lambda a: np.broadcast_to(np.asarray(a, np.float64), shape).astype(np.float32)  # noqa: E731
    meta = {"dt": DT, "edgesnn_op": op.name}
    zeros = full(0.0)
    synaptic = op.kind == "cuba_lif" or (op.kind == "li" and bool(op.i_state))
    d_v = op.decay_v.astype(np.int64)
    if synaptic:
        d_i = op.decay_i.astype(np.int64)
        if (d_i == 0).any() or (d_v == 0).any():
            raise EdgesnnError(f"{where}: a current or membrane with no leak (decay 0) has no NIR CubaLIF or CubaLI "
                               f"form (its tau would be infinite)")
        tau_syn, tau_mem = full(DT * st.DECAY_UNITY / d_i), full(DT * st.DECAY_UNITY / d_v)
        common = dict(tau_syn=tau_syn, tau_mem=tau_mem, r=full(st.DECAY_UNITY / d_v), v_leak=zeros,
                      w_in=full(st.DECAY_UNITY / d_i))
    elif (d_v == 0).all():
        common = dict(r=full(1.0))  # IF / I: no leak, r the gain per step
    elif (d_v == 0).any():
        raise EdgesnnError(f"{where}: decay_v is 0 (no leak) in some channels only; NIR has no node mixing IF and "
                           f"LIF channels")
    else:
        common = dict(tau=full(DT * st.DECAY_UNITY / d_v), r=full(st.DECAY_UNITY / d_v), v_leak=zeros)
    if op.kind == "li":
        kind = nir.CubaLI if synaptic else (nir.LI if "tau" in common else nir.I)
        return kind(**common, metadata=meta)
    if op.max_spike != 1:
        raise EdgesnnError(f"{where} emits up to {op.max_spike} spikes per step (MultiSpike, max_spike); NIR's LIF and "
                           f"CubaLIF spike 0/1, so NIR export takes max_spike 1 only")
    threshold = full(op.threshold.astype(np.float64) * np.float64(np.float32(v.scale)))
    meta["reset"] = op.reset
    if synaptic:
        return nir.CubaLIF(**common, v_threshold=threshold, v_reset=zeros, metadata=meta)
    if "tau" in common:
        return nir.LIF(**common, v_threshold=threshold, v_reset=zeros, metadata=meta)
    return nir.IF(**common, v_threshold=threshold, v_reset=zeros, metadata=meta)


def _torch_shape(shape) -> list[int]:
    """IR (H, W, C) -> NIR/torch (C, H, W); flat shapes as they are."""
    return [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)
