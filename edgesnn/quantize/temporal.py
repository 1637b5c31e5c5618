"""``edgesnn quantize`` of a temporal checkpoint (temporal-dense, temporal-conv): Q-SNN on neurons with state.

- **Weights:** the first and the last weight layer at ``--first-last-bits`` on the symmetric uniform grid, every
  other one (a temporal-conv's inner convolutions, an RLIF's recurrent weight) on Q-SNN's odd levels at
  ``--weight-bits`` (uniform at 8: 2^8 odd levels need 9 bits), exactly as static qsnn chooses
  (edgesnn/quantize/common.py). The layers keep their Parameters: :meth:`QLinear.set_weight_grid` only changes
  the grid the forward rounds to, straight-through, and the IR op holds the levels as ``weight_bits`` /
  ``weight_code`` (edgesnn/ir/packing.py).
- **Membrane:** ``--membrane-bits`` M is the spiking layers' state width ``bits``. Their threshold is the
  integer ``levels`` on that grid: it stays the checkpoint's where it fits, else becomes 2^(M-2) // D (D: the
  most spikes per step), so the membrane can exceed all D thresholds; a width that cannot (M = 2) is refused.
  The LI readout keeps its own width (its membrane is the logits).
- **Fine-tuning:** the temporal trainer (BPTT, Adam, cosine) from the checkpoint's weights on its data.

The new checkpoint's kwargs hold the new ``bits`` and ``levels``; its ``quantization`` spec names each weight
layer's grid, which :func:`apply` sets again when the checkpoint loads (edgesnn/quantize/spec.py).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgesnn import checkpoint, distributed, models, threads
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.quantize import qsnn
from edgesnn.quantize.common import Options
from edgesnn.quantize.spec import get_module

METHODS = ("qsnn",)
ONE_PROCESS = "--nproc-per-node: a temporal model ({}) fine-tunes in one process"


def check(method: str, opts: Options, model_name: str) -> None:
    """What a temporal checkpoint cannot take, one line each, before anything is read or written."""
    if method not in METHODS:
        raise EdgesnnError(f"--method {method}: a temporal checkpoint ({model_name}) takes only --method qsnn "
                           f"(low-bit weights and membrane); its weights already train on the int8 grid")
    if opts.stream_dtype is not None:
        raise EdgesnnError(f"--stream-dtype: a temporal model ({model_name}) has no residual streams to train")
    if distributed.active():
        raise EdgesnnError(ONE_PROCESS.format(model_name))


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the QLinear / QConv2d layers in the order a step runs them (an RLIF's recurrent weight after
    the QLinear that feeds its neuron)."""
    from edgesnn.temporal.neurons import RLIF

    names = {id(m): n for n, m in model.named_modules()}
    order = [names[id(c)] for c in getattr(model, "convs", [])]
    for lin, neuron in model.pairs:
        order.append(names[id(lin)])
        if isinstance(neuron, RLIF):
            order.append(names[id(neuron.recurrent)])
    return order


