"""What a library's neuron instance says about its first timestep, in the terms of edgesnn's neurons.

edgesnn trains and deploys one timestep from rest. A library neuron then does one thing: it
fires when its input x reaches a threshold, and its membrane is a fixed multiple of x. Each
reader below works that out from the instance's own attributes, following the library's forward
pass (the formula is cited in its docstring), so that ``--neuron-map CLASS=sfa`` keeps the
instance's threshold, largest count and normalisation, and ``readout`` its membrane scale:

    library neuron                     D           threshold (first spike at x >= theta)   readout
    snnTorch Leaky                     1           threshold                               x
    SpikingJelly IFNode                1           v_threshold - v0                        x
    SpikingJelly LIFNode               1           (v_threshold - v0) * tau                x / tau
    SpikingJelly ParametricLIFNode     1           (v_threshold - v0) / sigmoid(w)         x sigmoid(w)
    SDT-V3 MultiSpike                  max_value   0.5                                     x

(v0: SpikingJelly's resting membrane, v_reset, or 0 when v_reset is None; a LIF with
decay_input=False charges as an IF.) edgesnn's MultiSpike
fires clamp(floor(gain x + 0.5), 0, D), whose first count comes at x >= 1 / (2 gain): a neuron
with threshold theta maps to gain = 1 / (2 theta). Ties: snnTorch fires only above its threshold
and edgesnn rounds halves up, a difference on a set of measure zero. SDT-V3 rounds halves to even
(torch.round), and in E-SpikeFormer's attention that is not measure zero: with 16 channels per head
its scale 2 / sqrt(16) puts the attention neuron's input on a 1/128 grid, where exact halves are
common (about 1 in 1,000 of its inputs on random data). edgesnn keeps rounding them up: the
integer targets' requantization rounds halves one way, and an odd count's strict threshold next
to an even count's inclusive one is no single multiplier's. Fine-tuning (``edgesnn quantize``)
trains the mapped neuron; the mapped model of a checkpoint trained with to-even ties can differ
from it on those inputs.

A library class is recognised by its defining module and name anywhere in the instance's MRO
(so a subclass that keeps the step is read as its library base; no library is imported here),
SDT-V3's MultiSpike, which users copy into their own code, by its name and its attributes
(max_value, min_value, Norm). Another neuron of these libraries is not guessed at: the map must
give its settings. An instance whose forward pass cannot be expressed (SpikingJelly in multi-step mode, snnTorch's
inhibition, per-neuron thresholds, ...) is one error naming what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgesnn.errors import EdgesnnError


@dataclass(frozen=True)
class Instance:
    """One neuron instance's first timestep from rest. None: the instance does not say."""

    library: str
    D: int | None = None
    normalize: bool | None = None
    threshold: float | None = None  # the input x at which the first spike fires
    scale: float = 1.0  # the membrane's change from rest per unit of input (the readout)
    rest: float = 0.0  # the membrane at rest, which the readout leaves out (the same for every output)
    read: dict = field(default_factory=dict)  # the attributes read, for inspect

    def describe(self) -> str:
        return f"{self.library}: " + ", ".join(f"{k}={v}" for k, v in self.read.items())


