"""Lower the IR to TFLite builtin ops, one function per IR op, each checked to be bit-exact.

TFLite kernels do not read multipliers from the file: they derive them from the float32 scales of
the tensors (``QuantizeMultiplier`` of double(s_in) * double(s_w) / double(s_out)), and the IR
derived its own the same way (edgesnn.ir.fixedpoint). Every tensor here carries its IR scale, and
every lowering *re-derives the multiplier TFLite will compute and compares it with the IR's*:
a mismatch is refused with the op's name instead of written into a file that would disagree.

How each IR op becomes TFLite ops (batch 1 in front of the IR's per-sample shape, a vector as
[1, 1, 1, n], the IR's tensor names):

- conv2d -> CONV_2D, or DEPTHWISE_CONV_2D for one channel per group; padding is SAME when it is
  exactly TFLite's SAME, else an explicit PAD (int8 PAD pads with the zero point: the IR's real
  zero). int8 -> int8 uses the int8 kernels, int16 -> int16 the 16x8 kernels (int64 bias), whose
  arithmetic the IR adopts for int16 inputs.
- dense -> a 1x1 CONV_2D on the [1, 1, 1, n] vector: LiteRT's reference FULLY_CONNECTED rounds
  once (TFLite Micro's and every CONV_2D round twice, like the IR), measured on ai-edge-litert 2.3.
  An int8 -> int16 dense (no TFLite kernel rounds it as the IR) is an exact int32 program (:mod:`.int32`).
- lif, cuba_lif, li, recurrent (a temporal graph): int32 programs with the state as graph inputs and
  outputs, one invoke per timestep (:mod:`.state`).
- requantize -> QUANTIZE (int8/int16 -> int8/int16; TFLite's Requantize is the IR's arithmetic).
- add -> ADD (int8: left shift 20; int16: the general-scale kernel, pot_scale_int16 = false,
  left shift 15; int8 inputs of an int16 add are cast by an exact QUANTIZE), mul -> MUL,
  max_pool2d -> MAX_POOL_2D, reshape (any rank: row-major, as the IR's) -> RESHAPE.
- transpose -> TRANSPOSE, the batch axis kept first (perm 0, 1 + the IR's perm).
- batch_matmul -> BATCH_MATMUL (adj_y as the IR's): int8 accumulates in int32 with the int8
  requantization, int16 in int64 with the 16x16 kernel's reduced multiplier, the IR's two
  arithmetics. Its multiplier comes from the three tensors' scales; where the IR's does not (a
  factor folded in), the output, or else one operand, is relabeled by a RESHAPE at a float32 scale
  that gives exactly the IR's multiplier. The clamp follows as MAXIMUM / MINIMUM (no fused
  activation). TFLite takes ranks 2..5 with the batch axis: IR operands of rank 2..4.
- reduce_sum and sum_pool2d -> DEPTHWISE_CONV_2D with an all-ones kernel: the accumulation is
  the IR's exact int32 window sum and the per-channel multiplier the IR's (identity for a pool).
- An int32 sum_pool2d (an int16 stream's window sums) has no TFLite kernel, and nothing quantized
  reads int32 but QUANTIZE. A conv2d / dense reading it is *folded*: one 16x8 convolution of the
  summed values with its kernel spread over the pool's windows (the same integer accumulator; the
  IR gives such readers the 16x8 arithmetic, ir/fixedpoint.py); refused when the reader pads or
  overlapping windows sum its weights beyond int8. For a requantize the sum is written as a tensor:
  QUANTIZE into int32 (multiplier 1), STRIDED_SLICEs of the window's offsets added by int32 ADDs on
  tensors without quantization (plain integers in LiteRT and TFLite Micro), W first, then H.
- A clamp narrower than what the op can produce (an SFA neuron's [0, D], ternary [-1, 1]) is the
  fused RELU when it starts at the real zero, and otherwise MAXIMUM / MINIMUM with a constant.
- A factor the exporter folded into an add's or requantize's input scale (``input_scale(s)``)
  becomes a RESHAPE to the same shape: it copies the integers under the scale the IR used.

No float op and no float tensor appear anywhere. Operator versions are TFLite's versioning rules'
(:mod:`.op_versions`), set when the file is written.
"""

from __future__ import annotations

import numpy as np

from edgesnn.backends.tflite import flatbuffer as fb
from edgesnn.backends.tflite.int32 import Int32Program
from edgesnn.backends.tflite.state import StateLowering
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import (INT32_MAX, INT32_MIN, add_multipliers, effective_multiplier, linear_requantizer,
                                   multiply_by_quantized_multiplier, quantize_multipliers)
from edgesnn.ir.packing import widen
from edgesnn.ir.state import OP_TYPES as STATEFUL_OPS

FUSED = {"NONE": 0, "RELU": 1}
MAX_RANK = 5  # TRANSPOSE and BATCH_MATMUL, batch axis included: TFLite Micro's and LiteRT's common limit


def lower(graph: g.Graph) -> fb.Model:
    return _Lowering(graph).run()


