"""Compression methods: Q-SNN, QP-SNN, BESTformer and ternary spikes, as quantization-aware
fine-tuning of a trained checkpoint into a smaller checkpoint the exporter consumes; and the two
neuron methods IBRA-LIF and MPBN, fine-tuned the same way. A temporal checkpoint (a model over
sequences) takes Q-SNN only, through temporal.py.

Each method module has ``prepare(model, config, data, options) -> Plan``: it changes the model
(quantizers, pruning, neurons) and says how to fine-tune it. What it changed is recorded in the
new checkpoint's ``quantization`` spec (see spec.py), so loading rebuilds the same structure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch

from edgesnn import checkpoint, distributed, export, models, threads
from edgesnn import data as datasets
from edgesnn.errors import EdgesnnError
from edgesnn.files import replaceable_dir
from edgesnn.models.custom import Trust
from edgesnn.quantize import bestformer, ibra, int8, mpbn, qpsnn, qsnn, streams, temporal, ternary
from edgesnn.quantize.common import Options, Plan
from edgesnn.quantize.pruning import CRITERIA
from edgesnn.train import evaluate, train

METHODS = {"qsnn": qsnn, "qpsnn": qpsnn, "bestformer": bestformer, "ternary": ternary, "ibra": ibra, "mpbn": mpbn,
           "int8": int8}

__all__ = ["METHODS", "Options", "Plan", "check_options", "quantize_checkpoint"]


def check_options(method: str, opts: Options) -> None:
    """Every user error in the options, before anything is loaded or written."""
    if method not in METHODS:
        raise EdgesnnError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if opts.weight_bits is not None and not 1 <= opts.weight_bits <= 8:
        raise EdgesnnError(f"--weight-bits must be between 1 and 8, got {opts.weight_bits}")
    if not 2 <= opts.first_last_bits <= 8:
        raise EdgesnnError(f"--first-last-bits must be between 2 and 8, got {opts.first_last_bits}")
    if not 0 <= opts.prune < 1:
        raise EdgesnnError(f"--prune must be in [0, 1), got {opts.prune}")
    if opts.prune and method != "qpsnn":
        raise EdgesnnError(f"--prune applies to the qpsnn method, not {method}")
    if opts.prune_criterion not in CRITERIA:
        raise EdgesnnError(f"--prune-criterion must be one of {', '.join(CRITERIA)}, got {opts.prune_criterion!r}")
    if opts.prune_criterion != "svs" and not opts.prune:
        raise EdgesnnError("--prune-criterion chooses the channels --prune removes; give --prune too (qpsnn)")
    if opts.membrane_bits is not None:
        if method != "qsnn":
            raise EdgesnnError(f"--membrane-bits applies to the qsnn method, not {method}")
        if not 2 <= opts.membrane_bits <= 16:
            raise EdgesnnError(f"--membrane-bits must be between 2 and 16, got {opts.membrane_bits}")
    if opts.layer_bits and method not in ("qsnn", "qpsnn"):
        raise EdgesnnError(f"layer_bits applies to the qsnn and qpsnn methods, not {method}")
    if opts.spike_bits is not None:
        if method != "ibra":
            raise EdgesnnError(f"--spike-bits applies to the ibra method, not {method}")
        if not 1 <= opts.spike_bits <= 7:
            raise EdgesnnError(f"--spike-bits must be between 1 and 7 (int8 spike counts), got {opts.spike_bits}")
    if opts.stream_dtype is not None and opts.stream_dtype not in streams.BITS:
        raise EdgesnnError(f"--stream-dtype must be one of {', '.join(streams.BITS)}, got {opts.stream_dtype!r}")
    if opts.lr is not None and not opts.lr > 0:
        raise EdgesnnError(f"--lr must be positive, got {opts.lr}")
    if opts.epochs < 1:
        raise EdgesnnError(f"--epochs must be at least 1, got {opts.epochs}")


def check_processes(ckpt: Path) -> None:
    """Before ``--nproc-per-node`` relaunches the command in N ranks: what only one process can fine-tune
    is one line here, not N lines and torchrun's traceback."""
    model_name = checkpoint.read_config(ckpt)["model"]
    if model_name in models.TEMPORAL:
        raise EdgesnnError(temporal.ONE_PROCESS.format(model_name))


