"""The edgesnn command line: parses options, calls :mod:`edgesnn.pipeline`, prints with rich.

Every command takes -q/--quiet, -v/--verbose and --threads (see :func:`command`). Output: results on
stdout (tables at the terminal's width, or as wide as they need when piped, so nothing is cut),
progress and errors on stderr; ``--json FILE`` is the machine-readable form. Exit status: see
:data:`EXIT_CODES`.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from inspect import Parameter, signature
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgesnn import boards, progress, spikes, targets, threads, verdict
from edgesnn.errors import EdgesnnError
from edgesnn.files import write_json

EXIT_CODES = ("Exit status: 0 done; 1 edgesnn refused the input, with one 'error:' line on stderr (a bad or missing "
              "file, an unknown name or a value out of range: target, method, board, data set, ...; a verify below "
              "--min-agreement); 2 usage error: the command line itself is wrong (no such command or option, a "
              "missing argument or option, a value that is not a number where one is needed); 128+N: stopped by "
              "signal N (130: Ctrl-C).")
app = typer.Typer(help="Deploy quantized spiking neural networks to edge targets.", epilog=EXIT_CODES,
                  add_completion=True, pretty_exceptions_enable=False, no_args_is_help=True)
err = Console(stderr=True)
WIDE = 1 << 16  # a table's width on stdout that is not a terminal: as wide as its cells need, never cut at 80
QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL  # this command's -q / -v
_bars: progress.Bars | None = None  # this command's progress display on stderr, if any
QUIET_HELP = ("print only the result and errors: the last line (boards: the names; inspect: the totals), no progress, "
              "tables or notes")
VERBOSE_HELP = ("also log each long step and its time on stderr (even when it is not a terminal), and the traceback "
                "behind an error")
DATA_HELP = ("'digits' (bundled), 'mnist5k' or 'mnist5k-14' (MNIST, 28x28 or 14x14), a .npz file with x and y, a "
             "folder of class subfolders of images, or a CIFAR-10/100 python folder; a folder takes options such as "
             "'DIR?size=32x32&mean=0.5&std=0.25' (size=WxH, channels=1|3, mean and std: 1 or 3 values; CIFAR-100: "
             "labels=coarse)")


def _print_version(show: bool) -> None:
    """--version: the installed package's version (its metadata, as pip reports it)."""
    if show:
        from importlib.metadata import version

        print(f"edgesnn {version('edgesnn')}")
        raise typer.Exit()