def membrane_levels(bits: int, levels: int, max_spike: int) -> int:
    """The threshold on an M-bit membrane: ``levels`` where D of them fit below its bound with room to
    exceed them, else 2^(M-2) // D; refused where not even one level does."""
    def fitting(m: int) -> int | None:
        level = min(levels, 2 ** (m - 2) // max_spike)
        return level if level >= 1 and max_spike * level < 2 ** (m - 1) - 1 else None

    if fitting(bits) is None:
        least = next(m for m in range(3, 64) if fitting(m) is not None)
        raise EdgesnnError(f"--membrane-bits {bits}: a {bits}-bit membrane holds at most {2 ** (bits - 1) - 1}, so it "
                           f"cannot exceed a threshold of {max_spike} spike(s) per step; give at least {least}")
    return fitting(bits)


def plan_weights(model: nn.Module, bits: int, first_last_bits: int, layer_bits: dict[str, int]) -> dict:
    """{layer: {"quantizer", "bits"}} for every weight layer, as static qsnn's ``quantize_weights`` chooses."""
    order = weight_layers(model)
    edges = {order[0], order[-1]} if order else set()
    inner = [n for n in order if n not in edges]
    for name, b in layer_bits.items():
        if name not in inner:
            raise EdgesnnError(f"layer_bits: {name!r} is not an inner weight layer of this model (the first and last "
                               f"take first_last_bits); its inner ones: {', '.join(inner) or 'none'}")
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
            raise EdgesnnError(f"layer_bits: {name}: bits must be between 1 and 8, got {b!r}")
    weights = {}
    for name in order:
        own = first_last_bits if name in edges else layer_bits.get(name, bits)
        quantizer = "uniform" if name in edges or own == 8 else "qsnn"
        weights[name] = {"quantizer": quantizer, "bits": int(own)}
    return weights


def apply(model: nn.Module, spec: dict) -> nn.Module:
    """Replay a temporal quantization spec on a freshly built model: each weight layer's grid. The membrane's
    width and threshold are constructor arguments (kwargs ``bits``, ``levels``), checked against the spec."""
    from edgesnn.temporal.conv import QConv2d
    from edgesnn.temporal.neurons import QLinear

    weights = spec.get("weights") or {}
    if not isinstance(weights, dict):
        raise EdgesnnError(f"invalid quantization spec (weights must be a mapping, got {type(weights).__name__})")
    for name, w in weights.items():
        layer = get_module(model, name)
        if not isinstance(layer, (QLinear, QConv2d)) or not isinstance(w, dict):
            raise EdgesnnError(f"invalid quantization spec ({name!r} is not a weight layer of a temporal model)")
        layer.set_weight_grid(w.get("quantizer"), w.get("bits"))
    bits = spec.get("membrane_bits")
    wrong = [n for n, m in model.named_modules() if getattr(m, "spiking", False) and getattr(m, "bits", bits) != bits]
    if bits is not None and wrong:
        raise EdgesnnError(f"invalid quantization spec (membrane_bits {bits}, but layer {wrong[0]} holds "
                           f"{get_module(model, wrong[0]).bits} bits)")
    return model


def quantize_checkpoint(ckpt: Path, model: nn.Module, config: dict, method: str, out: Path, opts: Options,
                        data_spec: str | None, on_epoch=None, source_ref: str | None = None) -> dict:
    """Fine-tune the temporal checkpoint ``ckpt`` (loaded: ``model``, ``config``) with Q-SNN's low-bit weights and
    membrane and write the compressed temporal checkpoint to ``out`` (the caller holds the folder's writer)."""
    from edgesnn import pipeline
    from edgesnn.temporal import pipeline as temporal
    from edgesnn.temporal.train import accuracy, train

    name = config["model"]
    check(method, opts, name)
    membrane_bits = opts.membrane_bits or qsnn.DEFAULT_MEMBRANE_BITS
    spiking = [m for m in model.modules() if getattr(m, "spiking", False) and hasattr(m, "theta")]
    levels = membrane_levels(membrane_bits, max(m.theta for m in spiking),
                             max(getattr(m, "max_spike", 1) for m in spiking))
    kwargs = {**config["kwargs"], "bits": membrane_bits, "levels": levels}
    data_spec = data_spec or config.get("data")
    if not data_spec:
        raise EdgesnnError(f"{ckpt} records no data set for fine-tuning; pass --data")
    ds = temporal.load_sequences(data_spec, name)
    pipeline.check_input_shape(config, ds, data_spec, ckpt)
    source_accuracy = accuracy(model, ds.x_test, ds.y_test)
    new = models.build(name, kwargs, where=str(Path(ckpt) / checkpoint.CONFIG))
    new.load_state_dict(model.state_dict(), strict=True)  # the same tensors: only widths and grids change
    weights = plan_weights(new, opts.weight_bits or qsnn.DEFAULT_WEIGHT_BITS, opts.first_last_bits,
                           opts.layer_bits)
    spec = {"method": method, "membrane_bits": membrane_bits, "levels": levels, "weights": weights}
    apply(new, spec)
    notes = []
    if len(weights) <= 2 and opts.first_last_bits == 8:  # temporal-dense's LIF or CubaLIF: an input and an output
        notes.append(f"{name} has no inner weight layer: its first and last stay at --first-last-bits 8 "
                     f"(give --first-last-bits B to narrow them too)")
    qsnn_layers = [get_module(new, n) for n, w in weights.items() if w["quantizer"] == "qsnn"]

    def anneal(epoch: int) -> None:  # Q-SNN's t = 10^(-1 + 2 epoch / epochs): the 1-bit tanh surrogate sharpens
        for layer in qsnn_layers:
            layer.weight_t = 10 ** (-1 + 2 * epoch / max(opts.epochs, 1))

    lr = opts.lr or qsnn.DEFAULT_LR
    history = train(new, ds.x_train, ds.y_train, epochs=opts.epochs, lr=lr, seed=opts.seed, on_epoch=on_epoch,
                    before_epoch=anneal)
    metrics = {"train_accuracy": accuracy(new, ds.x_train, ds.y_train),
               "test_accuracy": accuracy(new, ds.x_test, ds.y_test), "test_samples": len(ds.x_test),
               "epochs": opts.epochs, "loss": history.loss, "method": method, "float_accuracy": source_accuracy,
               "notes": notes, "options": {**vars(opts), "lr": lr}, "threads": threads.current()}
    new_config = {k: v for k, v in config.items() if k != "format_version"}
    new_config.update(kwargs=kwargs, data=datasets.recorded(data_spec), quantization=spec,
                      source={"checkpoint": source_ref or str(Path(ckpt).resolve())})
    checkpoint.save(new.eval(), new_config, out, metrics)
    return metrics
