"""The gather-dot form of an event-driven conv2d / dense, for Helium cores (:mod:`.microkernels_gather`
says why it beats the listing-and-axpy form there).

TVM generates the loops: each input pixel's nonzero channels listed once; per output pixel, the
lists of its kernel taps inside the input appended into segments (whole taps, at most 256 bytes of a
weight row each); per four output channels, one gather-dot call per segment and the tile's
requantization. A dense layer lists its input in segments of 256 once. Weights keep the dense form's
layout (OHWI, [M, K]): one output's row is where its gathers read. A 1x1 conv of spike counts whose
sums fit int16 lanes (:func:`lanes_shift`) takes the int16-lane form instead, weights output-minor.
"""

from __future__ import annotations

import functools

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from edgesnn import spikes
from edgesnn.ir import graph as g
from edgesnn.backends.mcu.microkernels_gather import (APPEND, GDOT4, LANES, LANES_LIMIT, LANES_OUTPUTS, LIST, SEAL,
                                                      SPAN, VECTOR)


def applies(graph: g.Graph, op) -> bool:
    """A conv2d (groups 1, at most 256 input channels) or dense with an int8 input of zero point 0 (spikes,
    counts: the nonzero values are the inputs' real values, int8) and plain 8-bit weights."""
    spec = graph.tensors[op.inputs[0]]
    if spec.dtype != "int8" or spec.zero_point != 0 or op.weight_bits != 8 or op.weight_code != "signed":
        return False
    if op.kind == "dense":
        return len(spec.shape) == 1
    return op.groups == 1 and len(spec.shape) == 3 and spec.shape[2] <= SPAN


def lanes_shift(graph: g.Graph, op) -> int | None:
    """The unit's shift u where a 1x1 conv (no padding, output channels a multiple of 8) of :func:`applies`
    reads spike counts (unit 2^u x c, |c| <= D; plain int8 values: u 0, D 128) whose sums of counts times
    an output's |weights| fit int16: it then takes microkernels_gather.LANES (outputs as int16 lanes,
    weights output-minor); else None (the gather-dot form)."""
    if op.kind != "conv2d" or not applies(graph, op) or op.weight.shape[1:3] != (1, 1) or any(op.padding):
        return None
    if op.weight.shape[0] % 8:
        return None
    counts = spikes.count_tensors(graph).get(op.inputs[0])
    if counts is not None and counts.unit & (counts.unit - 1):
        return None
    u, most = (counts.unit_shift, counts.D) if counts is not None else (0, 128)
    bound = int(np.abs(np.asarray(op.weight, np.int64)).reshape(op.weight.shape[0], -1).sum(1).max()) * most
    return u if bound <= LANES_LIMIT else None


def _round(n: int) -> int:
    return -(-n // VECTOR) * VECTOR


def conv2d(sig, graph: g.Graph, op: g.Conv2D) -> tirx.PrimFunc:
    from edgesnn.backends.mcu.kernels import requant_info

    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    u = lanes_shift(graph, op)
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=u is not None)
    shapes = tuple(tuple(int(d) for d in t.shape) for t in (x_t, w_t, b_t, m_t, s_t))
    if u is not None:
        return _conv2d_lanes_func(shapes, tuple(spec_out.shape), tuple(op.stride), spec_out.dtype,
                                  spec_out.zero_point, tuple(op.clamp), requant_info(op.multiplier, op.shift), u)
    sig.scratch("events", _Layout(shapes[0], tuple(op.weight.shape), tuple(op.padding)).scratch, "int8")
    return _conv2d_func(shapes, tuple(spec_out.shape), tuple(op.weight.shape), tuple(op.stride), tuple(op.padding),
                        spec_out.dtype, spec_out.zero_point, tuple(op.clamp), requant_info(op.multiplier, op.shift))