@app.callback()
def _global(n_threads: int = typer.Option(threads.DEFAULT, "--threads", envvar=threads.ENV, min=1, max=threads.MAX,
                                          help=threads.HELP),
            _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print edgesnn's version and exit")):
    threads.use(n_threads)  # before any command computes (see edgesnn/threads.py)


def command(name: str | None = None):
    """``app.command`` plus what every command has: -q/--quiet, -v/--verbose and --threads (also
    accepted after the command name), progress of long steps on stderr, user errors as one line
    (exit 1), and the exit-status rule in its --help."""

    def register(fn):
        body = user_errors(_with_progress(fn))

        @functools.wraps(fn)
        def wrapper(*args, quiet: bool = False, verbose: bool = False, command_threads: int | None = None, **kwargs):
            _set_level(quiet, verbose)
            if command_threads is not None:
                threads.use(command_threads)
            return body(*args, **kwargs)

        extra = [Parameter(param, Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for param, default, annotation in (
                     ("quiet", typer.Option(False, "--quiet", "-q", help=QUIET_HELP), "bool"),
                     ("verbose", typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP), "bool"),
                     ("command_threads", typer.Option(None, "--threads", min=1, max=threads.MAX,
                                                      help="the same as edgesnn --threads N COMMAND (given here, "
                                                           "it wins)"), "int | None"))]
        own = signature(fn)
        wrapper.__signature__ = own.replace(parameters=[*own.parameters.values(), *extra])
        wrapper.__annotations__ = {**fn.__annotations__, **{p.name: p.annotation for p in extra}}
        app.command(name, epilog=EXIT_CODES)(wrapper)
        return fn

    return register


def _set_level(quiet: bool, verbose: bool) -> None:
    global _level
    if quiet and verbose:
        _fail("-q/--quiet and -v/--verbose contradict each other; give one of them")
    _level = QUIET if quiet else VERBOSE if verbose else NORMAL


def _with_progress(fn):
    """Progress of the library's long steps on stderr while ``fn`` runs: bars when stderr is a terminal
    (not with --quiet), and with --verbose one line per step and its time. The bars are gone before
    an error line is printed."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _bars
        draw, log = _level > QUIET and err.is_terminal, _level == VERBOSE
        _bars = progress.Bars(draw, log) if draw or log else None
        try:
            with progress.listen(_bars):
                return fn(*args, **kwargs)
        finally:
            if _bars is not None:
                _bars.close()
            _bars = None

    return wrapper


def user_errors(fn):
    """Print a user error as one line on stderr and exit 1: no traceback (with --verbose, the
    traceback first).

    Errors of the file system (read-only, full disk, permission denied) and of memory are the
    user's to fix too, wherever they surface."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgesnnError as e:
            _traceback()
            _fail(str(e))
        except OSError as e:
            _traceback()
            where = f"{e.filename}: " if e.filename is not None else ""
            _fail(f"{where}{e.strerror or e}")
        except RuntimeError as e:  # torch's allocator reports running out as a RuntimeError
            if "can't allocate memory" not in str(e):
                raise
            _traceback()
            _fail(f"out of memory ({_first(e)}); lower EDGESNN_MEMORY_LIMIT or use a smaller model or batch "
                  "(see SECURITY.md)")
        except MemoryError:
            _traceback()
            _fail("out of memory; lower EDGESNN_MEMORY_LIMIT or use a smaller model or batch (see SECURITY.md)")
        except ModuleNotFoundError as e:  # a device install (edgesnn[device]) has no torch
            if (e.name or "").partition(".")[0] != "torch":
                raise
            _traceback()
            from edgesnn.device import TRAIN_INSTALL

            _fail(f"this command needs torch, which is not installed: {TRAIN_INSTALL}")

    return wrapper


def _traceback() -> None:
    if _level == VERBOSE:
        print(traceback.format_exc(), end="", file=sys.stderr)


def _fail(message: str):
    err.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[-1][:200]


def one_line(text: str) -> str:
    """Control characters escaped: a path holding a newline cannot forge a second line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


TRUST_HELP = ("run code the input files name: a checkpoint's or recipe's own model factory (module:factory) "
              "and neuron classes, an MCU project's Makefile. Only for files you trust (see docs/your-own-model.md, Trust)")


def _trust_option(help_text: str = TRUST_HELP):
    return typer.Option(False, "--trust-code", help=help_text)


# Choices of options whose modules take seconds to import (edgesnn.quantize, edgesnn.backends.lava);
# tests/test_cli_behaviour.py checks they are the modules' own lists.
METHODS = ("qsnn", "qpsnn", "bestformer", "ternary", "ibra", "mpbn", "int8")  # edgesnn.quantize.METHODS
PRUNE_CRITERIA = ("svs", "random", "inverted-svs")  # edgesnn.quantize.pruning.CRITERIA
LAVA_MODES = ("graded", "rate-burst", "bit-plane")  # edgesnn.backends.lava.network.MODES (its target declares them)
STREAM_DTYPES = ("int8", "int16")  # edgesnn.ir.fixedpoint.ADD_LEFT_SHIFT: the stream dtypes export takes
# ... and of modules that import torch, which a device install (edgesnn.device) does not have;
# tests/test_device_torch_free.py checks they are the modules' own lists.
MODELS = ("mlp", "cnn", "resnet", "spikeformer", "nir", "temporal-dense", "temporal-conv")  # edgesnn.models.MODELS
TARGETS = targets.names()  # edgesnn.targets: the built-in ones and those of installed plugins


def _choices(values, other: str | None = None) -> dict:
    """Option settings showing ``values`` in --help as [a|b|c] and completing them in the shell. The
    library checks the value, so a wrong one is a one-line error (exit 1), as a wrong board or data
    set name is: those cannot be a fixed list (a board may be a .yaml file, data a path)."""
    values = list(values)
    return {"metavar": "[" + "|".join(values + ([other] if other else [])) + "]",
            "autocompletion": lambda incomplete: [v for v in values if v.startswith(incomplete)]}


def _board_option(default, kinds: tuple[str, ...] | None, what: str):
    """--board: a shipped board's name (listed in --help, completed in the shell) or a board .yaml file.
    Not a strict choice, since a file path is a board too."""
    names = boards.available(kinds)
    return typer.Option(default, metavar="NAME|FILE.yaml", help=f"{what}: {', '.join(names)}, or a board .yaml file",
                        autocompletion=lambda incomplete: [n for n in names if n.startswith(incomplete)])


def _listed(items) -> str:
    items = list(dict.fromkeys(items))
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _target_options(kind: str):
    """Replace the command's ``**options`` by the options the targets declare for ``kind`` (export or verify,
    edgesnn.targets.Option), so that typer parses them and --help lists them. An export option's help names the
    targets that take it; ``--board`` lists the boards of the targets that build for one."""

    def add(fn):
        extra = []
        kinds = tuple(dict.fromkeys(k for t in targets.all_targets() for k in t.builds_for))
        if kind == "export" and kinds:
            builders = ", ".join(t.name for t in targets.all_targets() if t.builds_for)
            extra.append(("board", _board_option(None, kinds, f"{builders}: the board to build for"), "str"))
        for o in targets.options(kind):
            text = f"{targets.owner_names(o.name, kind)}: {o.help}" if kind == "export" else o.help
            extra.append((o.name, typer.Option(o.default, o.flag, help=text, **(_choices(o.choices, o.other)
                                                                               if o.choices else {})),
                          o.type.__name__))
        own = signature(fn)
        params = [p for p in own.parameters.values() if p.kind is not Parameter.VAR_KEYWORD]
        at = next((i for i, p in enumerate(params) if p.name == "trust_code"), len(params))  # listed before it
        added = [Parameter(name, Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, default, annotation in extra]
        fn.__signature__ = own.replace(parameters=[*params[:at], *added,
                                                   *(p.replace(kind=Parameter.KEYWORD_ONLY) for p in params[at:])])
        fn.__annotations__ = {**fn.__annotations__, **{name: annotation for name, _, annotation in extra}}
        return fn

    return add


def _stdout() -> Console:
    """stdout at a terminal's width, or, piped into another program or a file, as wide as a table needs."""
    return Console(width=None if sys.stdout.isatty() else WIDE)


def _show(renderable) -> None:
    """A table on stdout, unless --quiet."""
    if _level > QUIET:
        _stdout().print(renderable)


def _say(text: str) -> None:
    """A line of detail on stdout, unless --quiet."""
    if _level > QUIET:
        print(text)


def _result(text: str) -> None:
    """The command's result: printed even with --quiet."""
    print(text)


def _note(text: str) -> None:
    """A line on stderr (a run's stages), unless --quiet; above the progress bars when they are drawn."""
    if _level > QUIET:
        (_bars.console if _bars is not None else err).print(text, markup=False, highlight=False, soft_wrap=True)


