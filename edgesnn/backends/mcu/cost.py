"""``--event-driven auto``: each spike-reading conv2d / dense takes the form with fewer modelled
instructions on the board's core, not the one under a firing-rate cut-off.

The model (instructions of one inference of the layer):

    dense form          mac * MACs + padded_mac * padded MACs + tap * taps + output * outputs
    event-driven form   event_mac * rate * MACs + tap_e * taps + input * inputs + output_e * outputs

MACs counts the multiply-accumulates of taps inside the input (padding adds nothing in either
form); ``rate`` is the layer's measured fraction of nonzero inputs, so rate * MACs is the event
form's multiply-accumulates. ``taps`` = MACs / input channels per group: the (output, kernel tap)
pairs, each one micro-kernel call (or loop start) in both forms; padded MACs are the MACs of a
padded convolution, whose generic dense loop tests the padding at every multiply-accumulate.
``input`` is the event form's cost of testing (and listing) one input, ``output`` / ``output_e``
the requantization and the bias and accumulator set-up per output.

The coefficients depend on the core (DSP extension or not: the micro-kernels' two builds) and on
the kernel family a layer gets (``kernels.int8_linear``: the int8 micro-kernels, the counts
micro-kernels where the input holds spike counts (``kernels.counts_gather``: additions only),
the generic TE loops for sub-byte weights and int16 inputs, or on Helium cores the gather-dot form
of :mod:`.kernels_gather` for the layers it covers). They were fitted by least squares (non-negative) on QEMU
instruction counts of single-layer graphs, by :func:`fit`, on the Cortex-M4 (mps2-an386) for cores
with DSP, on the Cortex-M55 (mps3-an547) built with the hard-float ABI (Helium) for cores with MVE, and
on the Cortex-M3 (mps2-an385) for the rest (Cortex-M0, aarch64 Linux);
``scripts/mcu_vs_cmsis_nn.py --fit`` refits them and prints this table. docs/mcu.md describes the
check against whole models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesnn.ir import graph as g

DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85")
# Helium (MVE): the micro-kernels' EDGESNN_MVE branches, in a build for it (hard float, as an M55 firmware)
HELIUM_CORES = ("cortex-m55", "cortex-m85")


@dataclass(frozen=True)
class Coefficients:
    """Instructions per unit of each term (see the module docstring)."""

    mac: float
    padded_mac: float
    tap: float
    output: float
    event_mac: float
    tap_e: float
    input: float
    output_e: float


# (core family, kernel family) -> coefficients; fitted by fit() (scripts/mcu_vs_cmsis_nn.py --fit)
COEFFICIENTS = {
    ('dsp', 'int8'): Coefficients(mac=1.77, padded_mac=0.31, tap=5.63, output=16.16,
                        event_mac=2.92, tap_e=9.69, input=7.59, output_e=16.91),  # nucleo-f446re
    ('dsp', 'generic'): Coefficients(mac=12.0, padded_mac=7.85, tap=0.0, output=0.0,
                        event_mac=12.78, tap_e=6.8, input=0.0, output_e=8.78),  # nucleo-f446re
    ('dsp', 'counts'): Coefficients(mac=1.77, padded_mac=0.31, tap=5.63, output=16.16,
                        event_mac=1.15, tap_e=11.79, input=17.04, output_e=19.99),  # nucleo-f446re
    ('plain', 'int8'): Coefficients(mac=2.75, padded_mac=0.2, tap=4.19, output=21.3,
                        event_mac=3.04, tap_e=8.8, input=7.62, output_e=18.47),  # nucleo-f103rb
    ('plain', 'counts'): Coefficients(mac=2.75, padded_mac=0.2, tap=4.19, output=21.3,
                        event_mac=3.45, tap_e=15.6, input=14.1, output_e=23.01),  # nucleo-f103rb
    ('plain', 'generic'): Coefficients(mac=12.04, padded_mac=7.81, tap=0.0, output=0.0,
                        event_mac=12.78, tap_e=6.75, input=0.0, output_e=9.02),  # nucleo-f103rb
    ('helium', 'int8'): Coefficients(mac=0.26, padded_mac=0.09, tap=4.13, output=4.88,
                        event_mac=1.15, tap_e=5.39, input=8.07, output_e=4.28),  # mps3-an547
    ('helium', 'generic'): Coefficients(mac=11.07, padded_mac=8.81, tap=0.0, output=0.0,
                        event_mac=11.82, tap_e=7.17, input=0.0, output_e=7.88),  # mps3-an547
    ('helium', 'gather'): Coefficients(mac=0.12, padded_mac=0.0, tap=7.97, output=0.0,
                        event_mac=0.26, tap_e=3.62, input=6.45, output_e=10.56),  # mps3-an547
    ('helium', 'lanes'): Coefficients(mac=0.29, padded_mac=0.0, tap=2.78, output=2.78,
                        event_mac=0.47, tap_e=2.5, input=3.69, output_e=2.5),  # mps3-an547
    ('helium', 'counts'): Coefficients(mac=0.26, padded_mac=0.09, tap=4.13, output=4.88,
                        event_mac=0.72, tap_e=6.7, input=10.73, output_e=6.55),  # mps3-an547
}


def core_family(cpu: str | None) -> str:
    """"helium" for the cores with MVE (fitted on the Helium build), "dsp" for the other cores whose
    micro-kernels use SXTB16/SMLAD, "plain" otherwise (and off Cortex-M)."""
    return "helium" if cpu in HELIUM_CORES else "dsp" if cpu in DSP_CORES else "plain"


def kernel_family(graph: g.Graph, op: g.Op, core: str = "dsp") -> str:
    """"lanes" and "gather" (a Helium core's forms of kernels_gather: a 1x1 conv of spike counts in int16
    lanes, the gather-dot form), "counts" (int8 gathers reading spike counts: additions only,
    kernels.counts_gather), "int8" (the multiply-accumulate micro-kernels) or "generic" (TE loops)."""
    from edgesnn.backends.mcu import kernels_gather
    from edgesnn.backends.mcu.kernels import counts_gather, gather_tile, int8_linear

    if core == "helium" and kernels_gather.lanes_shift(graph, op) is not None:
        return "lanes"
    if core == "helium" and kernels_gather.applies(graph, op):
        return "gather"
    if not int8_linear(graph, op):
        return "generic"
    if counts_gather(graph, op):
        return "counts"
    return "int8" if op.kind == "dense" or gather_tile(graph, op) else "generic"


def layer_counts(graph: g.Graph, op: g.Op) -> tuple[int, int, int, int, int]:
    """(MACs of taps inside the input, those MACs again if the layer is padded (else 0), taps,
    inputs, outputs) of a conv2d / dense."""
    inputs = int(np.prod(graph.tensors[op.inputs[0]].shape))
    out_shape = graph.tensors[op.output].shape
    outputs = int(np.prod(out_shape))
    if op.kind == "dense":
        return inputs * op.weight.shape[0], 0, outputs, inputs, outputs
    height, width, _ = graph.tensors[op.inputs[0]].shape
    oh, ow, oc = out_shape
    _, kh, kw, cg = op.weight.shape
    (sh, sw), (top, _, left, _) = op.stride, op.padding

    def inside(extent, out, k, stride, pad):  # taps inside the input, summed over output positions
        pos = np.arange(out)[:, None] * stride + np.arange(k)[None, :] - pad
        return int(((pos >= 0) & (pos < extent)).sum())

    taps = inside(height, oh, kh, sh, top) * inside(width, ow, kw, sw, left) * oc
    return taps * cg, taps * cg if any(op.padding) else 0, taps, inputs, outputs


def costs(graph: g.Graph, op: g.Op, rate: float, cpu: str | None) -> tuple[float, float]:
    """(dense, event-driven) modelled instructions of ``op`` at input firing rate ``rate`` on ``cpu``."""
    core = core_family(cpu)
    c = COEFFICIENTS[core, kernel_family(graph, op, core)]
    return model(c, layer_counts(graph, op), rate)


def model(c: Coefficients, counts: tuple[int, int, int, int, int], rate: float) -> tuple[float, float]:
    """(dense, event-driven) instructions of a layer of ``counts`` (layer_counts) at ``rate``."""
    macs, padded, taps, inputs, outputs = counts
    return (c.mac * macs + c.padded_mac * padded + c.tap * taps + c.output * outputs,
            c.event_mac * rate * macs + c.tap_e * taps + c.input * inputs + c.output_e * outputs)


def choose(graph: g.Graph, rates: dict[str, float], cpu: str | None) -> set[str]:
    """The layers whose event-driven form is modelled cheaper on ``cpu``."""
    ops = {op.name: op for op in graph.ops}
    out = set()
    for name, rate in rates.items():
        if np.isnan(rate):
            continue
        dense, events = costs(graph, ops[name], rate, cpu)
        if events < dense:
            out.add(name)
    return out


# ----------------------------------------------------------------------------------------------
# Fitting the coefficients on QEMU


LAYERS = ("conv3x3", "wide3x3", "conv1x1", "dense", "square")
FAMILY_LAYERS = {"lanes": ("conv1x1", "wide1x1", "narrow1x1")}  # the layers a family covers, if not all


def _layer_graph(kind: str, family: str, seed: int) -> g.Graph:
    """One spike-reading layer (int8, zero point 0): a padded 3x3 conv, a 1x1 conv or a dense layer;
    8-bit weights for the int8, counts, gather and lanes families, 4-bit for the generic one; for counts
    and lanes the input holds spike counts 0..COUNTS_D (TensorSpec.spike_D)."""
    rng = np.random.default_rng(seed)
    bits = 4 if family == "generic" else 8
    shapes = {"conv3x3": ([8, 8, 16], [8, 8, 16], (16, 3, 3, 16)), "wide3x3": ([6, 6, 32], [6, 6, 32], (32, 3, 3, 32)),
              "conv1x1": ([8, 8, 32], [8, 8, 32], (32, 1, 1, 32)), "dense": ([256], [32], (32, 256)),
              "wide1x1": ([4, 4, 64], [4, 4, 96], (96, 1, 1, 64)), "narrow1x1": ([8, 8, 16], [8, 8, 16], (16, 1, 1, 16)),
              "square": ([64], [64], (64, 64))}
    in_shape, out_shape, w_shape = shapes[kind]
    half = 1 << (bits - 1)
    common = dict(multiplier=np.full(w_shape[0], 2**30 + 12345, np.int32), shift=np.full(w_shape[0], -12, np.int32),
                  clamp=[-128, 127], weight=rng.integers(1 - half, half, w_shape).astype(np.int8),
                  bias=rng.integers(-100, 100, w_shape[0]).astype(np.int32), weight_scale=np.full(w_shape[0], 0.01),
                  weight_bits=bits)
    tensors = {"x": g.TensorSpec(in_shape, "int8", 1.0, 0, spike_D=COUNTS_D if family in ("counts", "lanes") else None),
               "y": g.TensorSpec(out_shape, "int8", 1.0, 0)}
    if len(in_shape) == 1:
        op = g.Dense("layer", ["x"], "y", **common)
    else:
        pad = 1 if kind.endswith("3x3") else 0
        op = g.Conv2D("layer", ["x"], "y", **common, padding=[pad] * 4)
    return g.Graph(tensors, [op], "x", ["y"])


COUNTS_D = 4  # the counts family's fits: counts 1..4, the spike neurons' D


def _inputs(graph: g.Graph, rate: float, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spec = graph.tensors[graph.input]
    shape = (samples, *spec.shape)
    if spec.spike_D:  # spike counts, mostly small as in the trained models
        values = np.minimum(rng.geometric(0.5, shape), spec.spike_D)
        return np.where(rng.random(shape) < rate, values, 0).astype(np.int8)
    values = rng.integers(1, 8, shape) * np.where(rng.random(shape) < 0.5, 1, -1)
    return np.where(rng.random(shape) < rate, values, 0).astype(np.int8)


def fit(board, family: str, workdir, rates=(0.1, 0.4, 0.7, 1.0), samples: int = 3) -> tuple[Coefficients, list]:
    """Coefficients of ``family`` on ``board``'s core, least squares over QEMU instruction counts of
    single-layer graphs in both forms at several input rates; also the (layer, rate, form,
    measured, modelled) rows, to compare."""
    from pathlib import Path

    from edgesnn.backends.mcu import export_mcu
    from edgesnn.backends.mcu.build import run

    workdir = Path(workdir)
    measured = []  # (kind, rate, form, layer_counts, instructions)
    for kind in FAMILY_LAYERS.get(family, LAYERS):
        graph = _layer_graph(kind, family, 0)
        counts = layer_counts(graph, graph.ops[0])
        for form in ("none", "all"):
            out = workdir / f"{board.name}-{family}-{kind}-{form}"
            export_mcu(graph, board, out, form, _inputs(graph, 0.5, 8, 1).astype(np.float32))
            for rate in (rates if form == "all" else rates[:1]):
                xq = _inputs(graph, rate, samples, 2)
                _, stats = run(out, "arm", xq, "int8", counts[4], machine=board.qemu_machine)
                real = float(np.count_nonzero(xq)) / xq.size
                measured.append((kind, real, form, counts, stats["mean"]))
    dense = [((m, p, t, o), c) for _, _, f, (m, p, t, _, o), c in measured if f == "none"]
    events = [((r * m, t, i, o), c) for _, r, f, (m, _, t, i, o), c in measured if f == "all"]
    fitted = [_nonnegative_fit(np.array([a for a, _ in rows], float), np.array([c for _, c in rows], float))
              for rows in (dense, events)]
    coef = Coefficients(*(round(float(v), 2) for v in np.concatenate(fitted)))
    rows = [(kind, round(rate, 3), form, c, round(model(coef, counts, rate)[form == "all"]))
            for kind, rate, form, counts, c in measured]
    return coef, rows


def _nonnegative_fit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (a cost per unit is never negative): the active-set
    method of Lawson and Hanson on the few columns here, column-scaled for conditioning."""
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1
    a = a / scale
    free = np.ones(a.shape[1], bool)
    while True:
        x = np.zeros(a.shape[1])
        x[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
        if (x[free] >= 0).all():
            return x / scale
        free &= x >= 0  # drop the negative ones, refit the rest
