"""One C kernel per IR op, written in TVM's tensor expression language (TFLite Micro reference style).

Each function below defines one op kind with its integer arithmetic spelled out exactly as the golden
interpreter (``edgesnn/ir/interpreter.py``) does it, so the generated C is bit-exact with the IR.
:func:`kernel` turns an op of a graph into a :class:`Kernel`: a TIR PrimFunc that
``tvm_pipeline.build_c`` lowers to a plain C function, and the ordered list of its C parameters
(activations by IR tensor name, constants with the array the C file must define, scratch buffers).

Conventions of the generated functions:

- Activations are flat per-sample NHWC arrays (batch 1 on the device); parameter order is
  inputs, constants (weight, bias, multiplier, shift), scratch, output. The function returns 0.
- Zero points, clamps, shapes, strides and padding are compile-time constants of the kernel.
- Weights stay in their packed b-bit form (``edgesnn/ir/packing.py``) and are decoded in the
  inner loop: flash holds b/8 of the int8 bytes, and decoding is a few shifts per weight.
- Requantization is TFLite's: double rounding (``MultiplyByQuantizedMultiplier``), or the 16x8
  rule for conv2d/dense with an int16 input. TVM's built-in ``q_multiply_shift`` is not used: it
  rounds differently from TFLite (see the tvmproto study), so the rules are written out here, once each.
  What the generator knows of the constants shortens the double rounding (:func:`requant_info`):
  one SMLAL, an add and a shift for shifts -31..-2, per-tensor shifts folded into the code, no sign
  nudge where the clamp maps every negative accumulator to its low end.
- Intermediates stay scalar (the accumulator is computed at the output element that consumes
  it), so no kernel needs a TVM workspace; the event-driven forms take an explicit scratch buffer.
- int8 conv2d / dense with 8-bit weights are TVMScript loop nests whose innermost run of bytes is a
  call of a C micro-kernel (:mod:`.microkernels`: SXTB16/SMLAD on cores with DSP): dense, four
  output channels per call over a run of input channels or a whole kernel row; event-driven, the
  nonzero inputs listed once and gathered into tiles of outputs held in registers (weights stored
  output-minor; inputs holding spike counts: grouped by count and gathered by additions only,
  :func:`counts_gather`). Depthwise layers take a window micro-kernel (four channels a word,
  :func:`depthwise4`), inputs of 1-3 channels (images) a window gathered once per pixel
  (:func:`im2col4`). Sub-byte weights and int16 inputs keep the TE forms.
- Event-driven conv2d / dense reading spike counts have spike-train forms (``--spike-code``):
  the counts are walked as rate-burst or bit-plane trains, additions only per synapse.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from edgesnn import spikes
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import WIDE_INPUTS
from edgesnn.ir.packing import pack, widening_shift
from edgesnn.backends.mcu import kernels_gather
from edgesnn.backends.mcu.microkernels_dw import CHANNELS as DW_CHANNELS, DW8, SUM_LIMIT as DW_SUM_LIMIT
from edgesnn.backends.mcu.microkernels import (AXPY, COUNTS_MAX_D, DOT, DOT4, DW4, EVENT_OFFSET_LIMIT, EVENTS,
                                               EVENTS_COUNTS, GATHER, GATHER_COUNTS, HALF_LIMIT, HELIUM, REQUANT,
                                               COUNTS_TILE)
from edgesnn.backends.mcu.microkernels import ADD_RUN, ELTWISE_TYPES, MUL_RUN, REQUANT_RUN  # elementwise runs
from edgesnn.backends.mcu.microkernels import IMAGE, IMAGE_PREP, SUM_POOL  # image conv, sum pools

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t"}
I32, I64 = "int32", "int64"


@dataclass
class Arg:
    """One C parameter, in call order."""

    name: str  # C parameter name
    role: str  # "input" / "output" (an IR tensor, named in ``tensor``), "const" or "scratch"
    tensor: str | None
    c_type: str  # element type: "int8_t", "uint8_t", "int16_t", "int32_t", "int64_t"
    data: np.ndarray | None = None  # "const": the array the C file defines (flat, C order)


@dataclass
class Kernel:
    symbol: str  # the C function name
    func: tirx.PrimFunc
    args: list[Arg]
    scratch_bytes: int = 0  # size of the "scratch" argument, if any (the event-driven accumulator)

    def c_declaration(self) -> str:
        """The C prototype, as the generated source declares it (minus the TVM_DLL macro; every
        pointer ``restrict``: tvm_pipeline.restrict_pointers)."""
        params = ", ".join(f"{a.c_type}* restrict {a.name}" for a in self.args)
        return f"int32_t {self.symbol}({params})"


# ----------------------------------------------------------------------------------------------
# Arithmetic shared by all kernels: one expression per rounding rule, weight decoding.


@dataclass(frozen=True)
class Requant:
    """What the generator knows of an op's double-rounding requantization before the kernel runs
    (hashable: a key of the cached kernel builders). ``multiplier``/``shift``: every channel's, when
    they are all the same (the constants go into the code, which the C compiler folds); ``right``:
    every shift is within [-31, -2], which :func:`requantize_double_rounding` computes in a short form."""

    multiplier: int | None = None
    shift: int | None = None
    right: bool = False
    nonneg: bool = False  # set by finish: every x < 0 ends at the clamp's low end, so only x >= 0 must be exact


def requant_info(multiplier, shift) -> Requant:
    """The :class:`Requant` of an op's multiplier and shift arrays (numpy, one value or one per channel)."""
    m, s = np.asarray(multiplier).ravel(), np.asarray(shift).ravel()
    right = bool(s.size) and -31 <= int(s.min()) and int(s.max()) <= -2
    if m.size and (m == m[0]).all() and (s == s[0]).all():
        return Requant(int(m[0]), int(s[0]), right)
    return Requant(right=right)


def requantize_double_rounding(x, multiplier, shift, rq: Requant | None = None):
    """TFLite's MultiplyByQuantizedMultiplier on int32 ``x`` (fixedpoint.multiply_by_quantized_multiplier).

    SaturatingRoundingDoublingHighMul(x * 2**max(shift, 0), multiplier) then RoundingDivideByPOT by
    max(-shift, 0). The intermediate values are Let-bound so the C has no duplicated subtrees.
    ``rq`` (:func:`requant_info`): constants known to the generator replace the loads of
    ``multiplier`` and ``shift``, and shifts within [-31, -2] take the short form (:func:`_requantize_right`).
    """
    if rq is not None and rq.shift is not None and not rq.right:
        return _requantize_constant(x, rq.multiplier, rq.shift)
    if rq is not None and rq.shift is not None:  # the multiplier stays a load, which GCC hoists: a register
        shift = tirx.const(rq.shift, I32)         # for SMLAL (a constant one becomes UMULL, MLA and ADC)
    if rq is not None and rq.right:
        return _requantize_right(x, multiplier, shift, rq.nonneg)
    zero, one = tirx.const(0, I32), tirx.const(1, I32)
    xs, high, right, mask = (tirx.Var(n, I32) for n in ("rq_xs", "rq_high", "rq_right", "rq_mask"))
    product = tirx.Var("rq_product", I64)
    # RoundingDivideByPOT: round half away from zero
    threshold = tirx.shift_right(mask, one) + tirx.Select(high < zero, one, zero)
    divided = tirx.shift_right(high, right) + tirx.Select(tirx.bitwise_and(high, mask) > threshold, one, zero)
    # SaturatingRoundingDoublingHighMul. Its only overflow, x == multiplier == INT32_MIN, cannot occur:
    # every multiplier is >= 0 (:meth:`_Signature.requant_consts` refuses others), so no saturation test.
    # TFLite's (p + (p >= 0 ? 2^30 : 1 - 2^30)) / 2^31, truncating, is floor((p + 2^30) / 2^31) for
    # every p (for p = -y < 0: -floor((y - 1 + 2^30) / 2^31) = -ceil((y - 2^30) / 2^31)): one add
    # and an arithmetic shift, no sign test (CMSIS-NN's arm_nn_doubling_high_mult_no_sat).
    high_mul = tirx.shift_right(product + tirx.const(1 << 30, I64), tirx.const(31, I64)).astype(I32)
    # 2^right - 1 in 32 unsigned bits (right <= 31), not in 64
    mask_value = (tirx.shift_left(tirx.const(1, "uint32"), right.astype("uint32")) - tirx.const(1, "uint32")).astype(I32)
    body = tirx.Let(mask, mask_value, tirx.Let(high, high_mul, divided))
    body = tirx.Let(product, xs.astype(I64) * multiplier.astype(I64), body)
    body = tirx.Let(xs, x.astype(I32) * tirx.shift_left(one, te.max(shift, zero)), body)  # int32, as TFLite
    return tirx.Let(right, te.max(-shift, zero), body)


def _requantize_constant(x, multiplier: int, shift: int):
    """:func:`requantize_double_rounding` by constants (one multiplier and shift for every channel)
    outside the short form's shifts: the same steps with the constants worked out here."""
    left, right = max(shift, 0), max(-shift, 0)
    xs = x.astype(I32) * tirx.const(1 << left, I32) if left else x.astype(I32)  # int32, as TFLite
    if left and multiplier == 1 << 30:  # an exact widening (the exporter's x 2^k): (xs 2^30 + 2^30) >> 31 = xs >> 1
        return tirx.shift_right(xs, tirx.const(1, I32))
    high = tirx.shift_right(xs.astype(I64) * tirx.const(multiplier, I64) + tirx.const(1 << 30, I64),
                            tirx.const(31, I64)).astype(I32)  # not Let-bound: TVM's bound analysis trips on it
    if not right:
        return high
    mask, one, zero = (1 << right) - 1, tirx.const(1, I32), tirx.const(0, I32)
    threshold = tirx.const(mask >> 1, I32) + tirx.Select(high < zero, one, zero)
    return tirx.shift_right(high, tirx.const(right, I32)) + tirx.Select(
        tirx.bitwise_and(high, tirx.const(mask, I32)) > threshold, one, zero)


def _requantize_right(x, multiplier, shift, nonneg: bool = False):
    """:func:`requantize_double_rounding` where shift = -r with 2 <= r <= 31 (no left shift): one
    multiply-accumulate, an add and a shift, the same integers for every int32 x and multiplier >= 0.

    With p = x m and h = floor((p + 2^30) / 2^31) (the high multiply), RoundingDivideByPOT(h, r)
    (half away from zero) is floor((h + 2^(r-1) - [h < 0]) / 2^r) = floor((p + 2^30 - 2^31 [h < 0]
    + 2^(30+r)) / 2^(31+r)) (floor(floor(a / b) + k) / c = floor((a + k b) / (b c))). [h < 0] may be
    replaced by [x < 0]: they differ only where -2^30 <= p < 0 (or m = 0), where both give 0 for r >= 1.
    So with y = p + (x < 0 ? -2^30 : 2^30) (one SMLAL) and hi = floor(y / 2^32) (its high word, |hi| <= 2^30),
    the result is (hi + 2^(r-2)) >> (r-1): no overflow, no mask, no sign test after the multiply; the
    2^(r-2) goes into the SMLAL's starting high word where the shift is a constant.
    ``nonneg``: the nudge is 2^30 for every x; for x < 0 the result is then <= 0, as the exact one
    is, which the caller's clamp (low end >= the zero point) maps to the same output.
    """
    rm1, sign = tirx.Var("rq_rm1", I32), tirx.Var("rq_sign", I32)
    one, u32, u64 = tirx.const(1, I32), "uint32", "uint64"
    # 2^(r-2) + the nudge (-2^30 or 2^30) as two words, (sign + 2^(r-2), sign << 31 | 2^30), which GCC
    # loads into the SMLAL's accumulator: the high word of the sum is then hi + 2^(r-2)
    # (per channel, GCC schedules the add after the multiply better: the 2^(r-2) is added there)
    nudge2 = tirx.shift_right(tirx.shift_left(one, rm1), one)
    folded = isinstance(shift, tirx.IntImm)
    top, low = (nudge2 if folded else tirx.const(0, I32)), tirx.const(1 << 30, u32)
    if not nonneg:
        top, low = top + sign, tirx.bitwise_or(tirx.shift_left(sign.astype(u32), tirx.const(31, u32)), low)
    start = tirx.bitwise_or(tirx.shift_left(top.astype(I64).astype(u64), tirx.const(32, u64)), low.astype(u64))
    y = start.astype(I64) + x.astype(I64) * multiplier.astype(I64)
    if not nonneg:
        y = tirx.Let(sign, tirx.shift_right(x.astype(I32), tirx.const(31, I32)), y)
    hi = tirx.shift_right(y, tirx.const(32, I64)).astype(I32)
    body = tirx.shift_right(hi if folded else hi + nudge2, rm1)
    return tirx.Let(rm1, -shift - one, body)  # r - 1