def _scalar(value, name: str, where: str) -> float:
    """A number or a one-element tensor as a float. On the meta device (edgesnn sizes a model there
    before building it for real) a tensor has no value: 1.0 stands in, as only shapes matter then."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise EdgesnnError(f"{where}: {name} holds {value.numel()} values (one per neuron); edgesnn maps a "
                               f"layer with one {name}")
        if value.is_meta:
            return 1.0
        value = value.detach().reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EdgesnnError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _positive_threshold(theta: float, what: str, where: str) -> float:
    if not theta > 0:
        raise EdgesnnError(f"{where}: {what} = {theta:g} <= 0, so the neuron fires with no input; "
                           f"edgesnn's neurons fire only on a positive input")
    return theta


def snntorch_leaky(m: nn.Module, where: str) -> Instance:
    """snnTorch 1.0 ``Leaky`` (snntorch/_neurons/leaky.py, neurons.py). One step of ``forward``:

        reset = H(mem - threshold)                      (the previous mem: 0 at rest, so reset = 0)
        mem   = beta.clamp(0, 1) * mem + input - reset * threshold      (reset_mechanism "subtract";
                "zero" multiplies mem by 1 - reset first, "none" leaves it)
        spk   = H(mem - threshold) * graded_spikes_factor,  H(x) = [x > 0]  (the surrogates' forward)

    From rest mem = input, whatever beta and the reset: D = 1, the threshold as it is, readout x."""
    if getattr(m, "inhibition", False):
        raise EdgesnnError(f"{where}: inhibition=True (only the largest membrane fires) has no edgesnn form")
    if getattr(m, "state_quant", False):
        raise EdgesnnError(f"{where}: state_quant quantizes the membrane with snnTorch's own function; "
                           f"map a Leaky without it")
    factor = _scalar(m.graded_spikes_factor, "graded_spikes_factor", where)
    if factor != 1.0:
        raise EdgesnnError(f"{where}: graded_spikes_factor = {factor:g}: edgesnn's spikes are counts; "
                           f"map a Leaky with graded_spikes_factor=1")
    theta = _positive_threshold(_scalar(m.threshold, "threshold", where), "threshold", where)
    return Instance("snnTorch Leaky", D=1, threshold=theta, read={"threshold": theta})


def _spikingjelly(m: nn.Module, where: str, name: str, k: float, read: dict) -> Instance:
    """SpikingJelly 2.0 (activation_based/neuron/base_node.py, _ops/*/reference.py), one single-step
    ``forward`` from rest: the membrane starts at v0 = v_reset (0.0 when v_reset is None, soft reset),
    charges to h = v0 + k x, and spike = H(h - v_threshold) with H(x) = [x >= 0]
    (surrogate._SurrogateSpike and heaviside). So x >= (v_threshold - v0) / k fires: D = 1, and
    the readout is h - v0 = k x."""
    if getattr(m, "step_mode", "s") != "s":
        raise EdgesnnError(f"{where}: step_mode={m.step_mode!r}; edgesnn runs one timestep, so map SpikingJelly "
                           f"neurons in single-step mode (functional.set_step_mode(net, 's'))")
    surrogate = getattr(m, "surrogate_function", None)
    if surrogate is not None and getattr(surrogate, "spiking", True) is False:
        raise EdgesnnError(f"{where}: its surrogate function has spiking=False (the forward pass outputs the "
                           f"smooth function, not spikes); edgesnn maps spiking neurons")
    v_threshold = _scalar(m.v_threshold, "v_threshold", where)
    v0 = 0.0 if m.v_reset is None else _scalar(m.v_reset, "v_reset", where)
    theta = _positive_threshold((v_threshold - v0) / k, "(v_threshold - v_reset) / (membrane per unit input)", where)
    return Instance(f"SpikingJelly {name}", D=1, threshold=theta, scale=k, rest=v0,
                    read={"v_threshold": v_threshold, "v_reset": m.v_reset, **read})


def spikingjelly_if(m: nn.Module, where: str) -> Instance:
    """``IFNode``: h = v + x (_ops/if_/reference.py: step), so k = 1."""
    return _spikingjelly(m, where, "IFNode", 1.0, {})


def spikingjelly_lif(m: nn.Module, where: str) -> Instance:
    """``LIFNode``: h = v + (x - (v - v_r)) / tau with decay_input, else h = v - (v - v_r) / tau + x,
    v_r = v_reset or 0 (_ops/lif/reference.py: charge); from rest v = v_r, so k = 1 / tau or 1."""
    tau = _scalar(m.tau, "tau", where)
    if m.decay_input:
        return _spikingjelly(m, where, "LIFNode", 1.0 / tau, {"tau": tau, "decay_input": True})
    return _spikingjelly(m, where, "LIFNode", 1.0, {"tau": tau, "decay_input": False})


def spikingjelly_plif(m: nn.Module, where: str) -> Instance:
    """``ParametricLIFNode``: LIFNode's charge with 1 / tau = sigmoid(w), w trained
    (_ops/plif/reference.py: step): k = sigmoid(w) with decay_input, else 1."""
    q = _scalar(torch.sigmoid(torch.as_tensor(m.w).detach()), "sigmoid(w)", where)
    return _spikingjelly(m, where, "ParametricLIFNode", q if m.decay_input else 1.0,
                         {"sigmoid(w)": q, "decay_input": bool(m.decay_input)})


def sdt_v3_multispike(m: nn.Module, where: str) -> Instance:
    """Spike-Driven-Transformer-V3's ``MultiSpike(min_value=0, max_value=4, Norm=None)``
    (SDT_V3/Classification/Model_Base/models.py): forward = round(clamp(x, min_value, max_value)) / Norm,
    Norm = max_value when None. D = max_value; Norm == max_value is edgesnn's normalize=True and
    Norm == 1 normalize=False; the first count comes at x = 0.5, the threshold of gain 1."""
    lo = _scalar(m.min_value, "min_value", where)
    if lo != 0:
        raise EdgesnnError(f"{where}: min_value = {lo:g}; edgesnn's neurons count from 0 (min_value=0)")
    top = _scalar(m.max_value, "max_value", where)
    if top != int(top) or top < 1:
        raise EdgesnnError(f"{where}: max_value = {top:g} is not a positive integer (the largest spike count)")
    D = int(top)
    norm = _scalar(m.Norm, "Norm", where)
    if norm == D:
        normalize = True
    elif norm == 1:
        normalize = False
    else:
        raise EdgesnnError(f"{where}: Norm = {norm:g}; edgesnn divides the count by max_value (Norm={D}) or by "
                           f"nothing (Norm=1)")
    return Instance("SDT-V3 MultiSpike", D=D, normalize=normalize, threshold=0.5,
                    read={"max_value": D, "Norm": m.Norm})


# The table: defining module and class name -> reader.
READERS: dict[str, Callable[[nn.Module, str], Instance]] = {
    "snntorch._neurons.leaky.Leaky": snntorch_leaky,
    "spikingjelly.activation_based.neuron.integrate_and_fire.IFNode": spikingjelly_if,
    "spikingjelly.activation_based.neuron.lif.LIFNode": spikingjelly_lif,
    "spikingjelly.activation_based.neuron.plif.ParametricLIFNode": spikingjelly_plif,
}


# Methods that define a neuron's step in these libraries: a subclass overriding one is another neuron.
DYNAMICS = ("forward", "fire", "mem_reset", "_base_state_function", "_base_sub", "_base_zero", "_base_int",
            "single_step_forward", "single_step_functional_forward", "neuronal_charge", "neuronal_fire")
LIBRARIES = {"snntorch": "snnTorch", "spikingjelly": "SpikingJelly"}


def read(m: nn.Module, where: str) -> Instance | None:
    """What ``m`` says about its first timestep, or None for a class no reader knows. A subclass of
    a known class is read as it, unless it redefines the step (one of ``DYNAMICS``)."""
    mro = type(m).__mro__
    for i, cls in enumerate(mro):
        reader = READERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if reader is not None:
            if any(name in vars(sub) for sub in mro[:i] for name in DYNAMICS):
                return None
            return reader(m, where)
    if type(m).__name__ == "MultiSpike" and all(hasattr(m, a) for a in ("max_value", "min_value", "Norm")):
        return sdt_v3_multispike(m, where)
    return None


def library(m: nn.Module) -> str | None:
    """The library (snnTorch, SpikingJelly) whose class ``m`` is or derives from, if any."""
    return next((LIBRARIES[c.__module__.split(".")[0]] for c in type(m).__mro__
                 if c.__module__.split(".")[0] in LIBRARIES), None)
