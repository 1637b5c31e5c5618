"""edgesnn's Lava Processes for the stateful ops of a temporal graph that Lava's own bit-accurate LIF
(``lava.proc.lif``'s ``PyLifResetModelBitAcc``) does not compute as the IR does (sequences.py chooses,
per op, and says why): reset by subtraction, an input shift other than 6, a membrane narrower than 24
bits, a saturating current, per-channel decays or thresholds, a threshold that is not vth * 2**6, an
LI readout (no spike), and the recurrent weight from a layer's own previous spikes.

The state lives in each process's Vars (``v``, ``i``; ``prev`` for a recurrent op), zeroed at the first
step of every sequence (Lava step k, counting from 1, with (k - 1) % T == 0), as Lava's ``LIFReset``
does with ``reset_interval`` T. The arithmetic is the IR's (docs/temporal.md), spelled out in int64:

    decay(v, d) = sign(p) * (|p| >> 12),  p = v * (4096 - d)
    i = hold(decay(i, d_i) + (x << shift));  v = hold(decay(v, d_v) + i)    (lif, li: no i)
    s = v > threshold;  v -= threshold * s  (subtract)  |  v = 0 where s  (zero)
    MultiSpike (max_spike D > 1): s = clip(floor((v - 1) / threshold), 0, D), the same resets (s > 0)

``hold`` saturates to the state's width (an ``overflow: error`` state too: where it would overflow,
the IR stops with an error and there is nothing to compare).

Importing this module imports Lava: call :func:`edgesnn.backends.lava.compat.ensure_lava_importable` first.
"""

from __future__ import annotations

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

from edgesnn.backends.lava.processes import OUT, PORT
from edgesnn.ir.fixedpoint import multiply_by_quantized_multiplier

STATE = LavaPyType(np.ndarray, np.int32, precision=24)


class Neuron(AbstractProcess):
    """lif, cuba_lif or li over sequences of ``steps``. Per-element parameters (flat, the IR's per-channel
    values repeated along the vector): ``decay_v``, ``decay_i`` (None: no current), ``threshold`` (None: li),
    ``bounds_v`` / ``bounds_i`` (each state's symmetric width); ``gather``: the order the input is read in;
    ``max_spike``: the most spikes per step (1: 0/1 spikes; D > 1: MultiSpike counts, graded payloads)."""

    def __init__(self, *, size_in: int, size: int, steps: int, decay_v, decay_i, threshold, reset: str,
                 input_shift: int, bounds_v, bounds_i, gather, name: str, max_spike: int = 1):
        super().__init__(steps=steps, decay_v=decay_v, decay_i=decay_i, threshold=threshold, reset=reset,
                         input_shift=input_shift, bounds_v=bounds_v, bounds_i=bounds_i, gather=gather, name=name,
                         max_spike=max_spike)
        self.in0 = InPort(shape=(size_in,))
        self.out = OutPort(shape=(size,))
        self.v = Var(shape=(size,), init=0)
        self.i = Var(shape=(size,), init=0)


class Recurrent(AbstractProcess):
    """recurrent: ``y = clamp(x + MBQM(W (prev - zp), multiplier, shift))``; ``prev`` (a Var) is what port
    ``source`` carried at the previous step, zero at each sequence's first."""

    def __init__(self, *, size_in: int, size_source: int, size: int, steps: int, weight, zero_point: int,
                 multiplier, shift, clamp, gathers, name: str):
        super().__init__(steps=steps, weight=weight, zero_point=zero_point, multiplier=multiplier, shift=shift,
                         clamp=clamp, gathers=gathers, name=name)
        self.in0 = InPort(shape=(size_in,))
        self.source = InPort(shape=(size_source,))
        self.out = OutPort(shape=(size,))
        self.prev = Var(shape=(size_source,), init=0)


def decay(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Loihi's decay: |v| shrinks by d/4096, rounded toward zero for both signs."""
    p = v * (4096 - d)
    return np.sign(p) * (np.abs(p) >> 12)


def _first_step(model) -> bool:
    return (model.time_step - 1) % model.proc_params["steps"] == 0


def _gathered(x: np.ndarray, index) -> np.ndarray:
    x = x.astype(np.int64)
    return x if index is None else x[index]


@implements(proc=Neuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class NeuronModel(PyLoihiProcessModel):
    in0: PyInPort = PORT
    out: PyOutPort = OUT
    v: np.ndarray = STATE
    i: np.ndarray = STATE

    def run_spk(self):
        p = self.proc_params
        x = _gathered(self.in0.recv(), p["gather"])
        if _first_step(self):  # a new sequence: every state zero
            self.v[:] = 0
            self.i[:] = 0
        drive = x << p["input_shift"]
        if p["decay_i"] is not None:
            i = np.clip(decay(self.i.astype(np.int64), p["decay_i"]) + drive, *p["bounds_i"])
            self.i[:] = i
            drive = i
        v = np.clip(decay(self.v.astype(np.int64), p["decay_v"]) + drive, *p["bounds_v"])
        if p["threshold"] is None:  # li: the membrane is the output
            self.v[:] = v
            self.out.send(v.astype(np.int32))
            return
        top = p.get("max_spike", 1)
        spike = (v > p["threshold"]).astype(np.int64) if top == 1 else np.clip((v - 1) // p["threshold"], 0, top)
        v = v - spike * p["threshold"] if p["reset"] == "subtract" else np.where(spike > 0, 0, v)
        self.v[:] = v
        self.out.send(spike.astype(np.int32))


@implements(proc=Recurrent, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class RecurrentModel(PyLoihiProcessModel):
    in0: PyInPort = PORT
    source: PyInPort = PORT
    out: PyOutPort = OUT
    prev: np.ndarray = STATE

    def run_spk(self):
        p = self.proc_params
        x = _gathered(self.in0.recv(), p["gathers"][0])
        if _first_step(self):
            self.prev[:] = 0
        acc = p["weight"] @ (self.prev.astype(np.int64) - p["zero_point"])  # |acc| < 2**31: checked at export
        y = np.clip(x + multiply_by_quantized_multiplier(acc, p["multiplier"], p["shift"]), *p["clamp"])
        self.out.send(y.astype(np.int32))
        # The source is computed downstream from y in this same step: received after sending, it is the
        # previous step's value at the next one (the loop has no deadlock and no extra delay).
        self.prev[:] = _gathered(self.source.recv(), p["gathers"][1])