def requantize_16x8(x, multiplier, shift):
    """TFLite's 16x8 MultiplyByQuantizedMultiplier on an int64 accumulator (fixedpoint..._16x8).

    The multiplier is reduced to 16 bits and applied once, rounding half up: int16-input
    convolutions accumulate beyond int32, and this is the only rule TFLite has for them.
    """
    m = multiplier.astype(I64)
    reduced = tirx.Select(m < tirx.const(0x7FFF0000, I64),
                          tirx.shift_right(m + tirx.const(1 << 15, I64), tirx.const(16, I64)), tirx.const(0x7FFF, I64))
    total = tirx.const(15, I64) - shift.astype(I64)
    rounding = tirx.shift_left(tirx.const(1, I64), total - tirx.const(1, I64))
    return tirx.shift_right(x.astype(I64) * reduced + rounding, total)


def linear_rule(input_dtype: str):
    """(accumulator dtype, requantization) of a conv2d / dense by input dtype, as fixedpoint.linear_requantizer
    (int32: a window sum, read with the 16x8 rule)."""
    return (I64, requantize_16x8) if input_dtype in WIDE_INPUTS else (I32, requantize_double_rounding)


def finish(acc, rule, multiplier, shift, zero_point: int, clamp, out_dtype: str, rq: Requant | None = None):
    """Requantize ``acc`` by ``rule``, add the output zero point, clamp, cast (interpreter._finish).

    The 16x8 rule works on int64 (its result can exceed int32 before the clamp), the other on int32.
    ``rq``: what the generator knows of the double rounding's constants (:func:`requant_info`).
    """
    dtype = I64 if rule is requantize_16x8 else I32
    if rq is not None and rq.right and zero_point <= clamp[0]:  # a neuron's counts, a ReLU: x < 0 gives clamp[0]
        rq = dataclasses.replace(rq, nonneg=True)
    v = (rule(acc, multiplier, shift) if rule is requantize_16x8 else rule(acc, multiplier, shift, rq)) \
        + tirx.const(zero_point, dtype)
    v = te.max(te.min(v, tirx.const(clamp[1], dtype)), tirx.const(clamp[0], dtype))
    return v.astype(out_dtype)


def _scalar_requant(count: int, acc, multiplier, shift, first, zero_point: int, clamp, out_dtype: str, out,
                    rq: Requant | None = None, dsp: bool = True):
    """The condition of a tile's scalar requantization (``count`` outputs from channel ``first``,
    written from ``out``, an address): Helium cores requantize the tile in the micro-kernel
    (microkernels.REQUANT, four outputs a vector) and skip it; elsewhere the call is a constant 0.
    ``rq`` (the counts kernels) with per-channel shifts all within [-31, -2]: DSP cores take the
    micro-kernel too (its short form, SSAT for the int8 clamp; a per-tensor shift stays TVM's,
    folded into the code), unless ``dsp`` is False (the dense kernels: only Helium then uses ``rq``,
    to leave out the left shift)."""
    if out_dtype != "int8" or count % 4:
        return True
    first = first if int(multiplier.shape[0]) > 1 else 0
    return T.call_extern("int32", REQUANT, count, T.address_of(acc[0]), T.address_of(multiplier[first]),
                         T.address_of(shift[first]), _requant_flags(multiplier, rq, dsp), zero_point, int(clamp[0]),
                         int(clamp[1]), out) == 0


def _requant_flags(multiplier, rq: Requant | None, dsp: bool = True) -> int:
    """microkernels.REQUANT's flags: bit 0 per channel, bit 1 the DSP cores' short form (see _scalar_requant),
    bit 2 every shift within [-31, -2] (Helium: no left shift)."""
    per_channel = int(multiplier.shape[0]) > 1
    right = rq is not None and rq.right
    return int(per_channel) | (2 if dsp and per_channel and right and rq.shift is None else 0) | (4 if right else 0)


def _fuse_counts_tile(count: int, out_dtype: str) -> bool:
    """Whether a counts tile with one gather call takes microkernels.COUNTS_TILE (the requantization's
    conditions of :func:`_scalar_requant`)."""
    return out_dtype == "int8" and count % 4 == 0


def _counts_tile(count: int, events, weight, unit: int, steps: int, bias, acc, multiplier, shift, first,
                 zero_point: int, clamp, out, rq: Requant | None):
    """The condition of the scalar requantization of a counts tile done by microkernels.COUNTS_TILE
    (acc = bias + one gather, then the tile's requantization; ``events``, ``weight``, ``out``: addresses)."""
    one = first if int(multiplier.shape[0]) > 1 else 0
    return T.call_extern("int32", COUNTS_TILE, count, events, weight, unit, steps, T.address_of(bias[first]),
                         T.address_of(acc[0]), T.address_of(multiplier[one]), T.address_of(shift[one]),
                         _requant_flags(multiplier, rq), zero_point, int(clamp[0]), int(clamp[1]), out) == 0


def _channel(buf, c):
    """Per-channel constant, or the single per-tensor one."""
    return buf[c] if int(buf.shape[0]) > 1 else buf[0]


def packed_weights(op, output_minor: bool = False) -> np.ndarray:
    """The weight const array: plain int8 at 8 bits, else packed fields plus one padding byte when
    fields straddle bytes (3, 5, 6, 7 bits), so the 16-bit read in :func:`weight_value` stays inside.

    ``output_minor``: laid out with the output channel last (conv OHWI -> HWIO, dense [M, K] -> [K, M]),
    for the event-driven forms: the weights one input adds to its outputs are then consecutive bytes."""
    weight = np.asarray(op.weight)
    if output_minor:
        weight = np.moveaxis(weight, 0, -1)
    data = pack(weight, op.weight_bits, op.weight_code)
    if op.weight_bits == 8:
        return data.view(np.int8)
    if 8 % op.weight_bits:
        data = np.append(data, np.uint8(0))
    return data


def weight_value(w, index, bits: int, code: str):
    """The widened int32 weight at flat ``index`` of the packed array ``w`` (OHWI / [M, K], or the
    output-minor layout of :func:`packed_weights`).

    Field f (little-endian bits ``index * bits ...``) -> value by the code ("signed": sign-extend
    b bits; "odd": 2 f - (2**b - 1)) -> shifted left by packing.widening_shift, the int8 grid the
    IR computes on.
    """
    if bits == 8:
        return w[index].astype(I32)
    bit = index * bits
    byte = tirx.shift_right(bit, 3)
    raw = w[byte].astype(I32)
    if 8 % bits:  # the field may continue into the next byte
        raw = tirx.bitwise_or(raw, tirx.shift_left(w[byte + 1].astype(I32), 8))
    field = tirx.bitwise_and(tirx.shift_right(raw, tirx.bitwise_and(bit, 7)), (1 << bits) - 1)
    if code == "signed":
        half = 1 << (bits - 1)
        value = tirx.bitwise_xor(field, half) - half
    else:
        value = field * 2 - ((1 << bits) - 1)
    return value * (1 << widening_shift(bits, code))  # not <<: shifting a negative value is UB in C


# ----------------------------------------------------------------------------------------------
# Building blocks


class _Signature:
    """Collects the parameters of a kernel in C order (inputs, consts, scratch, output)."""

    def __init__(self, graph: g.Graph):
        self.graph = graph
        self.args: list[Arg] = []
        self.scratch_bytes = 0

    def input(self, name: str, tensor: str) -> te.Tensor:
        """An activation, shaped as its tensor (the C parameter is the flat NHWC array)."""
        spec = self.graph.tensors[tensor]
        self.args.append(Arg(name, "input", tensor, C_TYPES[spec.dtype]))
        return te.placeholder(tuple(spec.shape), spec.dtype, name)

    def const(self, name: str, data: np.ndarray) -> te.Tensor:
        data = np.ascontiguousarray(data).ravel()
        self.args.append(Arg(name, "const", None, C_TYPES[data.dtype.name], data))
        return te.placeholder((data.size,), data.dtype.name, name)

    def requant_consts(self, op) -> tuple[te.Tensor, te.Tensor]:
        """The multipliers and shifts; a negative multiplier (which no exporter writes: a real multiplier is
        positive) is refused, so requantize_double_rounding needs no saturation test."""
        if (np.asarray(op.multiplier) < 0).any():
            raise EdgesnnError(f"mcu: op {op.name}: a negative requantization multiplier "
                               f"({int(np.min(op.multiplier))}); the kernels take multipliers >= 0")
        return self.const("multiplier", op.multiplier.astype(np.int32)), self.const("shift", op.shift.astype(np.int32))

    def linear_consts(self, op, output_minor: bool = False) -> tuple:
        """weight (packed, see :func:`packed_weights`), bias, multiplier, shift of a conv2d / dense."""
        return (self.const("weight", packed_weights(op, output_minor)), self.const("bias", op.bias.astype(np.int32)),
                *self.requant_consts(op))

    def scratch(self, name: str, count: int, dtype: str) -> None:
        """A caller-provided buffer of ``count`` elements (instead of a TVM workspace allocation)."""
        self.args.append(Arg(name, "scratch", None, C_TYPES[dtype]))
        self.scratch_bytes += count * np.dtype(dtype).itemsize

    def output(self, tensor: str) -> None:
        self.args.append(Arg("out", "output", tensor, C_TYPES[self.graph.tensors[tensor].dtype]))


def _offset(x, zero_point: int):
    """Input minus its zero point (the real value's integer), in int32 so it cannot wrap; in int64 for
    an int32 input (a window sum), whose products with weights would."""
    dtype = I64 if _dtype(x) == I32 else I32
    return x.astype(dtype) - tirx.const(zero_point, dtype)


def _dtype(e) -> str:
    """The element type of an expression (a tensor element's ``dtype``, a PrimExpr's ``ty``)."""
    return e.dtype if hasattr(e, "dtype") else str(e.ty)


def _times(value, weight):
    """value * weight in value's type (an int32 weight widened for an int64 window-sum value)."""
    return value * (weight if _dtype(weight) == _dtype(value) else weight.astype(_dtype(value)))


def _scalar_accumulator(func: tirx.PrimFunc, spatial_axes: int) -> tirx.PrimFunc:
    """Schedule "acc" -> "out" so the accumulator is one scalar per output element.

    The epilogue block moves inside the accumulator's spatial loops and the reduction init is
    split off, which keeps the intermediate a 1-element stack array instead of a whole tensor
    (which TVM would place in a workspace allocation).
    """
    sch = s_tir.Schedule(func)
    loops = sch.get_loops(sch.get_sblock("acc"))
    sch.reverse_compute_at(sch.get_sblock("out"), loops[spatial_axes - 1])
    if len(loops) > spatial_axes:  # a reduction: its init goes before the reduction loops
        sch.decompose_reduction(sch.get_sblock("acc"), loops[spatial_axes])
    return sch.mod["main"]


def _accumulate_and_finish(params: list, shape, summand, reduce_axes, epilogue, dtype: str) -> tirx.PrimFunc:
    """out[i] = epilogue(sum over ``reduce_axes`` of summand(i, r), i), with a scalar accumulator of ``dtype``."""
    acc = te.compute(shape, lambda *i: te.sum(summand(*i[:len(shape)], *reduce_axes).astype(dtype), axis=reduce_axes), "acc")
    out = te.compute(shape, lambda *i: epilogue(acc(*i), *i), "out")
    return _scalar_accumulator(te.create_prim_func([*params, out]), len(shape))


