"""conv2d / dense kernels for application CPUs (host and linux-aarch64 boards): a GEMM per layer.

The Cortex-M kernels of :mod:`.kernels` reduce one output at a time (a dot product over a run of input
channels); on a CPU with wide vectors that leaves a horizontal sum per output. Here TVM generates the
loop nest over tiles of four output pixels: it gathers each pixel's receptive field into a scratch row
(im2col in NHWC/OHWI order, the zero point where the kernel overlaps the padding) and calls the C
micro-kernel of :mod:`.microkernels_cpu`, which holds 4 x 32 int32 sums in vector registers across the
whole reduction and requantizes them. The weights are packed at export as ``[K/4][OCp][4]`` with the
input's zero point folded into the bias (``bias - zp * sum(w)``), so the inner loop is pure
multiply-accumulate of raw bytes.

A depthwise conv (one channel per group) is not a GEMM: per output pixel, a micro-kernel adds each tap
inside the input into 64 channels' sums at a time (weights ``[kh][kw][C]``), then requantizes.

Covered: int8 input, 8-bit weights, int8 output; conv2d with groups 1 (any kernel, stride, padding), a
depthwise conv2d, and dense on a 1-D input. Other ops and forms keep :mod:`.kernels`' (other grouped
convs, sub-byte weights, int16 streams): :func:`cpu_kernel` returns None for them.
"""

from __future__ import annotations

import functools

import numpy as np
from tvm.script import tirx as T

from edgesnn.ir import graph as g
from edgesnn.backends.mcu.microkernels_cpu import DEPTHWISE, GEMM, K_LIMIT, OC_BLOCK, TILE_ROWS

BOARD_KINDS = ("host", "linux-aarch64")  # boards whose projects take these kernels


def covered(graph: g.Graph, op) -> bool:
    """Whether these kernels run ``op``: int8 in and out, 8-bit weights, a groups-1 or depthwise conv or a 1-D
    dense, a reduction short enough that no partial sum leaves int32 (:data:`microkernels_cpu.K_LIMIT`)."""
    if op.kind not in ("conv2d", "dense") or op.weight_bits != 8:
        return False
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    if spec_in.dtype != "int8" or spec_out.dtype != "int8":
        return False
    if op.kind == "conv2d" and op.groups != 1 and not depthwise(graph, op):
        return False
    if op.kind == "dense" and len(spec_in.shape) != 1:
        return False
    if int(np.prod(op.weight.shape[1:])) > K_LIMIT:
        return False
    return bool((np.asarray(op.multiplier) >= 0).all())  # as kernels._Signature.requant_consts requires


def depthwise(graph: g.Graph, op) -> bool:
    """A conv2d with one input and one output channel per group (the depthwise conv of a MobileNet block)."""
    channels = graph.tensors[op.inputs[0]].shape[-1]
    return op.kind == "conv2d" and op.groups == channels == op.weight.shape[0] and op.weight.shape[3] == 1


