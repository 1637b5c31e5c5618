"""edgesnn's Lava Processes and their fixed-point ProcessModels (tag ``fixed_pt``, CPU).

Every process carries flat int32 vectors (24-bit payloads). An IR op is one ``Op1`` or ``Op2``
process (one or two inputs); its arithmetic is :mod:`edgesnn.backends.lava.arith`'s: the product of
two activation tensors (batch_matmul) is an ``Op2`` whose models run arith's product compartments
and sum neurons on its two operand streams. A reshape or transpose has no process (network.py: it
is the order the consumer reads its input in). Three modes:

- **graded**: one sample per timestep. Models are zero-delay (recv, compute, send in the same
  step; Lava's ports add no delay), so sample t is at every process at step t.
- **rate-burst**: each sample occupies a window of W steps (W = the largest D of the graph). A
  spike tensor travels as spikes: its neuron, an IF neuron with threshold 1 and soft reset
  loaded with the integer s, fires s unit spikes in the window (SFA Proposition 1), and its
  consumers add them up over the window; any other tensor is held for the window. A process
  computes at the window's last step and emits during the next window, so the output of a
  process at depth d carries sample i in window i + d; inputs of different depths are delayed
  to line up.
- **bit-plane**: the same windows, W = ceil(log2(D + 1)) steps (D: the largest of the graph). A
  spike tensor's neuron emits the bits of s, most significant first (the step k spike weighs
  2^(W-1-k)); its consumers integrate them exactly by doubling the window's sum before adding
  each step (total = 2 total + x), which leaves s after W steps.

Importing this module imports Lava: call :func:`edgesnn.backends.lava.compat.ensure_lava_importable` first.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

PORT = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)


class Source(AbstractProcess):
    """Emits ``data[i]`` (integer input samples) for sample i: at step i, or held over window i."""

    def __init__(self, *, data: np.ndarray, window: int):
        super().__init__(data=data, window=window)
        self.out = OutPort(shape=(data.shape[1],))


class Sink(AbstractProcess):
    """Records its input at every step into a .npy file (Var.get would move one element per message)."""

    def __init__(self, *, size: int, steps: int, path: str):
        np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(steps, size)).flush()
        super().__init__(size=size, steps=steps, path=path)
        self.in0 = InPort(shape=(size,))


class Op1(AbstractProcess):
    """An IR op with one input. ``fn`` (arith.op_function) is its arithmetic; ``burst`` and ``code`` (the
    mode): see module doc."""

    def __init__(self, *, size_in: int, size_out: int, fn, name: str, burst_in=(False,), burst_out=False,
                 delays=(0,), window=1, signed=False, code="graded"):
        super().__init__(fn=fn, burst_in=burst_in, burst_out=burst_out, delays=delays, window=window, signed=signed,
                         code=code, name=name)
        self.in0 = InPort(shape=(size_in,))
        self.out = OutPort(shape=(size_out,))


class Op2(AbstractProcess):
    """An IR op with two inputs (add, mul)."""

    def __init__(self, *, size_in: tuple[int, int], size_out: int, fn, name: str, burst_in=(False, False),
                 burst_out=False, delays=(0, 0), window=1, signed=False, code="graded"):
        super().__init__(fn=fn, burst_in=burst_in, burst_out=burst_out, delays=delays, window=window, signed=signed,
                         code=code, name=name)
        self.in0 = InPort(shape=(size_in[0],))
        self.in1 = InPort(shape=(size_in[1],))
        self.out = OutPort(shape=(size_out,))


# ---- models -----------------------------------------------------------------------------------

def _one_blas_thread() -> None:
    """Each model runs in its own forked process: one BLAS thread each, or they thrash the cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