@command()
def train(
    model: str = typer.Option("cnn", help="a model of the zoo, or your own as module:factory (a function or class "
                                          "returning a torch.nn.Module; the current folder is importable)",
                              **_choices([m for m in MODELS if m != "nir"], "MODULE:FACTORY")),
    data: str = typer.Option("digits", help=DATA_HELP),
    epochs: int = typer.Option(30, help="training epochs; 0 with --weights: the trained weights as they are"),
    out: Path = typer.Option(..., help="checkpoint folder to write"),
    D: int = typer.Option(4, "--D", "-D", help="largest integer activation of the SFA neurons"),
    lr: float = typer.Option(3e-3, help="AdamW learning rate (cosine schedule)"),
    seed: int = typer.Option(0, help="random seed"),
    neuron_map: list[str] = typer.Option(None, help="your own model: map third-party neurons onto edgesnn's "
                                                    "(repeatable): CLASS=TARGET for every instance of a class "
                                                    "(import path), LAYER=TARGET for one layer (module path, e.g. "
                                                    "head.lif; overrides CLASS); TARGET is sfa[:D=N,normalize=B,"
                                                    "threshold=X] or readout[:scale=X] (the logits); a library "
                                                    "neuron's own settings are kept unless given"),
    weights: Path = typer.Option(None, help="trained weights to start from: model.state_dict() saved as .safetensors "
                                            "or with torch.save (read with weights_only=True, never a pickled "
                                            "object); with --epochs 0 nothing is trained"),
    strip_prefix: list[str] = typer.Option(None, help="remove this prefix from the start of every --weights key, "
                                                      "e.g. module. (DDP) or model. (repeatable, applied in order)"),
    model_kwargs: str = typer.Option(None, help="the model's constructor arguments as a JSON object, over the data "
                                                "set's defaults, e.g. '{\"neuron\": \"cuba_lif\", \"hidden\": 128}' "
                                                "(a recipe's model.kwargs)"),
):
    """Train a spiking model with one-timestep SFA (or bring trained weights) and write a safetensors + JSON checkpoint."""
    from edgesnn import pipeline
    from edgesnn.models.custom import parse_neuron_map

    metrics = pipeline.train_model(model, data, epochs, out, D=D, lr=lr, seed=seed,
                                   neuron_map=parse_neuron_map(neuron_map), weights=weights,
                                   strip_prefix=tuple(strip_prefix or ()), model_kwargs=_json_object(model_kwargs))
    source = metrics.get("weights")
    came = "" if source is None else f"  (weights {source['file']}{', not trained' if not metrics['epochs'] else ''})"
    _result(f"wrote {out}  test_accuracy {metrics['test_accuracy']:.4f} on {metrics['test_samples']} samples{came}")


