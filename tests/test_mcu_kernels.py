"""The MCU backend's TVM-generated C kernels equal the golden interpreter bit for bit.

Each test builds IR ops by hand (random weights of every bit width and code, random multipliers)
or exports a small untrained model, generates one C file with all its kernels, compiles it with a
generated driver by the host gcc (UBSan on: overflow or a bad shift in the arithmetic fails too),
runs it on random inputs and compares every output integer with the interpreter's.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from edgesnn import data, export, models, spikes
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import ADD_LEFT_SHIFT, add_multipliers, quantize_multipliers
from edgesnn.ir.interpreter import KERNELS
from edgesnn.ir.packing import pack, weight_range, widen

import tvm  # noqa: E402  (scripts/setup.sh installs apache-tvm: a missing one fails, never skips)
from edgesnn.backends.mcu import kernels as K  # noqa: E402
from edgesnn.backends.mcu.tvm_pipeline import SHIM_HEADERS, build_c  # noqa: E402

if shutil.which("gcc") is None:  # CI runs scripts/setup.sh: a missing tool is a failure of the setup, never a skip
    pytest.fail("gcc missing: scripts/setup.sh installs it", pytrace=False)

SAMPLES = 4
CFLAGS = ["-std=c99", "-O1", "-Wall", "-fsanitize=undefined", "-fno-sanitize-recover=undefined"]


# ----------------------------------------------------------------------------------------------
# Compile and run kernels on the host


def _c_array(c_type: str, name: str, values: np.ndarray) -> str:
    body = ",".join(str(int(v)) if int(v) != -(2**31) else "(-2147483647-1)" for v in np.ravel(values))
    return f"static {c_type} {name}[{max(np.size(values), 1)}] = {{{body}}};\n"


def _driver(kernels: list[K.Kernel], feeds: list[dict[str, np.ndarray]]) -> str:
    """main(): every kernel on every sample; prints each output as one line of integers."""
    decls, calls = ["#include <stdio.h>\n#include <stdint.h>\n"], []
    for i, (k, feed) in enumerate(zip(kernels, feeds)):
        decls.append(k.c_declaration() + ";\n")
        args = []
        for a in k.args:
            var = f"k{i}_{a.name}"
            if a.role == "const":
                decls.append(_c_array(a.c_type, var, a.data))
                args.append(var)
            elif a.role == "input":
                batch = feed[a.tensor].reshape(SAMPLES, -1)
                decls.append(_c_array(a.c_type, var, batch))
                args.append(f"{var} + n * {batch.shape[1]}")
            elif a.role == "scratch":
                decls.append(f"static int64_t {var}[{(k.scratch_bytes + 7) // 8}];\n")
                args.append(f"({a.c_type}*){var}")
            else:
                out_size = int(np.prod(feed[a.tensor].shape[1:]))
                decls.append(f"static {a.c_type} {var}[{out_size}];\n")
                args.append(var)
                out_var, out_n = var, out_size
        calls.append(f"  for (int n = 0; n < {SAMPLES}; ++n) {{\n"
                     f"    if ({k.symbol}({', '.join(args)}) != 0) return 1;\n"
                     f"    for (int j = 0; j < {out_n}; ++j) printf(\"%d \", (int){out_var}[j]);\n"
                     f"    printf(\"\\n\");\n  }}\n")
    return "".join(decls) + "int main(void) {\n" + "".join(calls) + "  return 0;\n}\n"


def run_c(kernels: list[K.Kernel], feeds: list[dict[str, np.ndarray]], tmp_path) -> list[np.ndarray]:
    """Outputs (SAMPLES x flat) of each kernel; ``feeds[i]`` maps kernel i's input and output tensor
    names to batches (the output's batch only gives the shape)."""
    for rel, text in SHIM_HEADERS.items():
        (tmp_path / "include" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "include" / rel).write_text(text)
    (tmp_path / "kernels.c").write_text(build_c({k.symbol: k.func for k in kernels}))
    (tmp_path / "main.c").write_text(_driver(kernels, feeds))
    exe = tmp_path / "run"
    subprocess.run(["gcc", *CFLAGS, "-Werror=incompatible-pointer-types", f"-I{tmp_path / 'include'}",
                    str(tmp_path / "kernels.c"), str(tmp_path / "main.c"), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[:2000]
    lines = run.stdout.splitlines()
    assert len(lines) == SAMPLES * len(kernels)
    rows = [np.array(line.split(), dtype=np.int64) for line in lines]
    return [np.stack(rows[i * SAMPLES:(i + 1) * SAMPLES]) for i in range(len(kernels))]


def check_ops(graph: g.Graph, ops: list[g.Op], tmp_path, event_driven: bool = False) -> list[K.Kernel]:
    """Each op's kernel on random inputs (the same for the same graph) equals the interpreter."""
    rng = np.random.default_rng(1)
    values = {}
    kernels, feeds, expected = [], [], []
    for op in ops:
        ins = [values.setdefault(name, random_input(graph.tensors[name], rng)) for name in op.inputs]
        want = KERNELS[op.kind](op, *ins, *[graph.tensors[n] for n in op.inputs], graph.tensors[op.output])
        kernels.append(K.kernel(graph, op, event_driven))
        feeds.append({**dict(zip(op.inputs, ins)), op.output: want})
        expected.append(want)
    for op, want, got in zip(ops, expected, run_c(kernels, feeds, tmp_path)):
        np.testing.assert_array_equal(got, want.reshape(SAMPLES, -1), err_msg=f"op {op.name}")
        assert want.std() > 0, f"op {op.name}: degenerate test (constant output)"
    return kernels


# ----------------------------------------------------------------------------------------------
# Random ops


def random_input(spec: g.TensorSpec, rng) -> np.ndarray:
    """A batch of the tensor's integers: spike counts (mostly zero) for spike tensors, else the range."""
    shape = (SAMPLES, *spec.shape)
    if spec.spike_D is not None:
        return (rng.integers(0, spec.spike_D + 1, shape) * (rng.random(shape) < 0.3)).astype(g.DTYPES[spec.dtype])
    lo, hi = g.dtype_range(spec.dtype)
    if spec.dtype == "int16":
        lo, hi = -3000, 3000  # products of two int16 streams stay in int32 (as the exporter sizes them)
    return rng.integers(lo, hi + 1, shape).astype(g.DTYPES[spec.dtype])


def spec(shape, dtype="int8", zero_point=0, spike_D=None) -> g.TensorSpec:
    return g.TensorSpec(list(shape), dtype, 0.05, zero_point, spike_D=spike_D)


def random_weights(shape, bits: int, code: str, rng) -> np.ndarray:
    lo, hi = weight_range(bits, code)
    w = rng.integers(lo, hi + 1, shape)
    if code == "odd":
        w = w | 1  # odd levels only
    return w.astype(np.int8)


class Builder:
    """Accumulates tensors and hand-made ops into one graph (the ops need not form a chain)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, g.TensorSpec] = {}
        self.ops: list[g.Op] = []

    def tensor(self, name, shape, dtype="int8", zero_point=0, spike_D=None) -> str:
        self.tensors[name] = spec(shape, dtype, zero_point, spike_D)
        return name

    def graph(self) -> g.Graph:
        first = self.ops[0].inputs[0]
        return g.Graph(self.tensors, self.ops, first, [op.output for op in self.ops])

    def conv(self, name, x, out_c, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), groups=1, bits=8,
             code="signed", out_dtype="int8", out_zp=0, clamp=None) -> g.Conv2D:
        h, w, c = self.tensors[x].shape
        kh, kw = kernel
        oh = (h + padding[0] + padding[1] - kh) // stride[0] + 1
        ow = (w + padding[2] + padding[3] - kw) // stride[1] + 1
        out = self.tensor(name + ".out", [oh, ow, out_c], out_dtype, out_zp)
        weight = random_weights((out_c, kh, kw, c // groups), bits, code, self.rng)
        bias, mult, shift = self.calibrate(x, weight, bits, code, out_dtype)
        lo, hi = g.dtype_range(out_dtype)
        op = g.Conv2D(name, [x], out, multiplier=mult, shift=shift, clamp=clamp or [lo, hi], weight=weight,
                      bias=bias, weight_bits=bits, weight_code=code, stride=list(stride), padding=list(padding), groups=groups)
        self.ops.append(op)
        return op

    def dense(self, name, x, out_n, bits=8, code="signed", out_dtype="int8") -> g.Dense:
        k = self.tensors[x].shape[0]
        out = self.tensor(name + ".out", [out_n], out_dtype, 5)
        weight = random_weights((out_n, k), bits, code, self.rng)
        bias, mult, shift = self.calibrate(x, weight, bits, code, out_dtype)
        op = g.Dense(name, [x], out, multiplier=mult, shift=shift, clamp=[-120, 127] if out_dtype == "int8" else [-30000, 30000],
                     weight=weight, bias=bias, weight_bits=bits, weight_code=code)
        self.ops.append(op)
        return op

    def calibrate(self, x: str, weight: np.ndarray, bits: int, code: str, out_dtype: str):
        """(bias, multiplier, shift) that spread a layer's outputs over the output range: the bias
        cancels the mean input offset (-zero point), the multiplier scales the accumulator's spread."""
        spec_in = self.tensors[x]
        w = widen(weight, bits, code).reshape(len(weight), -1).astype(np.int64)
        x_std = 74.0 if spec_in.dtype == "int8" else 1732.0  # uniform random inputs (random_input)
        bias = -w.sum(axis=1) * -spec_in.zero_point + self.rng.integers(-2000, 2000, len(w))
        acc_std = np.sqrt((w.astype(np.float64) ** 2).sum(axis=1)) * x_std + 1
        mult, shift = quantize_multipliers((256 if out_dtype == "int8" else 65536) / 3 / acc_std * self.rng.uniform(0.5, 2, len(w)))
        return bias.astype(np.int32), mult, shift

    def rescaled(self, cls, name, inputs, shape, reals, dtype="int8", zero_point=0, clamp=None) -> g.Op:
        """A requantized op (reduce_sum, mul, requantize) with the multipliers of ``reals``."""
        mult, shift = quantize_multipliers(reals)
        out = self.tensor(name + ".out", shape, dtype, zero_point)
        return self.add_op(cls(name, inputs, out, multiplier=mult, shift=shift, clamp=clamp or list(g.dtype_range(dtype))))

    def add(self, name, inputs, scales, dtype, zero_point=0) -> g.Add:
        """An ADD with TFLite's multipliers for input and output ``scales`` and its left shift for ``dtype``."""
        mult, shift = add_multipliers(*scales, ADD_LEFT_SHIFT[dtype])
        out = self.tensor(name + ".out", self.tensors[inputs[0]].shape, dtype, zero_point)
        return self.add_op(g.Add(name, inputs, out, left_shift=ADD_LEFT_SHIFT[dtype], multiplier=mult, shift=shift,
                                 clamp=list(g.dtype_range(dtype))))

    def add_op(self, op: g.Op) -> g.Op:
        self.ops.append(op)
        return op


WEIGHT_FORMATS = [(8, "signed"), (4, "signed"), (3, "signed"), (2, "signed"), (5, "signed"), (7, "signed"),
                  (1, "odd"), (2, "odd"), (3, "odd"), (4, "odd"), (6, "odd")]


# ----------------------------------------------------------------------------------------------
# Tests


def test_conv2d_forms(tmp_path):
    """Padding with input zero point -128, depthwise, grouped, stride 2 with asymmetric padding,
    every weight format, and int16 inputs (TFLite's 16x8 rounding, int16 and int8 outputs)."""
    b = Builder(0)
    x = b.tensor("x", [7, 6, 4], zero_point=-128)
    b.conv("plain", x, 5, clamp=[-100, 110])
    b.conv("depthwise", x, 4, groups=4, out_zp=7)
    b.conv("grouped", x, 6, groups=2, kernel=(2, 3), stride=(2, 2), padding=(0, 1, 2, 1))
    b.conv("pointwise", x, 3, kernel=(1, 1), padding=(0, 0, 0, 0))
    for bits, code in WEIGHT_FORMATS:
        b.conv(f"w{bits}{code}", x, 3, stride=(2, 1), padding=(1, 0, 0, 2), bits=bits, code=code)
    x16 = b.tensor("x16", [5, 5, 3], "int16")
    b.conv("conv16", x16, 4, out_dtype="int16")
    b.conv("conv16_to8", x16, 4, stride=(2, 2), padding=(0, 2, 1, 0), bits=4)
    b.conv("depthwise16", x16, 3, groups=3, bits=3, code="odd", out_dtype="int16")
    check_ops(b.graph(), b.ops, tmp_path)


def test_dense_forms(tmp_path):
    b = Builder(1)
    x = b.tensor("x", [37], zero_point=-128)
    for bits, code in WEIGHT_FORMATS:
        b.dense(f"w{bits}{code}", x, 6, bits=bits, code=code)
    x16 = b.tensor("x16", [20], "int16")
    b.dense("dense16", x16, 7, out_dtype="int16")
    b.dense("dense16_to8", x16, 5, bits=3)
    check_ops(b.graph(), b.ops, tmp_path)


def test_event_driven_equals_dense_form(tmp_path):
    """Spike inputs: the zero-skipping kernels, with a scratch accumulator, give the same integers."""
    b = Builder(2)
    spikes = b.tensor("s", [6, 7, 4], spike_D=3)
    b.conv("conv", spikes, 5, bits=3, code="odd")
    b.conv("strided", spikes, 6, kernel=(3, 2), stride=(2, 2), padding=(1, 2, 0, 1), groups=2, bits=5)
    b.conv("depthwise", spikes, 4, groups=4, stride=(2, 3), padding=(2, 1, 1, 1))
    widened = b.tensor("w", [6, 7, 4])  # int8 with zero point 0: the exporter's widened spikes
    b.conv("widened", widened, 3, bits=2)
    flat = b.tensor("f", [30], spike_D=1)
    b.dense("dense", flat, 6, bits=1, code="odd")
    b.dense("dense8", flat, 4)
    graph = b.graph()
    events = check_ops(graph, b.ops, tmp_path / "events", event_driven=True)
    for k, op in zip(events, b.ops):
        scratch = [a for a in k.args if a.role == "scratch"]
        shape = graph.tensors[op.inputs[0]].shape
        if op.name == "depthwise":  # 8-bit, 4 channels: the window kernel (kernels.depthwise4), sums in registers
            assert K.depthwise4(graph, op) and not scratch and k.scratch_bytes == 0
            continue
        if op.name == "dense8":  # the counts gather: the nonzero inputs listed by count (D + 2 more words)
            assert scratch[0].name == "events" and k.scratch_bytes == 4 * (int(np.prod(shape)) + 1 + 2)
        else:  # an int32 accumulator per output in the arena
            assert scratch[0].name == "acc" and k.scratch_bytes == 4 * int(np.prod(graph.tensors[op.output].shape))
        assert len(scratch) == 1
    dense = check_ops(graph, b.ops, tmp_path / "dense")  # same random inputs (same seed)
    assert all(k.scratch_bytes == 0 for k in dense)


@pytest.mark.parametrize("code", ["bit-plane", "rate-burst"])
def test_spike_train_forms_equal_the_interpreter(tmp_path, code):
    """Event-driven layers reading spike counts, run as spike trains: plain, strided, grouped and
    depthwise convs, the exporter's x16 widening (unit 16), a sum pool's counts (up to 4 x 3) through
    a flatten, and ternary (signed) spikes, against the interpreter fed the same chain."""
    b = Builder(8)
    s = b.tensor("s", [6, 7, 4], spike_D=3)
    b.conv("conv", s, 5, bits=3, code="odd")
    b.conv("strided", s, 6, kernel=(3, 2), stride=(2, 2), padding=(1, 2, 0, 1), groups=2, bits=5)
    b.conv("depthwise", s, 4, groups=4, stride=(2, 3), padding=(2, 1, 1, 1))
    wide = b.add_op(g.Requantize("x16", [s], b.tensor("s16", [6, 7, 4]), multiplier=np.array([1 << 30], np.int32),
                                 shift=np.array([5], np.int32), clamp=[0, 48]))
    b.conv("widened", wide.output, 3, bits=2)
    pool = b.add_op(g.SumPool2D("pool", [s], b.tensor("p", [3, 3, 4]), kernel=[2, 2], stride=[2, 2]))
    flat = b.add_op(g.Reshape("flat", [pool.output], b.tensor("pf", [36])))
    b.dense("pooled", flat.output, 6, bits=4)
    ternary = b.tensor("t", [30], spike_D=1)
    b.tensors[ternary].signed = True
    b.dense("ternary", ternary, 5, bits=1, code="odd")
    graph = b.graph()
    layers = [op for op in b.ops if op.kind in ("conv2d", "dense")]
    steps = K.train_layers(graph, {op.name for op in layers}, code)
    D = {"conv": 3, "strided": 3, "depthwise": 3, "widened": 3, "pooled": 12, "ternary": 1}
    assert steps == {name: spikes.num_steps(d, code) for name, d in D.items()}
    rng = np.random.default_rng(3)
    values = {name: random_input(graph.tensors[name], rng) for name in ("s", "t")}
    values["t"] = values["t"] * rng.choice([-1, 1], values["t"].shape).astype(np.int8)
    for op in b.ops:  # the interpreter along the chain (the widening, pool and flatten feed later layers)
        values[op.output] = KERNELS[op.kind](op, *[values[n] for n in op.inputs],
                                             *[graph.tensors[n] for n in op.inputs], graph.tensors[op.output])
    kernels = [K.kernel(graph, op, True, code) for op in layers]
    feeds = [{n: values[n] for n in (*op.inputs, op.output)} for op in layers]
    for op, got in zip(layers, run_c(kernels, feeds, tmp_path)):
        want = values[op.output].reshape(SAMPLES, -1)
        np.testing.assert_array_equal(got, want, err_msg=f"op {op.name}")
        assert want.std() > 0, f"op {op.name}: degenerate test (constant output)"
    source = (tmp_path / "kernels.c").read_text()
    assert all(f"t < {n}; ++t)" in source for n in set(steps.values()) - {1})  # the loops over virtual steps
    assert ("] * 2);" in source) == (code == "bit-plane")  # bit-plane: the accumulator doubles each step


def test_spike_trains_need_spike_counts(tmp_path):
    """A layer reading int8 with zero point 0 that are not spike counts keeps the integer event form."""
    b = Builder(9)
    widened = b.tensor("w", [6, 7, 4])
    op = b.conv("widened", widened, 3, bits=2)
    assert K.train_input(b.graph(), op) is None and K.train_layers(b.graph(), {"widened"}, "bit-plane") == {}
    events = K.kernel(b.graph(), op, True)
    trains = K.kernel(b.graph(), op, True, "bit-plane")
    assert str(events.func) == str(trains.func)


def test_event_driven_falls_back_without_spikes(tmp_path):
    b = Builder(3)
    x = b.tensor("x", [4, 4, 2], zero_point=-128)
    op = b.conv("conv", x, 3)
    kern = K.kernel(b.graph(), op, event_driven=True)
    assert kern.scratch_bytes == 0 and all(a.role != "scratch" for a in kern.args)


def test_a_negative_multiplier_is_refused():
    """The kernels' requantization has no saturation test (its only case needs a negative multiplier,
    which no exporter writes): an IR that has one is one line at export, not a wrong result."""
    b = Builder(6)
    op = b.dense("neg", b.tensor("xn", [5]), 3)
    op.multiplier = np.array([1 << 30, -(1 << 31), 1 << 30], np.int32)
    with pytest.raises(EdgesnnError, match=r"^mcu: op neg: a negative requantization multiplier \(-2147483648\)"):
        K.kernel(b.graph(), op)


def test_event_driven_int16(tmp_path):
    """Spikes in an int16 tensor: event form with an int64 accumulator and the 16x8 rounding."""
    b = Builder(4)
    x16 = b.tensor("x16", [20], "int16", spike_D=3000)
    b.dense("dense16", x16, 7, out_dtype="int16")
    b.conv("conv16", b.tensor("m16", [4, 5, 2], "int16", spike_D=3000), 3, stride=(2, 1), bits=4)
    kernels = check_ops(b.graph(), b.ops, tmp_path, event_driven=True)
    assert [k.scratch_bytes for k in kernels] == [8 * 7, 8 * 2 * 5 * 3]


def test_elementwise_and_pooling(tmp_path):
    b = Builder(5)
    x = b.tensor("x", [6, 6, 3], zero_point=-20)
    x16 = b.tensor("x16", [6, 6, 3], "int16")
    b.rescaled(g.ReduceSum, "rsum", [x], [1, 1, 3], b.rng.uniform(0.02, 0.05, 3), zero_point=4)
    # requantize: per tensor and per channel, multipliers below and above 1 (negative and positive shifts)
    for i, reals in enumerate([[0.37], [3.7], [0.9, 1.6, 0.05]]):
        b.rescaled(g.Requantize, f"rq{i}", [x], [6, 6, 3], reals, zero_point=-3, clamp=[-128, 100])
    b.rescaled(g.Requantize, "rq16to8", [x16], [6, 6, 3], [1 / 37])
    b.rescaled(g.Requantize, "rq8to16", [x], [6, 6, 3], [0.8], "int16")
    # mul: spike masking with broadcasting, int8 and int16 outputs
    mask = b.tensor("mask", [6, 1, 3], spike_D=1)
    b.rescaled(g.Mul, "mask_mul", [x, mask], [6, 6, 3], [0.9], zero_point=2)
    b.rescaled(g.Mul, "mul16", [x16, b.tensor("chan", [1, 1, 3], zero_point=-5)], [6, 6, 3], [1 / 50], "int16")
    # add: int8 (left shift 20) and int16 (15)
    b.add("add8", [x, b.tensor("y", [6, 6, 3], zero_point=11)], (0.05, 0.13, 0.1), "int8", zero_point=-7)
    b.add("add16", [x16, b.tensor("y16", [6, 6, 3], "int16")], (0.05, 0.02, 0.06), "int16")
    # pools
    small = b.tensor("small", [5, 5, 2], spike_D=4)
    for cls, name, src, shape, dtype, zp, kernel, stride in [
            (g.SumPool2D, "sumpool", x, [3, 3, 3], "int16", -5, [2, 2], [2, 2]),
            (g.SumPool2D, "sumpool8", small, [2, 2, 2], "int8", 0, [3, 3], [2, 2]),
            (g.MaxPool2D, "maxpool", x, [2, 2, 3], "int8", -20, [3, 3], [3, 2]),
            (g.MaxPool2D, "maxpool16", x16, [3, 3, 3], "int16", 0, [2, 2], [2, 2])]:
        b.add_op(cls(name, [src], b.tensor(name + ".out", shape, dtype, zp), kernel=kernel, stride=stride))
    check_ops(b.graph(), b.ops, tmp_path)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_exported_model(name, tmp_path):
    """Every op of an exported (untrained) model, event-driven where it reads spikes, fed the
    interpreter's own intermediate tensors of real digits."""
    digits = data.digits()
    torch.manual_seed(0)
    graph = export.export(models.build(name, models.default_kwargs(name, digits.in_shape, 10, 4)), digits.x_train[:256])
    values = graph.run_integer(graph.quantize_input(data.to_nhwc(digits.x_test[:SAMPLES])), keep_all=True)
    assert all(K.kernel(graph, op) is None for op in graph.ops if op.kind == "reshape")
    ops = [op for op in graph.ops if op.kind != "reshape"]
    kernels = [K.kernel(graph, op, event_driven=True) for op in ops]
    assert any(k.scratch_bytes for k in kernels)  # spike-driven layers present
    feeds = [{n: values[n] for n in (*op.inputs, op.output)} for op in ops]
    for op, got in zip(ops, run_c(kernels, feeds, tmp_path)):
        np.testing.assert_array_equal(got, values[op.output].reshape(SAMPLES, -1), err_msg=f"op {op.name}")


def test_symbols_and_declarations():
    b = Builder(6)
    x = b.tensor("x", [8])
    b.dense("layer.1", x, 3)
    b.dense("layer_1", x, 3)
    b.dense("3-out", x, 3)
    graph = b.graph()
    kernels = [K.kernel(graph, op) for op in graph.ops]
    assert [k.symbol for k in kernels] == ["edgesnn_layer_1", "edgesnn_layer_1_1", "edgesnn_3_out"]
    source = build_c({k.symbol: k.func for k in kernels})
    for k in kernels:
        assert f"TVM_DLL {k.c_declaration()};" in source
    assert [a.role for a in kernels[0].args] == ["input", "const", "const", "const", "const", "output"]
    assert kernels[0].c_declaration() == (
        "int32_t edgesnn_layer_1(int8_t* restrict x, int8_t* restrict weight, int32_t* restrict bias, "
        "int32_t* restrict multiplier, int32_t* restrict shift, int8_t* restrict out)")


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_packed_weights_padding(bits):
    """Straddling widths get one padding byte, so the kernel's 16-bit read stays in the array."""
    code = "signed" if bits >= 2 else "odd"
    w = random_weights((5, 7), bits, code, np.random.default_rng(bits))
    op = g.Dense("d", ["x"], "y", weight=w, weight_bits=bits, weight_code=code)
    packed = K.packed_weights(op)
    base = pack(w, bits, code)
    assert packed.size == base.size + (1 if 8 % bits else 0)
    assert packed.dtype == (np.int8 if bits == 8 else np.uint8)