class _Lowering:
    def __init__(self, graph: g.Graph):
        self.g = graph
        self.tensors = dict(graph.tensors)  # the IR's tensors and the casts the lowering adds
        self.model = fb.Model(description=f"edgesnn IR v{g.IR_VERSION} -> TFLite (integer only)")
        self.index: dict[str, int] = {}
        self.bounds: dict[str, tuple[int, int]] = {}  # what each IR tensor's integers can be
        self.queued: list[fb.Operator] = []  # clamps waiting for the op they follow
        self.relabeled: dict[tuple[str, float], int] = {}
        self.sum_of: dict[str, g.SumPool2D] = {}  # an int32 window sum (or a reshape of it) -> its sum_pool2d
        self.pending: dict[str, g.Op] = {}  # those not written yet: a requantize reading one writes it

    def run(self) -> fb.Model:
        inp = self.g.input
        self.model.inputs = [self.activation(inp)]
        self.bounds[inp] = g.dtype_range(self.g.tensors[inp].dtype)
        self.state = StateLowering(self) if self.g.stateful else None  # state as inputs and outputs (state.py)
        if self.state is not None:
            self.model.inputs += list(self.state.inputs.values())
        for op in self.g.ops:
            lowering = getattr(self, f"op_{op.kind}", None)
            if lowering is None:
                raise _unsupported(op, "has no TFLite lowering")
            self.check_int32(op)
            first = len(self.model.operators)
            lowering(op)
            for written in self.model.operators[first:]:
                written.source = f"IR op '{op.name}' ({op.kind})"
        self.model.outputs = [self.graph_output(name) for name in self.g.outputs]
        if self.state is not None:
            self.model.outputs += self.state.outputs()
        return self.model

    # -- tensors ------------------------------------------------------------------------------

    def spec(self, name: str) -> g.TensorSpec:
        return self.tensors[name]

    def activation(self, name: str) -> int:
        """An activation inside the model is the IR shape with the batch axis (1) in front; a vector
        ([n]) is [1, 1, 1, n], the NHWC input of the 1x1 convolution a dense layer becomes."""
        if name in self.pending:
            self.write_pending(name)
        if name not in self.index:
            s = self.spec(name)
            internal = name if self.shape_of(name) == [1, *s.shape] or name not in self.g.outputs else f"{name}.nhwc"
            self.index[name] = self.model.add_tensor(fb.Tensor(internal, self.shape_of(name), s.dtype, [float(s.scale)],
                                                               [s.zero_point]))
        return self.index[name]

    def shape_of(self, name: str) -> list[int]:
        shape = self.spec(name).shape
        return [1, 1, 1, *shape] if len(shape) == 1 else [1, *shape]

    def graph_output(self, name: str) -> int:
        """A vector output leaves the model as [1, n] (class scores), through one RESHAPE."""
        s = self.spec(name)
        if self.shape_of(name) == [1, *s.shape]:
            return self.activation(name)
        out = self.model.add_tensor(fb.Tensor(name, [1, *s.shape], s.dtype, [float(s.scale)], [s.zero_point]))
        self.emit("RESHAPE", [self.activation(name), self.shape_const(f"{name}.output", [1, *s.shape])], [out],
                  "ReshapeOptions", NewShape=[1, *s.shape])
        return out

    def temp(self, name: str, shape, like: g.TensorSpec, dtype: str | None = None) -> int:
        """An intermediate tensor with the quantization of ``like`` (bit-exact copies and clamps)."""
        return self.model.add_tensor(fb.Tensor(name, list(shape), dtype or like.dtype, [float(like.scale)], [like.zero_point]))

    def const(self, name: str, data: np.ndarray, scale=None, zero_point=None, dim: int = 0) -> int:
        dtype = str(data.dtype)
        scale = None if scale is None else [float(v) for v in np.atleast_1d(scale)]
        if scale is not None and zero_point is None:
            zero_point = [0] * len(scale)
        return self.model.add_tensor(fb.Tensor(name, list(data.shape), dtype, scale,
                                               None if zero_point is None else list(zero_point), dim, data))

    def emit(self, opcode: str, inputs, outputs, options: str | None = None, last: bool = True, **fields) -> None:
        self.model.add_operator(fb.Operator(opcode, list(inputs), list(outputs), options, fields))
        if last:
            for queued in self.queued:
                self.model.add_operator(queued)
            self.queued = []

    # -- clamps -------------------------------------------------------------------------------

    def finish(self, op: g.Op, produced: tuple[int, int], fusable: bool) -> tuple[int, str]:
        """(tensor the op itself writes, fused activation); the clamp ops that follow it are queued
        and written by :meth:`emit` right after the op's last operator (``last=True``).

        ``produced`` bounds what the op writes before clamping; clamps it cannot exceed are dropped.
        """
        out = self.spec(op.output)
        lo, hi = getattr(op, "clamp", g.dtype_range(out.dtype))
        self.bounds[op.output] = (max(lo, produced[0]), min(hi, produced[1]))
        need_lo, need_hi = lo > produced[0], hi < produced[1]
        fused = "NONE"
        if need_lo and fusable and lo == out.zero_point:
            fused, need_lo = "RELU", False
        target = self.activation(op.output)
        steps = [("MAXIMUM", lo)] * need_lo + [("MINIMUM", hi)] * need_hi
        if not steps:
            return target, fused
        first = self.temp(f"{op.output}.unclamped", self.shape_of(op.output), out)
        src = first
        for i, (opcode, bound) in enumerate(steps):
            dst = target if i == len(steps) - 1 else self.temp(f"{op.output}.{opcode.lower()}", self.shape_of(op.output), out)
            c = self.const(f"{op.output}.{opcode.lower()}.bound", np.array([bound], fb.NUMPY_TYPES[out.dtype]),
                           out.scale, [out.zero_point])
            self.queued.append(fb.Operator(opcode, [src, c], [dst]))
            src = dst
        return first, fused

    # -- ops ----------------------------------------------------------------------------------

    def op_conv2d(self, op: g.Conv2D) -> None:
        if self.spec(op.inputs[0]).dtype == "int32":
            return self.fold(op)
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        self.check_linear_types(op)
        self.check_multiplier(op, effective_multiplier(spec_in.scale, op.weight_scale, out.scale))
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int8)  # OHWI
        o, kh, kw, cg = w.shape
        depthwise = op.groups > 1 and cg == 1 and op.groups == spec_in.shape[-1]
        _require(op.groups == 1 or depthwise, op, f"is a grouped convolution with {cg} channels per group; TFLite "
                 "has only ordinary and depthwise convolutions")
        padding, src = self.padding(op, (kh, kw))
        acc = self.bias(op, spec_in)
        res, fused = self.finish(op, g.dtype_range(out.dtype), fusable=True)
        sh, sw = op.stride
        if depthwise:
            weight = self.const(f"{op.name}.weight", w.transpose(3, 1, 2, 0), op.weight_scale, dim=3)  # 1HWO
            self.emit_linear(op, "DEPTHWISE_CONV_2D", [src, weight, acc], res, "DepthwiseConv2DOptions", Padding=padding,
                             StrideW=sw, StrideH=sh, DepthMultiplier=o // op.groups,
                             FusedActivationFunction=FUSED[fused], DilationWFactor=1, DilationHFactor=1)
        else:
            weight = self.const(f"{op.name}.weight", w, op.weight_scale, dim=0)
            self.emit_linear(op, "CONV_2D", [src, weight, acc], res, "Conv2DOptions", Padding=padding, StrideW=sw,
                             StrideH=sh, FusedActivationFunction=FUSED[fused], DilationWFactor=1, DilationHFactor=1)

    def op_dense(self, op: g.Dense) -> None:
        """A 1x1 CONV_2D on the [1, 1, 1, n] vector: LiteRT's FULLY_CONNECTED rounds once, not like the IR."""
        if self.spec(op.inputs[0]).dtype == "int32":
            return self.fold(op)
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        if (spec_in.dtype, out.dtype) == ("int8", "int16"):  # no TFLite kernel rounds it as the IR: int32.py
            return Int32Program(self).dense(op)
        self.check_linear_types(op)
        self.check_multiplier(op, effective_multiplier(spec_in.scale, op.weight_scale, out.scale))
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int8)
        res, fused = self.finish(op, g.dtype_range(out.dtype), fusable=True)
        weight = self.const(f"{op.name}.weight", w.reshape(*w.shape, 1, 1).transpose(0, 2, 3, 1), op.weight_scale, dim=0)
        self.emit_linear(op, "CONV_2D", [self.activation(op.inputs[0]), weight, self.bias(op, spec_in)], res,
                         "Conv2DOptions", Padding=tflite_padding("VALID"), StrideW=1, StrideH=1,
                         FusedActivationFunction=FUSED[fused], DilationWFactor=1, DilationHFactor=1)

    def op_requantize(self, op: g.Requantize) -> None:
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        scale = spec_in.scale if op.input_scale is None else op.input_scale
        self.check_multiplier(op, effective_multiplier(scale, 1.0, out.scale))
        lo, hi = self.bounds[op.inputs[0]]
        ends = multiply_by_quantized_multiplier(np.array([lo, hi]) - spec_in.zero_point, op.multiplier[0], op.shift[0])
        produced = tuple(int(v) for v in np.clip(ends + out.zero_point, *g.dtype_range(out.dtype)))
        src = self.relabel(op.inputs[0], scale)
        res, _ = self.finish(op, produced, fusable=False)
        self.emit("QUANTIZE", [src], [res])

    def op_add(self, op: g.Add) -> None:
        (a, b), out = [self.spec(n) for n in op.inputs], self.spec(op.output)
        dtype = "int16" if "int16" in (a.dtype, b.dtype, out.dtype) else "int8"
        _require(out.dtype == dtype, op, f"adds {a.dtype} and {b.dtype} into {out.dtype}; TFLite's ADD keeps one type")
        want = 20 if dtype == "int8" else 15
        _require(op.left_shift == want, op, f"uses left shift {op.left_shift}; TFLite's {dtype} ADD uses {want}")
        _require(dtype == "int8" or out.zero_point == 0, op, "is an int16 add with a zero point; TFLite's int16 "
                 "tensors are symmetric")
        scales = op.input_scales or [a.scale, b.scale]
        self.check_multiplier(op, None, add_multipliers(*scales, out.scale, op.left_shift))
        inputs = [self.relabel(self.cast(name, dtype), scale) for name, scale in zip(op.inputs, scales)]
        res, fused = self.finish(op, g.dtype_range(out.dtype), fusable=True)
        self.emit("ADD", inputs, [res], "AddOptions",
                  FusedActivationFunction=FUSED[fused], PotScaleInt16=False)

    def op_lif(self, op) -> None:
        self.state.lif(op)

    def op_cuba_lif(self, op) -> None:
        self.state.cuba_lif(op)

    def op_li(self, op) -> None:
        self.state.li(op)

    def op_recurrent(self, op) -> None:
        self.state.recurrent(op)

    def op_mul(self, op: g.Mul) -> None:
        (a, b), out = [self.spec(n) for n in op.inputs], self.spec(op.output)
        _require(a.dtype == b.dtype == out.dtype == "int8", op, "is not an int8 product; only TFLite's int8 MUL rounds like the IR")
        self.check_multiplier(op, effective_multiplier(a.scale, b.scale, out.scale))
        res, fused = self.finish(op, g.dtype_range(out.dtype), fusable=True)
        self.emit("MUL", [self.activation(n) for n in op.inputs], [res], "MulOptions", FusedActivationFunction=FUSED[fused])

    def op_reduce_sum(self, op: g.ReduceSum) -> None:
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        self.check_multiplier(op, effective_multiplier(spec_in.scale, op.scale, out.scale))
        h, w, c = spec_in.shape
        _require(spec_in.dtype == "int8" or spec_in.zero_point == 0, op,
                 "sums an int16 tensor with a zero point; TFLite's int16 activations are symmetric")
        self.window_sum(op, op.inputs[0], (h, w), (1, 1), np.full(c, op.scale, np.float32), g.dtype_range(out.dtype))

    def op_sum_pool2d(self, op: g.SumPool2D) -> None:
        """A window sum that outgrows int8 runs in the 16x8 kernel on an int16 cast: with the
        identity multiplier its single rounding is exact too. One that outgrows int16 is int32:
        folded into its readers or written when one needs it (:meth:`defer_window_sum`)."""
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        if out.dtype == "int32":
            return self.defer_window_sum(op)
        c = spec_in.shape[-1]
        unit = _identity_weight_scale(spec_in.scale, out.scale)
        _require(unit is not None, op, "has input and output scales no float32 weight scale maps to an exact sum")
        lo, hi = self.bounds[op.inputs[0]]
        n = op.kernel[0] * op.kernel[1]
        produced = ((lo - spec_in.zero_point) * n + out.zero_point, (hi - spec_in.zero_point) * n + out.zero_point)
        src = self.cast(op.inputs[0], out.dtype) if out.dtype == "int16" else op.inputs[0]
        self.window_sum(op, src, op.kernel, op.stride, np.full(c, unit, np.float32), produced)

    def window_sum(self, op: g.Op, src: str, kernel, stride, weight_scale: np.ndarray, produced) -> None:
        """Exact window sums as a depthwise convolution with an all-ones kernel."""
        spec_in, out = self.spec(src), self.spec(op.output)
        _require(spec_in.dtype == out.dtype or (spec_in.dtype, out.dtype) == ("int16", "int8"), op,
                 f"sums {spec_in.dtype} into {out.dtype}; TFLite's depthwise kernels keep the activation type")
        c = spec_in.shape[-1]
        ones = self.const(f"{op.name}.ones", np.ones((1, *kernel, c), np.int8), weight_scale, dim=3)
        zeros = self.const(f"{op.name}.bias", np.zeros(c, np.int64 if spec_in.dtype == "int16" else np.int32),
                           np.float32(spec_in.scale) * weight_scale)
        lo, hi = g.dtype_range(out.dtype)
        res, fused = self.finish(op, (max(lo, int(produced[0])), min(hi, int(produced[1]))), fusable=True)
        fields = dict(Padding=tflite_padding("VALID"), StrideW=stride[1], StrideH=stride[0], DepthMultiplier=1,
                      FusedActivationFunction=FUSED[fused], DilationWFactor=1, DilationHFactor=1)
        if spec_in.dtype == out.dtype:
            self.emit("DEPTHWISE_CONV_2D", [self.activation(src), ones, zeros], [res], "DepthwiseConv2DOptions", **fields)
        else:  # int16 -> int8 (a mean of an int16 stream into a neuron): as emit_linear, the 16x8 kernel then a QUANTIZE
            self.emit_linear(op, "DEPTHWISE_CONV_2D", [self.activation(src), ones, zeros], res, "DepthwiseConv2DOptions",
                             **fields)

    def op_max_pool2d(self, op: g.MaxPool2D) -> None:
        self.bounds[op.output] = self.bounds[op.inputs[0]]
        (kh, kw), (sh, sw) = op.kernel, op.stride
        self.emit("MAX_POOL_2D", [self.activation(op.inputs[0])], [self.activation(op.output)], "Pool2DOptions",
                  Padding=tflite_padding("VALID"), StrideW=sw, StrideH=sh, FilterWidth=kw, FilterHeight=kh,
                  FusedActivationFunction=0)

    def op_reshape(self, op: g.Reshape) -> None:
        self.bounds[op.output] = self.bounds[op.inputs[0]]
        if op.inputs[0] in self.sum_of:  # a reshaped window sum: still foldable, written only if read as it is
            self.sum_of[op.output] = self.sum_of[op.inputs[0]]
            self.pending[op.output] = op
            return
        shape = self.shape_of(op.output)
        self.emit("RESHAPE", [self.activation(op.inputs[0]), self.shape_const(op.name, shape)],
                  [self.activation(op.output)], "ReshapeOptions", NewShape=shape)

    def op_transpose(self, op: g.Transpose) -> None:
        spec_in = self.spec(op.inputs[0])
        shape = self.shape_of(op.inputs[0])
        _require(len(shape) <= MAX_RANK, op, f"permutes a tensor of rank {len(spec_in.shape)}; TFLite's TRANSPOSE takes "
                 f"at most {MAX_RANK - 1} axes besides the batch axis (TFLite Micro's limit)")
        lead = len(shape) - len(spec_in.shape)  # the batch axis (and a vector's two unit axes) stay in front
        perm = np.array([*range(lead), *(lead + p for p in op.perm)], np.int32)
        self.bounds[op.output] = self.bounds[op.inputs[0]]
        self.emit("TRANSPOSE", [self.activation(op.inputs[0]), self.const(f"{op.name}.perm", perm)],
                  [self.activation(op.output)], "TransposeOptions")

    def op_batch_matmul(self, op: g.BatchMatMul) -> None:
        (a, b), out = [self.spec(n) for n in op.inputs], self.spec(op.output)
        _require(a.dtype == b.dtype == out.dtype and a.dtype in ("int8", "int16"), op,
                 f"multiplies {a.dtype} by {b.dtype} into {out.dtype}; TFLite's BATCH_MATMUL keeps one type, int8 or int16")
        _require(a.zero_point == b.zero_point == 0, op, "has an operand with a zero point; the IR's product has none")
        _require(a.dtype == "int8" or out.zero_point == 0, op, "is an int16 product with an output zero point; "
                 "TFLite's int16 BATCH_MATMUL is symmetric")
        rank = len(a.shape) + 1
        _require(2 <= len(a.shape) and rank <= MAX_RANK, op, f"multiplies tensors of rank {len(a.shape)}; TFLite's "
                 f"BATCH_MATMUL takes at most {MAX_RANK - 1} axes besides the batch axis")
        _require(np.size(op.multiplier) == 1, op, "has per-channel multipliers; TFLite's BATCH_MATMUL has one")
        want = (int(np.ravel(op.multiplier)[0]), int(np.ravel(op.shift)[0]))
        scales = _matmul_scales(a.scale, b.scale, out.scale, want)
        _require(scales is not None, op, f"has a requantization multiplier ({want[0]}, shift {want[1]}) that no float32 "
                 "relabeling of its output or one operand makes TFLite derive from the tensors' scales")
        sa, sb, so = scales
        inputs = [self.relabel(op.inputs[0], sa), self.relabel(op.inputs[1], sb)]
        res, _ = self.finish(op, self.product_range(op, a.dtype), fusable=False)
        if np.float32(so) != np.float32(out.scale):  # the product written at so, then copied to the output's scale
            shape = self.shape_of(op.output)
            at = self.model.add_tensor(fb.Tensor(f"{op.output}.at_{np.float32(so):.6g}", shape, out.dtype,
                                                 [float(np.float32(so))], [out.zero_point]))
            self.emit("BATCH_MATMUL", inputs, [at], "BatchMatMulOptions", last=False, AdjX=False, AdjY=bool(op.adj_y))
            self.emit("RESHAPE", [at, self.shape_const(f"{op.output}.relabel", shape)], [res], "ReshapeOptions",
                      NewShape=shape)
        else:
            self.emit("BATCH_MATMUL", inputs, [res], "BatchMatMulOptions", AdjX=False, AdjY=bool(op.adj_y))

    def product_range(self, op: g.BatchMatMul, dtype: str) -> tuple[int, int]:
        """What the requantized product can be, from its operands' bounds (the clamp it needs after).

        TFLite's int16 kernel casts the requantized int64 sum to int32 before it clamps, where the IR
        saturates: a product that can leave int32 there is refused."""
        (alo, ahi), (blo, bhi) = self.bounds[op.inputs[0]], self.bounds[op.inputs[1]]
        depth = self.spec(op.inputs[0]).shape[-1]
        corners = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        acc = np.array([depth * min(corners), depth * max(corners)], np.int64)
        lo, hi = g.dtype_range(self.spec(op.output).dtype)
        try:
            ends = linear_requantizer(dtype)(acc, op.multiplier[0], op.shift[0])
        except OverflowError:  # the IR refuses such sums when it runs: no result to differ from
            return lo, hi
        worst = int(ends[0] if ends[0] < INT32_MIN else ends[1])
        _require(INT32_MIN <= ends[0] and ends[1] <= INT32_MAX, op, f"can requantize its product to {worst:,} "
                 f"(operands in [{alo}, {ahi}] and [{blo}, {bhi}], {depth} terms), beyond int32, where TFLite's int16 "
                 "BATCH_MATMUL wraps and the IR saturates")
        ends = ends + self.spec(op.output).zero_point
        return int(np.clip(ends[0], lo, hi)), int(np.clip(ends[1], lo, hi))

    # -- int32 window sums --------------------------------------------------------------------

    def check_int32(self, op: g.Op) -> None:
        """int32 is a window sum (sum_pool2d) and its reshapes, read by requantize, conv2d or dense."""
        if op.kind in STATEFUL_OPS:  # plain int32 arithmetic of its own (state.py)
            return
        wide = [n for n in op.inputs if self.spec(n).dtype == "int32"]
        if wide and op.kind not in ("requantize", "reshape", "conv2d", "dense"):
            raise _unsupported(op, f"reads the int32 window sum '{wide[0]}'; TFLite's {op.kind} kernels take int8 or "
                               "int16 (a requantize, conv2d or dense reads one)")
        if self.spec(op.output).dtype == "int32" and op.kind != "sum_pool2d" and not (op.kind == "reshape" and wide):
            raise _unsupported(op, "writes an int32 tensor; TFLite's quantized kernels write int8 or int16 "
                               "(only a window sum is int32)")

    def defer_window_sum(self, op: g.SumPool2D) -> None:
        """Nothing is written yet: a conv2d / dense reader folds the sum (:meth:`fold`), a requantize
        reader writes it (:meth:`write_pending`), once."""
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        _require(spec_in.dtype in ("int8", "int16") and out.zero_point == 0, op,
                 f"sums {spec_in.dtype} into int32 with zero point {out.zero_point}; an int32 window sum takes int8 or "
                 "int16 values and has zero point 0")
        _require(spec_in.dtype == "int8" or spec_in.zero_point == 0, op,
                 "sums an int16 tensor with a zero point; TFLite's int16 activations are symmetric")
        lo, hi = self.bounds[op.inputs[0]]
        n = op.kernel[0] * op.kernel[1]
        produced = ((lo - spec_in.zero_point) * n, (hi - spec_in.zero_point) * n)
        _require(INT32_MIN <= produced[0] and produced[1] <= INT32_MAX, op, f"can sum to {produced}, beyond int32")
        self.bounds[op.output] = produced
        self.sum_of[op.output] = op
        self.pending[op.output] = op

    def write_pending(self, name: str) -> None:
        """Write a deferred window sum (or its reshape) as an int32 tensor (see the module's docstring)."""
        op = self.pending.pop(name)
        if op.kind == "reshape":
            shape = self.shape_of(name)
            self.emit("RESHAPE", [self.activation(op.inputs[0]), self.shape_const(op.name, shape)], [self.activation(name)],
                      "ReshapeOptions", last=False, NewShape=shape)
            return
        src = self.cast(op.inputs[0], "int16")  # an int8 input: exact, zero point removed
        spec = self.spec(src)
        shape = self.shape_of(src)
        wide = self.model.add_tensor(fb.Tensor(f"{op.name}.int32", shape, "int32", [float(spec.scale)], [0]))
        self.emit("QUANTIZE", [self.activation(src)], [wide], last=False)
        plain = self.model.add_tensor(fb.Tensor(f"{op.name}.int32.plain", shape, "int32"))  # no quantization: plain ADD
        self.emit("RESHAPE", [wide, self.shape_const(f"{op.name}.plain", shape)], [plain], "ReshapeOptions", last=False,
                  NewShape=shape)
        ho, wo, _ = self.spec(op.output).shape
        total, shape = self.strided_sum(op, plain, shape, 2, op.kernel[1], op.stride[1], wo)
        total, shape = self.strided_sum(op, total, shape, 1, op.kernel[0], op.stride[0], ho)
        self.emit("RESHAPE", [total, self.shape_const(f"{op.name}.sum", shape)], [self.activation(op.output)],
                  "ReshapeOptions", last=False, NewShape=shape)

    def strided_sum(self, op: g.SumPool2D, x: int, shape: list[int], axis: int, k: int, stride: int, n: int):
        """(tensor, shape): sum over i < k of x[.., i + stride * j, ..] for j < n along ``axis``."""
        if k == 1 and stride == 1 and shape[axis] == n:
            return x, shape
        out = list(shape)
        out[axis] = n
        total = None
        for i in range(k):
            begin, end, step = [0] * len(shape), list(shape), [1] * len(shape)
            begin[axis], end[axis], step[axis] = i, i + stride * (n - 1) + 1, stride
            part = self.model.add_tensor(fb.Tensor(f"{op.name}.axis{axis}.{i}", out, "int32"))
            self.emit("STRIDED_SLICE", [x, *(self.const(f"{op.name}.axis{axis}.{i}.{what}", np.array(v, np.int32))
                                             for what, v in (("begin", begin), ("end", end), ("strides", step)))],
                      [part], "StridedSliceOptions", last=False)
            if total is not None:
                added = self.model.add_tensor(fb.Tensor(f"{op.name}.axis{axis}.sum{i}", out, "int32"))
                self.emit("ADD", [total, part], [added], "AddOptions", last=False, FusedActivationFunction=FUSED["NONE"])
                part = added
            total = part
        return total, out

    def fold(self, op) -> None:
        """A conv2d / dense reading an int32 window sum S of x: sum_k w_k S_k = sum_k w_k sum_window x, so it
        is one convolution of x whose kernel is w spread over each window (stride: the pool's times the
        reader's), in TFLite's 16x8 kernel on x as int16, at S's scale (a relabeling RESHAPE)."""
        name = op.inputs[0]
        spec_in, out = self.spec(name), self.spec(op.output)
        _require(name in self.sum_of, op, f"reads the int32 tensor '{name}', which is no window sum")
        pool = self.sum_of[name]
        ho, wo, c = self.spec(pool.output).shape
        w = widen(op.weight, op.weight_bits, op.weight_code).astype(np.int64)
        stride, groups = [1, 1], 1
        if op.kind == "dense":
            _require(spec_in.shape in ([ho * wo * c], [ho, wo, c]), op, f"reads the int32 window sum '{name}' as "
                     f"{spec_in.shape}; it folds into one TFLite convolution as {[ho, wo, c]} or flattened")
            w = w.reshape(len(w), *((ho, wo) if len(spec_in.shape) == 1 else (1, 1)), c)
        else:
            _require(spec_in.shape == [ho, wo, c], op, f"reads the int32 window sum '{name}' reshaped to {spec_in.shape}")
            _require(not any(op.padding), op, f"reads the int32 window sum '{name}' with padding {list(op.padding)}, "
                     "which does not fold into one TFLite convolution of the summed values")
            stride, groups = list(op.stride), op.groups
        self.check_multiplier(op, effective_multiplier(spec_in.scale, op.weight_scale, out.scale))
        _require(out.dtype in ("int8", "int16") and (out.dtype == "int8" or out.zero_point == 0), op,
                 f"writes {out.dtype} (zero point {out.zero_point}); TFLite's 16x8 convolutions write symmetric int16")
        o, kh, kw, cg = w.shape
        (ph, pw), (qh, qw) = pool.kernel, pool.stride
        folded = np.zeros((o, (kh - 1) * qh + ph, (kw - 1) * qw + pw, cg), np.int64)
        for i in range(kh):
            for j in range(kw):
                for u in range(ph):
                    for v in range(pw):
                        folded[:, i * qh + u, j * qw + v] += w[:, i, j]
        _require(folded.min(initial=0) >= -128 and folded.max(initial=0) <= 127, op, f"reads the int32 window sum "
                 f"'{name}', whose overlapping windows add its weights up to {int(np.abs(folded).max())}, beyond int8")
        depthwise = groups > 1 and cg == 1 and groups == c
        _require(groups == 1 or depthwise, op, "is a grouped convolution; TFLite has only ordinary and depthwise ones")
        src = self.relabel(self.cast(pool.inputs[0], "int16"), spec_in.scale)
        h, wd, _ = self.spec(pool.inputs[0]).shape
        sh, sw = stride[0] * qh, stride[1] * qw
        _require([(h - folded.shape[1]) // sh + 1, (wd - folded.shape[2]) // sw + 1] == self.shape_of(op.output)[1:3],
                 op, f"reads the int32 window sum '{name}' in a way one TFLite convolution does not reproduce")
        bias = self.const(f"{op.name}.bias", np.asarray(op.bias, np.int64),
                          np.float32(spec_in.scale) * np.asarray(op.weight_scale, np.float32))
        res, fused = self.finish(op, g.dtype_range(out.dtype), fusable=True)
        fields = dict(Padding=tflite_padding("VALID"), StrideW=sw, StrideH=sh, FusedActivationFunction=FUSED[fused],
                      DilationWFactor=1, DilationHFactor=1)
        if depthwise:
            weight = self.const(f"{op.name}.weight", folded.astype(np.int8).transpose(3, 1, 2, 0), op.weight_scale, dim=3)
            self.emit_linear(op, "DEPTHWISE_CONV_2D", [src, weight, bias], res, "DepthwiseConv2DOptions",
                             DepthMultiplier=o // groups, **fields)
        else:
            weight = self.const(f"{op.name}.weight", folded.astype(np.int8), op.weight_scale, dim=0)
            self.emit_linear(op, "CONV_2D", [src, weight, bias], res, "Conv2DOptions", **fields)

    # -- pieces -------------------------------------------------------------------------------

    def check_multiplier(self, op: g.Op, real, pairs=None) -> None:
        mult, shift = pairs if pairs is not None else quantize_multipliers(real)
        ok = (np.array_equal(np.broadcast_to(mult, np.shape(op.multiplier)), op.multiplier)
              and np.array_equal(np.broadcast_to(shift, np.shape(op.shift)), op.shift))
        if op.kind in ("requantize", "mul") and np.size(op.multiplier) != 1:
            ok = ok and len(set(np.asarray(op.multiplier).tolist())) == 1 and len(set(np.asarray(op.shift).tolist())) == 1
        _require(ok, op, "has a requantization multiplier TFLite would not derive from the tensors' float32 scales")

    def check_linear_types(self, op) -> None:
        """int8 -> int8 (TFLite's int8 kernels) or int16 -> int16 / int8 (its 16x8 kernels, see :meth:`emit_linear`):
        the IR's two conv arithmetics."""
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        _require(spec_in.dtype == out.dtype or (spec_in.dtype, out.dtype) == ("int16", "int8"), op,
                 f"maps {spec_in.dtype} to {out.dtype}; TFLite's convolutions keep the activation type (int8 -> int8, "
                 "or int16 -> int16 with 8-bit weights)")
        _require(spec_in.dtype == "int8" or spec_in.zero_point == 0, op,
                 "is an int16 convolution with a zero point; TFLite's int16 activations are symmetric")
        _require(out.dtype == "int8" or out.zero_point == 0, op,
                 "writes int16 with a zero point; TFLite's int16 activations are symmetric")

    def emit_linear(self, op, opcode: str, inputs, res: int, options: str, **fields) -> None:
        """The convolution writing ``res``. An int16 -> int8 one (the 16x8 kernels write int16) writes an
        int16 tensor at the output's scale, zero point 0, and an exact QUANTIZE (multiplier 1) narrows it:
        clamping to int16, then adding the zero point and clamping to int8, is the IR's single clamp; a
        fused RELU at 0 there is the IR's clamp at the output's zero point."""
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        if _kernel_input(spec_in.dtype) == out.dtype:
            self.emit(opcode, inputs, [res], options, **fields)
            return
        wide = self.temp(f"{op.output}.int16", self.shape_of(op.output), g.TensorSpec(out.shape, "int16", out.scale, 0))
        self.emit(opcode, inputs, [wide], options, last=False, **fields)
        self.emit("QUANTIZE", [wide], [res])

    def bias(self, op, spec_in: g.TensorSpec) -> int:
        """int32 for int8 activations, int64 for the 16x8 kernels."""
        scale = np.float32(spec_in.scale) * np.asarray(op.weight_scale, np.float32)
        dtype = np.int64 if _kernel_input(spec_in.dtype) == "int16" else np.int32
        return self.const(f"{op.name}.bias", np.asarray(op.bias, dtype), scale)

    def cast(self, name: str, dtype: str) -> str:
        """``name`` as ``dtype`` at the same scale (zero point 0 for int16): an exact QUANTIZE (multiplier 1)."""
        spec = self.spec(name)
        if spec.dtype == dtype:
            return name
        cast = f"{name}.{dtype}"
        if cast not in self.tensors:
            self.tensors[cast] = g.TensorSpec(list(spec.shape), dtype, spec.scale, 0)
            self.bounds[cast] = tuple(b - spec.zero_point for b in self.bounds[name])
            self.emit("QUANTIZE", [self.activation(name)], [self.activation(cast)], last=False)
        return cast

    def relabel(self, name: str, scale: float) -> int:
        """The tensor ``name`` read at ``scale``: itself, or a RESHAPE to the same shape that only relabels
        the quantization (TFLite's RESHAPE copies the integers): where the IR folded a factor into a scale."""
        spec = self.spec(name)
        if np.float32(scale) == np.float32(spec.scale):
            return self.activation(name)
        key = (name, float(np.float32(scale)))
        if key not in self.relabeled:
            shape = self.shape_of(name)
            out = self.model.add_tensor(fb.Tensor(f"{name}.at_{np.float32(scale):.6g}", shape, spec.dtype,
                                                  [float(np.float32(scale))], [spec.zero_point]))
            self.emit("RESHAPE", [self.activation(name), self.shape_const(f"{name}.relabel", shape)], [out],
                      "ReshapeOptions", last=False, NewShape=shape)
            self.relabeled[key] = out
        return self.relabeled[key]

    def shape_const(self, name: str, shape) -> int:
        return self.const(f"{name}.shape", np.array(shape, np.int32))

    def padding(self, op: g.Conv2D, kernel) -> tuple[int, int]:
        """(TFLite padding enum, input tensor): SAME when it is exactly TFLite's SAME, else PAD + VALID."""
        spec_in = self.spec(op.inputs[0])
        src = self.activation(op.inputs[0])
        if not any(op.padding):
            return tflite_padding("VALID"), src
        if list(op.padding) == same_padding(spec_in.shape[:2], kernel, op.stride):
            return tflite_padding("SAME"), src
        return tflite_padding("VALID"), self.pad_tensor(op, src, spec_in, op.padding)

    def pad_tensor(self, op, src: int, spec_in: g.TensorSpec, padding) -> int:
        t, b, l, r = padding
        h, w, c = spec_in.shape
        dst = self.temp(f"{op.name}.padded", [1, h + t + b, w + l + r, c], spec_in)
        pads = self.const(f"{op.name}.paddings", np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32))
        self.emit("PAD", [src, pads], [dst], "PadOptions")
        return dst


def same_padding(size, kernel, stride) -> list[int]:
    """TFLite's SAME padding [top, bottom, left, right]: output ceil(n / s), the odd pixel at the end."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def tflite_padding(name: str) -> int:
    import tflite

    return getattr(tflite.Padding, name)


def _identity_weight_scale(s_in: float, s_out: float) -> np.float32 | None:
    """A float32 weight scale w with QuantizeMultiplier(s_in * w / s_out) == the exact identity (2**30, 1)."""
    w = np.float32(np.float64(np.float32(s_out)) / np.float64(np.float32(s_in)))
    for candidate in (w, np.nextafter(w, np.float32(0)), np.nextafter(w, np.float32(np.inf))):
        mult, shift = quantize_multipliers(effective_multiplier(s_in, candidate, s_out))
        if mult[0] == 1 << 30 and shift[0] == 1:
            return candidate
    return None


def _matmul_scales(sa: float, sb: float, so: float, want: tuple[int, int]):
    """(lhs, rhs, output) float32 scales from which TFLite derives exactly the multiplier ``want``:
    the tensors' own, else one of them replaced (output first, then rhs, then lhs) by a float32
    near the value that gives the IR's real multiplier; None when none does."""
    derives = lambda x, y, z: tuple(int(v[0]) for v in quantize_multipliers(effective_multiplier(x, y, z))) == want  # noqa: E731
    if derives(sa, sb, so):
        return sa, sb, so
    if want[0] == 0:
        return None
    real = want[0] * 2.0 ** (want[1] - 31)
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    for slot, center in ((2, f32(sa) * f32(sb) / real), (1, real * f32(so) / f32(sa)), (0, real * f32(so) / f32(sb))):
        if not 0 < center < 3.4e38:
            continue
        for candidate in _float32_around(center):
            scales = [sa, sb, so]
            scales[slot] = candidate
            if derives(*scales):
                return tuple(scales)
    return None


def _float32_around(value: float, steps: int = 8):
    """The float32 nearest ``value``, then its neighbours outwards, ``steps`` ulps each way."""
    center = np.float32(value)
    yield float(center)
    down = up = center
    for _ in range(steps):
        down, up = np.nextafter(down, np.float32(0)), np.nextafter(up, np.float32(np.inf))
        yield float(up)
        if down > 0:
            yield float(down)


def _kernel_input(dtype: str) -> str:
    """The activation type of the TFLite kernel a conv2d / dense reading ``dtype`` runs in (int32: a
    window sum, folded into a 16x8 convolution of the int16 values it sums)."""
    return "int16" if dtype == "int32" else dtype


def _require(ok: bool, op: g.Op, message: str) -> None:
    if not ok:
        raise _unsupported(op, message)


def _unsupported(op: g.Op, message: str) -> EdgesnnError:
    return EdgesnnError(f"tflite: IR op '{op.name}' ({op.kind}) {message}")
