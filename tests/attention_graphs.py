"""Hand-built IR graphs with the ops spike-driven linear attention needs (transpose, reshape of any
rank, batch_matmul), so each backend is tested on them before and apart from the exporter.

The graph is E-SpikeFormer's attention in small: a 1x1 conv and a neuron make q, k and v spike
counts (HWC); each is moved to (heads, tokens, d); ``(q @ k^T) @ v`` is computed exactly in int16
(the operands widened), requantized to a neuron, moved back to HWC and projected by a 1x1 conv.
"""

from __future__ import annotations

import numpy as np

from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import effective_multiplier, quantize_multipliers

H, W, C, HEADS, D = 4, 6, 8, 2, 4
N, DH = H * W, C // 2


def _requant(s_in, s_w, s_out):
    return quantize_multipliers(effective_multiplier(s_in, s_w, s_out))


def attention_graph(stream_dtype: str = "int8", seed: int = 0, adj_y: bool = True) -> g.Graph:
    """A random attention graph on (H, W, C) input; ``stream_dtype`` int16 makes the input and
    the convs int16 (the 16x8 kernels). ``adj_y`` False feeds k^T as a transposed tensor instead."""
    rng = np.random.default_rng(seed)
    t: dict[str, g.TensorSpec] = {}
    ops: list[g.Op] = []
    lo16, hi16 = g.dtype_range("int16")
    t["input"] = g.TensorSpec([H, W, C], stream_dtype, 0.05, 0)
    spike_scale = 1.0  # spike counts 0..D
    for name in ("q", "k", "v"):
        w = rng.integers(-60, 61, (C, 1, 1, C)).astype(np.int8)
        ws = np.full(C, 0.01, np.float32)
        t[f"{name}_s"] = g.TensorSpec([H, W, C], "int8", spike_scale, 0, spike_D=D)
        m, s = _requant(t["input"].scale, ws, spike_scale)
        ops.append(g.Conv2D(f"{name}_conv", ["input"], f"{name}_s", multiplier=m, shift=s, clamp=[0, D],
                            weight=w, bias=rng.integers(-500, 500, C).astype(np.int32), weight_scale=ws))
        # HWC -> (N, C) -> (N, heads, dh) -> (heads, N, dh), widened to int16 for the exact product
        t[f"{name}_nc"] = g.TensorSpec([N, HEADS, DH], "int8", spike_scale, 0, spike_D=D)
        ops.append(g.Reshape(f"{name}_split", [f"{name}_s"], f"{name}_nc"))
        t[f"{name}_h"] = g.TensorSpec([HEADS, N, DH], "int8", spike_scale, 0, spike_D=D)
        ops.append(g.Transpose(f"{name}_heads", [f"{name}_nc"], f"{name}_h", perm=[1, 0, 2]))
        t[f"{name}16"] = g.TensorSpec([HEADS, N, DH], "int16", spike_scale, 0, spike_D=D)
        m, s = _requant(spike_scale, 1.0, spike_scale)
        ops.append(g.Requantize(f"{name}_widen", [f"{name}_h"], f"{name}16", multiplier=m, shift=s, clamp=[lo16, hi16]))
    if adj_y:
        k_in = "k16"
    else:
        t["kT"] = g.TensorSpec([HEADS, DH, N], "int16", spike_scale, 0, spike_D=D)
        ops.append(g.Transpose("k_T", ["k16"], "kT", perm=[0, 2, 1]))
        k_in = "kT"
    t["qk"] = g.TensorSpec([HEADS, N, N], "int16", spike_scale * spike_scale, 0)
    m, s = _requant(spike_scale, spike_scale, t["qk"].scale)  # exactly 1: the integer product itself
    ops.append(g.BatchMatMul("q_kT", ["q16", k_in], "qk", adj_y=adj_y, multiplier=m, shift=s, clamp=[lo16, hi16]))
    t["qkv"] = g.TensorSpec([HEADS, N, DH], "int16", 8.0, 0, spike_D=D)
    m, s = _requant(t["qk"].scale, spike_scale, t["qkv"].scale * 30.0)  # a neuron: requantize + clamp [0, D]
    ops.append(g.BatchMatMul("qk_v", ["qk", "v16"], "qkv", multiplier=m, shift=s, clamp=[0, D]))
    t["attn"] = g.TensorSpec([HEADS, N, DH], "int8", 8.0, 0, spike_D=D)
    m, s = _requant(8.0, 1.0, 8.0)
    ops.append(g.Requantize("attn_narrow", ["qkv"], "attn", multiplier=m, shift=s, clamp=[0, D]))
    t["attn_n"] = g.TensorSpec([N, HEADS, DH], "int8", 8.0, 0, spike_D=D)
    ops.append(g.Transpose("merge_heads", ["attn"], "attn_n", perm=[1, 0, 2]))
    t["attn_hwc"] = g.TensorSpec([H, W, C], "int8", 8.0, 0, spike_D=D)
    ops.append(g.Reshape("to_hwc", ["attn_n"], "attn_hwc"))
    w = rng.integers(-100, 101, (C, 1, 1, C)).astype(np.int8)
    ws = np.full(C, 0.02, np.float32)
    t["output"] = g.TensorSpec([H, W, C], "int8", 0.5, -3)
    m, s = _requant(8.0, ws, 0.5)
    ops.append(g.Conv2D("proj", ["attn_hwc"], "output", multiplier=m, shift=s, clamp=[-128, 127],
                        weight=w, bias=rng.integers(-200, 200, C).astype(np.int32), weight_scale=ws))
    return g.Graph(t, ops, "input", ["output"], meta={"created_by": "tests/attention_graphs.py"})


def attention_inputs(graph: g.Graph, n: int = 64, seed: int = 1) -> np.ndarray:
    """Random integer input batch (NHWC) in the graph's input dtype, spread over its whole range."""
    spec = graph.tensors[graph.input]
    lo, hi = (-128, 127) if spec.dtype == "int8" else (-3000, 3000)
    return np.random.default_rng(seed).integers(lo, hi + 1, (n, *spec.shape)).astype(g.DTYPES[spec.dtype])