def _json_object(text: str | None) -> dict | None:
    """--model-kwargs: a JSON object, or one error line."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgesnnError(f"--model-kwargs is not JSON: {e.msg} at character {e.pos}") from None
    if not isinstance(value, dict):
        raise EdgesnnError(f"--model-kwargs must be a JSON object {{\"name\": value, ...}}, got {type(value).__name__}")
    return value


@command()
def quantize(
    checkpoint: Path = typer.Argument(..., help="trained float checkpoint folder"),
    method: str = typer.Option(..., help="qsnn, qpsnn, bestformer, ternary, ibra (IBRA-LIF neurons), mpbn "
                                         "(membrane BatchNorm) or int8 (8-bit QAT: exact export)",
                               **_choices(METHODS)),
    out: Path = typer.Option(..., help="checkpoint folder to write"),
    weight_bits: int = typer.Option(None, help="weight bits of the hidden layers, 1..8 (default: qsnn 1, qpsnn 4, "
                                               "bestformer 1, ternary, ibra and mpbn 8)"),
    membrane_bits: int = typer.Option(None, help="qsnn: membrane potential bits, 2..16 (default 8)"),
    spike_bits: int = typer.Option(None, help="ibra: K, spike counts 0..2^K-1 sent as K bit-plane steps, 1..7 "
                                              "(default 4)"),
    stream_dtype: str = typer.Option(None, help="int8 or int16: the grid the residual streams (residual sums and "
                                                "the branches they add) and the logits train on; export then uses it "
                                                "(default int8)", **_choices(STREAM_DTYPES)),
    prune: float = typer.Option(0.0, help="qpsnn: fraction of channels to remove by SVS score, in [0, 1)"),
    prune_criterion: str = typer.Option("svs", help="qpsnn: which channels --prune removes: svs (lowest SVS score, "
                                                    "QP-SNN's), or the controls random (seeded by --seed) and "
                                                    "inverted-svs (highest score first)",
                                         **_choices(PRUNE_CRITERIA)),
    epochs: int = typer.Option(20, help="fine-tuning epochs"),
    first_last_bits: int = typer.Option(8, help="bits of the first and last layers (uniform per channel)"),
    lr: float = typer.Option(None, help="AdamW learning rate of the fine-tuning, cosine schedule (default: "
                                         "qsnn, qpsnn, ibra and mpbn 1e-3, bestformer and ternary 3e-3)"),
    data: str = typer.Option(None, help="data for fine-tuning and calibration (default: the checkpoint's)"),
    seed: int = typer.Option(0, help="random seed"),
    trust_code: bool = _trust_option(),
    nproc_per_node: int = typer.Option(None, help="fine-tune in N processes here under torchrun "
                                                  "(DistributedDataParallel; gloo on CPU, nccl on GPUs)"),
):
    """Compress a checkpoint with quantization-aware fine-tuning (Q-SNN, QP-SNN, BESTformer, ternary spikes,
    IBRA-LIF, MPBN). A temporal checkpoint takes qsnn: low-bit weights and membrane (docs/temporal.md)."""
    from edgesnn import distributed
    from edgesnn.quantize import Options, check_options, quantize_checkpoint

    if nproc_per_node is not None:  # the same command in N ranks, without this option
        from edgesnn.quantize import check_processes

        raise typer.Exit(distributed.relaunch(nproc_per_node, sys.argv[1:], "--nproc-per-node",
                                              check=lambda: check_processes(checkpoint)))
    opts = Options(weight_bits=weight_bits, membrane_bits=membrane_bits, spike_bits=spike_bits, prune=prune,
                   prune_criterion=prune_criterion, stream_dtype=stream_dtype, epochs=epochs, first_last_bits=first_last_bits, lr=lr, seed=seed)
    check_options(method, opts)
    m = quantize_checkpoint(checkpoint, method, out, opts, data, trust_code=trust_code)
    if not distributed.is_writer():
        return  # rank 0 wrote the checkpoint and says so
    for note in m["notes"]:
        _say(f"note: {note}")
    _result(f"wrote {out}  test_accuracy {m['test_accuracy']:.4f} (float {m['float_accuracy']:.4f}) "
            f"on {m['test_samples']} samples")


@command()
@_target_options("export")
def export(
    checkpoint: Path = typer.Argument(..., help="checkpoint folder (from train)"),
    target: str = typer.Option("ir", help="artifact to write: " + _listed(f"{t.name} ({t.help})"
                                                                          for t in targets.all_targets()),
                               **_choices(TARGETS)),
    out: Path = typer.Option(..., help="output folder"),
    weight_bits: int = typer.Option(8, help="weight bits per channel of float layers: 1..8, or 16 (up to 16 bits "
                                            "as two int8 planes, for trained float weights brought in without "
                                            "retraining: docs/bring-your-model.md); layers trained by "
                                            "`edgesnn quantize` keep their own"),
    stream_dtype: str = typer.Option(None, help="dtype of membrane/residual streams and outputs: int8 or int16 "
                                                "(default: int8, or what the checkpoint's compression asks for)",
                                     **_choices(STREAM_DTYPES)),
    trust_code: bool = _trust_option(),
    **options,
):
    """Export a checkpoint to a deployable artifact. The options a target declares (edgesnn.targets) apply to it."""
    from edgesnn import pipeline

    path = pipeline.export_model(checkpoint, target, out, weight_bits=weight_bits, stream_dtype=stream_dtype,
                                 trust_code=trust_code, **options)
    _result(f"wrote {path}")
    for line in targets.get(target).summary(Path(path)):
        _say(line)


@command("import")
def import_cmd(
    nir_file: Path = typer.Argument(..., help="NIR graph file (.nir, written by nir.write)"),
    out: Path = typer.Option(..., help="checkpoint folder to write"),
    data: str = typer.Option(None, help="data the graph takes, for calibration and accuracy (default: what an "
                                        "edgesnn NIR file names, else digits)"),
    timesteps: int = typer.Option(None, help="steps the network runs per sample, the input presented at every "
                                             "step: the SFA neurons' D (needed unless edgesnn wrote the file)"),
    dt: float = typer.Option(None, help="seconds per step for LIF / CubaLIF time constants (default 1e-4, "
                                        "snnTorch's convention)"),
    float_only: bool = typer.Option(False, "--float", help="ignore edgesnn metadata: import the float graph"),
    min_agreement: float = typer.Option(None, help="graphs over sequences: the least share of test sequences on "
                                                   "which the imported IR's readout argmax must agree with the "
                                                   "graph's float simulation (default 0.95)"),
):
    """Build a checkpoint from a NIR graph (Affine, Linear, Conv2d, pooling, Flatten, IF / LIF / CubaLIF); a
    graph over sequences (LI, CubaLI, I, recurrence, or --data with a time axis) becomes OUT/model.ir."""
    from edgesnn.backends.nir import import_nir

    r = import_nir(nir_file, out, data, timesteps, dt, use_metadata=not float_only, min_agreement=min_agreement)
    for note in r["notes"]:
        _say(f"note: {note}")
    how = ("exact integer program from its edgesnn metadata" if r["exact"]
           else f"float, {r['timesteps']} timesteps of {r['dt']:g} s")
    _result(f"wrote {out}  {r['layers']} layers ({how})  test_accuracy {r['test_accuracy']:.4f} "
          f"on {r['test_samples']} samples")


@command()
@_target_options("verify")
def verify(
    artifact: Path = typer.Argument(..., help=f"artifact to check ({_listed(t.artifact for t in targets.by_rank())})"),
    data: str = typer.Option(None, help=f"test data (default: the data set the checkpoint or artifact records): "
                                        f"{DATA_HELP}"),
    checkpoint: Path = typer.Option(None, help="torch checkpoint to compare with (default: the one the IR names)"),
    ir: Path = typer.Option(None, help="model.tflite / model.nir / an integer model.onnx: the IR it was written from "
                                       "(default: model.ir beside it)"),
    samples: int = typer.Option(None, help="MCU project or Lava folder: only the first N test samples (default: all)"),
    min_agreement: float = typer.Option(None, help="the least agreement that passes, 0..1. Default: 1 (no sample "
                                                   "may differ) where every output integer is compared with the IR "
                                                   "(.tflite in LiteRT's reference kernels and TFLite Micro, MCU "
                                                   f"builds, Lava, a .nir file's program); {verdict.MIN_TORCH} for model.ir "
                                                   "or model.onnx vs torch's argmax. Below it: exit 1, after the "
                                                   "table and --json. LiteRT's default kernels (XNNPACK: what a "
                                                   "Raspberry Pi or Jetson runs) and a .nir file's nodes alone are "
                                                   "reported with their difference, not judged"),
    json_out: Path = typer.Option(None, "--json", help="write the results as JSON (with a 'checks' row per runtime "
                                                       "compared and 'passed')"),
    trust_code: bool = _trust_option(),
    **options,
):
    """Run an artifact over the whole test split and compare it with what it came from.

    model.ir and a QCDQ model.onnx (onnx-qcdq) are compared with the torch model (argmax agreement);
    model.tflite and an integer model.onnx with the IR's golden interpreter, every output integer, in each runtime, next to the runtime each kind
    of board runs it in; an MCU project's builds and a Lava folder with the IR, every output integer;
    model.nir's integer program, read back, with the IR, plus how its nodes alone rank the classes.
    "bit-exact" is printed only for a runtime where no output integer differs."""
    verdict.check_min_agreement(min_agreement)  # before minutes of simulation
    # the artifact's target verifies it; a .tflite and an MCU project in numpy and their runtime, no torch
    r = targets.verify(artifact, data, checkpoint, ir, samples=samples, trust_code=trust_code, **options)
    r = verdict.judge(r, min_agreement)
    if json_out:
        write_json(json_out, r)
    _show(_checks_table(r))
    if "runs" in r:
        _show(_mcu_table(r))
        _say(f"static arena {r['arena_bytes']} bytes, constants {r['const_bytes']} bytes")
    if r.get("arena_bytes") is not None and "runtimes" in r:
        _say(f"TFLite Micro arena {r['arena_bytes']} bytes, model.tflite {r['file_bytes']} bytes")
    for name, reason in (r.get("cannot_run") or {}).items():
        _say(f"{name} cannot run it: {reason}")
    if "seconds_per_sample" in r:
        _say(f"mode {r['mode']}: {r['timesteps_per_sample']} timesteps/sample, "
             f"{r['seconds_per_sample'] * 1000:.1f} ms/sample")
    if "nodes_only" in r:
        _say(f"nodes alone ({r['timesteps']} steps): accuracy {r['nodes_only']['accuracy']:.4f}")
    if "torch_accuracy" in r:
        _say(f"accuracy {r['accuracy']:.4f}  torch_accuracy {r['torch_accuracy']:.4f}")
    _result(verdict.summary(r))
    problem = verdict.failure(r)
    if problem:
        raise EdgesnnError(problem)


def _checks_table(r: dict) -> Table:
    """One row per runtime compared: with what, how many samples differ, the agreement required, the result."""
    rows = r["checks"]
    with_boards = any(row["boards"] is not None for row in rows)
    table = Table(title=f"verify {r.get('artifact') or r.get('project')}: {r['samples']} samples")
    cols = ["runs", "runtime"] + (["boards that run it"] if with_boards else []) + [
        "compared with", "samples differing", "integers differing", "argmax differing", "agreement", "required",
        "result"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("runs", "runtime", "boards that run it", "compared with",
                                                        "result") else "right")
    dash = lambda v: "-" if v is None else str(v)  # noqa: E731
    for row in rows:
        cells = [row["name"], row["runtime"]]
        if with_boards:
            cells.append(", ".join(row["boards"]) if row["boards"] else "-")
        cells += [f"{row['against']}: {row['compares']}", f"{row['differing']} of {row['samples']}",
                  dash(row["integers"]), dash(row["argmax"]),
                  f"{row['agreement']:.4f}", "-" if row["min_agreement"] is None else f"{row['min_agreement']:g}",
                  row["result"]]
        table.add_row(*cells)
    return table


def _mcu_table(r: dict) -> Table:
    table = Table(title=f"{r['project']} ({r['board']}): cost and sizes")
    for col in ("build", "cost per inference", ".text", ".data", ".bss"):
        table.add_column(col, justify="left" if col == "build" else "right")
    for name, row in r["runs"].items():
        stats, size = row["stats"], row.get("sizes", {})
        cost = f"{stats['mean']} instructions" if stats.get("unit") == "insn" else f"{stats['mean'] / 1000:.1f} us"
        label = f"{name} ({row['machine']})" if "machine" in row else name
        table.add_row(label, cost, *(str(size.get(k, "-")) for k in ("text", "data", "bss")))
    return table


@command()
def inspect(
    artifact: Path = typer.Argument(..., help="checkpoint folder or model.ir"),
    json_out: Path = typer.Option(None, "--json", help="write the description as JSON"),
):
    """Print layers, dtypes, shapes, parameter count and bytes.

    A checkpoint that names user code (module:factory) is never imported here: its config and
    tensors are shown from its files, with the module and factory export would run."""
    from edgesnn import pipeline

    r = pipeline.inspect(artifact)
    if json_out:
        write_json(json_out, r)
    table = Table(title=f"{r['kind']}: {r['path']}")
    if r["kind"] == "ir":
        for col in ("layer", "op", "input", "output", "weight", "params", "bytes"):
            table.add_column(col, justify="right" if col in ("params", "bytes") else "left")
        for row in r["layers"]:
            table.add_row(row["name"], row["op"], ", ".join(row["inputs"]), row["output"], row["weight"] or "-",
                          str(row["params"]), str(row["bytes"]))
        _show(table)
        _print_states(r)
        _result(f"input {r['input']}  outputs {', '.join(r['outputs'])}  params {r['params']}  "
                f"weight bytes {r['weight_bytes']}  bytes {r['bytes']} (file {r['file_bytes']})")
    elif not r["built"]:
        _print_unbuilt_checkpoint(r, table)
    else:
        for col in ("layer", "type", "shapes", "dtype", "params", "bytes"):
            table.add_column(col, justify="right" if col in ("params", "bytes") else "left")
        for row in r["layers"]:
            shapes = " ".join(f"{k}{v}" for k, v in row["shapes"].items()) or "-"
            table.add_row(row["name"], row["op"], shapes, row["dtype"], str(row["params"]), str(row["bytes"]))
        _show(table)
        weights = Table(title="weight layers")
        for col in ("layer", "type", "in", "out", "weights", "format"):
            weights.add_column(col, justify="right" if col in ("in", "out", "weights") else "left")
        for row in r["weight_layers"]:
            weights.add_row(row["layer"], row["type"], str(row["in"]), str(row["out"]), str(row["weights"]), row["format"])
        _show(weights)
        _print_neuron_layers(r["neuron_layers"])
        _print_states(r)
        method = (r["config"].get("quantization") or {}).get("method", "none")
        _result(f"model {r['model']}  compression {method}  params {r['params']}  bytes {r['bytes']}")


def _print_states(r: dict) -> None:
    """A model over sequences: its steps, readout and the state each neuron carries from step to step."""
    if "steps" not in r:
        return
    readout = ", ".join(f"{k}: {v}" for k, v in r["readout"].items())
    _say(f"sequences of {r['steps']} steps, read out as {readout}; states (zero at each sequence's start):")
    for name, s in r["states"].items():
        _say(f"  {name}: {s['dtype']}{s['shape']} {s['bits']}-bit, scale {s['scale']:g}, overflow {s['overflow']}")


def _print_neuron_layers(rows: list[dict]) -> None:
    """What the neuron map made of each layer: the class replaced, the edgesnn neuron (exact), the map
    entry that chose it and what the instance said."""
    from edgesnn.limits import _short

    if rows:
        _say("neuron map by layer (layer: class replaced -> edgesnn neuron [map entry; read from the instance]):")
    for row in rows:
        _say(f"  {_short(row['layer'])}: {_short(row['class'])} -> {_short(row['target'])} "
             f"[{_short(row['key'])}; {_short(row['instance'] or 'nothing read', 200)}]")


def _print_unbuilt_checkpoint(r: dict, table: Table) -> None:
    """A checkpoint naming user code: its tensors (from the safetensors header) and what it would
    import, never imported here."""
    from edgesnn.limits import _short

    for col in ("tensor", "dtype", "shape", "bytes"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for t in r["tensors"]:
        table.add_row(_short(t["name"]), t["dtype"], str(t["shape"]), str(t["bytes"]))
    _show(table)
    config = r["config"]
    for code in r["imports"]:
        _say(f"imports {code['kind']} {code['object']} from module {code['module']} ({code['name']}): not imported "
             f"here; export, verify and quantize run it only with --trust-code")
    _say(f"kwargs {_short(config['kwargs'], 400)}")
    if config.get("neuron_map"):
        _say(f"neuron map {_short(config['neuron_map'], 400)}")
    _print_neuron_layers(r["neuron_layers"])
    method = (config.get("quantization") or {}).get("method", "none")
    _result(f"model {r['model']}  compression {_short(method)}  params {r['params']}  bytes {r['bytes']}")


@command("boards")
def boards_cmd(
    board: list[str] = typer.Argument(None, help="board names or board .yaml files (default: every shipped board)"),
    json_out: Path = typer.Option(None, "--json", help="write every field of the listed boards as JSON"),
):
    """List boards: core, clock, memory, power, the targets that run on each and the QEMU that emulates it.

    With --quiet, only their names, one per line."""
    listed = boards.load_all(board or None)
    if json_out:
        write_json(json_out, {"boards": [boards.as_dict(b) for b in listed]})
    if _level == QUIET:
        for b in listed:
            _result(b.name)
        return
    table = Table(title="boards (figures and their sources: edgesnn/shipped/boards/*.yaml)")
    table.add_column("name", no_wrap=True)
    for col in ("kind", "CPU", "clock", "flash / RAM or memory", "idle / active power", "targets", "QEMU"):
        table.add_column(col)
    for b in listed:
        cpu = " ".join(x for x in (f"{b.cores}x" if b.cores else "", b.cpu or b.isa or "-") if x)
        memory = (f"{_size(b.flash_bytes)} / {_size(b.ram_bytes)}" if b.kind == "mcu" else _size(b.memory_bytes))
        qemu = b.qemu_machine or (f"{b.qemu_user} (user mode)" if b.qemu_user else "none")
        table.add_row(b.name, b.kind, cpu, f"{b.clock_hz / 1e6:g} MHz" if b.clock_hz else "-", memory,
                      f"{_watts(b.idle_power_w)} / {_watts(b.active_power_w)}", ", ".join(b.targets), qemu)
    _show(table)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} B"


def _watts(w: float | None) -> str:
    if w is None:
        return "-"
    unit, scale = next(((u, k) for u, k in (("W", 1), ("mW", 1e-3), ("uW", 1e-6)) if w >= k), ("uW", 1e-6))
    return f"{w / scale:.3g} {unit}"


@command()
def run(
    recipe: str = typer.Argument("digits-sfa-cnn", help="recipe name (see edgesnn/shipped/recipes/) or a recipe .yaml file"),
    out: Path = typer.Option(..., help="output folder (every artifact and manifest.json go here)"),
    model: str = typer.Option(None, help="your own model instead of the recipe's: module:factory (a function or "
                                         "class returning a torch.nn.Module; the current folder is importable)"),
    neuron_map: list[str] = typer.Option(None, help="with --model: map third-party neurons onto edgesnn's "
                                                    "(repeatable): CLASS=TARGET for every instance of a class "
                                                    "(import path), LAYER=TARGET for one layer (module path, e.g. "
                                                    "head.lif; overrides CLASS); TARGET is sfa[:D=N,normalize=B,"
                                                    "threshold=X] or readout[:scale=X] (the logits); a library "
                                                    "neuron's own settings are kept unless given"),
    trust_code: bool = _trust_option("run the code the recipe names (its model factory, module:factory, and neuron "
                                     "classes); --model naming the same factory trusts just that one"),
):
    """Run a recipe: train, compress, export to every target (verified), profile; skip unchanged stages."""
    from edgesnn.recipes import load as load_recipe

    r = load_recipe(recipe)
    if model or neuron_map:
        r = r.model_copy(update={"model": _user_model(r.model, model, neuron_map)})
    named = {model, *(r.model.neuron_map if neuron_map else {})} - {None}  # what the command line names
    _run_recipe(r, out, trust_code=True if trust_code else named)


def _user_model(base, model: str | None, neuron_map: list[str] | None):
    """--model replaces the recipe's model; naming the recipe's own factory keeps its kwargs and map."""
    from edgesnn.models.custom import parse_neuron_map

    if neuron_map and not model:
        raise EdgesnnError("--neuron-map needs --model module:factory (it maps the neurons of your own model)")
    if model == base.name:
        return base.model_copy(update={"neuron_map": parse_neuron_map(neuron_map)} if neuron_map else {})
    return base.model_copy(update={"name": model, "kwargs": {}, "neuron_map": parse_neuron_map(neuron_map)})


def _run_recipe(recipe, out: Path, trust_code=False) -> None:
    """Every stage (run or skipped) as a line on stderr; ends with the summary tables."""
    from edgesnn.run import run_recipe

    def on_stage(name: str, skipped: bool) -> None:
        _note(f"{'skip' if skipped else 'run '} {name}")

    manifest = run_recipe(recipe, out, on_stage=on_stage, trust_code=trust_code)
    exports = Table(title=f"{recipe.name}: artifacts in {out}, each verified; bytes: what goes into flash")
    for col in ("export", "samples", "samples differing", "check", "accuracy", "bytes", "bytes counted"):
        exports.add_column(col, justify="left" if col in ("export", "check", "bytes counted") else "right",
                           no_wrap=col != "bytes counted")
    boards_table = Table(title="profiles")
    for col in ("export", "board", "fits", "45nm uJ", "board uJ"):
        boards_table.add_column(col, justify="left" if col in ("export", "board") else "right", no_wrap=True)
    uj = lambda v: "-" if v is None else f"{v / 1e6:.3f}"  # noqa: E731
    for row in manifest["summary"]:
        if "board" in row:
            boards_table.add_row(row["export"], row["board"], "yes" if row["fits"] else "NO",
                                 uj(row["energy_45nm_pj"]), uj(row["energy_board_pj"]))
        else:
            check = {True: "passed", False: "FAILS", None: "-"}[row.get("passed")]
            exports.add_row(row["export"], str(row.get("samples", "-")), str(row["mismatches"]), check,
                            "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}", str(row["bytes"]),
                            row.get("bytes_counted", "-"))
    _show(exports)
    if boards_table.row_count:
        _show(boards_table)
    _result(f"wrote {out / 'manifest.json'} ({len(manifest['artifacts'])} artifacts)")


@command()
def demo(
    out: Path = typer.Option(Path("edgesnn-demo"), help="output folder; run again and unchanged stages are skipped"),
):
    """The default recipe (digits-sfa-cnn): train the spiking CNN on digits, export it to every target, verify
    each against the IR, profile three boards. The same as `edgesnn run digits-sfa-cnn --out OUT`."""
    from edgesnn.recipes import DEFAULT
    from edgesnn.recipes import load as load_recipe

    _run_recipe(load_recipe(DEFAULT), out)


@command()
def profile(
    artifact: Path = typer.Argument(..., help=_listed(t.artifact for t in targets.by_rank() if t.profiled)),
    board: str = _board_option(..., None, "the board to profile for"),
    data: str = typer.Option(None, help=f"data whose test split measures firing rates (default: the data set the "
                                        f"artifact records): {DATA_HELP}"),
    measure: bool = typer.Option(False, "--measure", help="also run it here: median latency, peak memory, power "
                                                          "if sensed"),
    json_out: Path = typer.Option(None, "--json", help="write the results as JSON"),
    report: Path = typer.Option(None, help="write an HTML page with plots into this folder"),
    trust_code: bool = _trust_option("an MCU project: run its Makefile (profiling builds it). Only for a folder you trust"),
    spike_code: str = typer.Option(None, help="spike code whose SOPs the energy counts: rate-burst or bit-plane "
                                              "(default: the artifact's own, else rate-burst); both are reported",
                                   **_choices(spikes.CODES)),
):
    """Memory, operations, firing rates and energy of an artifact, and whether it fits the board (the last
    line)."""
    from edgesnn.profile import profile as run_profile

    r = run_profile(artifact, board, data, measure=measure, trust_code=trust_code, spike_code=spike_code)
    if report:  # first: it is the output that can be refused (a file in the way), and then nothing is written
        from edgesnn.profile.report import write_report

        _say(f"wrote {write_report(r, report)}")
    if json_out:
        write_json(json_out, r)
    if "steps" in r:  # a model over sequences: per step and per sequence
        from edgesnn.profile.temporal import summary

        table, lines = summary(r)
        _show(table)
        for line in lines:
            _say(line)
        need, have = r["needed_bytes"], r["available_bytes"]
        room = ", ".join(f"{k} {need[k]} of {have[k] if have[k] is not None else 'unlimited'} bytes" for k in need)
        if "needed_cores" in r:
            room = f"{r['needed_cores']} of {r['available_cores']} neuro cores"
        _result(f"{r['board']}: {'fits' if r['fits'] else 'does not fit'} ({room})")
        return
    table = Table(title=f"{r['artifact']} ({r['target']}) per layer, {r['samples']} samples")
    for col in ("layer", "op", "MACs", f"SOPs ({r['spike_code']})", "steps", "firing rate", "counted as"):
        table.add_column(col, justify="left" if col in ("layer", "op", "counted as") else "right")
    for row in r["layers"]:
        steps = (row.get("timesteps") or {}).get(r["spike_code"])
        table.add_row(row["name"], row["kind"], str(row["macs"]), "-" if row["sops"] is None else f"{row['sops']:.0f}",
                      "-" if steps is None else str(steps),
                      "-" if row["firing_rate"] is None else f"{row['firing_rate']:.3f}", row.get("counted_as", "-"))
    _show(table)
    need, have = r["needed_bytes"], r["available_bytes"]
    room = ", ".join(f"{k} {need[k]} of {have[k] if have[k] is not None else 'unlimited'} bytes" for k in need)
    if "needed_cores" in r:
        room = f"{r['needed_cores']} of {r['available_cores']} neuro cores"
    _say(f"weights {r['weight_bytes']} B, peak activations {r['peak_activation_bytes']} B, MACs {r['macs']}, "
         f"SOPs {r['sops']:.0f}, energy (45 nm) {r['energy_45nm_pj'] / 1e6:.3f} uJ "
         f"vs ANN {r['energy_ann_45nm_pj'] / 1e6:.3f} uJ")
    by_code = r.get("energy_45nm_pj_by_code") or {}
    if by_code:
        _say("spike codes: " + "; ".join(f"{code} {r['sops_by_code'][code]:.0f} SOPs, {pj / 1e6:.3f} uJ"
                                         for code, pj in by_code.items()) + f" (counted above: {r['spike_code']})")
    board_energy = "unknown" if r["energy_board_pj"] is None else f"{r['energy_board_pj'] / 1e6:.3f} uJ"
    _say(f"energy on {r['board']}: {board_energy} ({r['energy_board_note']})")
    if measure:
        power = (f", {r['power_w_mean']:.2f} W ({r['power_sensor']}), {r['energy_mj_per_inference_measured']:.4f} mJ"
                 if "power_w_mean" in r else f"; {r['power_note']}")
        _say(f"measured here: {r['latency_ms_median']:.4f} ms per inference (median of {len(r['latency_ms_runs'])} "
             f"passes), peak RSS {r['peak_rss_bytes'] / 2**20:.1f} MiB{power}")
    _result(f"{r['board']}: {'fits' if r['fits'] else 'does not fit'} ({room})")


@command()
def bench(
    artifact: Path = typer.Argument(..., help="model.tflite, an integer model.onnx, or an MCU project folder for "
                                              "an application CPU (raspberry-pi-*, jetson-*)"),
    data: str = typer.Option(None, help=f"inputs (default: the data set the artifact records): {DATA_HELP}"),
    ir: Path = typer.Option(None, help="model.tflite / model.onnx: the IR it was written from (default: model.ir "
                                       "beside it)"),
    samples: int = typer.Option(50, help="inferences per timed pass at batch 1"),
    repeats: int = typer.Option(7, help="timed passes, after one warm-up; the latency is their median"),
    json_out: Path = typer.Option(None, "--json", help="write the results as JSON"),
    trust_code: bool = _trust_option("an MCU project: run its Makefile (bench builds it). Only for a folder you trust"),
):
    """Latency at batch 1 and throughput at batch 64 in each runtime that runs the artifact here. No torch."""
    from edgesnn.bench import bench as run_bench

    r = run_bench(artifact, data, samples=samples, repeats=repeats, ir=ir, trust_code=trust_code)
    if json_out:
        write_json(json_out, r)
    table = Table(title=f"{r['artifact']} ({r['kind']}) on {r['data']}: batch 1 over {r['samples']} samples, "
                        f"batch {r['batch']}; median of {r['repeats']} passes")
    for col in ("runtime", "latency ms (batch 1)", f"samples/s (batch {r['batch']})", "calls per batch"):
        table.add_column(col, justify="left" if col == "runtime" else "right")
    for row in r["runtimes"].values():
        table.add_row(row["runtime"], f"{row['latency_ms_median']:.4f}", f"{row['throughput_per_s']:.0f}",
                      str(row["calls_per_batch"]))
    _show(table)
    fastest = min(r["runtimes"].values(), key=lambda row: row["latency_ms_median"])
    _result(f"fastest at batch 1: {fastest['runtime']}, {fastest['latency_ms_median']:.4f} ms")


@command()
def fit(
    checkpoint: Path = typer.Argument(..., help="trained float checkpoint folder (from train)"),
    board: str = _board_option(..., None, "the board to fit"),
    out: Path = typer.Option(..., help="fit folder: study.db (resumable), trials/, fit.json, front.json, chosen.yaml, "
                                       "report/"),
    max_flash: int = typer.Option(None, help="flash budget in bytes (default: the board's flash)"),
    max_ram: int = typer.Option(None, help="RAM budget in bytes (default: the board's RAM or memory)"),
    max_energy_uj: float = typer.Option(None, help="energy budget per inference, uJ (the board's model where it has "
                                                   "one for every target searched, else the 45 nm convention)"),
    max_latency_ms: float = typer.Option(None, help="latency budget per inference, ms (an MCU board QEMU emulates, "
                                                    "--target mcu: QEMU instructions / clock)"),
    min_accuracy: float = typer.Option(None, help="least accuracy of the IR over the test split, a fraction"),
    trials: int = typer.Option(20, help="trials the study holds when the search stops (a resumed fit runs the rest)"),
    timeout: float = typer.Option(None, help="seconds after which no new trial starts"),
    epochs: int = typer.Option(1, help="fine-tuning epochs of each trial"),
    method: list[str] = typer.Option(None, help="search only these methods (repeatable): none, qsnn, qpsnn, "
                                                "bestformer, ternary"),
    target: list[str] = typer.Option(None, help="search only these of the board's targets (repeatable)"),
    D: list[int] = typer.Option(None, "--D", "-D", help="search only these D (repeatable; zoo models)"),
    stream_dtype: list[str] = typer.Option(None, "--stream-dtype", help="search only these stream dtypes "
                                           "(repeatable): int8, int16"),
    ray: str = typer.Option(None, help="run the trials on a Ray cluster: its address (HOST:PORT) or auto"),
    jobs: int = typer.Option(1, help="trials at once in local processes (without --ray)"),
    trial_timeout: float = typer.Option(None, help="seconds after which a trial is stopped and recorded as failed"),
    seed: int = typer.Option(0, help="random seed of the search and of every trial"),
    json_out: Path = typer.Option(None, "--json", help="also write fit.json's content here"),
    trust_code: bool = _trust_option(),
):
    """Search compression, D and target for the most accurate deployment that fits the board's budgets (the last
    line); a killed fit resumes from OUT/study.db."""
    from edgesnn.fit import Budgets
    from edgesnn.fit import fit as run_fit
    from edgesnn.fit.results import FRONT_COLUMNS, describe, front_rows, summary

    def on_trial(number: int, record: dict) -> None:
        what = record.get("error") or f"accuracy {record['accuracy']:.4f}"
        _note(f"trial {number}: {describe(record.get('point'))}: {what}")

    r = run_fit(checkpoint, board, out, Budgets(max_flash, max_ram, max_energy_uj, max_latency_ms, min_accuracy),
                trials=trials, timeout=timeout, epochs=epochs, seed=seed, methods=method, targets=target, D=D, ray=ray,
                jobs=jobs, trial_timeout=trial_timeout, trust_code=trust_code, threads=threads.current(),
                on_trial=on_trial, stream_dtypes=stream_dtype)
    if json_out:
        write_json(json_out, r)
    table = Table(title=f"Pareto front on {r['board']}: {r['completed']} trials completed, {r['failed']} failed "
                        "(* chosen)")
    for col in FRONT_COLUMNS:
        table.add_column(col, justify="left" if col in ("trial", "method", "settings", "target") else "right")
    for row in front_rows(r):
        table.add_row(*row)
    _show(table)
    _result(summary(r))


def main() -> None:
    """The CLI alone; the ``edgesnn`` executable is :func:`edgesnn.__main__.main` (signals first)."""
    app()


if __name__ == "__main__":
    sys.exit(main())
