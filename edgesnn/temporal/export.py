"""A trained :class:`~edgesnn.temporal.model.SpikingSequence` as a temporal IR graph (docs/temporal.md).

A :class:`~edgesnn.temporal.conv.ConvSpikingSequence` starts with its conv blocks: ``conv2d`` (weights
OHWI), the neuron op over states of shape (H, W, C), and ``sum_pool2d``; then the flatten and dense
pairs below, the first dense's columns permuted from the pooled features' CHW to HWC.

Each frame (NHWC) is flattened by a Reshape; each QLinear becomes a ``dense`` whose integers come from
``QLinear.integers`` (the very numbers the torch eval forward uses, so the two agree bit for bit) and
whose output is the current on the next neuron's grid, in the state's dtype (weights of fewer bits, from
``quantize --method qsnn``, keep their ``weight_bits`` / ``weight_code``); the weight columns are
permuted from torch's CHW flattening to the IR's HWC. An RLIF adds a ``recurrent`` op reading the
previous step's spikes (state ``<name>.prev``, int8); a LIF, CubaLIF and LI become ``lif``,
``cuba_lif`` and ``li`` with their states (``overflow: saturate``, as torch's ``hold``); a neuron's
``max_spike`` D (MultiSpike) is the op's, and its spike tensor's spike_D.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir import state as st
from edgesnn.temporal.model import SpikingSequence
from edgesnn.temporal.neurons import LI, RLIF, CubaLIF


def hwc_order(frame_shape) -> np.ndarray:
    """IR position j of a flattened NHWC frame -> the torch (CHW-flattened) feature it holds."""
    if len(frame_shape) != 3:
        return np.arange(int(np.prod(frame_shape)))
    c, h, w = frame_shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def export(model: SpikingSequence, steps: int) -> g.Graph:
    """The temporal IR graph of ``model`` over sequences of ``steps`` frames."""
    from edgesnn.temporal.conv import ConvSpikingSequence

    if float(model.input_scale) <= 0:
        raise EdgesnnError("the model has no input scale yet: calibrate or train it first")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= st.MAX_STEPS:
        raise EdgesnnError(f"steps must be an integer in 1..{st.MAX_STEPS:,}, got {steps!r}")
    frame = model.frame_shape
    ir_frame = [frame[1], frame[2], frame[0]] if len(frame) == 3 else list(frame)
    s_in = float(np.float32(model.input_scale))
    tensors = {"input": g.TensorSpec(ir_frame, "int8", s_in)}
    ops: list[g.Op] = []
    states: dict[str, st.StateSpec] = {}
    h, first = "input", 0
    if isinstance(model, ConvSpikingSequence):
        h = _conv_blocks(model, tensors, ops, states)
        frame, first = model.features_shape, len(model.convs)
    features = int(np.prod(frame))
    if len(tensors[h].shape) != 1:
        tensors["flat"] = g.TensorSpec([features], "int8", tensors[h].scale)
        ops.append(g.Reshape("flatten", [h], "flat"))
        h = "flat"
    for k, (lin, neuron) in enumerate(model.pairs):
        name = f"l{first + k}"
        p = lin.integers(tensors[h].scale, neuron.scale)
        weight = p["weight"][:, hwc_order(frame)] if k == 0 else p["weight"]
        cur = f"{name}.current"
        tensors[cur] = g.TensorSpec([neuron.channels], neuron.dtype, neuron.scale)
        ops.append(g.Dense(f"{name}.dense", [h], cur, multiplier=p["multiplier"], shift=p["shift"],
                           clamp=list(neuron.current), weight=weight, bias=p["bias"], weight_scale=p["weight_scale"],
                           weight_bits=p["weight_bits"], weight_code=p["weight_code"]))
        if isinstance(neuron, RLIF):
            ops.append(_recurrent(name, neuron, cur, tensors, states))
            cur = ops[-1].output
        h = _neuron(name, neuron, cur, tensors, ops, states)
    graph = g.Graph(tensors, ops, "input", [h], states=states,
                    sequence=st.Sequence(steps, {h: model.readout}))
    return graph


def _conv_blocks(model, tensors: dict, ops: list, states: dict) -> str:
    """Each block as ``conv2d`` (weights OHWI, "same" zero padding) -> its neuron op over (H, W, C) states
    -> ``sum_pool2d`` (int8 spike counts, scale 1); returns the last pooled tensor."""
    h = "input"
    for k, (conv, neuron) in enumerate(model.blocks):
        name = f"l{k}"
        p = conv.integers(tensors[h].scale, neuron.scale)
        height, width, _ = tensors[h].shape
        cur = f"{name}.current"
        tensors[cur] = g.TensorSpec([height, width, neuron.channels], model.current_dtype(neuron), neuron.scale)
        pad, ohwi = int(conv.padding[0]), np.ascontiguousarray(p["weight"].transpose(0, 2, 3, 1))
        ops.append(g.Conv2D(f"{name}.conv", [h], cur, multiplier=p["multiplier"], shift=p["shift"],
                            clamp=list(model.current_range(neuron)), weight=ohwi, bias=p["bias"],
                            weight_scale=p["weight_scale"], weight_bits=p["weight_bits"],
                            weight_code=p["weight_code"], stride=[1, 1], padding=[pad] * 4))
        spikes = _neuron(name, neuron, cur, tensors, ops, states)
        pooled, k2 = f"{name}.pooled", model.pool
        tensors[pooled] = g.TensorSpec([height // k2, width // k2, neuron.channels], "int8", 1.0)
        ops.append(g.SumPool2D(f"{name}.pool", [spikes], pooled, kernel=[k2, k2], stride=[k2, k2]))
        h = pooled
    return h


def _neuron(name: str, neuron, cur: str, tensors: dict, ops: list, states: dict) -> str:
    """The neuron op reading the current ``cur`` (its states shaped as the current); returns its output."""
    shape = list(tensors[cur].shape)
    spec = st.StateSpec(shape, neuron.dtype, neuron.bits, neuron.scale, "saturate")
    states[f"{name}.v"] = spec
    d_v = neuron.leak(exact=True) if hasattr(neuron, "leak") else neuron.decay_v  # a learned beta's integer
    common = dict(v_state=f"{name}.v", decay_v=_int32(d_v), input_shift=0)
    if isinstance(neuron, LI):
        out = f"{name}.v_out"
        tensors[out] = g.TensorSpec(shape, neuron.dtype, neuron.scale)
        if neuron.synaptic:
            states[f"{name}.i"] = replace(spec)
            common.update(i_state=f"{name}.i", decay_i=_int32(neuron.decay_i))
        ops.append(st.LI(name, [cur], out, **common))
        return out
    out = f"{name}.spikes"
    tensors[out] = g.TensorSpec(shape, "int8", 1.0, 0, spike_D=neuron.max_spike)
    kw = dict(common, threshold=np.array([neuron.theta], np.int32), reset=neuron.reset, max_spike=neuron.max_spike)
    if isinstance(neuron, CubaLIF):
        states[f"{name}.i"] = replace(spec)
        ops.append(st.CubaLIF(name, [cur], out, i_state=f"{name}.i", decay_i=_int32(neuron.decay_i), **kw))
    else:
        ops.append(st.LIF(name, [cur], out, **kw))
    return out


def _recurrent(name: str, neuron: RLIF, cur: str, tensors: dict, states: dict) -> st.Recurrent:
    """``current + W_rec @ spikes[t-1]``, on the membrane's grid: the spikes' scale is 1."""
    p = neuron.recurrent.integers(1.0, neuron.scale)
    out = f"{name}.recurrent"
    tensors[out] = g.TensorSpec([neuron.channels], neuron.dtype, neuron.scale)
    states[f"{name}.prev"] = st.StateSpec([neuron.channels], "int8", 8, 1.0, "saturate")
    return st.Recurrent(f"{name}.rec", [cur], out, multiplier=p["multiplier"], shift=p["shift"],
                        clamp=list(neuron.current), state=f"{name}.prev", source=f"{name}.spikes",
                        weight=p["weight"], weight_scale=p["weight_scale"], weight_bits=p["weight_bits"],
                        weight_code=p["weight_code"])


def _int32(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.int32)