@distributed.one_writer  # under torchrun: rank 0 writes, the others only train
def quantize_checkpoint(ckpt: Path, method: str, out: Path, opts: Options, data_spec: str | None = None,
                        on_epoch: Callable[[int, float], None] | None = None, trust_code: Trust = False,
                        source_ref: str | None = None) -> dict:
    """Fine-tune ``ckpt`` with ``method`` and write the compressed checkpoint to ``out``.
    ``trust_code``: whether ``ckpt`` may import the user code it names (see checkpoint.load).
    ``source_ref``: how the new checkpoint names ``ckpt`` (default: its absolute path; a run folder's
    is relative, so the same recipe writes the same bytes in any folder)."""
    check_options(method, opts)
    replaceable_dir(out, checkpoint.CONFIG)  # before the fine-tuning, not after
    model_name = checkpoint.read_config(ckpt)["model"]
    if model_name in models.TEMPORAL:  # what a temporal checkpoint cannot take, before it loads
        temporal.check(method, opts, model_name)
    model, config = checkpoint.load(ckpt, trust_code=trust_code)
    if config.get("quantization"):
        raise EdgesnnError(f"{ckpt} is already compressed ({config['quantization'].get('method')}); "
                           f"start from the float checkpoint")
    if config["model"] in models.TEMPORAL:  # over sequences: Q-SNN on the neurons with state, BPTT
        return temporal.quantize_checkpoint(ckpt, model, config, method, out, opts, data_spec, on_epoch, source_ref)
    data_spec = data_spec or config.get("data")
    if not data_spec:
        raise EdgesnnError(f"{ckpt} records no data set for calibration and fine-tuning; pass --data")
    ds = datasets.load(data_spec)
    want = config.get("input_shape")
    if want is not None and list(ds.in_shape) != list(want):
        raise EdgesnnError(f"{data_spec}: samples of shape {tuple(ds.in_shape)}, but {ckpt} takes {tuple(want)}")
    float_accuracy = evaluate(model, ds.x_test, ds.y_test)
    model.train()
    torch.manual_seed(opts.seed)  # new layers (BESTformer's second head) start the same every run
    with export.input_shape(ds.in_shape):  # a forward that reads shapes traces on a sample
        plan = METHODS[method].prepare(model, config, ds, opts)
        stream_dtype = opts.stream_dtype or "int8"
        # train on the integers the IR's streams and outputs hold (see quantize/streams.py)
        plan.model = streams.insert(plan.model, streams.BITS[stream_dtype])
    spec = {"method": method, **plan.spec}
    spec.update(stream_dtype=stream_dtype, stream_bits=streams.BITS[stream_dtype])
    _check_deployable(plan.model, ds, stream_dtype)
    lr = opts.lr or METHODS[method].DEFAULT_LR
    metrics = train(plan.model, ds, opts.epochs, lr=lr, seed=opts.seed, on_epoch=on_epoch,
                    loss_fn=plan.loss_fn, before_epoch=plan.before_epoch)
    new_config = {k: v for k, v in config.items() if k != "format_version"}
    new_config.update(kwargs=plan.kwargs, data=datasets.recorded(data_spec), quantization=spec,
                      source={"checkpoint": source_ref or str(Path(ckpt).resolve())})
    metrics.update(method=method, float_accuracy=float_accuracy, notes=plan.notes,
                   options={**vars(opts), "lr": lr}, threads=threads.current())
    if distributed.is_writer():
        checkpoint.save(plan.model.eval(), new_config, out, metrics)
    return metrics


def _check_deployable(model: torch.nn.Module, ds: datasets.Dataset, stream_dtype: str) -> None:
    """Export a copy of the compressed model once before fine-tuning, so that what the exporter
    refuses (ternary spikes into a grouped conv, say) shows now rather than after the epochs. The
    copy's quantizers take their first scales from one training-mode batch; the model itself and
    the random state are untouched."""
    probe = copy.deepcopy(model).train()
    sample = ds.x_train[:export.CHECK_SAMPLES]
    with torch.no_grad():
        probe(sample)
    export.check(probe, sample, stream_dtype)