def _broadcast(x: te.Tensor, idx):
    """``x`` read at output index ``idx`` under numpy broadcasting (size-1 axes read index 0)."""
    shape = [int(d) for d in x.shape]
    own = idx[len(idx) - len(shape):]
    return x[tuple(0 if extent == 1 else i for extent, i in zip(shape, own))]


def _window_axes(kernel) -> list:
    return [te.reduce_axis((0, kernel[0]), "kh"), te.reduce_axis((0, kernel[1]), "kw")]


def _padded_offset(x: te.Tensor, iy, ix, ic, padding, zero_point: int):
    """(x - zero point) at (iy, ix, ic), 0 in the padding: padding adds real zeros."""
    t, b, l, r = padding
    h, w = int(x.shape[0]), int(x.shape[1])
    inside = [c for c, pad in ((iy >= 0, t), (iy < h, b), (ix >= 0, l), (ix < w, r)) if pad]
    value = _offset(x[iy, ix, ic], zero_point)
    return tirx.if_then_else(tirx.all(*inside), value, tirx.const(0, _dtype(value))) if inside else value


# ----------------------------------------------------------------------------------------------
# One function per op kind: (signature collector, graph, op) -> PrimFunc.


def int8_linear(graph: g.Graph, op) -> bool:
    """A conv2d / dense whose inner loops are the int8 micro-kernels' (:mod:`.microkernels`): an int8
    input (an int32 accumulator) and plain 8-bit weights."""
    return graph.tensors[op.inputs[0]].dtype == "int8" and op.weight_bits == 8