def pack(op, zero_point: int) -> dict[str, np.ndarray]:
    """The constants of the GEMM form: weights ``[K/4][OCp][4]`` (zero-padded), and per padded output
    channel bias - zp * sum(w), sum(w), multiplier and shift."""
    weight = np.asarray(op.weight, np.int64).reshape(op.weight.shape[0], -1)  # [OC, K] in OHWI order
    oc, k = weight.shape
    k4, ocp = -(-k // 4), -(-oc // OC_BLOCK) * OC_BLOCK
    padded = np.zeros((ocp, k4 * 4), np.int64)
    padded[:oc, :k] = weight
    packed = padded.reshape(ocp, k4, 4).transpose(1, 0, 2)  # [K/4][OCp][4]
    wsum = padded.sum(axis=1)
    bias = np.zeros(ocp, np.int64)
    bias[:oc] = np.asarray(op.bias, np.int64)
    channel = lambda a: np.resize(np.asarray(a, np.int64), oc) if np.size(a) == 1 else np.asarray(a, np.int64)
    mult, shift = np.zeros(ocp, np.int64), np.zeros(ocp, np.int64)
    mult[:oc], shift[:oc] = channel(op.multiplier), channel(op.shift)
    folded = bias - zero_point * wsum  # |.| < 2^31 for K <= K_LIMIT and an int32 bias of a real model
    if np.abs(folded).max(initial=0) >= 2**31:
        raise ValueError("bias out of int32")
    return {"weight": np.ascontiguousarray(packed).astype(np.int8).ravel(), "bias": folded.astype(np.int32),
            "wsum": wsum.astype(np.int32), "multiplier": mult.astype(np.int32), "shift": shift.astype(np.int32)}


def cpu_kernel(sig, graph: g.Graph, op):
    """The GEMM (or depthwise) form of ``op`` (a PrimFunc, its parameters collected in ``sig``:
    kernels._Signature), or None where :func:`covered` says no."""
    if not covered(graph, op):
        return None
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    if op.kind == "conv2d" and op.groups != 1:
        return _depthwise(sig, graph, op)
    try:
        consts = pack(op, spec_in.zero_point)
    except ValueError:
        return None
    sig.input("x", op.inputs[0])
    for name in ("weight", "bias", "wsum", "multiplier", "shift"):
        sig.const(name, consts[name])
    k = int(np.prod(op.weight.shape[1:]))
    k4, oc, ocp = -(-k // 4), int(op.weight.shape[0]), consts["bias"].size
    lo, hi = (int(v) for v in op.clamp)
    if op.kind == "dense":
        direct = k % 4 == 0  # the input itself is the one row
        if not direct:
            sig.scratch("patch", TILE_ROWS * k4 * 4, "int8")
        func = _dense_func(k, k4, oc, ocp, consts["weight"].size, spec_in.zero_point, spec_out.zero_point, lo, hi,
                           direct)
    else:
        _, kh, kw, cin = (int(d) for d in op.weight.shape)
        sig.scratch("patch", TILE_ROWS * k4 * 4, "int8")
        func = _conv_func(tuple(spec_in.shape), tuple(spec_out.shape), (kh, kw, cin), tuple(op.stride),
                          tuple(op.padding), k4, ocp, consts["weight"].size, spec_in.zero_point, spec_out.zero_point,
                          lo, hi)
    return func


def _depthwise(sig, graph: g.Graph, op):
    """Per output pixel, one call of the depthwise micro-kernel; weights [kh][kw][C], per-channel constants."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    channels, kh, kw, _ = (int(d) for d in op.weight.shape)
    sig.input("x", op.inputs[0])
    per_channel = lambda a: np.resize(np.asarray(a), channels) if np.size(a) == 1 else np.asarray(a)
    sig.const("weight", np.ascontiguousarray(np.moveaxis(np.asarray(op.weight, np.int8)[..., 0], 0, -1)))
    sig.const("bias", np.asarray(op.bias, np.int32))
    sig.const("multiplier", per_channel(op.multiplier).astype(np.int32))
    sig.const("shift", per_channel(op.shift).astype(np.int32))
    lo, hi = (int(v) for v in op.clamp)
    return _depthwise_func(tuple(spec_in.shape), tuple(spec_out.shape), (kh, kw), tuple(op.stride), tuple(op.padding),
                           spec_in.zero_point, spec_out.zero_point, lo, hi)


@functools.lru_cache(maxsize=256)
def _depthwise_func(x_shape, out_shape, kernel, stride, padding, zp, out_zp, lo, hi):
    height, width, channels = x_shape
    oh, ow, _ = out_shape
    kh, kw = kernel
    (sh, sw), (top, _, left, _) = stride, padding

    @T.prim_func(private=True)
    def func(x: T.Buffer((height * width * channels,), "int8"), weight: T.Buffer((kh * kw * channels,), "int8"),
             bias: T.Buffer((channels,), "int32"), multiplier: T.Buffer((channels,), "int32"),
             shift: T.Buffer((channels,), "int32"), out: T.Buffer((oh * ow * channels,), "int8")):
        for oy, ox in T.grid(oh, ow):
            T.evaluate(T.call_extern("int32", DEPTHWISE, T.address_of(x[0]), height, width, oy * sh - top,
                                     ox * sw - left, kh, kw, channels, T.address_of(weight[0]),
                                     T.address_of(bias[0]), T.address_of(multiplier[0]), T.address_of(shift[0]), zp,
                                     out_zp, lo, hi, T.address_of(out[(oy * ow + ox) * channels])))

    return func


@functools.lru_cache(maxsize=256)
def _conv_func(x_shape, out_shape, kernel, stride, padding, k4, ocp, w_size, zp, out_zp, lo, hi):
    """Tiles of four output pixels: the im2col rows (the zero point in the padding), then one GEMM call."""
    height, width, _ = x_shape
    oh, ow, oc = out_shape
    kh, kw, cin = kernel
    (sh, sw), (top, _, left, _) = stride, padding
    pixels, lda, rows = oh * ow, k4 * 4, TILE_ROWS
    tiles = -(-pixels // rows)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer((w_size,), "int8"), bias: T.Buffer((ocp,), "int32"),
             wsum: T.Buffer((ocp,), "int32"), multiplier: T.Buffer((ocp,), "int32"),
             shift: T.Buffer((ocp,), "int32"), patch: T.Buffer((rows * lda,), "int8"),
             out: T.Buffer((pixels * oc,), "int8")):
        for tile in range(tiles):
            for r in range(rows):
                if tile * rows + r < pixels:
                    for rh, rw in T.grid(kh, kw):
                        iy = T.meta_var((tile * rows + r) // ow * sh + rh - top)
                        ix = T.meta_var((tile * rows + r) % ow * sw + rw - left)
                        for c in range(cin):
                            patch[r * lda + (rh * kw + rw) * cin + c] = T.if_then_else(
                                0 <= iy and iy < height and 0 <= ix and ix < width,
                                x[iy, ix, c], T.int8(zp))
            T.evaluate(T.call_extern("int32", GEMM, T.address_of(patch[0]), k4,
                                     T.min(rows, pixels - tile * rows), T.address_of(weight[0]), ocp, oc,
                                     T.address_of(bias[0]), T.address_of(wsum[0]), T.address_of(multiplier[0]),
                                     T.address_of(shift[0]), out_zp, lo, hi, T.address_of(out[tile * rows * oc])))

    return func


@functools.lru_cache(maxsize=256)
def _dense_func(k, k4, oc, ocp, w_size, zp, out_zp, lo, hi, direct):
    """One row: the input itself (its length a multiple of 4) or a copy padded to one."""
    rows, lda = TILE_ROWS, k4 * 4
    if direct:
        @T.prim_func(private=True)
        def func(x: T.Buffer((k,), "int8"), weight: T.Buffer((w_size,), "int8"), bias: T.Buffer((ocp,), "int32"),
                 wsum: T.Buffer((ocp,), "int32"), multiplier: T.Buffer((ocp,), "int32"),
                 shift: T.Buffer((ocp,), "int32"), out: T.Buffer((oc,), "int8")):
            T.evaluate(T.call_extern("int32", GEMM, T.address_of(x[0]), k4, 1, T.address_of(weight[0]), ocp, oc,
                                     T.address_of(bias[0]), T.address_of(wsum[0]), T.address_of(multiplier[0]),
                                     T.address_of(shift[0]), out_zp, lo, hi, T.address_of(out[0])))
        return func

    @T.prim_func(private=True)
    def func(x: T.Buffer((k,), "int8"), weight: T.Buffer((w_size,), "int8"), bias: T.Buffer((ocp,), "int32"),
             wsum: T.Buffer((ocp,), "int32"), multiplier: T.Buffer((ocp,), "int32"), shift: T.Buffer((ocp,), "int32"),
             patch: T.Buffer((rows * lda,), "int8"), out: T.Buffer((oc,), "int8")):
        for i in range(lda):
            patch[i] = T.if_then_else(i < k, x[T.min(i, k - 1)], T.int8(zp))
        T.evaluate(T.call_extern("int32", GEMM, T.address_of(patch[0]), k4, 1, T.address_of(weight[0]), ocp, oc,
                                 T.address_of(bias[0]), T.address_of(wsum[0]), T.address_of(multiplier[0]),
                                 T.address_of(shift[0]), out_zp, lo, hi, T.address_of(out[0])))

    return func
