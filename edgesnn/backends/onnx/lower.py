"""Lower the IR to an integer ONNX graph, one method per IR op, computing what the interpreter does.

The file's input is the IR's input integers (int8 or int16, NHWC, a dynamic batch axis in front)
and its outputs the IR's output integers; the quantization of each (scale, zero point) is in the
model's metadata. No float op and no float tensor appear anywhere. Opset 13 and IR version 7, old
enough for most ONNX tools to read.

How each IR op becomes ONNX ops (every accumulator and requantization in int64, written by
requant.py, the interpreter's ``_finish``):

- conv2d -> ConvInteger (NCHW between two Transposes, any groups), dense -> MatMulInteger, on an
  int8 input: its integers + 128 as uint8 with zero point zp + 128, the weights (widened to int8,
  ir/packing.py) + 128 as uint8 with zero point 128. Only uint8 x uint8: onnxruntime's u8 x s8
  kernels on x86 CPUs without VNNI add pairs of products in int16 with saturation (vpmaddubsw;
  onnxruntime carries a graph rewrite, avx2_weight_s8_to_u8, because of it), its u8 x u8 kernels
  widen to int16 first and are exact. Explicit padding is a Pad with the input's zero point (the
  IR's real zero). Then the int32 bias is added and the int64 sum requantized.
- On an int16 input (TFLite's 16x8 kernels in the IR) ConvInteger and MatMulInteger run once per
  byte of the input integers: x = 256 * hi + lo, hi in [-128, 127] (uint8 hi + 128, zero point
  128), lo in [0, 255] (zero point 0), padded with the raw zero point; the int64 accumulator is
  256 * sum(hi * w) + sum(lo * w) - zp * sum(w), exactly the IR's sum of (x - zp) * w. An int32
  input (a window sum of an int16 stream) takes four bytes the same way.
- batch_matmul -> MatMulInteger on two int8 operands (uint8 + 128, zero point 128), else an int64
  MatMul (exact: |a * b| <= 2**30 per term), adj_y as a Transpose of b's last two axes.
- reduce_sum -> ReduceSum (int64) over H and W; mul -> Mul (int64); requantize -> the requantization;
  add -> TFLite's ADD (each input shifted left and requantized, the sum requantized).
- sum_pool2d -> the sum of the window's strided Slices (int32); max_pool2d -> Max of the same
  Slices (int16 through int32: onnxruntime's Max has no int16 kernel); reshape -> Reshape (batch
  axis copied); transpose -> Transpose with the batch axis kept first.
- A temporal graph (lif, cuba_lif, li, recurrent): one run per timestep, its states as int64 inputs
  ``state:<name>`` and outputs ``state:<name>:next`` (state.py).

Each ConvInteger / MatMulInteger accumulates in int32; onnxruntime's uint8 kernels sum raw
products of up to 255 * 255, so an op summing more than MAX_DEPTH terms per output is refused by
name rather than trusted to wrap.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgesnn import __version__
from edgesnn.backends.onnx import requant
from edgesnn.backends.onnx.builder import INT, Builder
from edgesnn.backends.onnx.state import StateLowering
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.packing import widen

OPSET = 13
ONNX_IR_VERSION = 7
BATCH = "batch"
MAX_DEPTH = (2**31 - 1) // (255 * 255)  # terms of one int32 sum of raw uint8 products: 33025


def lower(graph: g.Graph, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    return _Lowering(graph).run(metadata or {})


class _Lowering:
    def __init__(self, graph: g.Graph):
        self.g = graph
        self.b = Builder(reserved=graph.tensors)
        self._wide: dict[str, str] = {}
        self.state = StateLowering(self) if graph.stateful else None  # its state as inputs and outputs (state.py)

    def run(self, metadata: dict[str, str]) -> onnx.ModelProto:
        for op in self.g.ops:
            lowering = getattr(self, f"op_{op.kind}", None)
            if lowering is None:
                raise _unsupported(op, "has no ONNX lowering")
            lowering(op)
        state_in, state_out = [], []
        if self.state is not None:
            self.state.finish()
            state_in, state_out = self.state.value_infos()
        graph = helper.make_graph(self.b.nodes, "edgesnn", [self.value_info(self.g.input), *state_in],
                                  [*(self.value_info(name) for name in self.g.outputs), *state_out],
                                  initializer=self.b.initializers,
                                  doc_string=f"edgesnn IR v{g.IR_VERSION} -> ONNX (integer only)")
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgesnn",
                                  producer_version=__version__)
        model.ir_version = ONNX_IR_VERSION
        helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
        return model

    # -- tensors ------------------------------------------------------------------------------

    def spec(self, name: str) -> g.TensorSpec:
        return self.g.tensors[name]

    def value_info(self, name: str):
        s = self.spec(name)
        return helper.make_tensor_value_info(name, INT[s.dtype], [BATCH, *s.shape])

    def rank(self, name: str) -> int:
        return len(self.spec(name).shape) + 1

    def wide(self, name: str) -> str:
        """The tensor as int64."""
        if name not in self._wide:
            self._wide[name] = self.b.cast(name, "int64", name)
        return self._wide[name]

    def centered(self, name: str) -> str:
        """The tensor as int64 minus its zero point: the integers the IR's arithmetic takes."""
        zp = self.spec(name).zero_point
        x = self.wide(name)
        return self.b.node("Sub", [x, self.b.i64(zp, "zero_point")], f"{name}.centered") if zp else x

    def as_uint8(self, name: str, hint: str) -> str:
        """An int8 tensor's integers + 128 as uint8 (its zero point moves by 128 with it)."""
        x = self.b.cast(name, "int32", hint)  # opset 13's Add has no int8 / int16
        x = self.b.node("Add", [x, self.b.const(128, np.int32, "u8_offset32")], f"{hint}.plus128")
        return self.b.cast(x, "uint8", hint)

    # -- ops ----------------------------------------------------------------------------------

    def op_conv2d(self, op: g.Conv2D) -> None:
        spec_in = self.spec(op.inputs[0])
        w = widen(op.weight, op.weight_bits, op.weight_code)  # OHWI, int8 values
        o, kh, kw, cg = w.shape
        weight = self.b.const((w + 128).transpose(0, 3, 1, 2), np.uint8, f"{op.name}.weight_u8")  # OIHW
        t, bt, l, r = op.padding
        pads = [0, 0, t, l, 0, 0, bt, r]

        def prepare(x: str, pad_value: str) -> str:
            x = self.b.node("Transpose", [x], f"{op.name}.nchw", perm=[0, 3, 1, 2])
            return self.b.node("Pad", [x, self.b.i64(pads, "pads"), pad_value], f"{op.name}.padded") if any(pads) else x

        def product(x: str, x_zero_point: str) -> str:
            acc = self.b.node("ConvInteger", [x, weight, x_zero_point, self.b.const(128, np.uint8, "w_zero_point")],
                              f"{op.name}.acc", kernel_shape=[kh, kw], strides=list(op.stride), group=op.groups)
            return self.b.node("Transpose", [acc], f"{op.name}.acc_nhwc", perm=[0, 2, 3, 1])

        self.linear(op, spec_in, w, kh * kw * cg, prepare, product)

    def op_dense(self, op: g.Dense) -> None:
        spec_in = self.spec(op.inputs[0])
        w = widen(op.weight, op.weight_bits, op.weight_code)  # [out, in]
        weight = self.b.const((w + 128).T, np.uint8, f"{op.name}.weight_u8")

        def product(x: str, x_zero_point: str) -> str:
            return self.b.node("MatMulInteger", [x, weight, x_zero_point, self.b.const(128, np.uint8, "w_zero_point")],
                               f"{op.name}.acc")

        self.linear(op, spec_in, w, w.shape[1], lambda x, pad_value: x, product)

    def linear(self, op, spec_in: g.TensorSpec, w: np.ndarray, depth: int, prepare, product) -> None:
        """conv2d / dense: ``prepare(x, pad value)`` lays out the input, ``product(x_u8, zero point)``
        emits the ConvInteger / MatMulInteger (int32, NHWC); then bias and requantization."""
        _check_depth(op, depth)
        x, zp = op.inputs[0], spec_in.zero_point
        if spec_in.dtype == "int8":
            u8_zp = self.b.const(zp + 128, np.uint8, "x_zero_point")
            acc = self.b.cast(product(prepare(self.as_uint8(x, op.name), u8_zp), u8_zp), "int64", f"{op.name}.acc")
            bias = op.bias.astype(np.int64)
        else:
            _require(spec_in.dtype in ("int16", "int32"), op, f"reads {spec_in.dtype}; conv2d and dense read int8, int16 "
                     "or int32")
            acc = self.byte_planes(op, x, spec_in, prepare, product)
            wsum = w.reshape(w.shape[0], -1).astype(np.int64).sum(1)
            bias = op.bias.astype(np.int64) - zp * wsum  # the padded zero points and the input's, in one term
        acc = self.b.node("Add", [acc, self.b.i64(bias, f"{op.name}.bias")], f"{op.name}.biased")
        self.finish(op, acc, spec_in.dtype)

    def byte_planes(self, op, x: str, spec_in: g.TensorSpec, prepare, product) -> str:
        """sum(x * w) of a wide input (int16, int32) from its bytes: x = sum_p 256**p * byte_p, the top byte
        signed (uint8 + 128, zero point 128), the others in [0, 255] (zero point 0); the raw integers,
        padded with the raw zero point, which the caller's bias takes out."""
        v = prepare(self.b.cast(x, "int32", op.name), self.b.const(spec_in.zero_point, np.int32, "pad_value"))
        planes = np.dtype(g.DTYPES[spec_in.dtype]).itemsize
        byte = self.b.const(256, np.int32, "byte")
        acc = None
        for p in range(planes):
            if p < planes - 1:
                part = self.b.node("Mod", [v, byte], f"{op.name}.byte{p}")  # in [0, 255]: the divisor's sign
                v = self.b.node("Div", [self.b.node("Sub", [v, part], f"{op.name}.rest{p}"), byte], f"{op.name}.high{p}")
                zero = 0
            else:  # what is left is the signed top byte
                part = self.b.node("Add", [v, self.b.const(128, np.int32, "u8_offset32")], f"{op.name}.byte{p}_plus128")
                zero = 128
            term = product(self.b.cast(part, "uint8", f"{op.name}.byte{p}"), self.b.const(zero, np.uint8, "x_zero_point"))
            term = self.b.cast(term, "int64", f"{op.name}.acc{p}")
            if p:
                term = self.b.node("Mul", [term, self.b.i64(1 << (8 * p), "byte_weight")], f"{op.name}.acc{p}_scaled")
            acc = term if acc is None else self.b.node("Add", [acc, term], f"{op.name}.acc")
        return acc

    def op_batch_matmul(self, op: g.BatchMatMul) -> None:
        (a, b), (sa, sb) = op.inputs, [self.spec(n) for n in op.inputs]
        rank = self.rank(b)
        _require(rank >= 3, op, "multiplies tensors of rank 1; a product needs two axes")
        if op.adj_y:
            b = self.b.node("Transpose", [b], f"{op.name}.b_T", perm=[*range(rank - 2), rank - 1, rank - 2])
        if sa.dtype == sb.dtype == "int8":  # raw integers, as the IR (its operands are spike counts, zero point 0)
            _check_depth(op, sa.shape[-1])
            u8_zp = self.b.const(128, np.uint8, "w_zero_point")
            acc = self.b.node("MatMulInteger", [self.as_uint8(a, f"{op.name}.a"), self.as_uint8(b, f"{op.name}.b"),
                                                u8_zp, u8_zp], f"{op.name}.acc")
            acc = self.b.cast(acc, "int64", f"{op.name}.acc")
        else:
            b64 = self.b.cast(b, "int64", f"{op.name}.b") if op.adj_y else self.wide(b)
            acc = self.b.node("MatMul", [self.wide(a), b64], f"{op.name}.acc")
        self.finish(op, acc, sa.dtype)

    def op_reduce_sum(self, op: g.ReduceSum) -> None:
        acc = self.b.node("ReduceSum", [self.centered(op.inputs[0]), self.b.i64([1, 2], "hw_axes")], f"{op.name}.acc",
                          keepdims=1)
        self.finish(op, acc, self.spec(op.inputs[0]).dtype)

    def op_mul(self, op: g.Mul) -> None:
        acc = self.b.node("Mul", [self.centered(op.inputs[0]), self.centered(op.inputs[1])], f"{op.name}.acc")
        self.finish(op, acc, "int8")

    def op_requantize(self, op: g.Requantize) -> None:
        self.finish(op, self.centered(op.inputs[0]), "int8")

    def op_add(self, op: g.Add) -> None:
        m, s = np.ravel(op.multiplier), np.ravel(op.shift)
        terms = []
        for k, name in enumerate(op.inputs):
            x = self.b.node("Mul", [self.centered(name), self.b.i64(1 << op.left_shift, "add_left_shift")],
                            f"{op.name}.in{k}")
            terms.append(requant.double_rounding(self.b, x, m[k], s[k], f"{op.name}.in{k}"))
        total = self.b.node("Add", terms, f"{op.name}.sum")
        y = requant.double_rounding(self.b, total, m[2], s[2], f"{op.name}.out")
        out = self.spec(op.output)
        requant.clamp_cast(self.b, y, out.zero_point, op.clamp, out.dtype, op.output, op.name)

    def op_sum_pool2d(self, op: g.SumPool2D) -> None:
        spec_in, out = self.spec(op.inputs[0]), self.spec(op.output)
        dtype = "int64" if spec_in.dtype == "int32" else "int32"  # wide enough for every partial sum
        x = self.b.cast(op.inputs[0], dtype, op.name)
        if spec_in.zero_point:
            x = self.b.node("Sub", [x, self.b.const(spec_in.zero_point, dtype, "zero_point")], f"{op.name}.centered")
        acc = None
        for tap in self.window_taps(op, x):
            acc = tap if acc is None else self.b.node("Add", [acc, tap], f"{op.name}.sum")
        if out.zero_point:
            acc = self.b.node("Add", [acc, self.b.const(out.zero_point, dtype, "zero_point")], f"{op.name}.zp")
        self.b.cast(acc, out.dtype, op.name, out=op.output)  # the IR refuses a sum outside the output dtype

    def op_max_pool2d(self, op: g.MaxPool2D) -> None:
        dtype = self.spec(op.inputs[0]).dtype  # onnxruntime's Max has no int16 kernel: int16 goes through int32
        x = self.b.cast(op.inputs[0], "int32", op.name) if dtype == "int16" else op.inputs[0]
        taps = self.window_taps(op, x)
        if dtype == "int16":
            self.b.cast(self.b.node("Max", taps, f"{op.name}.max"), dtype, op.name, out=op.output)
        else:
            self.b.node("Max", taps, op.name, out=op.output)

    def window_taps(self, op, x: str) -> list[str]:
        """Each kernel position's strided Slice of NHWC ``x``: the windows' elements, one tensor per tap."""
        (kh, kw), (sh, sw) = op.kernel, op.stride
        ho, wo = self.spec(op.output).shape[:2]
        taps = []
        for i in range(kh):
            for j in range(kw):
                taps.append(self.b.node("Slice", [x, self.b.i64([i, j], "starts"),
                                                  self.b.i64([i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1], "ends"),
                                                  self.b.i64([1, 2], "hw_axes"), self.b.i64([sh, sw], "steps")],
                                        f"{op.name}.tap{i}_{j}"))
        return taps

    def op_reshape(self, op: g.Reshape) -> None:
        shape = self.b.i64([0, *self.spec(op.output).shape], f"{op.name}.shape")  # 0: the batch axis, copied
        self.b.node("Reshape", [op.inputs[0], shape], op.name, out=op.output)

    def op_transpose(self, op: g.Transpose) -> None:
        self.b.node("Transpose", [op.inputs[0]], op.name, out=op.output, perm=[0, *(p + 1 for p in op.perm)])

    # -- stateful ops (a temporal graph: state.py) ----------------------------------------------

    def op_lif(self, op) -> None:
        self.state.lif(op)

    def op_cuba_lif(self, op) -> None:
        self.state.lif(op)

    def op_li(self, op) -> None:
        self.state.li(op)

    def op_recurrent(self, op) -> None:
        self.state.recurrent(op)

    # -- pieces -------------------------------------------------------------------------------

    def finish(self, op: g.Requantized, acc: str, input_dtype: str) -> None:
        if requant.wide_rule(input_dtype):
            _require(bool(np.all(np.asarray(op.shift) < 15)), op, "has a 16x8 requantization shift of 15 or more, "
                     "which the IR refuses to run")
        requant.finish(self.b, acc, op, self.spec(op.output), op.output, input_dtype)


def _check_depth(op: g.Op, depth: int) -> None:
    _require(depth <= MAX_DEPTH, op, f"sums {depth:,} products per output; onnxruntime's uint8 kernels hold such a "
             f"sum in int32 only up to {MAX_DEPTH:,} terms")


def _require(ok: bool, op: g.Op, message: str) -> None:
    if not ok:
        raise _unsupported(op, message)


def _unsupported(op: g.Op, message: str) -> EdgesnnError:
    return EdgesnnError(f"onnx: IR op '{op.name}' ({op.kind}) {message}")