@implements(proc=Source, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SourceModel(PyLoihiProcessModel):
    out: PyOutPort = OUT

    def run_spk(self):
        i = (self.time_step - 1) // self.proc_params["window"]
        data = self.proc_params["data"]
        self.out.send(data[i] if i < len(data) else np.zeros(data.shape[1], np.int32))


@implements(proc=Sink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SinkModel(PyLoihiProcessModel):
    in0: PyInPort = PORT

    def run_spk(self):
        x = self.in0.recv()
        if not hasattr(self, "_rows"):
            self._rows = np.lib.format.open_memmap(self.proc_params["path"], mode="r+")
        t = self.time_step - 1
        if t < len(self._rows):
            self._rows[t] = x


class _Graded:
    """Zero-delay: recv every input, compute, send, in the same step."""

    def run_spk(self):
        if not hasattr(self, "_fn"):
            _one_blas_thread()
            self._fn = self.proc_params["fn"]
        xs = [port.recv() for port in self._inputs()]
        self.out.send(self._fn(xs).astype(np.int32))


class _Burst:
    """Window-synchronous: spike inputs are integrated over the window (rate-burst: summed;
    bit-plane: doubled, then added), others held; the result of window w is emitted during
    window w + 1 (as the spike train of its code if it is a spike tensor)."""

    def run_spk(self):
        p = self.proc_params
        if not hasattr(self, "_fn"):
            _one_blas_thread()
            self._fn, self._window, self._planes = p["fn"], p["window"], p["code"] == "bit-plane"
            self._current = np.zeros(self.out.shape, np.int64)
            self._sums = None
            self._lines = [deque(maxlen=d + 1) for d in p["delays"]]
        phase = (self.time_step - 1) % self._window
        xs = [port.recv().astype(np.int64) for port in self._inputs()]
        if phase == 0:
            self._sums = [np.zeros_like(x) for x in xs]
        for total, x, burst in zip(self._sums, xs, p["burst_in"]):
            if burst and self._planes:
                total *= 2  # the exact bit-plane integration: acc = 2 acc + x
            total += x if burst else 0
        self.out.send(self._emit(phase).astype(np.int32))
        if phase == self._window - 1:
            values = [total if burst else x for total, x, burst in zip(self._sums, xs, p["burst_in"])]
            for line, v in zip(self._lines, values):
                line.append(v)
            if all(len(line) == line.maxlen for line in self._lines):
                self._current = self._fn([line[0] for line in self._lines]).astype(np.int64)

    def _emit(self, phase: int) -> np.ndarray:
        """Held value, or the neuron's spike at this phase (carrying the sign of s): rate-burst, the IF
        neuron's, one per unit of |s|; bit-plane, bit W-1-phase of |s|."""
        if not self.proc_params["burst_out"]:
            return self._current
        if self._planes:
            return np.sign(self._current) * ((np.abs(self._current) >> (self._window - 1 - phase)) & 1)
        return np.sign(self._current) * (np.abs(self._current) > phase)


@implements(proc=Op1, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class GradedOp1(_Graded, PyLoihiProcessModel):
    in0: PyInPort = PORT
    out: PyOutPort = OUT

    def _inputs(self):
        return (self.in0,)


@implements(proc=Op2, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class GradedOp2(_Graded, PyLoihiProcessModel):
    in0: PyInPort = PORT
    in1: PyInPort = PORT
    out: PyOutPort = OUT

    def _inputs(self):
        return (self.in0, self.in1)


@implements(proc=Op1, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class BurstOp1(_Burst, PyLoihiProcessModel):
    in0: PyInPort = PORT
    out: PyOutPort = OUT

    def _inputs(self):
        return (self.in0,)


@implements(proc=Op2, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class BurstOp2(_Burst, PyLoihiProcessModel):
    in0: PyInPort = PORT
    in1: PyInPort = PORT
    out: PyOutPort = OUT

    def _inputs(self):
        return (self.in0, self.in1)


MODELS = {("graded", 1): GradedOp1, ("graded", 2): GradedOp2, ("rate-burst", 1): BurstOp1,
          ("rate-burst", 2): BurstOp2, ("bit-plane", 1): BurstOp1, ("bit-plane", 2): BurstOp2}
