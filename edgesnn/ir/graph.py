"""The integer deployment IR: tensors and ops as plain dataclasses (the style of the ``nir`` package).

Layout is NHWC everywhere; shapes are per sample (no batch axis). A tensor's real value is
``scale * (q - zero_point)``; scales are float32, the precision every backend carries. Linear ops
accumulate in int32 and requantize with :mod:`edgesnn.ir.fixedpoint`; ``clamp`` is the fused
activation range (an SFA neuron is requantize + clamp to [0, D]).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from edgesnn.errors import EdgesnnError

IR_VERSION = 3
LAYOUT = "NHWC"
DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32}


def dtype_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(DTYPES[dtype])
    return int(info.min), int(info.max)


@dataclass
class TensorSpec:
    shape: list[int]
    dtype: str
    scale: float
    zero_point: int = 0
    spike_D: int | None = None  # integer spikes in [0, D] ([-D, D] when signed): expandable to spike trains
    signed: bool = False


@dataclass
class Op:
    """Base of all ops. Array fields are stored as tensors, the rest as JSON."""

    name: str
    inputs: list[str]
    output: str

    kind = "op"

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}

    def attrs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not isinstance(getattr(self, f.name), np.ndarray)}


@dataclass
class Requantized(Op):
    """An op whose int32 result is requantized per output channel and clamped."""

    multiplier: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    clamp: list[int] = field(default_factory=lambda: [-128, 127])


@dataclass
class Conv2D(Requantized):
    """Weights OHWI (I = input channels per group); padding [top, bottom, left, right] adds real zeros.

    An int16 input requantizes with TFLite's 16x8 arithmetic (see ir/fixedpoint.py), as Dense does;
    so does an int32 input (a window sum of an int16 stream, which a backend folds into the kernel).
    """

    weight: np.ndarray = None
    bias: np.ndarray = None
    weight_scale: np.ndarray = None
    weight_bits: int = 8
    weight_code: str = "signed"  # see ir/packing.py: "signed" or "odd" (1-bit sign, Q-SNN, ReScaW levels)
    # Arithmetic uses the weights widened to int8 (packing.widen); weight_scale is the widened scale.
    stride: list[int] = field(default_factory=lambda: [1, 1])
    padding: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    groups: int = 1
    kind = "conv2d"


@dataclass
class Dense(Requantized):
    """Weights [out, in]."""

    weight: np.ndarray = None
    bias: np.ndarray = None
    weight_scale: np.ndarray = None
    weight_bits: int = 8
    weight_code: str = "signed"
    kind = "dense"


@dataclass
class ReduceSum(Requantized):
    """Sum over H and W (keeping them as 1); ``scale`` plays the weight scale in the multiplier.
    An int16 input sums as TFLite's 16x8 all-ones depthwise convolution does (int64, 16-bit multiplier)."""

    scale: float = 1.0
    kind = "reduce_sum"


@dataclass
class Mul(Requantized):
    """Elementwise product with broadcasting (spike masking), TFLite MUL arithmetic."""

    kind = "mul"


@dataclass
class Requantize(Requantized):
    """Rescale an integer tensor to another scale (and clamp: a neuron on a membrane stream).

    ``input_scale``: the scale the multiplier was derived from when it is not the input tensor's
    (the exporter folds a constant factor into it: real = factor * scale * q); None: the tensor's.
    """

    input_scale: float | None = None
    kind = "requantize"


@dataclass
class Add(Op):
    """Elementwise sum of two tensors with different scales: TFLite's int8 ADD arithmetic.

    Both inputs are left-shifted by ``left_shift`` (int8: 20, int16: 15), rescaled to twice the
    larger input scale, summed, and the sum rescaled to the output. ``input_scales``: the scales
    the multipliers were derived from, when a constant factor makes them differ from the tensors'.
    """

    left_shift: int = 20
    input_scales: list[float] | None = None
    multiplier: np.ndarray = None  # [input0, input1, output]
    shift: np.ndarray = None
    clamp: list[int] = field(default_factory=lambda: [-128, 127])
    kind = "add"


@dataclass
class SumPool2D(Op):
    """Exact integer sum over each window (no padding): an average pool whose 1/k^2 is folded downstream.

    The output dtype holds every sum the input allows: int16 when int8 inputs outgrow int8, int32
    for an int16 stream (a requantize, conv2d, dense or reshape reads it; see ir/fixedpoint.py)."""

    kernel: list[int] = field(default_factory=lambda: [2, 2])
    stride: list[int] = field(default_factory=lambda: [2, 2])
    kind = "sum_pool2d"