class _Layout:
    """Where a conv's lists live in its scratch bytes: each input pixel's list (values, offsets, count:
    ``block`` bytes), then, unless the kernel is 1x1 without padding (``direct``: an output's one tap
    list is its segment), the window's segments of ``per_seg`` whole taps (``wblock`` bytes each)."""

    def __init__(self, x_shape, weight_shape, padding):
        height, width, channels = x_shape
        _, kh, kw, _ = weight_shape
        self.cap = _round(channels)
        self.block = 2 * self.cap + 4
        self.direct = kh * kw == 1 and not any(padding)
        self.per_seg = SPAN // channels
        self.segments = 1 if self.direct else -(-kh * kw // self.per_seg)
        self.wcap = _round(self.per_seg * channels)
        self.wblock = 2 * self.wcap + 4
        self.win = height * width * self.block
        self.scratch = self.win + (0 if self.direct else self.segments * self.wblock)


@functools.lru_cache(maxsize=64)
def _conv2d_func(shapes, out_shape, weight_shape, stride, padding, out_dtype, out_zero_point, clamp, rq):
    from edgesnn.backends.mcu.kernels import _channel, _scalar_requant, finish, requantize_double_rounding

    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, channels = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, _ = weight_shape
    (sh, sw), (top, _, left, _) = stride, padding
    lay = _Layout(x_shape, weight_shape, padding)
    row, cap, block, per_seg, segments, win = kh * kw * channels, lay.cap, lay.block, lay.per_seg, lay.segments, lay.win
    direct, wcap, wblock = lay.direct, lay.wcap, lay.wblock
    sblock, scap, step = (block, cap, 0) if direct else (wblock, wcap, per_seg * channels)
    quads, rest = oc_count // 4, oc_count % 4
    rule = requantize_double_rounding

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             events: T.Buffer((lay.scratch,), "int8"), out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((4,), "int32")
        fill = T.alloc_buffer((segments,), "int32")
        for iy, ix in T.grid(height, width):
            T.evaluate(T.call_extern("int32", LIST, T.address_of(x[iy, ix, 0]), channels,
                                     T.address_of(events[(iy * width + ix) * block]), cap))
        for oy, ox in T.grid(oh, ow):
            # the segments of this output's window: its one tap's list, or the taps' lists appended
            seg = T.meta_var((oy * sh * width + ox * sw) * block if direct else win)
            if not direct:
                for s in T.unroll(segments):
                    fill[s] = 0
                for rh, rw in T.grid(kh, kw):
                    iy = T.meta_var(oy * sh + rh - top)
                    ix = T.meta_var(ox * sw + rw - left)
                    tap = T.meta_var(rh * kw + rw)
                    if 0 <= iy and iy < height and 0 <= ix and ix < width:
                        fill[tap // per_seg] = T.call_extern(
                            "int32", APPEND, T.address_of(events[(iy * width + ix) * block]), cap,
                            (tap % per_seg) * channels, T.address_of(events[win + tap // per_seg * wblock]), wcap,
                            fill[tap // per_seg])
                for s in T.unroll(segments):
                    T.evaluate(T.call_extern("int32", SEAL, T.address_of(events[win + s * wblock]), wcap, fill[s]))
            for q in range(quads):
                T.evaluate(T.call_extern("int32", GDOT4, T.address_of(events[seg]), sblock, scap, segments,
                                         T.address_of(weight[q * 4 * row]), step, row, 4,
                                         T.address_of(bias[q * 4]), T.address_of(acc[0])))
                if _scalar_requant(4, acc, multiplier, shift, q * 4, out_zero_point, clamp, out_dtype,
                                   T.address_of(out[oy, ox, q * 4]), rq=rq):
                    for j in T.unroll(4):
                        out[oy, ox, q * 4 + j] = finish(acc[j], rule, _channel(multiplier, q * 4 + j),
                                                        _channel(shift, q * 4 + j), out_zero_point, list(clamp),
                                                        out_dtype, rq=rq)
            if rest > 0:
                T.evaluate(T.call_extern("int32", GDOT4, T.address_of(events[seg]), sblock, scap, segments,
                                         T.address_of(weight[quads * 4 * row]), step, row, rest,
                                         T.address_of(bias[quads * 4]), T.address_of(acc[0])))
                for j in T.unroll(rest):
                    out[oy, ox, quads * 4 + j] = finish(acc[j], rule, _channel(multiplier, quads * 4 + j),
                                                        _channel(shift, quads * 4 + j), out_zero_point, list(clamp),
                                                        out_dtype, rq=rq)

    return func


@functools.lru_cache(maxsize=64)
def _conv2d_lanes_func(shapes, out_shape, stride, out_dtype, out_zero_point, clamp, rq, u):
    """A 1x1 conv of :func:`lanes_shift`: per output pixel and up to 48 outputs one LANES call over its
    input pixel, then the outputs' requantization."""
    from edgesnn.backends.mcu.kernels import _channel, _scalar_requant, finish, requantize_double_rounding

    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    _, _, channels = x_shape
    oh, ow, oc_count = out_shape
    sh, sw = stride
    chunks = -(-oc_count // LANES_OUTPUTS)  # calls a pixel, as even as multiples of 8 allow
    step = -(-oc_count // chunks // 8) * 8
    chunks, rest = oc_count // step, oc_count % step
    rule = requantize_double_rounding

    @T.macro
    def tile(x, weight, bias, multiplier, shift, out, acc, oy, ox, first, count):
        # outputs [first, first + count) of output pixel (oy, ox): one LANES call, then the requantization
        T.evaluate(T.call_extern("int32", LANES, T.address_of(x[oy * sh, ox * sw, 0]), channels,
                                 T.address_of(weight[first]), oc_count, u, count, T.address_of(bias[first]),
                                 T.address_of(acc[0])))
        if _scalar_requant(count, acc, multiplier, shift, first, out_zero_point, clamp, out_dtype,
                           T.address_of(out[oy, ox, first]), rq=rq):
            for j in T.unroll(count):
                out[oy, ox, first + j] = finish(acc[j], rule, _channel(multiplier, first + j),
                                                _channel(shift, first + j), out_zero_point, list(clamp), out_dtype,
                                                rq=rq)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((step,), "int32")
        for oy, ox in T.grid(oh, ow):
            for k in range(chunks):
                tile(x, weight, bias, multiplier, shift, out, acc, oy, ox, k * step, step)
            if rest > 0:
                tile(x, weight, bias, multiplier, shift, out, acc, oy, ox, chunks * step, rest)

    return func


def dense(sig, graph: g.Graph, op: g.Dense) -> tirx.PrimFunc:
    from edgesnn.backends.mcu.kernels import requant_info

    spec_out = graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op)
    k_in = int(x_t.shape[0])
    segments, cap = -(-k_in // SPAN), _round(min(k_in, SPAN))
    sig.scratch("events", segments * (2 * cap + 4), "int8")
    shapes = tuple(tuple(int(d) for d in t.shape) for t in (x_t, w_t, b_t, m_t, s_t))
    return _dense_func(shapes, spec_out.dtype, spec_out.zero_point, tuple(op.clamp),
                       requant_info(op.multiplier, op.shift))


@functools.lru_cache(maxsize=64)
def _dense_func(shapes, out_dtype, out_zero_point, clamp, rq):
    from edgesnn.backends.mcu.kernels import _channel, _scalar_requant, finish, requantize_double_rounding

    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    (k_in,), m_out = x_shape, b_shape[0]
    segments, cap = -(-k_in // SPAN), _round(min(k_in, SPAN))
    block, quads, rest = 2 * cap + 4, m_out // 4, m_out % 4
    rule = requantize_double_rounding

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             events: T.Buffer((segments * block,), "int8"), out: T.Buffer((m_out,), out_dtype)):
        acc = T.alloc_buffer((4,), "int32")
        for s in T.unroll(segments):
            T.evaluate(T.call_extern("int32", LIST, T.address_of(x[s * SPAN]), T.min(k_in - s * SPAN, SPAN),
                                     T.address_of(events[s * block]), cap))
        for q in range(quads):
            T.evaluate(T.call_extern("int32", GDOT4, T.address_of(events[0]), block, cap, segments,
                                     T.address_of(weight[q * 4 * k_in]), SPAN, k_in, 4, T.address_of(bias[q * 4]),
                                     T.address_of(acc[0])))
            if _scalar_requant(4, acc, multiplier, shift, q * 4, out_zero_point, clamp, out_dtype,
                               T.address_of(out[q * 4]), rq=rq):
                for j in T.unroll(4):
                    out[q * 4 + j] = finish(acc[j], rule, _channel(multiplier, q * 4 + j), _channel(shift, q * 4 + j),
                                            out_zero_point, list(clamp), out_dtype, rq=rq)
        if rest > 0:
            T.evaluate(T.call_extern("int32", GDOT4, T.address_of(events[0]), block, cap, segments,
                                     T.address_of(weight[quads * 4 * k_in]), SPAN, k_in, rest,
                                     T.address_of(bias[quads * 4]), T.address_of(acc[0])))
            for j in T.unroll(rest):
                out[quads * 4 + j] = finish(acc[j], rule, _channel(multiplier, quads * 4 + j),
                                            _channel(shift, quads * 4 + j), out_zero_point, list(clamp), out_dtype,
                                            rq=rq)

    return func
