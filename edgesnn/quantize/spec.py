"""The quantization spec: what a compressed checkpoint changed, recorded in its config.json.

A checkpoint is rebuilt from its model name and constructor arguments; the spec then replays
the structural changes before the weights load: narrower layers (pruning), neuron swaps
(ternary spikes), membrane quantizers (Q-SNN) and Brevitas weight quantizers. Keys:

- ``widths``: {layer: {"in": n, "out": m}} for every Conv2d / Linear / BatchNorm that pruning narrowed
- ``neurons``: {neuron: {"kind": "ternary_step", "channels": c}} for swapped neurons; kinds "ibra"
  and "mpbn" hold their neuron's own arguments (IBRALIF.spec(), MPBNSpike.spec())
- ``membrane_bits``: bits of every MultiSpike's membrane, or null
- ``weights``: {layer: {"quantizer": name, "bits": b}} (see quantize/quantizers.py)
- ``stream_dtype``: the stream dtype the export uses by default (quantize --stream-dtype)
- ``stream_bits``: 8 or 16 when the residual streams were trained quantized (quantize/streams.py); the
  export must then use that stream dtype
"""

from __future__ import annotations

from brevitas.nn import QuantConv1d, QuantConv2d, QuantLinear
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import IBRALIF, MembraneQuant, MPBNSpike, MultiSpike, TernaryStep
from edgesnn.quantize.quantizers import QUANTIZERS, injector

WEIGHT_LAYERS = (nn.Conv2d, nn.Conv1d, nn.Linear)


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise EdgesnnError(f"the model has no layer {name!r}") from None


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(get_module(model, parent) if parent else model, child, module)


def narrowed(m: nn.Module, n_in: int | None = None, n_out: int | None = None) -> nn.Module:
    """A fresh float layer like ``m`` with ``n_in`` input / ``n_out`` output channels."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise EdgesnnError("grouped convolutions cannot be narrowed")
        return nn.Conv2d(n_in or m.in_channels, n_out or m.out_channels, m.kernel_size, m.stride, m.padding,
                         m.dilation, 1, m.bias is not None, m.padding_mode)
    if isinstance(m, nn.Linear):
        return nn.Linear(n_in or m.in_features, n_out or m.out_features, m.bias is not None)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(m)(n_out, m.eps, m.momentum, m.affine, m.track_running_stats)
    raise EdgesnnError(f"cannot narrow a {type(m).__name__}")


def quant_layer(m: nn.Module, quantizer: str, bits: int) -> nn.Module:
    """The Brevitas twin of a float Conv2d / Linear, sharing its weights, with our quantizer."""
    if quantizer not in QUANTIZERS:
        raise EdgesnnError(f"unknown weight quantizer {quantizer!r}; known: {', '.join(QUANTIZERS)}")
    try:
        wq = injector(quantizer, bits)
    except ValueError as e:
        raise EdgesnnError(f"{quantizer} weights: {e}") from None
    if isinstance(m, nn.Conv2d):
        q = QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                        bias=m.bias is not None, padding_mode=m.padding_mode, weight_quant=wq)
    elif isinstance(m, nn.Conv1d):
        q = QuantConv1d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                        bias=m.bias is not None, padding_mode=m.padding_mode, weight_quant=wq)
    elif isinstance(m, nn.Linear):
        q = QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, weight_quant=wq)
    else:
        raise EdgesnnError(f"only Conv2d, Conv1d and Linear weights are quantized, not {type(m).__name__}")
    q.weight, q.bias = m.weight, m.bias  # the same Parameters: an optimizer holding them keeps training them
    return q.train(m.training)


def apply(model: nn.Module, spec: dict) -> nn.Module:
    """Replay ``spec`` on a freshly built model (before its weights load)."""
    from edgesnn.temporal.model import SpikingSequence

    if isinstance(model, SpikingSequence):  # a temporal model: its layers' grids, no Brevitas (quantize/temporal.py)
        from edgesnn.quantize import temporal

        return temporal.apply(model, spec)
    for name, w in spec.get("widths", {}).items():
        set_module(model, name, narrowed(get_module(model, name), w.get("in"), w.get("out")))
    for name, n in spec.get("neurons", {}).items():
        seed = {"ibra": IBRALIF, "mpbn": MPBNSpike}.get(n.get("kind") if isinstance(n, dict) else None)
        if seed is not None:
            set_module(model, name, seed.from_spec(n, f"neuron {name!r}"))
            continue
        if n.get("kind") != "ternary_step":
            raise EdgesnnError(f"neuron {name!r}: unknown replacement {n.get('kind')!r}")
        set_module(model, name, TernaryStep(int(n["channels"]), float(n.get("threshold", 0.5)),
                                            bool(n.get("learn_amplitude", True))))
    if spec.get("membrane_bits"):
        set_membrane_bits(model, int(spec["membrane_bits"]))
    for name, w in spec.get("weights", {}).items():
        set_module(model, name, quant_layer(get_module(model, name), w["quantizer"], int(w["bits"])))
    if spec.get("stream_bits") is not None:
        from edgesnn.quantize import streams

        model = streams.insert(model, int(spec["stream_bits"]))  # last: it traces the model as it now is
    return model


def set_membrane_bits(model: nn.Module, bits: int) -> None:
    for m in model.modules():
        if isinstance(m, MultiSpike):
            m.membrane = MembraneQuant(bits)