def conv2d(sig: _Signature, graph: g.Graph, op: g.Conv2D) -> tirx.PrimFunc:
    """Grouped (incl. depthwise) strided convolution, weights OHWI decoded in the inner loop.

    acc[y, x, o] = bias[o] + sum_{kh, kw, c} (x[y*sh + kh - top, x*sw + kw - left, group(o)*cg + c] - zp)
    * w[o, kh, kw, c], in int32 (int64 for int16 inputs), then the requantization of the input dtype.
    """
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    if depthwise4(graph, op):
        return _depthwise(sig, graph, op)
    if im2col4(graph, op):
        return _im2col(sig, graph, op)
    x = sig.input("x", op.inputs[0])
    w, bias, mult, shift = sig.linear_consts(op)
    rq = requant_info(op.multiplier, op.shift)
    _, kh, kw, cg = op.weight.shape
    per_group = spec_out.shape[2] // op.groups
    if int8_linear(graph, op) and (cg >= 4 or op.groups == 1 and kw > 1 and per_group % 4 == 0):
        # runs of input channels (or, groups 1, whole kernel rows): the dot micro-kernels
        shapes = tuple(tuple(int(d) for d in t.shape) for t in (x, w, bias, mult, shift))
        return _conv2d_dot_func(shapes, tuple(spec_out.shape), tuple(op.weight.shape), op.groups, tuple(op.stride),
                                tuple(op.padding), spec_in.zero_point, spec_out.dtype, spec_out.zero_point,
                                tuple(op.clamp), rq=rq)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    (sh, sw), top, left = op.stride, op.padding[0], op.padding[2]

    def summand(oy, ox, oc, rh, rw, rc):
        xv = _padded_offset(x, oy * sh + rh - top, ox * sw + rw - left, (oc // per_group) * cg + rc,
                            op.padding, spec_in.zero_point)
        return _times(xv, weight_value(w, ((oc * kh + rh) * kw + rw) * cg + rc, op.weight_bits, op.weight_code))

    def epilogue(acc, oy, ox, oc):
        return finish(acc + bias[oc].astype(acc_dtype), rule, _channel(mult, oc), _channel(shift, oc),
                      spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq)

    axes = [*_window_axes((kh, kw)), te.reduce_axis((0, cg), "kc")]
    return _accumulate_and_finish([x, w, bias, mult, shift], tuple(spec_out.shape), summand, axes, epilogue, acc_dtype)


@functools.lru_cache(maxsize=256)
def _conv2d_dot_func(shapes, out_shape, weight_shape, groups, stride, padding, zp, out_dtype, out_zero_point,
                     clamp, rq=None) -> tirx.PrimFunc:
    """:func:`conv2d` of an int8 input and 8-bit weights: per output and kernel tap inside the
    input, one call of the dot micro-kernel over the group's input channels (contiguous in NHWC
    and in OHWI). The padding test is per tap, not per multiply-accumulate."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, _ = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, cg = weight_shape
    per_group = oc_count // groups
    (sh, sw), (top, _, left, _) = stride, padding
    rule = requantize_double_rounding

    if per_group % 4 == 0:  # four output channels per call, sharing the widened inputs
        return _conv2d_dot4_func(shapes, out_shape, weight_shape, groups, stride, padding, zp, out_dtype,
                                 out_zero_point, clamp, rq=rq)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((1,), "int32")  # "global": a stack scalar (a "local" one becomes a TVM workspace)
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            acc[0] = bias[oc]
            for rh, rw in T.grid(kh, kw):
                iy = T.meta_var(oy * sh + rh - top)
                ix = T.meta_var(ox * sw + rw - left)
                if 0 <= iy and iy < height and 0 <= ix and ix < width:
                    acc[0] = acc[0] + T.call_extern("int32", DOT, T.address_of(x[iy, ix, (oc // per_group) * cg]),
                                                    T.address_of(weight[((oc * kh + rh) * kw + rw) * cg]), cg, -zp)
            out[oy, ox, oc] = finish(acc[0], rule, _channel(multiplier, oc), _channel(shift, oc), out_zero_point,
                                     list(clamp), out_dtype, rq=rq)

    return func


def _conv2d_dot4_func(shapes, out_shape, weight_shape, groups, stride, padding, zp, out_dtype, out_zero_point,
                      clamp, rq=None) -> tirx.PrimFunc:
    """:func:`_conv2d_dot_func` four output channels at a time (a group's channels a multiple of 4)."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, _ = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, cg = weight_shape
    per_group = oc_count // groups
    (sh, sw), (top, _, left, _) = stride, padding
    rule, row = requantize_double_rounding, kh * kw * cg
    whole_rows = groups == 1 and kw > 1

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((4,), "int32")  # a stack array the inlined micro-kernel keeps in registers
        for oy, ox, quad in T.grid(oh, ow, oc_count // 4):
            for j in T.unroll(4):
                acc[j] = bias[quad * 4 + j]
            for rh in range(kh):
                iy = T.meta_var(oy * sh + rh - top)
                if 0 <= iy and iy < height:
                    if whole_rows and 0 <= ox * sw - left and ox * sw - left + kw <= width:
                        # groups 1, the kernel row inside the input: kw * cg bytes in a row, of x and of w
                        T.evaluate(T.call_extern("int32", DOT4, T.address_of(x[iy, ox * sw - left, 0]),
                                                 T.address_of(weight[(quad * 4 * kh + rh) * kw * cg]), kw * cg, -zp,
                                                 row, T.address_of(acc[0])))
                    elif whole_rows and cg >= 16 and T.call_extern("int32", HELIUM) != 0:
                        # Helium (a constant 1 there, 0 elsewhere): a border row's taps inside the input in
                        # one run, whose vectors cost less than a call per tap (fewer channels than a
                        # vector: the calls per tap, whose run length is a constant)
                        lo = T.meta_var(T.max(ox * sw - left, 0))
                        hi = T.meta_var(T.min(ox * sw - left + kw, width))
                        if lo < hi:
                            T.evaluate(T.call_extern("int32", DOT4, T.address_of(x[iy, lo, 0]),
                                                     T.address_of(weight[((quad * 4 * kh + rh) * kw + lo - ox * sw + left)
                                                                         * cg]),
                                                     (hi - lo) * cg, -zp, row, T.address_of(acc[0])))
                    else:
                        for rw in range(kw):
                            ix = T.meta_var(ox * sw + rw - left)
                            if 0 <= ix and ix < width:
                                T.evaluate(T.call_extern("int32", DOT4,
                                                         T.address_of(x[iy, ix, (quad * 4 // per_group) * cg]),
                                                         T.address_of(weight[((quad * 4 * kh + rh) * kw + rw) * cg]),
                                                         cg, -zp, row, T.address_of(acc[0])))
            if _scalar_requant(4, acc, multiplier, shift, quad * 4, out_zero_point, clamp, out_dtype,
                               T.address_of(out[oy, ox, quad * 4]), rq=rq, dsp=False):
                for j in T.unroll(4):
                    out[oy, ox, quad * 4 + j] = finish(acc[j], rule, _channel(multiplier, quad * 4 + j),
                                                       _channel(shift, quad * 4 + j), out_zero_point, list(clamp),
                                                       out_dtype, rq=rq)

    return func


IM2COL_LIMIT = 64  # bytes of a window gathered on the stack


def im2col4(graph: g.Graph, op) -> bool:
    """A groups-1 conv2d of an int8 input with fewer than 4 channels (an image: a row of the window is
    a few bytes, too short for the dot micro-kernel's words) and 8-bit weights: :func:`_im2col`."""
    _, kh, kw, cg = op.weight.shape
    return (op.kind == "conv2d" and int8_linear(graph, op) and op.groups == 1 and cg < 4 and kh * kw > 1
            and op.weight.shape[0] % 4 == 0 and kh * kw * cg <= IM2COL_LIMIT)


def _im2col(sig: _Signature, graph: g.Graph, op: g.Conv2D) -> tirx.PrimFunc:
    """:func:`conv2d` for :func:`im2col4` layers: per output pixel the window's kh * kw * cg inputs are
    gathered once into a stack buffer (the input's zero point in the padding, so it adds 0), then
    four output channels per dot micro-kernel call run over it in words, the weights' rows padded
    with zeros to a multiple of 4 bytes. Helium cores take :func:`_image_helium`'s form instead (the
    same weights; the other cores' C is unchanged, GCC drops the branch)."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    out_ch, kh, kw, cg = op.weight.shape
    k = kh * kw * cg
    k4 = (k + 3) // 4 * 4
    rows = np.zeros((out_ch, k4), np.int8)
    rows[:, :k] = np.asarray(op.weight, np.int8).reshape(out_ch, k)
    w_t = sig.const("weight", rows)
    b_t = sig.const("bias", op.bias.astype(np.int32))
    m_t, s_t = sig.requant_consts(op)
    shapes = tuple(tuple(int(d) for d in t.shape) for t in (x_t, w_t, b_t, m_t, s_t))
    return _im2col_func(shapes, tuple(spec_out.shape), tuple(op.weight.shape), tuple(op.stride), tuple(op.padding),
                        spec_in.zero_point, spec_out.dtype, spec_out.zero_point, tuple(op.clamp),
                        rq=requant_info(op.multiplier, op.shift), right=bool((np.asarray(op.shift) <= 0).all()))


@functools.lru_cache(maxsize=256)
def _im2col_func(shapes, out_shape, weight_shape, stride, padding, zp, out_dtype, out_zero_point, clamp,
                 rq=None, right: bool = False) -> tirx.PrimFunc:
    """The kernel of :func:`_im2col`: the word loop (``words``), and where :func:`_image_helium`
    allows, under ``HELIUM != 0``, per two output pixels one call of microkernels.IMAGE (the window
    gathered into vectors, one VMLADAV a channel and vector, four channels requantized a vector).
    ``right``: no shift is positive (Helium's requantization then has no left shift)."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, _ = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, cg = weight_shape
    (sh, sw), (top, _, left, _) = stride, padding
    k = kh * kw * cg
    k4 = (k + 3) // 4 * 4
    rule = requantize_double_rounding

    @T.macro
    def words(x, weight, bias, multiplier, shift, out, col, acc):
        for t in range(k, k4):  # the padding of the rows: its weights are 0
            col[t] = T.int8(zp)
        for oy, ox in T.grid(oh, ow):
            for rh, rw, c in T.grid(kh, kw, cg):
                iy = T.meta_var(oy * sh + rh - top)
                ix = T.meta_var(ox * sw + rw - left)
                col[(rh * kw + rw) * cg + c] = T.if_then_else(0 <= iy and iy < height and 0 <= ix and ix < width,
                                                              x[iy, ix, c], T.int8(zp))
            for quad in range(oc_count // 4):
                for j in T.unroll(4):
                    acc[j] = bias[quad * 4 + j]
                T.evaluate(T.call_extern("int32", DOT4, T.address_of(col[0]), T.address_of(weight[quad * 4 * k4]), k4,
                                         -zp, k4, T.address_of(acc[0])))
                if _scalar_requant(4, acc, multiplier, shift, quad * 4, out_zero_point, clamp, out_dtype,
                                   T.address_of(out[oy, ox, quad * 4])):
                    for j in T.unroll(4):
                        out[oy, ox, quad * 4 + j] = finish(acc[j], rule, _channel(multiplier, quad * 4 + j),
                                                           _channel(shift, quad * 4 + j), out_zero_point, list(clamp),
                                                           out_dtype, rq=rq)

    if not _image_helium(x_shape, weight_shape, out_dtype):
        @T.prim_func(private=True)
        def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
                 multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
                 out: T.Buffer(out_shape, out_dtype)):
            col = T.alloc_buffer((k4,), "int8")  # the window, on the stack
            acc = T.alloc_buffer((4,), "int32")
            words(x, weight, bias, multiplier, shift, out, col, acc)

        return func

    nv, line = (k + 15) // 16, width * cg
    # microkernels.IMAGE's requantization form: per channel, no left shift, negative sums end at the clamp
    flags = int(m_shape[0] > 1) | 4 * right | 8 * (out_zero_point <= clamp[0])

    @T.macro
    def pixels(x, weight, multiplier, shift, out, table, wbias, masks, oy, ox, count):
        # ``count`` (1 or 2) output pixels from (oy, ox), side by side: microkernels.IMAGE
        T.evaluate(T.call_extern("int32", IMAGE, T.address_of(x[0, 0, 0]),
                                 (oy * sh - top) * line + (ox * sw - left) * cg, (count - 1) * sw * cg,
                                 table.access_ptr("r"), T.address_of(masks[oy]), T.address_of(masks[nv * oh + ox]),
                                 oh, ow, k, k4, T.address_of(weight[0]), wbias.access_ptr("r"), oc_count,
                                 T.address_of(multiplier[0]), T.address_of(shift[0]), flags, out_zero_point,
                                 clamp[0], clamp[1], T.address_of(out[oy, ox, 0])))

    @T.prim_func(private=True)
    def helium(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
               multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
               out: T.Buffer(out_shape, out_dtype)):
        col = T.alloc_buffer((k4,), "int8")  # the window, on the stack
        acc = T.alloc_buffer((4,), "int32")
        table = T.alloc_buffer((32 * nv,), "int8")  # Helium's: microkernels.IMAGE_PREP's tables, on the stack
        wbias = T.alloc_buffer((oc_count,), "int32")
        masks = T.alloc_buffer((nv * (oh + ow),), "int32")
        if T.call_extern("int32", HELIUM) != 0:  # a constant: the other cores' C is the else branch alone
            T.evaluate(T.call_extern("int32", IMAGE_PREP, T.address_of(weight[0]), T.address_of(bias[0]), oc_count, k,
                                     k4, zp, kh, kw, cg, line, height, width, oh, ow, sh, sw, top, left,
                                     table.access_ptr("w"), wbias.access_ptr("w"), masks.access_ptr("w")))
            for oy in range(oh):
                for pair in range(ow // 2):  # two pixels a call: the weights' loads shared
                    pixels(x, weight, multiplier, shift, out, table, wbias, masks, oy, pair * 2, 2)
                for last in range(ow % 2):
                    pixels(x, weight, multiplier, shift, out, table, wbias, masks, oy, ow - 1 + last, 1)
        else:
            words(x, weight, bias, multiplier, shift, out, col, acc)

    return helium


def _image_helium(x_shape, weight_shape, out_dtype: str) -> bool:
    """Whether an :func:`im2col4` layer has Helium's form (microkernels.IMAGE): an int8 output
    (requantized four a vector), window offsets within a byte (the gather's lanes): a window's
    last byte at most 255 bytes from its first (3x3 kernels: images up to 41 pixels wide with 3
    channels, 124 with 1),
    weights (rows of k rounded up to 4 bytes) of at least the window's vectors' bytes, which the
    first row's read takes, and rows of at least half of them (a row after the first is read from
    before its start: from the previous row's, not before the array; k <= 4 fails it)."""
    _, width, channels = x_shape
    out_ch, kh, kw, cg = weight_shape
    k = kh * kw * cg
    return (out_dtype == "int8" and (kh - 1) * width * channels + kw * cg - 1 <= 255
            and out_ch * ((k + 3) // 4 * 4) >= (k + 15) // 16 * 16 and (k + 3) // 4 * 4 * 2 >= (k + 15) // 16 * 16)


def depthwise4(graph: g.Graph, op) -> bool:
    """A depthwise conv2d (one output channel per input channel, a multiple of 4) of an int8 input and
    8-bit weights: :func:`_depthwise` (the edgesnn_dw4_s8 micro-kernel, four channels a word)."""
    channels = graph.tensors[op.inputs[0]].shape[-1]
    return (op.kind == "conv2d" and int8_linear(graph, op) and op.groups == channels == op.weight.shape[0]
            and op.weight.shape[3] == 1 and channels % 4 == 0)


def _depthwise(sig: _Signature, graph: g.Graph, op: g.Conv2D) -> tirx.PrimFunc:
    """:func:`conv2d` for :func:`depthwise4` layers: weights HWC (output-minor), per output pixel and
    four channels one micro-kernel call over the window clipped to the input (the padding tested
    per window, not per tap), the four sums in registers. Also the event-driven form of these
    layers: skipping taps whose four inputs are all zero cost more than it saved on the
    spikeformer (Cortex-M4: 128,487 against 124,824 instructions for its 8x8x32 layer)."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=True)
    shapes = tuple(tuple(int(d) for d in t.shape) for t in (x_t, w_t, b_t, m_t, s_t))
    return _depthwise_func(shapes, tuple(spec_out.shape), tuple(op.weight.shape), tuple(op.stride), tuple(op.padding),
                           spec_in.zero_point, spec_out.dtype, spec_out.zero_point, tuple(op.clamp),
                           rq=requant_info(op.multiplier, op.shift), small=depthwise_small_sums(graph, op))


def depthwise_small_sums(graph: g.Graph, op) -> int | None:
    """The unit's shift u where a :func:`depthwise4` layer reads spike counts (unit 2^u x c, |c| <= D)
    whose sums of counts times weights fit int16 in every channel (D x the channel's sum of |weights|
    <= 32767), over whole groups of eight channels: Helium then takes microkernels_dw.DW8 (eight
    channels as int16 lanes); else None."""
    counts = spikes.count_tensors(graph).get(op.inputs[0])
    channels = graph.tensors[op.inputs[0]].shape[-1]
    if counts is None or channels % DW_CHANNELS or counts.unit & (counts.unit - 1):
        return None
    bound = int(np.abs(np.asarray(op.weight, np.int64)).reshape(channels, -1).sum(1).max()) * counts.D
    return counts.unit_shift if bound <= DW_SUM_LIMIT else None


@functools.lru_cache(maxsize=256)
def _depthwise_func(shapes, out_shape, weight_shape, stride, padding, zp, out_dtype, out_zero_point, clamp,
                    rq=None, small=None) -> tirx.PrimFunc:
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, channels = x_shape
    oh, ow, _ = out_shape
    _, kh, kw, _ = weight_shape
    (sh, sw), (top, _, left, _) = stride, padding
    rule = requantize_double_rounding

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((4 if small is None else 8,), "int32")  # a stack array kept in registers
        if small is not None and T.call_extern("int32", HELIUM) != 0:  # spike counts on Helium: eight channels in int16 lanes
            for oy, ox, octet in T.grid(oh, ow, channels // 8):
                iy = T.meta_var(oy * sh - top)
                ix = T.meta_var(ox * sw - left)
                r0 = T.meta_var(T.max(0, 0 - iy))
                c0 = T.meta_var(T.max(0, 0 - ix))
                T.evaluate(T.call_extern("int32", DW8, T.address_of(x[iy + r0, ix + c0, octet * 8]),
                                         T.address_of(weight[(r0 * kw + c0) * channels + octet * 8]),
                                         T.min(kh, height - iy) - r0, T.min(kw, width - ix) - c0, width * channels,
                                         channels, kw * channels, small, T.address_of(bias[octet * 8]),
                                         T.address_of(acc[0])))
                if _scalar_requant(8, acc, multiplier, shift, octet * 8, out_zero_point, clamp, out_dtype,
                                   T.address_of(out[oy, ox, octet * 8]), rq=rq, dsp=False):
                    for j in T.unroll(8):
                        out[oy, ox, octet * 8 + j] = finish(acc[j], rule, _channel(multiplier, octet * 8 + j),
                                                            _channel(shift, octet * 8 + j), out_zero_point,
                                                            list(clamp), out_dtype, rq=rq)
        if small is None or T.call_extern("int32", HELIUM) == 0:  # a constant: GCC keeps one of the two loops
            for oy, ox, quad in T.grid(oh, ow, channels // 4):
                iy = T.meta_var(oy * sh - top)
                ix = T.meta_var(ox * sw - left)
                r0 = T.meta_var(T.max(0, 0 - iy))
                c0 = T.meta_var(T.max(0, 0 - ix))
                for j in T.unroll(4):
                    acc[j] = bias[quad * 4 + j]
                T.evaluate(T.call_extern("int32", DW4, T.address_of(x[iy + r0, ix + c0, quad * 4]),
                                         T.address_of(weight[(r0 * kw + c0) * channels + quad * 4]),
                                         T.min(kh, height - iy) - r0, T.min(kw, width - ix) - c0, width * channels,
                                         channels, kw * channels, -zp, 0, T.address_of(acc[0])))
                if _scalar_requant(4, acc, multiplier, shift, quad * 4, out_zero_point, clamp, out_dtype,
                                   T.address_of(out[oy, ox, quad * 4]), rq=rq, dsp=False):
                    for j in T.unroll(4):
                        out[oy, ox, quad * 4 + j] = finish(acc[j], rule, _channel(multiplier, quad * 4 + j),
                                                           _channel(shift, quad * 4 + j), out_zero_point,
                                                           list(clamp), out_dtype, rq=rq)

    return func


def dense(sig: _Signature, graph: g.Graph, op: g.Dense) -> tirx.PrimFunc:
    """acc[m] = bias[m] + sum_k (x[k] - zp) * w[m, k]; requantized as conv2d."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x = sig.input("x", op.inputs[0])
    w, bias, mult, shift = sig.linear_consts(op)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    k_in = op.weight.shape[1]
    if int8_linear(graph, op) and len(x.shape) == 1:  # one dot micro-kernel call per output
        m_out, zp, clamp = op.weight.shape[0], spec_in.zero_point, list(op.clamp)
        w_shape, b_shape, m_shape, s_shape = (tuple(int(d) for d in t.shape) for t in (w, bias, mult, shift))

        quads = m_out // 4

        @T.prim_func(private=True)
        def func(x: T.Buffer((k_in,), "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
                 multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
                 out: T.Buffer((m_out,), spec_out.dtype)):
            acc = T.alloc_buffer((4,), "int32")  # four rows per call, sharing the widened inputs
            for quad in range(quads):
                for j in T.unroll(4):
                    acc[j] = bias[quad * 4 + j]
                T.evaluate(T.call_extern("int32", DOT4, T.address_of(x[0]), T.address_of(weight[quad * 4 * k_in]), k_in,
                                         -zp, k_in, T.address_of(acc[0])))
                if _scalar_requant(4, acc, multiplier, shift, quad * 4, spec_out.zero_point, clamp, spec_out.dtype,
                                   T.address_of(out[quad * 4]), rq=rq, dsp=False):
                    for j in T.unroll(4):
                        out[quad * 4 + j] = finish(acc[j], rule, _channel(multiplier, quad * 4 + j),
                                                   _channel(shift, quad * 4 + j), spec_out.zero_point, clamp,
                                                   spec_out.dtype, rq=rq)
            for m in range(quads * 4, m_out):  # the rows left over
                out[m] = finish(bias[m] + T.call_extern("int32", DOT, T.address_of(x[0]), T.address_of(weight[m * k_in]),
                                                        k_in, -zp),
                                rule, _channel(multiplier, m), _channel(shift, m), spec_out.zero_point, clamp,
                                spec_out.dtype, rq=rq)

        return func

    def summand(m, k):
        return _times(_offset(x[k], spec_in.zero_point), weight_value(w, m * k_in + k, op.weight_bits, op.weight_code))

    def epilogue(acc, m):
        return finish(acc + bias[m].astype(acc_dtype), rule, _channel(mult, m), _channel(shift, m),
                      spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq)

    axes = [te.reduce_axis((0, k_in), "k")]
    return _accumulate_and_finish([x, w, bias, mult, shift], tuple(spec_out.shape), summand, axes, epilogue, acc_dtype)


def reduce_sum(sig: _Signature, graph: g.Graph, op: g.ReduceSum) -> tirx.PrimFunc:
    """Per-channel sum over H and W of (x - zp), requantized per channel: int8 input as an int8
    conv (int32, double rounding), int16 as a 16x8 one (int64, the 16-bit multiplier)."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x = sig.input("x", op.inputs[0])
    mult, shift = sig.requant_consts(op)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    h, w, _ = spec_in.shape

    def summand(_y, _x, c, rh, rw):
        return _offset(x[rh, rw, c], spec_in.zero_point)

    def epilogue(acc, _y, _x, c):
        return finish(acc, rule, _channel(mult, c), _channel(shift, c), spec_out.zero_point, op.clamp, spec_out.dtype,
                      rq=rq)

    axes = [te.reduce_axis((0, h), "h"), te.reduce_axis((0, w), "w")]
    return _accumulate_and_finish([x, mult, shift], tuple(spec_out.shape), summand, axes, epilogue, acc_dtype)


def mul(sig: _Signature, graph: g.Graph, op: g.Mul) -> tirx.PrimFunc:
    """TFLite MUL: (a - za) * (b - zb) in int32 with numpy broadcasting, requantized (double rounding)."""
    spec_a, spec_b, spec_out = (graph.tensors[n] for n in (*op.inputs, op.output))
    a, b = sig.input("a", op.inputs[0]), sig.input("b", op.inputs[1])
    mult, shift = sig.requant_consts(op)
    rq = requant_info(op.multiplier, op.shift)

    def element(*i):
        product = _offset(_broadcast(a, i), spec_a.zero_point) * _offset(_broadcast(b, i), spec_b.zero_point)
        return finish(product, requantize_double_rounding, _channel(mult, i[-1]), _channel(shift, i[-1]),
                      spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq)

    func = te.create_prim_func([a, b, mult, shift, te.compute(tuple(spec_out.shape), element, "out")])
    strides = [_row_stride(spec.shape, spec_out.shape) for spec in (spec_a, spec_b)]
    if spec_a.dtype != spec_b.dtype or None in strides or not _eltwise(op, spec_a.dtype, spec_out.dtype):
        return func
    bufs = _buffers(func)
    per_channel, m, s = _requant_args(op)
    channels, rows = _rows(spec_out.shape, per_channel or strides != [1, 1])

    def call(r):
        return (MUL_RUN[spec_a.dtype, spec_out.dtype], channels, _element(bufs["a"], r * channels * strides[0]),
                _element(bufs["b"], r * channels * strides[1]), spec_a.zero_point, spec_b.zero_point, per_channel,
                _element(bufs["multiplier"], 0), _element(bufs["shift"], 0), m, s, spec_out.zero_point,
                int(op.clamp[0]), int(op.clamp[1]), _element(bufs["out"], r * channels))

    return _helium_or(func, _run_calls(rows, call))


def requantize(sig: _Signature, graph: g.Graph, op: g.Requantize) -> tirx.PrimFunc:
    """x - zp rescaled (double rounding, int16 inputs included) to the output scale, clamped."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x = sig.input("x", op.inputs[0])
    mult, shift = sig.requant_consts(op)
    rq = requant_info(op.multiplier, op.shift)

    def element(*i):
        return finish(_offset(x[i], spec_in.zero_point), requantize_double_rounding, _channel(mult, i[-1]),
                      _channel(shift, i[-1]), spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq)

    func = te.create_prim_func([x, mult, shift, te.compute(tuple(spec_out.shape), element, "out")])
    func = _unrolled(func, "out") if rq.shift is not None else func
    if not _eltwise(op, spec_in.dtype, spec_out.dtype):
        return func
    bufs = _buffers(func)
    per_channel, m, s = _requant_args(op)
    channels, rows = _rows(spec_out.shape, per_channel)

    def call(r):
        return (REQUANT_RUN[spec_in.dtype, spec_out.dtype], channels, _element(bufs["x"], r * channels),
                spec_in.zero_point, per_channel, _element(bufs["multiplier"], 0), _element(bufs["shift"], 0), m, s,
                spec_out.zero_point, int(op.clamp[0]), int(op.clamp[1]), _element(bufs["out"], r * channels))

    return _helium_or(func, _run_calls(rows, call))


def _unrolled(func: tirx.PrimFunc, block: str, by: int = 4) -> tirx.PrimFunc:
    """An elementwise kernel whose constants are per tensor (no channel index) as one loop over the
    elements, ``by`` of them per iteration (the loop's compare and branch once per ``by``); ``block``:
    the outermost block (its loops hold the others)."""
    sch = s_tir.Schedule(func)
    loops = sch.get_loops(sch.get_sblock(block))
    extent = int(np.prod([int(sch.get(lp).extent) for lp in loops]))
    if extent % by:
        return func
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    _, inner = sch.split(fused, [None, by])
    sch.unroll(inner)
    return sch.mod["main"]


def add(sig: _Signature, graph: g.Graph, op: g.Add) -> tirx.PrimFunc:
    """TFLite ADD: each input (x - zp) << left_shift rescaled to twice the larger input scale, the sum
    rescaled to the output (multipliers [a, b, out]), all double rounding; clamped."""
    spec_a, spec_b, spec_out = (graph.tensors[n] for n in (*op.inputs, op.output))
    a, b = sig.input("a", op.inputs[0]), sig.input("b", op.inputs[1])
    mult, shift = sig.requant_consts(op)

    def scaled(x, spec, j, i):
        shifted = _offset(x[i], spec.zero_point) * (1 << op.left_shift)  # not <<: UB for negatives in C
        return requantize_double_rounding(shifted, mult[j], shift[j], requant_info(op.multiplier[j], op.shift[j]))

    # The sum is its own (scalar) stage: one requantization nested in another makes TVM's buffer
    # region analysis (CompactBufferAllocation) take seconds.
    shape = tuple(spec_out.shape)
    total = te.compute(shape, lambda *i: scaled(a, spec_a, 0, i) + scaled(b, spec_b, 1, i), "acc")
    rq = requant_info(op.multiplier[2], op.shift[2])
    out = te.compute(shape, lambda *i: finish(total(*i), requantize_double_rounding, mult[2], shift[2],
                                              spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq), "out")
    func = _unrolled(_scalar_accumulator(te.create_prim_func([a, b, mult, shift, out]), len(shape)), "acc")
    if spec_a.dtype != spec_b.dtype or not _eltwise(op, spec_a.dtype, spec_out.dtype) \
            or not tuple(spec_a.shape) == tuple(spec_b.shape) == shape:
        return func
    bufs = _buffers(func)
    consts = [int(v) for pair in zip(op.multiplier, op.shift) for v in pair]  # m0, s0, m1, s1, m2, s2
    call = (ADD_RUN[spec_a.dtype, spec_out.dtype], int(np.prod(shape)), _element(bufs["a"], 0), _element(bufs["b"], 0),
            spec_a.zero_point, spec_b.zero_point, int(op.left_shift), *consts, spec_out.zero_point, int(op.clamp[0]),
            int(op.clamp[1]), _element(bufs["out"], 0))
    return _helium_or(func, _run_calls(1, lambda _: call))


# Helium forms of the elementwise kernels (requantize, add, mul): under ``HELIUM != 0`` the kernel is
# one call of a run micro-kernel (microkernels.REQUANT_RUN, ADD_RUN, MUL_RUN: four int32 lanes a vector,
# or 8 / 16 narrow lanes for the exporter's x 2^k) over the whole tensor, or one a row of channels; in
# the else branch the TE kernel as before, the only one GCC keeps for the other cores.


def _eltwise(op, *dtypes: str) -> bool:
    """Whether the run micro-kernels take these input and output dtypes (int8, int16) and the op's shifts:
    those the exporter writes, -31..30 (VRSHL's rounding shift is TFLite's up to 31 bits)."""
    shifts = np.asarray(op.shift)
    return all(d in ELTWISE_TYPES for d in dtypes) and bool(((shifts >= -31) & (shifts <= 30)).all())


def _requant_args(op) -> tuple[int, int, int]:
    """(per channel?, multiplier, shift) of a run call: the per-tensor constants go into the call (and
    into the code GCC folds from them); per channel, the arrays are read and these are 0."""
    if len(op.multiplier) > 1:
        return 1, 0, 0
    return 0, int(op.multiplier[0]), int(op.shift[0])


def _row_stride(shape, out_shape) -> int | None:
    """How far an input of ``shape`` moves per row of ``out_shape``'s last axis under numpy broadcasting,
    in rows: 1 (the same shape), 0 (one row broadcast to every row, [..., 1, C]); None otherwise."""
    shape, out_shape = [int(d) for d in shape], [int(d) for d in out_shape]
    shape = [1] * (len(out_shape) - len(shape)) + shape
    if not out_shape or len(shape) != len(out_shape) or shape[-1] != out_shape[-1]:
        return None
    if shape == out_shape:
        return 1
    return 0 if all(d == 1 for d in shape[:-1]) else None


def _rows(shape, by_row: bool) -> tuple[int, int]:
    """(elements a call, calls): one call over every element, or ``by_row`` one per row of the last axis
    (per-channel constants, a broadcast input)."""
    total = int(np.prod([int(d) for d in shape]))
    if not by_row:
        return total, 1
    return int(shape[-1]), total // int(shape[-1])


def _buffers(func: tirx.PrimFunc) -> dict:
    """The buffers of ``func``'s parameters (buffer variables) by name."""
    return {p.name: p for p in func.params}


def _element(buf, flat):
    """&buf[flat], ``flat`` a row-major element index of a buffer of any shape."""
    index = []
    for extent in reversed([int(d) for d in buf.shape]):
        index.append(flat % extent if extent > 1 else 0)
        flat = flat // extent
    return tirx.address_of(tirx.BufferLoad(buf, index[::-1]))


def _run_calls(rows: int, call) -> tirx.Stmt:
    """The calls ``call(row)`` (extern name, arguments) for row < ``rows``: one statement, or a loop."""
    if rows == 1:
        name, *args = call(0)
        return tirx.Evaluate(tirx.call_extern("int32", name, *args))
    r = tirx.Var("row", I32)
    name, *args = call(r)
    return tirx.For(r, 0, rows, tirx.ForKind.SERIAL, tirx.Evaluate(tirx.call_extern("int32", name, *args)))


def _helium_or(func: tirx.PrimFunc, helium: tirx.Stmt) -> tirx.PrimFunc:
    """``func`` (a TE kernel) whose body runs where microkernels.HELIUM is 0, ``helium`` where it is 1: a
    constant, so GCC drops the other branch and the other cores keep exactly the TE kernel's C."""
    realize = func.body
    root = realize.block
    body = tirx.IfThenElse(tirx.call_extern("int32", HELIUM) != 0, helium, root.body)
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body, root.init, root.alloc_buffers,
                         root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))


def sum_pool2d(sig: _Signature, graph: g.Graph, op: g.SumPool2D) -> tirx.PrimFunc:
    """Exact window sum of (x - zp) in int32 plus the output zero point (the exporter sized the output type:
    int32 for an int16 stream's sums, which its readers widen to int64, see :func:`_offset`). Helium:
    :func:`_sum_pool_func`."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x = sig.input("x", op.inputs[0])
    sh, sw = op.stride
    if (spec_in.dtype, spec_out.dtype) in SUM_POOL:
        return _sum_pool_func(tuple(int(d) for d in x.shape), tuple(spec_out.shape), spec_in.dtype, spec_out.dtype,
                              tuple(op.kernel), tuple(op.stride), spec_in.zero_point, spec_out.zero_point)

    def summand(oy, ox, c, rh, rw):
        return _offset(x[oy * sh + rh, ox * sw + rw, c], spec_in.zero_point)

    def epilogue(acc, *_):
        return (acc + tirx.const(spec_out.zero_point, I32)).astype(spec_out.dtype)

    return _accumulate_and_finish([x], tuple(spec_out.shape), summand, _window_axes(op.kernel), epilogue, I32)


@functools.lru_cache(maxsize=256)
def _sum_pool_func(x_shape, out_shape, in_dtype: str, out_dtype: str, kernel, stride, zp: int,
                   out_zero_point: int) -> tirx.PrimFunc:
    """:func:`sum_pool2d` of an int8 / int16 input. Helium: per output pixel one micro-kernel call
    (microkernels.SUM_POOL), the channels as lanes, the zero points' kh kw (-zp) + out_zp one constant
    added; elsewhere TVM's scalar loops as the tensor-expression form writes them."""
    _, width, channels = x_shape
    oh, ow, _ = out_shape
    (win_h, win_w), (sh, sw) = kernel, stride
    add = out_zero_point - win_h * win_w * zp

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, in_dtype), out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((1,), "int32")
        if T.call_extern("int32", HELIUM) != 0:  # a constant: the other cores' C is the else branch alone
            for oy, ox in T.grid(oh, ow):
                T.evaluate(T.call_extern("int32", SUM_POOL[in_dtype, out_dtype], T.address_of(x[oy * sh, ox * sw, 0]),
                                         win_h, win_w, width * channels, channels, add, T.address_of(out[oy, ox, 0])))
        else:
            for i0, i1, i2 in T.grid(oh, ow, channels):
                acc[0] = 0
                for kh, kw in T.grid(win_h, win_w):  # the names and order of the TE form's loops
                    acc[0] = acc[0] + (T.Cast("int32", x[i0 * sh + kh, i1 * sw + kw, i2]) - zp)
                out[i0, i1, i2] = T.Cast(out_dtype, acc[0] + out_zero_point)

    return func


def max_pool2d(sig: _Signature, graph: g.Graph, op: g.MaxPool2D) -> tirx.PrimFunc:
    """Window maximum of the raw integers (same scale and zero point in and out)."""
    spec_out = graph.tensors[op.output]
    x = sig.input("x", op.inputs[0])
    sh, sw = op.stride
    axes = _window_axes(op.kernel)
    out = te.compute(tuple(spec_out.shape),
                     lambda oy, ox, c: te.max(x[oy * sh + axes[0], ox * sw + axes[1], c], axis=axes), "out")
    return te.create_prim_func([x, out])


def transpose(sig: _Signature, graph: g.Graph, op: g.Transpose) -> tirx.PrimFunc:
    """out[o_0, .., o_r] = x[i] with i[perm[j]] = o_j: a gather into a buffer of its own (an element
    moves, so unlike reshape it cannot share its input's bytes)."""
    x = sig.input("x", op.inputs[0])
    perm = [int(p) for p in op.perm]

    def element(*o):
        index = [None] * len(perm)
        for j, p in enumerate(perm):
            index[p] = o[j]
        return x[tuple(index)]

    return te.create_prim_func([x, te.compute(tuple(graph.tensors[op.output].shape), element, "out")])


def batch_matmul(sig: _Signature, graph: g.Graph, op: g.BatchMatMul) -> tirx.PrimFunc:
    """acc[..., m, n] = sum_k (a[..., m, k] - za) * (b[..., k, n] - zb) (b[..., n, k] with adj_y); int8
    operands accumulate in int32 with double rounding, int16 ones in int64 with the 16x8 rule, as
    conv2d / dense of the same input dtype (interpreter.batch_matmul). One multiplier per tensor."""
    spec_a, spec_b, spec_out = (graph.tensors[n] for n in (*op.inputs, op.output))
    a, b = sig.input("a", op.inputs[0]), sig.input("b", op.inputs[1])
    mult, shift = sig.requant_consts(op)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_a.dtype)

    def summand(*index):
        *lead, m, n, k = index
        bv = b[(*lead, n, k)] if op.adj_y else b[(*lead, k, n)]
        return _offset(a[(*lead, m, k)], spec_a.zero_point) * _offset(bv, spec_b.zero_point)  # int16 x int16 fits int32

    def epilogue(acc, *_):
        return finish(acc, rule, mult[0], shift[0], spec_out.zero_point, op.clamp, spec_out.dtype, rq=rq)

    axes = [te.reduce_axis((0, int(spec_a.shape[-1])), "k")]
    return _accumulate_and_finish([a, b, mult, shift], tuple(spec_out.shape), summand, axes, epilogue, acc_dtype)


# ----------------------------------------------------------------------------------------------
# Event-driven forms: iterate over the input, skip zeros, scatter into a scratch accumulator.


def _tap(i, r: int, pad: int, stride: int, extent: int):
    """(condition, output index) of the output that input row ``i`` reaches through kernel row ``r``:
    o * stride + r - pad == i, i.e. o = (i + pad - r) / stride when that is an in-range integer."""
    t = i + (pad - r)
    if stride == 1:
        return tirx.all(t >= 0, t < extent), t
    return tirx.all(t >= 0, tirx.floormod(t, stride) == 0, t < extent * stride), tirx.floordiv(t, stride)


def conv2d_events(sig: _Signature, graph: g.Graph, op: g.Conv2D) -> tirx.PrimFunc:
    """conv2d driven by its nonzero inputs (spikes): each input x != zp adds (x - zp) * w to the
    outputs it reaches; zeros, the common case of a spike map, touch no weight. Padding never
    contributes (it is real zero). Integer sums do not depend on order: bit-exact with :func:`conv2d`.
    """
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    if depthwise4(graph, op):  # the dense window kernel: skipping all-zero taps did not pay (docs/mcu.md)
        return _depthwise(sig, graph, op)
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=True)
    rq = requant_info(op.multiplier, op.shift)
    oh, ow, oc_count = spec_out.shape
    shapes = tuple(tuple(int(d) for d in t.shape) for t in (x_t, w_t, b_t, m_t, s_t))
    tile = gather_tile(graph, op)
    if tile:  # the nonzero inputs listed per pixel, gathered into a tile of outputs in registers
        height, width, channels = spec_in.shape
        counts = counts_gather(graph, op)
        header = counts[1] + 2 if counts else 1  # counts: the largest, a length per group, the end mark
        sig.scratch("events", height * width * (channels + header), "int32")
        return _conv2d_gather_func(shapes, tuple(spec_out.shape), tuple(op.weight.shape), tuple(op.stride),
                                   tuple(op.padding), spec_in.zero_point, spec_out.dtype, spec_out.zero_point,
                                   tuple(op.clamp), tile, counts, rq=rq)
    sig.scratch("acc", oh * ow * oc_count, linear_rule(spec_in.dtype)[0])
    return _conv2d_events_func(shapes, str(x_t.dtype), str(w_t.dtype), spec_in.dtype, tuple(spec_out.shape),
                               tuple(op.weight.shape), op.groups, tuple(op.stride), tuple(op.padding),
                               spec_in.zero_point, op.weight_bits, op.weight_code, spec_out.dtype,
                               spec_out.zero_point, tuple(op.clamp), rq=rq)


@functools.lru_cache(maxsize=256)
def _conv2d_events_func(shapes, x_dtype, w_dtype, in_dtype, out_shape, weight_shape, groups, stride, padding, zp,
                        bits, code, out_dtype, out_zero_point, clamp, rq=None) -> tirx.PrimFunc:
    """The PrimFunc of :func:`conv2d_events`, one per distinct signature: parsing TVMScript takes
    tens of milliseconds, and a network of repeated blocks has many event-driven convs alike."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    acc_dtype, rule = linear_rule(in_dtype)
    height, width, channels = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, cg = weight_shape
    per_group = oc_count // groups
    (sh, sw), (top, _, left, _) = stride, padding
    if in_dtype == "int8" and bits == 8 and per_group >= 4:  # the axpy micro-kernel over the group's outputs
        return _conv2d_axpy_func(shapes, out_shape, weight_shape, groups, stride, padding, zp, out_dtype,
                                 out_zero_point, clamp, rq=rq)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, x_dtype), weight: T.Buffer(w_shape, w_dtype), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             acc: T.Buffer((oh, ow, oc_count), acc_dtype), out: T.Buffer((oh, ow, oc_count), out_dtype)):
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            acc[oy, ox, oc] = T.Cast(acc_dtype, bias[oc])
        for iy, ix, ic in T.grid(height, width, channels):
            if T.Cast("int32", x[iy, ix, ic]) != zp:
                for rh, rw, og in T.grid(kh, kw, per_group):
                    row = T.meta_var(_tap(iy, rh, top, sh, oh))
                    col = T.meta_var(_tap(ix, rw, left, sw, ow))
                    oc = T.meta_var((ic // cg) * per_group + og)
                    if row[0] and col[0]:
                        acc[row[1], col[1], oc] = acc[row[1], col[1], oc] + T.Cast(
                            acc_dtype, _offset(x[iy, ix, ic], zp)
                            * weight_value(weight, ((rh * kw + rw) * cg + ic % cg) * oc_count + oc, bits, code))
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            out[oy, ox, oc] = finish(acc[oy, ox, oc], rule, _channel(multiplier, oc), _channel(shift, oc),
                                     out_zero_point, list(clamp), out_dtype, rq=rq)

    return func


def gather_tile(graph: g.Graph, op) -> int:
    """Outputs per call of the gather micro-kernel (8 or 4) for an event-driven conv2d (groups 1) or
    dense with int8 input and 8-bit weights; 0 where the layer keeps the accumulator-in-arena form."""
    if not int8_linear(graph, op) or getattr(op, "groups", 1) != 1 or len(graph.tensors[op.inputs[0]].shape) not in (1, 3):
        return 0
    outputs, fan_in = op.weight.shape[0], op.weight.shape[-1]  # an entry's weight offset: below fan_in * outputs
    if fan_in * outputs >= EVENT_OFFSET_LIMIT:
        return 0
    return 8 if outputs % 8 == 0 else 4 if outputs % 4 == 0 else 0


def counts_gather(graph: g.Graph, op) -> tuple[int, int, int] | None:
    """(unit shift, D, steps) where a gather-tile layer (:func:`gather_tile`) reads spike counts
    (unit x c, 1 <= c <= D, unsigned: edgesnn.spikes.count_tensors) and so takes the counts
    micro-kernels, which only add weights (16-bit halves on DSP cores); None keeps the
    multiply-accumulate gather (any int8 values).

    ``steps``: how many counts the 16-bit running sums may take before they are flushed into the
    int32 sums. With W the largest sum of |weights| one tap (a pixel's channels) adds into one
    output, a sum of weights is within W and after s counts the running sum within s W, so
    steps = 32767 // W keeps every half inside int16 (exact), 0 where the D counts never need a flush
    before the end; W above 32767 (over 258 channels of large weights) keeps the multiply-accumulate
    gather."""
    if not gather_tile(graph, op):
        return None
    counts = spikes.count_tensors(graph).get(op.inputs[0])
    if counts is None or counts.signed or counts.unit & (counts.unit - 1) or not 1 <= counts.D <= COUNTS_MAX_D:
        return None
    weight = np.abs(np.asarray(op.weight, np.int64))
    per_tap = int(weight.reshape(weight.shape[0], -1, weight.shape[-1]).sum(-1).max()) if weight.size else 0
    if per_tap > HALF_LIMIT:
        return None
    steps = HALF_LIMIT // max(per_tap, 1)
    return counts.unit_shift, int(counts.D), 0 if steps >= counts.D else steps


@functools.lru_cache(maxsize=256)
def _conv2d_gather_func(shapes, out_shape, weight_shape, stride, padding, zp, out_dtype, out_zero_point, clamp,
                        tile, counts=None, rq=None) -> tirx.PrimFunc:
    """:func:`conv2d_events` (groups 1, int8 input, 8-bit weights in HWIO) with the accumulators in
    registers: first each input pixel's nonzero channels are listed (value and weight offset, in
    ``events``: the counts, then the lists); then per output pixel and tile of ``tile`` output
    channels, the gather micro-kernel adds each listed input of every tap inside the input to the
    tile. A zero input costs its test in the listing and nothing after.

    ``counts`` (:func:`counts_gather`): the input holds spike counts; each pixel's block of
    ``events`` is its list of entries grouped by count (D + 2 + channels words at most), and the
    gather only adds."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, channels = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, _ = weight_shape
    (sh, sw), (top, _, left, _) = stride, padding
    if counts:
        return _conv2d_counts_func(shapes, out_shape, weight_shape, stride, padding, out_dtype, out_zero_point, clamp,
                                   tile, counts, rq=rq)
    pixels, rule, gather = height * width, requantize_double_rounding, GATHER[tile]

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             events: T.Buffer((pixels * (channels + 1),), "int32"), out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((tile,), "int32")  # a stack array the inlined micro-kernel keeps in registers
        for iy, ix in T.grid(height, width):
            events[iy * width + ix] = T.call_extern("int32", EVENTS, T.address_of(x[iy, ix, 0]), channels, zp, oc_count,
                                                    T.address_of(events[pixels + (iy * width + ix) * channels]))
        for oy, ox, t in T.grid(oh, ow, oc_count // tile):
            for j in T.unroll(tile):
                acc[j] = bias[t * tile + j]
            for rh, rw in T.grid(kh, kw):
                iy = T.meta_var(oy * sh + rh - top)
                ix = T.meta_var(ox * sw + rw - left)
                if 0 <= iy and iy < height and 0 <= ix and ix < width:
                    T.evaluate(T.call_extern("int32", gather, T.address_of(events[pixels + (iy * width + ix) * channels]),
                                             events[iy * width + ix],
                                             T.address_of(weight[(rh * kw + rw) * channels * oc_count + t * tile]),
                                             T.address_of(acc[0])))
            if _scalar_requant(tile, acc, multiplier, shift, t * tile, out_zero_point, clamp, out_dtype,
                               T.address_of(out[oy, ox, t * tile])):
                for j in T.unroll(tile):
                    out[oy, ox, t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                       _channel(shift, t * tile + j), out_zero_point, list(clamp),
                                                       out_dtype, rq=rq)

    return func


def _conv2d_counts_func(shapes, out_shape, weight_shape, stride, padding, out_dtype, out_zero_point, clamp, tile,
                        counts, rq=None) -> tirx.PrimFunc:
    """:func:`_conv2d_gather_func` for spike counts (the counts micro-kernels)."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, channels = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, _ = weight_shape
    (sh, sw), (top, _, left, _) = stride, padding
    unit_shift, most, steps = counts
    block, rule, gather = most + 2 + channels, requantize_double_rounding, GATHER_COUNTS[tile]
    pixels, unit = height * width, 1 << unit_shift
    # a 1x1 kernel without padding: each output's one tap is inside (oh = ceil(height / sh))
    fused = kh == 1 and kw == 1 and top == 0 and left == 0 and _fuse_counts_tile(tile, out_dtype)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             events: T.Buffer((pixels * block,), "int32"), out: T.Buffer(out_shape, out_dtype)):
        acc = T.alloc_buffer((tile,), "int32")
        for iy, ix in T.grid(height, width):
            T.evaluate(T.call_extern("int32", EVENTS_COUNTS, T.address_of(x[iy, ix, 0]), channels, unit_shift, most,
                                     oc_count, T.address_of(events[(iy * width + ix) * block])))
        for oy, ox, t in T.grid(oh, ow, oc_count // tile):
            if fused:  # one tap, always inside: the tile in one call
                if _counts_tile(tile, T.address_of(events[(oy * sh * width + ox * sw) * block]),
                                T.address_of(weight[t * tile]), unit, steps, bias, acc, multiplier, shift, t * tile,
                                out_zero_point, clamp, T.address_of(out[oy, ox, t * tile]), rq):
                    for j in T.unroll(tile):
                        out[oy, ox, t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                           _channel(shift, t * tile + j), out_zero_point,
                                                           list(clamp), out_dtype, rq=rq)
            else:
                for j in T.unroll(tile):
                    acc[j] = bias[t * tile + j]
                for rh, rw in T.grid(kh, kw):
                    iy = T.meta_var(oy * sh + rh - top)
                    ix = T.meta_var(ox * sw + rw - left)
                    if 0 <= iy and iy < height and 0 <= ix and ix < width:
                        T.evaluate(T.call_extern("int32", gather, T.address_of(events[(iy * width + ix) * block]),
                                                 T.address_of(weight[(rh * kw + rw) * channels * oc_count + t * tile]),
                                                 unit, steps, T.address_of(acc[0])))
                if _scalar_requant(tile, acc, multiplier, shift, t * tile, out_zero_point, clamp, out_dtype,
                                   T.address_of(out[oy, ox, t * tile]), rq=rq):
                    for j in T.unroll(tile):
                        out[oy, ox, t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                           _channel(shift, t * tile + j), out_zero_point,
                                                           list(clamp), out_dtype, rq=rq)

    return func


def _conv2d_axpy_func(shapes, out_shape, weight_shape, groups, stride, padding, zp, out_dtype, out_zero_point,
                      clamp, rq=None) -> tirx.PrimFunc:
    """:func:`conv2d_events` of an int8 input and 8-bit weights (output-minor, HWIO): each nonzero
    input, per kernel tap reaching an output, adds its weights to the group's outputs in one call
    of the axpy micro-kernel (contiguous accumulators and weights)."""
    x_shape, w_shape, b_shape, m_shape, s_shape = shapes
    height, width, channels = x_shape
    oh, ow, oc_count = out_shape
    _, kh, kw, cg = weight_shape
    per_group = oc_count // groups
    (sh, sw), (top, _, left, _) = stride, padding
    rule = requantize_double_rounding

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_shape, "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
             multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
             acc: T.Buffer((oh, ow, oc_count), "int32"), out: T.Buffer((oh, ow, oc_count), out_dtype)):
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            acc[oy, ox, oc] = bias[oc]
        for iy, ix, ic in T.grid(height, width, channels):
            if T.Cast("int32", x[iy, ix, ic]) != zp:
                for rh, rw in T.grid(kh, kw):
                    row = T.meta_var(_tap(iy, rh, top, sh, oh))
                    col = T.meta_var(_tap(ix, rw, left, sw, ow))
                    first = T.meta_var((ic // cg) * per_group)
                    if row[0] and col[0]:
                        T.evaluate(T.call_extern("int32", AXPY, T.address_of(acc[row[1], col[1], first]),
                                                 T.address_of(weight[((rh * kw + rw) * cg + ic % cg) * oc_count + first]),
                                                 _offset(x[iy, ix, ic], zp), per_group))
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            out[oy, ox, oc] = finish(acc[oy, ox, oc], rule, _channel(multiplier, oc), _channel(shift, oc),
                                     out_zero_point, list(clamp), out_dtype, rq=rq)

    return func


def dense_events(sig: _Signature, graph: g.Graph, op: g.Dense) -> tirx.PrimFunc:
    """dense driven by its nonzero inputs: each x[k] != zp adds (x[k] - zp) * w[:, k]; bit-exact with :func:`dense`."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=True)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    m_out, k_in = op.weight.shape
    zp, bits, code, out_dtype = spec_in.zero_point, op.weight_bits, op.weight_code, spec_out.dtype
    tile = gather_tile(graph, op) if len(x_t.shape) == 1 else 0
    counts = counts_gather(graph, op) if tile else None
    if counts:  # spike counts: listed once grouped by count, gathered by additions only
        unit_shift, most, steps = counts
        sig.scratch("events", k_in + most + 2, "int32")
        clamp, gather, unit = list(op.clamp), GATHER_COUNTS[tile], 1 << unit_shift
        fused = _fuse_counts_tile(tile, out_dtype)
        w_shape, b_shape, m_shape, s_shape = (tuple(int(d) for d in t.shape) for t in (w_t, b_t, m_t, s_t))

        @T.prim_func(private=True)
        def func(x: T.Buffer((k_in,), "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
                 multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
                 events: T.Buffer((k_in + most + 2,), "int32"), out: T.Buffer((m_out,), out_dtype)):
            acc = T.alloc_buffer((tile,), "int32")
            T.evaluate(T.call_extern("int32", EVENTS_COUNTS, T.address_of(x[0]), k_in, unit_shift, most, m_out,
                                     T.address_of(events[0])))
            for t in range(m_out // tile):
                if fused:
                    if _counts_tile(tile, T.address_of(events[0]), T.address_of(weight[t * tile]), unit, steps, bias,
                                    acc, multiplier, shift, t * tile, spec_out.zero_point, clamp,
                                    T.address_of(out[t * tile]), rq):
                        for j in T.unroll(tile):
                            out[t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                       _channel(shift, t * tile + j), spec_out.zero_point, clamp,
                                                       out_dtype, rq=rq)
                else:
                    for j in T.unroll(tile):
                        acc[j] = bias[t * tile + j]
                    T.evaluate(T.call_extern("int32", gather, T.address_of(events[0]), T.address_of(weight[t * tile]),
                                             unit, steps, T.address_of(acc[0])))
                    if _scalar_requant(tile, acc, multiplier, shift, t * tile, spec_out.zero_point, clamp, out_dtype,
                                       T.address_of(out[t * tile]), rq=rq):
                        for j in T.unroll(tile):
                            out[t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                       _channel(shift, t * tile + j), spec_out.zero_point, clamp,
                                                       out_dtype, rq=rq)

        return func
    if tile:  # the nonzero inputs listed once, gathered into tiles of outputs held in registers
        sig.scratch("events", k_in + 1, "int32")
        clamp, gather = list(op.clamp), GATHER[tile]
        w_shape, b_shape, m_shape, s_shape = (tuple(int(d) for d in t.shape) for t in (w_t, b_t, m_t, s_t))

        @T.prim_func(private=True)
        def func(x: T.Buffer((k_in,), "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
                 multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
                 events: T.Buffer((k_in + 1,), "int32"), out: T.Buffer((m_out,), out_dtype)):
            acc = T.alloc_buffer((tile,), "int32")
            events[0] = T.call_extern("int32", EVENTS, T.address_of(x[0]), k_in, zp, m_out, T.address_of(events[1]))
            for t in range(m_out // tile):
                for j in T.unroll(tile):
                    acc[j] = bias[t * tile + j]
                T.evaluate(T.call_extern("int32", gather, T.address_of(events[1]), events[0],
                                         T.address_of(weight[t * tile]), T.address_of(acc[0])))
                if _scalar_requant(tile, acc, multiplier, shift, t * tile, spec_out.zero_point, clamp, out_dtype,
                                   T.address_of(out[t * tile])):
                    for j in T.unroll(tile):
                        out[t * tile + j] = finish(acc[j], rule, _channel(multiplier, t * tile + j),
                                                   _channel(shift, t * tile + j), spec_out.zero_point, clamp,
                                                   out_dtype, rq=rq)

        return func
    sig.scratch("acc", m_out, acc_dtype)
    if int8_linear(graph, op) and len(x_t.shape) == 1 and m_out >= 4:  # one axpy micro-kernel call per nonzero input
        clamp = list(op.clamp)
        w_shape, b_shape, m_shape, s_shape = (tuple(int(d) for d in t.shape) for t in (w_t, b_t, m_t, s_t))

        @T.prim_func(private=True)
        def func(x: T.Buffer((k_in,), "int8"), weight: T.Buffer(w_shape, "int8"), bias: T.Buffer(b_shape, "int32"),
                 multiplier: T.Buffer(m_shape, "int32"), shift: T.Buffer(s_shape, "int32"),
                 acc: T.Buffer((m_out,), "int32"), out: T.Buffer((m_out,), out_dtype)):
            for m in range(m_out):
                acc[m] = bias[m]
            for k in range(k_in):
                if T.Cast("int32", x[k]) != zp:
                    T.evaluate(T.call_extern("int32", AXPY, T.address_of(acc[0]), T.address_of(weight[k * m_out]),
                                             _offset(x[k], zp), m_out))
            for m in range(m_out):
                out[m] = finish(acc[m], rule, _channel(multiplier, m), _channel(shift, m), spec_out.zero_point, clamp,
                                out_dtype, rq=rq)

        return func

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_t.shape, x_t.dtype), weight: T.Buffer(w_t.shape, w_t.dtype), bias: T.Buffer(b_t.shape, "int32"),
             multiplier: T.Buffer(m_t.shape, "int32"), shift: T.Buffer(s_t.shape, "int32"),
             acc: T.Buffer((m_out,), acc_dtype), out: T.Buffer((m_out,), out_dtype)):
        for m in range(m_out):
            acc[m] = T.Cast(acc_dtype, bias[m])
        for k in range(k_in):
            if T.Cast("int32", x[k]) != zp:
                for m in range(m_out):
                    acc[m] = acc[m] + T.Cast(acc_dtype, _offset(x[k], zp) * weight_value(weight, k * m_out + m, bits, code))
        for m in range(m_out):
            out[m] = finish(acc[m], rule, _channel(multiplier, m), _channel(shift, m), spec_out.zero_point,
                            op.clamp, out_dtype, rq=rq)

    return func


# ----------------------------------------------------------------------------------------------
# Spike-train forms: the event-driven forms run on real spike trains (edgesnn.spikes). The input
# buffer holds each element's spike count n (times the exporter's 2^u headroom); the kernel
# expands it step by step, and every spike adds a weight (subtracts it for a negative spike).
# Bit-plane: the accumulator doubles before each of the K planes (acc = 2 acc + W x_k), so after
# the last one it is W n. Rate-burst: step d carries a spike for every |n| > d, so D steps add W n.
# Additions only per synapse; once per output, acc x 2^u + bias and the requantization follow.


def _train(code: str, counts: spikes.Counts):
    """(steps, spike(|x|, step) expression, doubling?) of a train of ``code`` over counts ``counts``."""
    steps, u = spikes.num_steps(counts.D, code), counts.unit_shift
    if code == "bit-plane":
        return steps, lambda mag, t: tirx.bitwise_and(tirx.shift_right(mag, (steps - 1 + u) - t), 1) != 0, True
    return steps, lambda mag, t: tirx.shift_right(mag, u) > t, False


def _magnitude(v, signed: bool):
    """|v| of an int8 spike-count element, in int32 (unsigned counts are their own magnitude)."""
    v = v.astype(I32)
    return tirx.Select(v < 0, -v, v) if signed else v


def _signed_weight(v, weight, signed: bool):
    """The weight a spike of element ``v`` adds: negated for a negative (ternary) spike."""
    return tirx.Select(v.astype(I32) < 0, -weight, weight) if signed else weight


def conv2d_train(sig: _Signature, graph: g.Graph, op: g.Conv2D, code: str, counts: spikes.Counts) -> tirx.PrimFunc:
    """:func:`conv2d_events` on spike trains: per virtual step, each input spiking at that step adds
    its weights to the outputs it reaches (bit-plane: after the accumulator doubled)."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=True)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    height, width, channels = spec_in.shape
    oh, ow, oc_count = spec_out.shape
    _, kh, kw, cg = op.weight.shape
    per_group = oc_count // op.groups
    (sh, sw), (top, _, left, _) = op.stride, op.padding
    bits, wcode, out_dtype, signed = op.weight_bits, op.weight_code, spec_out.dtype, counts.signed
    steps, spike, doubling = _train(code, counts)
    unit = counts.unit
    sig.scratch("acc", oh * ow * oc_count, acc_dtype)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_t.shape, x_t.dtype), weight: T.Buffer(w_t.shape, w_t.dtype), bias: T.Buffer(b_t.shape, "int32"),
             multiplier: T.Buffer(m_t.shape, "int32"), shift: T.Buffer(s_t.shape, "int32"),
             acc: T.Buffer((oh, ow, oc_count), acc_dtype), out: T.Buffer((oh, ow, oc_count), out_dtype)):
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            acc[oy, ox, oc] = T.Cast(acc_dtype, 0)
        for t in range(steps):
            if doubling:
                for oy, ox, oc in T.grid(oh, ow, oc_count):
                    acc[oy, ox, oc] = acc[oy, ox, oc] + acc[oy, ox, oc]
            for iy, ix, ic in T.grid(height, width, channels):
                if spike(_magnitude(x[iy, ix, ic], signed), t):
                    for rh, rw, og in T.grid(kh, kw, per_group):
                        row = T.meta_var(_tap(iy, rh, top, sh, oh))
                        col = T.meta_var(_tap(ix, rw, left, sw, ow))
                        oc = T.meta_var((ic // cg) * per_group + og)
                        if row[0] and col[0]:
                            acc[row[1], col[1], oc] = acc[row[1], col[1], oc] + T.Cast(acc_dtype, _signed_weight(
                                x[iy, ix, ic], weight_value(weight, ((rh * kw + rw) * cg + ic % cg) * oc_count + oc, bits, wcode),
                                signed))
        for oy, ox, oc in T.grid(oh, ow, oc_count):
            out[oy, ox, oc] = finish(acc[oy, ox, oc] * T.Cast(acc_dtype, unit) + T.Cast(acc_dtype, bias[oc]), rule,
                                     _channel(multiplier, oc), _channel(shift, oc), spec_out.zero_point, op.clamp,
                                     out_dtype, rq=rq)

    return func


def dense_train(sig: _Signature, graph: g.Graph, op: g.Dense, code: str, counts: spikes.Counts) -> tirx.PrimFunc:
    """:func:`dense_events` on spike trains: per virtual step, each spiking x[k] adds w[:, k]."""
    spec_in, spec_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    x_t = sig.input("x", op.inputs[0])
    w_t, b_t, m_t, s_t = sig.linear_consts(op, output_minor=True)
    rq = requant_info(op.multiplier, op.shift)
    acc_dtype, rule = linear_rule(spec_in.dtype)
    m_out, k_in = op.weight.shape
    bits, wcode, out_dtype, signed = op.weight_bits, op.weight_code, spec_out.dtype, counts.signed
    steps, spike, doubling = _train(code, counts)
    unit = counts.unit
    sig.scratch("acc", m_out, acc_dtype)

    @T.prim_func(private=True)
    def func(x: T.Buffer(x_t.shape, x_t.dtype), weight: T.Buffer(w_t.shape, w_t.dtype), bias: T.Buffer(b_t.shape, "int32"),
             multiplier: T.Buffer(m_t.shape, "int32"), shift: T.Buffer(s_t.shape, "int32"),
             acc: T.Buffer((m_out,), acc_dtype), out: T.Buffer((m_out,), out_dtype)):
        for m in range(m_out):
            acc[m] = T.Cast(acc_dtype, 0)
        for t in range(steps):
            if doubling:
                for m in range(m_out):
                    acc[m] = acc[m] + acc[m]
            for k in range(k_in):
                if spike(_magnitude(x[k], signed), t):
                    for m in range(m_out):
                        acc[m] = acc[m] + T.Cast(acc_dtype, _signed_weight(
                            x[k], weight_value(weight, k * m_out + m, bits, wcode), signed))
        for m in range(m_out):
            out[m] = finish(acc[m] * T.Cast(acc_dtype, unit) + T.Cast(acc_dtype, bias[m]), rule, _channel(multiplier, m),
                            _channel(shift, m), spec_out.zero_point, op.clamp, out_dtype, rq=rq)

    return func


# ----------------------------------------------------------------------------------------------
# Entry point


DENSE_FORMS = {
    "conv2d": conv2d, "dense": dense, "reduce_sum": reduce_sum, "mul": mul, "requantize": requantize,
    "add": add, "sum_pool2d": sum_pool2d, "max_pool2d": max_pool2d, "transpose": transpose,
    "batch_matmul": batch_matmul,
}
EVENT_FORMS = {"conv2d": conv2d_events, "dense": dense_events}
TRAIN_FORMS = {"conv2d": conv2d_train, "dense": dense_train}


def spike_input(graph: g.Graph, op: g.Op) -> bool:
    """Whether the op's (first) input is a spike tensor: spike counts, or int8 with zero point 0
    (spikes widened by the exporter's headroom). Such inputs are mostly zero."""
    spec = graph.tensors[op.inputs[0]]
    return spec.spike_D is not None or (spec.dtype == "int8" and spec.zero_point == 0)


def train_input(graph: g.Graph, op: g.Op) -> spikes.Counts | None:
    """The spike counts a conv2d / dense reads, if it can read them as spike trains: int8 counts
    of a power-of-two unit (edgesnn.spikes.count_tensors); None otherwise."""
    if op.kind not in TRAIN_FORMS:
        return None
    counts = spikes.count_tensors(graph).get(op.inputs[0])
    if counts is None or graph.tensors[op.inputs[0]].dtype != "int8" or counts.unit & (counts.unit - 1):
        return None
    return counts


def train_layers(graph: g.Graph, event_driven: set[str], spike_code: str | None) -> dict[str, int]:
    """The layers :func:`kernel` gives a spike-train form, with the virtual steps each runs."""
    if not spike_code:
        return {}
    out = {}
    for op in graph.ops:
        counts = train_input(graph, op) if op.name in event_driven and spike_input(graph, op) else None
        if counts is not None:
            out[op.name] = spikes.num_steps(counts.D, spike_code)
    return out


def symbol(graph: g.Graph, op: g.Op) -> str:
    """A C identifier for the op's kernel: ``edgesnn_`` + its name with other characters as '_',
    suffixed with the op's index when two names sanitize alike."""
    def clean(o):
        return "edgesnn_" + re.sub(r"[^A-Za-z0-9_]", "_", o.name)

    name = clean(op)
    index = next(i for i, o in enumerate(graph.ops) if o is op)
    if any(clean(o) == name for o in graph.ops[:index]):
        name = f"{name}_{index}"
    return name


def kernel(graph: g.Graph, op: g.Op, event_driven: bool = False, spike_code: str | None = None,
           cpu: bool = False, helium: bool = False) -> Kernel | None:
    """The C kernel of ``op``; None for reshape of any rank (activations are flat row-major
    arrays, so a reshape is an alias of its input: no code, no copy).

    ``event_driven``: conv2d and dense with a spike input (:func:`spike_input`) take the form that
    skips zero inputs and accumulates in a scratch buffer (``Kernel.scratch_bytes``); other ops
    ignore it. ``spike_code`` (rate-burst, bit-plane): an event-driven layer reading spike counts
    (:func:`train_input`) runs them as spike trains of that code; None reads the integer counts.
    ``cpu``: an application CPU's project (host, linux-aarch64 boards): the dense form of a conv2d / dense
    that :mod:`.kernels_cpu` covers is its GEMM kernel.
    ``helium``: a Helium core's project: the event-driven form of a conv2d / dense that :mod:`.kernels_gather`
    covers is its gather-dot form.
    """
    if op.kind == "reshape":
        return None
    if op.kind not in DENSE_FORMS:
        raise EdgesnnError(f"mcu: op {op.name}: no C kernel for {op.kind} ops")
    sig = _Signature(graph)
    events = event_driven and op.kind in EVENT_FORMS and spike_input(graph, op)
    counts = train_input(graph, op) if events and spike_code else None
    gemm = None
    if cpu and not events:
        from edgesnn.backends.mcu.kernels_cpu import cpu_kernel
        gemm = cpu_kernel(sig, graph, op)
    if gemm is not None:
        func = gemm
    elif counts is not None:
        func = TRAIN_FORMS[op.kind](sig, graph, op, spikes.code_name(spike_code), counts)
    elif events and helium and kernels_gather.applies(graph, op):
        func = getattr(kernels_gather, op.kind)(sig, graph, op)
    else:
        func = (EVENT_FORMS if events else DENSE_FORMS)[op.kind](sig, graph, op)
    sig.output(op.output)
    params = [p.name for p in func.params]
    if params != [a.name for a in sig.args]:
        raise AssertionError(f"kernel {op.name}: parameters {params} do not match {[a.name for a in sig.args]}")
    return Kernel(symbol(graph, op), func, sig.args, sig.scratch_bytes)