@dataclass
class MaxPool2D(Op):
    kernel: list[int] = field(default_factory=lambda: [2, 2])
    stride: list[int] = field(default_factory=lambda: [2, 2])
    kind = "max_pool2d"


@dataclass
class Reshape(Op):
    """Row-major reshape of a tensor to its output's shape (any rank): flatten before a dense layer,
    the token reshapes of attention. Values, dtype and quantization are unchanged."""

    kind = "reshape"


@dataclass
class Transpose(Op):
    """Permute a tensor's axes: output axis i is input axis ``perm[i]`` (per sample: no batch axis).
    Values, dtype and quantization are unchanged."""

    perm: list[int] = field(default_factory=list)
    kind = "transpose"


@dataclass
class BatchMatMul(Requantized):
    """The product of two activation tensors, batched over leading axes: a [..., M, K] x b [..., K, N]
    (b read as [..., N, K] when ``adj_y``), the leading axes equal. Inputs and output have one dtype
    (as TFLite's BATCH_MATMUL), the inputs zero point 0 (spike counts). int8: int32 accumulator and the int8 requantization; int16: int64
    accumulator and the 16x16 requantization (TFLite BATCH_MATMUL's). One multiplier (per tensor).
    """

    adj_y: bool = False
    kind = "batch_matmul"


OP_TYPES: dict[str, type[Op]] = {
    cls.kind: cls for cls in (Conv2D, Dense, ReduceSum, Mul, Requantize, Add, SumPool2D, MaxPool2D, Reshape, Transpose,
                              BatchMatMul)
}


@dataclass
class Graph:
    """An integer-only graph. ``run`` takes float input (NHWC) and returns the integer output."""

    tensors: dict[str, TensorSpec]
    ops: list[Op]
    input: str
    outputs: list[str]
    meta: dict = field(default_factory=dict)
    path: str | None = field(default=None, repr=False, compare=False)  # the file it was read from, for messages
    # A temporal graph (ir/state.py): its integer states and its steps and readouts; None: one sample per run.
    states: dict = field(default_factory=dict)  # name -> state.StateSpec
    sequence: "object | None" = None  # state.Sequence

    @property
    def stateful(self) -> bool:
        """Runs over sequences, its state carried from step to step: only a target that says so takes it."""
        return self.sequence is not None

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float -> input integers: clamp(round_half_away(x / scale) + zero_point), in float32 as TFLite."""
        spec = self.tensors[self.input]
        x = np.asarray(x, dtype=np.float32)
        self.check_input_shape(x)
        v = x / np.float32(spec.scale)
        q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + spec.zero_point
        lo, hi = dtype_range(spec.dtype)
        return np.clip(q, lo, hi).astype(DTYPES[spec.dtype])

    def check_input_shape(self, x: np.ndarray) -> None:
        want = tuple(self.tensors[self.input].shape)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise EdgesnnError(f"input batch has shape {tuple(x.shape)}; this model takes (batch, {', '.join(map(str, want))}) in {LAYOUT}")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Integer output batch of the first output for a float input batch."""
        return self.run_integer(self.quantize_input(x))[self.outputs[0]]

    def run_integer(self, xq: np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
        from edgesnn.ir.interpreter import execute

        if self.sequence is not None:
            raise EdgesnnError(f"this model keeps state over {self.sequence.steps} timesteps: it takes sequences (batch, "
                               f"T={self.sequence.steps}, {', '.join(map(str, self.tensors[self.input].shape))}), run by "
                               f"edgesnn.ir.state.run_sequence")
        self.check_input_shape(np.asarray(xq))
        try:
            return execute(self, np.asarray(xq), keep_all=keep_all)
        except OverflowError as e:  # the interpreter checks every int32 accumulator: a model for wider data
            raise EdgesnnError(f"integer overflow while running the IR: {e}") from None

    def run_sequence(self, x: np.ndarray, keep_steps: bool = False) -> dict[str, np.ndarray]:
        """A temporal graph on float sequences (N, T, ...): each output's readout (edgesnn.ir.state)."""
        from edgesnn.ir import state

        return state.run_sequence(self, state.quantize_sequence(self, x), keep_steps=keep_steps)

    def dequantize(self, name: str, q: np.ndarray) -> np.ndarray:
        spec = self.tensors[name]
        return (q.astype(np.float64) - spec.zero_point) * spec.scale

    def save(self, path) -> None:
        from edgesnn.ir.serialize import save

        save(self, path)

    def weight_ops(self) -> list[Op]:
        return [op for op in self.ops if getattr(op, "weight", None) is not None]
