"""SFA export: the one bridge from a (float or fake-quant) torch model to the integer IR.

The model is traced with torch.fx (neurons kept as leaves) and walked node by node. Each value
is either a materialized integer tensor (:class:`_Int`) or a pending linear op in float
(:class:`_Linear`) that later nodes still fold into: BatchNorm folds into its weights, a
MultiSpike turns it into requantize + clamp to [0, D], anything else materializes it at a
calibrated int8 scale. Scale factors that need no op of their own (1/D of a normalized spike,
1/k^2 of an average pool, a constant multiplier) ride along as ``factor`` and fold into the next
linear op's weights, as SFA prescribes.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import operator
import sys
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import fx, nn
from torch.fx.experimental import meta_tracer

from edgesnn import __version__, export_planes, export_tensors, source_lines
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g
from edgesnn.ir.fixedpoint import (ADD_LEFT_SHIFT, add_multipliers, effective_multiplier, linear_requantizer,
                                   multiply_by_quantized_multiplier, quantize_multipliers, reduced_multiplier_ratio)
from edgesnn.ir.packing import weight_range, widening_shift
from edgesnn.neurons import IBRALIF, NEURONS, MPBNSpike, MultiSpike, StreamQuant, TernaryStep

SUPPORTED = (
    "Conv2d, Linear, BatchNorm1d/2d (after Conv2d/Linear), MultiSpike, IBRALIF, MPBNSpike, AvgPool2d, "
    "AdaptiveAvgPool2d(1), MaxPool2d, Flatten, Identity, Dropout (and subclasses that keep their forward, as "
    "SpikingJelly's single-step layers); tensor + tensor, tensor * tensor or constant, sum over (H, W), flatten, "
    "F.max_pool2d, F.avg_pool2d"
)
_PASS_THROUGH = (nn.Identity, nn.Dropout)
_TORCH_LAYERS = (nn.Conv2d, nn.Conv1d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d,
                 nn.Flatten, *_PASS_THROUGH)
# Leaf modules the exporter reads (modules with children are traced through).
DEPLOYABLE = (*_TORCH_LAYERS, MultiSpike, TernaryStep, IBRALIF, MPBNSpike, StreamQuant)
_ADD = (operator.add, torch.add, "add")
_MUL = (operator.mul, torch.mul, "mul")
_FLATTEN = (torch.flatten, "flatten")
_FUNCTIONS = (*_ADD, *_MUL, *_FLATTEN, "sum", *export_tensors.FUNCTIONS)  # what _Exporter.function reads (with conditions on the arguments)


def torch_layer(m: nn.Module) -> type | None:
    """The torch layer ``m`` exports as: its own class, or the torch.nn layer a subclass extends
    without changing the computation (no ``forward`` of its own, or SpikingJelly's single-step
    mode, whose forward is the torch layer's). A subclass with its own forward is traced through."""
    base = next((c for c in type(m).__mro__ if c in _TORCH_LAYERS), None)
    if base is None or type(m) is base:
        return base
    if type(m).forward is base.forward or getattr(m, "step_mode", None) == "s":
        return base
    return None


def undeployable_layers(model: nn.Module) -> list[str]:
    """'name (module.Class)' of each leaf module the exporter cannot read, so a user sees them all at once."""
    found = []

    def walk(m: nn.Module, name: str) -> None:
        if isinstance(m, DEPLOYABLE) or hasattr(m, "weight_quant"):
            if getattr(m, "step_mode", "s") != "s":
                found.append(f"{name} ({type(m).__module__}.{type(m).__qualname__} in multi-step mode: edgesnn "
                             f"deploys one step; set step_mode='s')")
            return  # its own submodules (quantizers, membrane) are the layer's business
        children = list(m.named_children())
        if not children and name:
            found.append(f"{name} ({type(m).__module__}.{type(m).__qualname__})")
        for child, sub in children:
            walk(sub, f"{name}.{child}" if name else child)

    walk(model, "")
    return found


@dataclass
class _Int:
    """An IR tensor; real value = factor * scale * (q - zero_point). ``perm`` maps IR flat order to torch's.

    ``amplitude`` (ternary spikes) is a per-channel factor in torch order (per feature once
    flattened) that only a following Conv2d / Linear can absorb, into its input columns.
    """

    name: str
    factor: float = 1.0
    perm: np.ndarray | None = None
    amplitude: np.ndarray | None = None
    index: np.ndarray | None = None  # torch element -> IR storage position, when not the default (export_tensors)


@dataclass
class _QuantWeight:
    """Weights a quantizer already put on an integer grid: W = scale[o] * q (scale per output channel)."""

    q: torch.Tensor
    scale: torch.Tensor
    bits: int
    code: str


@dataclass
class _Linear:
    """A pending conv2d/dense/reduce_sum whose float result = W x + b (torch layouts)."""

    kind: str
    src: _Int
    node: fx.Node
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    scale: float = 1.0  # reduce_sum: the multiplier its sum carries
    attrs: dict = field(default_factory=dict)
    qweight: _QuantWeight | None = None  # set for layers trained with a weight quantizer
    planes: tuple | None = None  # (int8 weights over the doubled input, scale): export_planes


def _is_leaf(m: nn.Module) -> bool:
    # Neurons, and Brevitas quant layers (their weight proxies are not traceable), stay whole;
    # so do subclasses of torch layers that compute what the layer computes (SpikingJelly's).
    return isinstance(m, (*NEURONS.values(), StreamQuant)) or hasattr(m, "weight_quant") or torch_layer(m) is not None


class _Tracer(fx.Tracer):
    record_stack_traces = True  # messages name the user's source line (edgesnn.source_lines)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)


class _ShapeTracer(meta_tracer.MetaTracer):
    """fx tracing that runs a real sample along, so a forward may read shapes as numbers
    (``B, C, H, W = x.shape``, ``int(C * ratio)``), as models written for training do."""

    record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        with warnings.catch_warnings():  # a value it cannot compute stays symbolic (and a shape read of it fails)
            warnings.simplefilter("ignore")
            rv = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        value = getattr(rv, "_tensor_meta", None)
        if isinstance(value, torch.Tensor):
            rv.node.meta["edgesnn_shape"] = tuple(value.shape)
        return rv


_RESHAPES = ("reshape", "view", torch.reshape)
TRACE_BATCH = 2  # the sample a shape-reading forward is traced with
_INPUT_SHAPE: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("input_shape", default=None)


@contextlib.contextmanager
def input_shape(shape):
    """Within it, :func:`trace` without a sample traces on zeros of this per-sample shape (the
    compression methods and the checkpoint loader trace models whose forward reads shapes)."""
    token = _INPUT_SHAPE.set(None if shape is None else tuple(int(d) for d in shape))
    try:
        yield
    finally:
        _INPUT_SHAPE.reset(token)


def _reads_shape(node: fx.Node) -> bool:
    """A node that reads a tensor's shape (x.shape, x.size(), x.dim()): symbolic without a sample."""
    return ((node.op == "call_function" and node.target is getattr and node.args[1:2] == ("shape",))
            or (node.op == "call_method" and node.target in ("size", "dim")))


def _trace_error(e: Exception) -> EdgesnnError:
    line = source_lines.exception_line(e)
    return EdgesnnError(f"cannot trace the model with torch.fx ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
                        + (f" at {line}" if line else "") + "; the exporter cannot follow Python that depends on "
                        "tensor values (if on a tensor) or writes into a tensor (x[..] = v) in forward")


def trace(model: nn.Module, sample: torch.Tensor | None = None) -> fx.GraphModule:
    """The model's fx graph; with ``sample`` (one input batch, or zeros of :func:`input_shape`),
    shapes read in forward are numbers and each reshape's batch size is made -1 again, so the
    graph runs on any batch."""
    if sample is None and _INPUT_SHAPE.get() is not None:
        sample = torch.zeros(TRACE_BATCH, *_INPUT_SHAPE.get())
    try:
        plain = fx.GraphModule(model, _Tracer().trace(model))
        if sample is None or not any(_reads_shape(n) for n in plain.graph.nodes):
            return plain
    except Exception:  # noqa: BLE001 - e.g. int() of a shape: traced again with the sample, below
        if sample is None:
            raise _trace_error(sys.exc_info()[1]) from None
    try:
        arg = next(iter(inspect.signature(model.forward).parameters))
        with torch.no_grad():
            graph = _ShapeTracer().trace(model, meta_args={arg: sample[:TRACE_BATCH].float()})
        gm = fx.GraphModule(model, graph)
    except Exception as e:  # noqa: BLE001 - any tracing failure is a model the exporter cannot read
        raise _trace_error(e) from None
    batch = min(TRACE_BATCH, len(sample))
    for node in gm.graph.nodes:
        if node.op in ("call_method", "call_function") and node.target in _RESHAPES and "edgesnn_shape" in node.meta:
            shape = node.meta["edgesnn_shape"]
            if not shape or shape[0] != batch:
                raise EdgesnnError(f"a reshape at {source_lines.where(node)} mixes the batch axis into the sample "
                                   f"(output shape {tuple(shape)} for a batch of {batch})")
            node.args = (node.args[0], -1, *shape[1:])
            node.kwargs = {}
    gm.recompile()
    return gm


def unsupported_nodes(gm: fx.GraphModule) -> list[str]:
    """Every node the exporter cannot read, with its module path and source line: all at once,
    before any training (the exporter itself stops at the first)."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, DEPLOYABLE) or hasattr(m, "weight_quant"):
                continue
            what = f"module {type(m).__module__}.{type(m).__qualname__}"
        elif node.op in ("call_function", "call_method"):
            if node.target in _FUNCTIONS:
                continue
            what = f"{'method .' if node.op == 'call_method' else 'function '}{getattr(node.target, '__name__', node.target)}"
        elif node.op == "get_attr":
            what = f"a direct read of parameter {node.target!r} (a layer's forward of its own, traced through)"
        else:
            continue
        found.append(f"{what} at {source_lines.where(node)}")
    return found


CHECK_SAMPLES = 64  # the batch export.check exports on: enough for BatchNorm and every calibrated range to exist


def check(model: nn.Module, sample: torch.Tensor, stream_dtype: str = "int8") -> None:
    """Refuse, before any epoch or calibration, a model the exporter cannot read: trace it, list
    every unsupported module or function, then export it once on ``sample`` (its weights may be
    untrained: only what a later export would refuse for the model's structure is reported)."""
    from edgesnn import pool_order  # builds on this module

    gm = pool_order.rewrite(trace(model, sample))
    bad = unsupported_nodes(gm)
    if bad:
        raise EdgesnnError(f"the exporter cannot read {len(bad)} operation(s): {'; '.join(bad)}. Supported: {SUPPORTED}")
    training = model.training
    try:
        export(model, sample, stream_dtype=stream_dtype)
    finally:
        model.train(training)


def is_add(node: fx.Node) -> bool:
    """A tensor + tensor node (the exporter's ADD; a residual sum)."""
    return (node.op in ("call_function", "call_method") and node.target in _ADD
            and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args))


class _Recorder(fx.Interpreter):
    """Runs the float model and records each node's output range for calibration."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample torch shape of each tensor node

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape[1:])
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            lo, hi = torch.aminmax(out)
            self.lo[n.name] = min(self.lo.get(n.name, 0.0), float(lo))
            self.hi[n.name] = max(self.hi.get(n.name, 0.0), float(hi))
        return out


def export(model: nn.Module, calibration: torch.Tensor, weight_bits: int | dict[str, int] = 8,
           meta: dict | None = None, stream_dtype: str = "int8") -> g.Graph:
    """Export ``model`` (eval mode is set) to an integer graph, calibrating scales on ``calibration`` (NCHW)."""
    if stream_dtype not in ADD_LEFT_SHIFT:
        raise EdgesnnError(f"stream dtype must be one of {', '.join(ADD_LEFT_SHIFT)}, got {stream_dtype!r}")
    model = model.eval()
    trained = {m.bits for m in model.modules() if isinstance(m, StreamQuant)}
    if trained and trained != {int(stream_dtype[3:])}:
        raise EdgesnnError(f"this model's residual streams were trained as int{max(trained)} (quantize --stream-dtype); "
                           f"export it with --stream-dtype int{max(trained)}, not {stream_dtype}")
    from edgesnn import pool_order  # builds on this module

    gm = pool_order.rewrite(trace(model, calibration))
    if sum(n.op == "placeholder" for n in gm.graph.nodes) != 1:
        raise EdgesnnError("the exporter supports models with one input tensor")
    rec = _Recorder(gm)
    with torch.no_grad():
        for batch in torch.split(calibration.float(), 256):
            rec.run(batch)
    return _Exporter(gm, rec, calibration, weight_bits, meta or {}, stream_dtype).run()


def input_quantization(x: np.ndarray) -> tuple[float, int]:
    """int8 (scale, zero point) covering the data and 0; lossless when the data lie on a grid.

    Image data usually do (8-bit pixels / 255, digits' 0..16 / 16): if every value is an integer
    multiple of the smallest step between distinct values and 256 levels cover them, that step
    is the scale, so quantizing the input adds no error at all.
    """
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if hi == lo:
        return 1.0, 0
    levels = np.unique(np.concatenate([np.unique(x.astype(np.float32)), [np.float32(0)]]))
    if 1 < len(levels) <= 256:
        step = float(np.diff(levels).min())
        k = (levels - levels[0]) / step
        if np.allclose(k, np.round(k), atol=1e-3) and np.round(k[-1]) <= 255:
            # Subdivide the grid as far as 256 levels allow: still exact, and every accumulator
            # gets more fractional bits before requantization rounds it.
            sub = int(255 // np.round(k[-1]))
            scale = np.float32(step / sub)
            return float(scale), int(-128 - np.round(levels[0] / float(scale)))
    scale = np.float32((hi - lo) / 255.0)
    return float(scale), int(np.clip(np.round(-128 - lo / float(scale)), -128, 127))


class _Exporter:
    def __init__(self, gm: fx.GraphModule, rec: _Recorder, calibration: torch.Tensor, weight_bits, meta: dict,
                 stream_dtype: str):
        self.gm, self.rec, self.calibration = gm, rec, calibration
        self.weight_bits = weight_bits
        self.modules = dict(gm.named_modules())
        self.tensors: dict[str, g.TensorSpec] = {}
        self.ops: list[g.Op] = []
        self.meta = {"created_by": f"edgesnn {__version__}", **meta}
        self.stream_dtype = stream_dtype
        self.widened: dict[str, str] = {}  # spike tensors scaled to fill int8 (headroom)
        self.widened16: dict[tuple[str, int], str] = {}  # int8 tensors widened into int16 (by 2^k)
        # A first layer whose result a neuron and others read (a stem feeding a block and its shortcut):
        # the neuron gets its own requantization of the accumulator. Through the stream it would round
        # twice, and a channel whose constant background sits within a stream step of j + 1/2 (measured:
        # 0.49995 in torch, 0.50001 in the IR) flipped 3 % of a resnet's first spikes. Only the first
        # layer: deeper shared ops (a downsample) gained nothing measurable on mnist5k and would store
        # their weights twice (900 bytes of a 1-bit transformer's 6005).
        self.for_neurons: dict[fx.Node, _Linear] = {}
        self.lattice: dict[str, int] = {}  # widened spike tensors: every value is a multiple of this
        self.bounds: dict[str, tuple[int, int]] = {}  # integer range of a tensor narrower than its dtype's (products)
        self.input_name: str | None = None

    # ---- graph walk -------------------------------------------------------------------------
    def run(self) -> g.Graph:
        env: dict[fx.Node, object] = {}
        outputs: list[str] = []
        for node in self.gm.graph.nodes:
            try:
                self.step(node, env, outputs)
            except EdgesnnError as e:  # name the user's source line, not only the fx node
                line = source_lines.node_line(node)
                raise EdgesnnError(f"{e} (at {line})" if line and line not in str(e) else str(e)) from None
        return g.Graph(tensors=self.tensors, ops=self.ops, input=self.input_name, outputs=outputs, meta=self.meta)

    def step(self, node: fx.Node, env: dict, outputs: list[str]) -> None:
        if node.op == "placeholder":  # the one input (export checks there is one)
            env[node] = self.input(node)
            self.input_name = env[node].name
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            for r in results:
                x = _plain(self.as_int(env[r], name="output"), "the model output")
                if x.factor != 1:  # a factor still riding along (a readout's scale after a pool): into the scale
                    spec = self.tensors[x.name]
                    name = "output" if "output" not in self.tensors else f"{x.name}.output"
                    x = self.rescale(x, self.new_tensor(name, spec.shape, spec.dtype, x.factor * spec.scale),
                                     list(self.int_range(x.name)))
                outputs.append(x.name)
        elif node.op == "call_module":
            env[node] = self.module(node, self.modules[node.target], env)
        elif node.op in ("call_function", "call_method"):
            env[node] = self.function(node, env)
        else:
            raise EdgesnnError(f"unsupported graph node {node.name!r} ({node.op}) at {source_lines.where(node)}; "
                               f"supported: {SUPPORTED}")
        if isinstance(env.get(node), _Linear) and len(node.users) > 1:
            if env[node].src.name == self.input_name and any(
                    u.op == "call_module" and type(self.modules[u.target]) is MultiSpike for u in node.users):
                self.for_neurons[node] = replace(env[node])  # before as_int changes its source
            env[node] = self.as_int(env[node])  # shared by several users: compute it once

    def input(self, node: fx.Node) -> _Int:
        x = self.calibration
        if x.dim() not in (2, 4):
            raise EdgesnnError(f"input must be (batch, features) or (batch, C, H, W), got shape {tuple(x.shape)}")
        shape = [x.shape[2], x.shape[3], x.shape[1]] if x.dim() == 4 else [x.shape[1]]
        scale, zp = input_quantization(x.numpy())
        self.tensors["input"] = g.TensorSpec(shape, "int8", float(scale), zp)
        return _Int("input")

    def module(self, node: fx.Node, m: nn.Module, env) -> object:
        src = env[node.args[0]]
        where = f"layer '{node.target}' ({type(m).__name__})"
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m, self.image(self.as_int(src), where), where)
        if isinstance(m, nn.Conv1d):
            return export_tensors.conv1d(self, node, m, self.as_int(src), self.rec.shapes[node.name], where)
        if isinstance(m, nn.Linear):
            x = self.as_int(src)
            if x.index is not None:
                x = export_tensors.arrange(self, x, [0], [int(np.prod(export_tensors.torch_shape(self, x)))], where)
            x = self.headroom(x)
            w, qw = _absorb_amplitude(m.weight.detach().double(), _quantized_weight(m), x, where)
            if x.perm is not None:
                w = w[:, torch.as_tensor(x.perm)]
                if qw is not None:
                    qw.q = qw.q[:, torch.as_tensor(x.perm)]
            return _Linear("dense", x, node, w, _bias(m), attrs={"layer": node.target}, qweight=qw)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not isinstance(src, _Linear) or src.kind == "reduce_sum":
                raise EdgesnnError(f"{where} must directly follow a Conv2d or Linear to be folded")
            return _fold_bn(src, m, node)
        if isinstance(m, MultiSpike):
            return self.spike(self.for_neurons.get(node.args[0], src), m, node)
        if isinstance(m, TernaryStep):
            return self.ternary(src, m, node)
        if isinstance(m, StreamQuant):
            return self.stream(src, m, node)
        if isinstance(m, (IBRALIF, MPBNSpike)):
            from edgesnn import export_neurons  # builds on this module

            return (export_neurons.ibra if isinstance(m, IBRALIF) else export_neurons.mpbn)(self, src, m, node)
        if isinstance(m, tuple(NEURONS.values())):
            raise EdgesnnError(f"{where}: multi-step neurons deploy through their integer SFA form; "
                               f"the IR exporter takes MultiSpike. Supported: {SUPPORTED}")
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)):
            src = self.image(self.as_int(src), where)
        if isinstance(m, nn.AvgPool2d):
            return self.avg_pool(self.as_int(src), _pair(m.kernel_size), _pair(m.stride or m.kernel_size), m.padding,
                                 node.target, where)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if _pair(m.output_size) != [1, 1]:
                raise EdgesnnError(f"{where}: only output size 1 (global average pooling) is supported")
            x = self.as_int(src)
            h, w = self.tensors[x.name].shape[:2]
            return self.avg_pool(x, [h, w], [h, w], 0, node.target, where)
        if isinstance(m, nn.MaxPool2d):
            x = self.as_int(src)
            if _pair(m.padding) != [0, 0] or _pair(m.dilation) != [1, 1] or m.ceil_mode:
                raise EdgesnnError(f"{where}: only unpadded, undilated max pooling is supported")
            return self.pool_op(g.MaxPool2D, x, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), node.target)
        if isinstance(m, nn.Flatten) and (src.index is not None if isinstance(src, _Int) else m.start_dim != 1):
            x = self.as_int(src)
            return export_tensors.with_index(x, export_tensors.index_of(self, x).reshape(self.rec.shapes[node.name]), self)
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise EdgesnnError(f"{where}: only flatten(start_dim=1) is supported")
            return self.flatten(self.as_int(src), node.target)
        if isinstance(m, _PASS_THROUGH):
            return src
        raise EdgesnnError(f"{where} is not supported by the IR exporter; supported: {SUPPORTED}")

    def common_layout(self, a: _Int, b: _Int, where: str) -> tuple[_Int, _Int]:
        """Two operands of an elementwise op with one storage order: b arranged as a is (an image
        stays an image), or both in torch's order."""
        if a.index is None and b.index is None:
            return a, b
        ia, ib = export_tensors.index_of(self, a), export_tensors.index_of(self, b)
        if ia.shape == ib.shape and np.array_equal(ia, ib):
            shape = self.tensors[a.name].shape
            if self.tensors[b.name].shape != shape:  # the same storage in another IR shape: a free reshape
                b = replace(b, name=export_tensors.reshape_op(self, b.name, shape), index=a.index)
            return a, b
        if ia.shape != ib.shape:
            raise EdgesnnError(f"{where}: shapes {ia.shape} and {ib.shape} differ (broadcasting a rearranged tensor "
                               "is not supported)")
        if a.index is None and len(self.tensors[a.name].shape) == 3:
            return a, self.image(b, where)
        if b.index is None and len(self.tensors[b.name].shape) == 3:
            return self.image(a, where), b
        order = list(range(ia.ndim))
        return (export_tensors.arrange(self, a, order, list(ia.shape), where),
                export_tensors.arrange(self, b, order, list(ib.shape), where))

    def image(self, x: _Int, where: str) -> _Int:
        """``x`` stored as the IR's image (HWC of torch's CHW), for a conv or pool to read."""
        if x.index is None:
            return x
        c, h, w = export_tensors.torch_shape(self, x)
        return export_tensors.arrange(self, x, [1, 2, 0], [h, w, c], where)

    def function(self, node: fx.Node, env) -> object:
        fn, args = node.target, node.args
        where = f"operation {getattr(fn, '__name__', fn)} at {source_lines.where(node)}"
        if fn in export_tensors.FUNCTIONS and not self.classic(node, env):
            return export_tensors.function(self, node, env, self.rec.shapes)
        if is_add(node):
            return self.add(*self.common_layout(*(_plain(self.as_int(env[x]), where) for x in args), where), node)
        if fn in _MUL and len(args) == 2:
            a, b = args
            if isinstance(a, fx.Node) and isinstance(b, fx.Node):
                return self.mul(*self.common_layout(_plain(self.as_int(env[a]), where), _plain(self.as_int(env[b]), where),
                                                    where), node)
            value, const = (env[a], b) if isinstance(a, fx.Node) else (env[b], a)
            if isinstance(const, (int, float)):
                return _scaled(value, float(const), node)
        if fn in _FLATTEN:
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 1 if fn == "flatten" else 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                return self.flatten(self.as_int(env[args[0]]), node.name)
        if fn == "sum":
            dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
            keep = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
            x = self.as_int(env[args[0]])
            if tuple(dims or ()) in ((2, 3), (-2, -1)) and keep and len(self.tensors[x.name].shape) == 3:
                return _Linear("reduce_sum", x, node, scale=x.factor, attrs={"layer": node.name})
        raise EdgesnnError(f"{where} is not supported by the IR exporter; supported: {SUPPORTED}")

    def classic(self, node: fx.Node, env) -> bool:
        """flatten(1) of an image and sum over (H, W): the forms the exporter read before export_tensors."""
        fn, args = node.target, node.args
        value = env.get(args[0]) if args and isinstance(args[0], fx.Node) else None
        if isinstance(value, _Int) and value.index is not None:
            return False
        if fn in _FLATTEN:
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 1 if fn == "flatten" else 0)
            end = args[2] if len(args) > 2 else node.kwargs.get("end_dim", -1)
            return start == 1 and end == -1
        if fn == "sum":
            dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
            keep = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
            return tuple(dims or ()) in ((2, 3), (-2, -1)) and bool(keep) and len(self.rec.shapes[args[0].name]) == 3
        return False

    # ---- values -----------------------------------------------------------------------------
    def conv(self, node, m: nn.Conv2d, x: _Int, where: str) -> _Linear:
        if x.perm is not None or len(self.tensors[x.name].shape) != 3:
            raise EdgesnnError(f"{where} needs an image (H, W, C) input")
        if _pair(m.dilation) != [1, 1] or m.padding_mode != "zeros":
            raise EdgesnnError(f"{where}: only undilated convolutions with zero padding are supported")
        kh, kw = m.kernel_size
        if m.padding == "same":
            pads = [(kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2]
        elif m.padding == "valid":
            pads = [0, 0, 0, 0]
        else:
            ph, pw = _pair(m.padding)
            pads = [ph, ph, pw, pw]
        attrs = {"layer": node.target, "stride": _pair(m.stride), "padding": pads, "groups": m.groups}
        x = self.headroom(x)
        w, qw = _absorb_amplitude(m.weight.detach().double(), _quantized_weight(m), x, where, m.groups)
        return _Linear("conv2d", x, node, w, _bias(m), attrs=attrs, qweight=qw)

    def spike(self, src, m: MultiSpike, node) -> _Int:
        clamp = [0, m.D]
        if m.membrane is not None:  # Q-SNN: the membrane is an integer tensor of its own grid first
            out = self.membrane_spikes(self.membrane(src, m, f"{node.target}.membrane"), m, node.target)
        else:
            out = self.counts(src, node, m.gain, m.fire, m.D, clamp)
        out.factor = 1.0 / m.D if m.normalize else 1.0
        return out

    def counts(self, src, node, gain: float, fire, D: int, clamp: list[int]) -> _Int:
        """A neuron's integer counts ``fire(u)``, ``fire`` being round(gain * u) clamped to ``clamp``.

        A pending linear op requantizes to them directly (times ``gain``). A stream ``x`` maps each
        integer z it holds to torch's ``fire(z * scale)``: a plain requantization rounds twice, and at
        a trained stream's power-of-two scale the first rounding (the doubling high-mul of multiplier
        2^30) is half a stream step: it fired 7 % of a resnet's second-block spikes early."""
        name = node.target
        if isinstance(src, _Linear):
            return self.materialize(_scaled(src, gain, node) if gain != 1 else src, 1.0, clamp, name, spike_D=D)
        x = _plain(self.as_int(src), f"layer '{name}'")
        real = torch.tensor(np.float32(x.factor * self.tensors[x.name].scale))

        def wanted(z):
            with torch.no_grad():
                return fire(torch.as_tensor(z, dtype=torch.float32) * real).numpy()

        scaled = replace(x, factor=x.factor * gain)  # the requantization starts from gain * u
        return self.exact_requantize(scaled, wanted, self.new_tensor(name, self.tensors[x.name].shape, "int8", 1.0,
                                                                     spike_D=D), clamp)

    def membrane(self, src, m: MultiSpike, name: str) -> _Int:
        """The Q-SNN membrane q = clamp(round(u / s), -qmax, qmax) as an integer tensor of its grid s.

        From a pending linear op it is one requantization of the accumulator. From an int8 stream (a
        residual sum) it is the stream's integers mapped to torch's q for every value the stream
        can hold (:meth:`exact_requantize`), so the second rounding adds nothing to the first; from
        an int16 stream it is the plain requantization, which torch computes too
        (:meth:`MembraneQuant.integers`). From a column sum (the attention's) the sums are held
        exactly first (:meth:`exact_sum`) and mapped as a stream's integers are."""
        qmax, scale = m.membrane.qmax, float(m.membrane.scale)
        dtype = "int8" if qmax <= 127 else "int16"
        sums = None
        if isinstance(src, _Linear) and src.kind == "reduce_sum" and (sums := self.exact_sum(src, name)) is not None:
            src = sums  # the attention's column count: exact first, then mapped like a stream's integers (below)
        elif isinstance(src, _Linear):
            return self.materialize(src, scale, [-qmax, qmax], name, dtype=dtype, levels=range(1 - qmax, qmax + 1))
        x = _plain(self.as_int(src), f"layer '{name}'")
        real = np.float32(x.factor * self.tensors[x.name].scale)
        out = self.new_tensor(name, self.tensors[x.name].shape, dtype, scale)
        if sums is None and m.membrane.stream is not None and m.membrane.stream.bits == 16:  # torch computes this one
            if real != np.float32(m.membrane.stream.scale):
                raise EdgesnnError(f"layer '{name}': its membrane reads a stream of scale {real}, trained at "
                                   f"{float(m.membrane.stream.scale)}")
            return self.rescale(x, out, [-qmax, qmax])

        def wanted(z):
            with torch.no_grad():
                return m.membrane.integers(torch.as_tensor(z, dtype=torch.float32) * torch.tensor(real)).numpy()

        return self.exact_requantize(x, wanted, out, [-qmax, qmax])

    def exact_sum(self, v: _Linear, name: str) -> _Int | None:
        """A reduce_sum's integer sums n, times 2^k, as an int16 tensor (exact: the multiplier is 2^k);
        None if its largest sum does not fit.

        The attention's mask neuron reads such a sum (of k * v over all tokens, times 0.125). Requantized
        straight onto a Q-SNN membrane, the sum's multiplier (0.125 / 16 over the membrane's step)
        rounded first at 1/8 of a membrane step, so sums just below a level's threshold reached it:
        12 of the 1250 mnist5k-14 predictions of the Q-SNN spikeformer at int16 streams differed from
        torch's, 1 with the exact sums (tests/test_fidelity.py has a small case). The sums of a
        spike product are small (0..16 each), so 2^k is 32 on a 7 x 7 map."""
        lo, hi = self.int_range(v.src.name)
        h, w, _ = self.tensors[v.src.name].shape
        largest = h * w * max(abs(lo), abs(hi))
        if largest == 0 or largest > 32767:
            return None
        k = int(np.floor(np.log2(32767 / largest)))
        unit = np.float32(self.tensors[v.src.name].scale) * np.float32(v.scale)
        out = self.materialize(v, float(np.float32(unit / 2**k)), [h * w * lo << k, h * w * hi << k], f"{name}.sum",
                               dtype="int16")
        self.bounds[out.name] = (h * w * lo << k, h * w * hi << k)
        self.lattice[out.name] = 2**k
        return out

    def membrane_spikes(self, x: _Int, m: MultiSpike, name: str) -> _Int:
        """Spikes of a Q-SNN membrane q at exactly torch's counts, clamp(floor(q * s + 0.5), 0, D).

        Requantizing q straight to spikes rounded first at the multiplier's resolution, which for
        s = 0.047 is 1/16 of a spike, coarser than q's own step: the q just below each j + 0.5
        fired j + 1 (issue 18)."""

        def wanted(q):
            with torch.no_grad():
                return m.fire(m.membrane.levels(torch.as_tensor(q, dtype=torch.float32))).numpy()

        out = self.new_tensor(name, self.tensors[x.name].shape, "int8", 1.0, spike_D=m.D)
        return self.exact_requantize(x, wanted, out, [0, m.D])

    def exact_requantize(self, x: _Int, wanted, out: str, clamp: list[int]) -> _Int:
        """A requantization of ``x`` into ``out`` that gives ``wanted(z)`` for every integer z ``x`` can hold.

        TFLite's requantization rounds first at the multiplier's resolution, then in the shift; for
        a multiplier near 1 or above 1/16 that first rounding is as coarse as z's own step, so
        thresholds land one z early. An int8 ``x`` is therefore widened by 2^k into int16 first
        (exact), which makes that rounding 2^k times finer, and the input scale is moved a few
        float32 steps where some z still maps elsewhere (the op records it as ``input_scale``).
        When no nearby scale is exact the plain requantization stays."""
        spec = self.tensors[x.name]
        lo, hi = self.int_range(x.name)
        step = self.lattice.get(x.name, 1)  # a widened tensor holds multiples of it only
        z = np.arange(-(-lo // step), hi // step + 1, dtype=np.int64) * step
        target = np.asarray(wanted(z)).astype(np.int64)
        k = 0
        if spec.dtype == "int8" and spec.zero_point == 0:
            x, k = self.widen16(x)
        base = np.float32(x.factor * self.tensors[x.name].scale)
        scale = _exact_scale(base, z << k, target, np.float32(self.tensors[out].scale), clamp)
        return self.rescale(_Int(x.name, factor=float(scale) / float(self.tensors[x.name].scale), index=x.index), out, clamp)

    def ternary(self, src, m: TernaryStep, node) -> _Int:
        """o = clamp(round(u / (2 threshold)), -1, 1): signed 1-level spikes; a_c rides along."""
        out = self.counts(src, node, 1.0 / (2 * m.threshold), m.integer, 1, [-1, 1])
        self.tensors[out.name].signed = True
        a = m.amplitude.detach().double().numpy()
        out.amplitude = None if np.all(a == 1) else a  # unit (or folded) amplitudes: plain integer spikes
        return out

    def requantize(self, src, scale: float, clamp: list[int], dtype: str, name: str, spike_D: int | None = None) -> _Int:
        """A value as an integer tensor of ``scale``: a pending linear op materializes there directly."""
        if isinstance(src, _Linear):
            return self.materialize(src, scale=scale, clamp=clamp, name=name, spike_D=spike_D, dtype=dtype)
        x = _plain(self.as_int(src), f"layer '{name}'")
        return self.rescale(x, self.new_tensor(name, self.tensors[x.name].shape, dtype, scale, spike_D=spike_D), clamp)

    def rescale(self, x: _Int, out: str, clamp: list[int]) -> _Int:
        """A Requantize of ``x`` into tensor ``out``; a factor on ``x`` folds into the input scale it records."""
        scale_in = float(np.float32(x.factor * self.tensors[x.name].scale))
        mult, shift = quantize_multipliers(effective_multiplier(scale_in, 1.0, self.tensors[out].scale))
        self.ops.append(g.Requantize(out, [x.name], out, multiplier=mult, shift=shift, clamp=clamp,
                                     input_scale=None if x.factor == 1 else scale_in))
        return _Int(out, index=x.index)

    def int16_input(self, x: _Int) -> _Int:
        """``x`` as an int16 tensor of the same scale (exact): convolutions with an int16 output read
        int16, as TFLite's 16x8 kernels do (int8 -> int16 convolutions do not exist there)."""
        spec = self.tensors[x.name]
        if spec.dtype in ("int16", "int32"):  # int32: a window sum, read as it is (ir/fixedpoint.py), never narrowed
            return x
        name = f"{x.name}.int16"
        if name not in self.tensors:
            self.new_tensor(name, spec.shape, "int16", spec.scale)
            self.tensors[name].signed = spec.signed
            mult, shift = quantize_multipliers(effective_multiplier(spec.scale, 1.0, spec.scale))
            self.ops.append(g.Requantize(name, [x.name], name, multiplier=mult, shift=shift, clamp=list(g.dtype_range("int16"))))
            if x.name in self.lattice:  # widened spikes stay multiples of 2^k
                self.lattice[name] = self.lattice[x.name]
            if x.name in self.bounds:
                self.bounds[name] = self.bounds[x.name]
        return replace(x, name=name)

    def headroom(self, x: _Int) -> _Int:
        """Spikes (0..D) scaled up by 2^k to fill int8 before a conv/dense reads them: exact, and
        the accumulator gains k bits. TFLite's requantization rounds first at the accumulator's
        resolution (the high-mul), so with small spike counts that rounding alone would flip
        ~1 % of the next layer's spikes; with the headroom it is 2^k times smaller."""
        spec = self.tensors[x.name]
        if spec.spike_D is None or spec.dtype != "int8" or spec.zero_point != 0:
            return x
        k = int(np.floor(np.log2(127 / spec.spike_D)))
        if k <= 0:
            return x
        if x.name not in self.widened:
            out = self.new_tensor(f"{x.name}.x{2**k}", spec.shape, "int8", spec.scale / 2**k)
            self.tensors[out].signed = spec.signed
            lo, hi = self.int_range(x.name)
            mult, shift = quantize_multipliers(effective_multiplier(spec.scale, 1.0, self.tensors[out].scale))
            self.ops.append(g.Requantize(out, [x.name], out, multiplier=mult, shift=shift, clamp=[lo << k, hi << k]))
            self.widened[x.name] = out
            self.lattice[out] = 2**k
        return replace(x, name=self.widened[x.name])

    def lattice_input(self, x: _Int, weight_sum: int) -> _Int:
        """An int8 input of a layer writing a trained stream, widened into int16 by 2^k.

        The bias of an accumulator that takes every integer can place only a few thresholds exactly:
        with a stream's 255 some always fall one accumulator step from torch's
        (0.04 % of a resnet stem's stream integers). Widening makes the accumulator 2^k times finer
        than the values it takes, so a bias can move thresholds between the values (:func:`_neuron_bias`).
        The layer then runs TFLite's 16x8 kernel, whose 16-bit multiplier still leaves a few thresholds
        off (measured: 0.01 % of that stem's integers). On the spike-driven transformers it took the
        mnist5k mismatches from 7-8 to 1-5 of 1250. A Q-SNN membrane's first layer is not widened: its
        spikes absorbed the few missed levels (0 of 1250 on the cnn either way), and with the 16x8 kernel
        the cnn's event-driven Cortex-M4 inference took 22.2 M instructions instead of 7.6 M. Spikes
        have their own int8 headroom (:meth:`headroom`, x 16 at D = 4), which is not fine enough
        for a stream's 255 thresholds: the first rounding of TFLite's requantization moves each by up
        to one accumulator step, so their spread exceeds the 16 a bias can absorb. Unwidened, 0.26 %
        of a spike-driven transformer's first-block stream integers were one step off torch and 14 of
        1250 mnist5k samples differed (int8 method, seed 0); widened, 1. Into an int16 stream one
        accumulator step of spikes x 16 was 1.4 stream steps on E-SpikeFormer, and the rounded bias
        put 40 % of a block's stream integers one step off torch. The cost: a layer that writes a
        trained stream runs the 16x8 kernel.
        ``weight_sum``: the layer's largest row sum of |integer weights|; the widened accumulator
        stays within half of Loihi 2's 24-bit neuron state, the narrowest accumulator of the targets."""
        spec = self.tensors[x.name]
        if spec.dtype != "int8" or spec.spike_D is not None:
            return x
        lo, hi = self.int_range(x.name)
        return self.widen16(x, limit=int(np.floor(np.log2(2**22 / max(weight_sum * max(abs(lo), abs(hi)), 1)))))[0]

    def widen16(self, x: _Int, limit: int = 15) -> tuple[_Int, int]:
        """An int8 tensor as int16 times 2^k, k as large as its integers allow, at most ``limit``
        (exact; made once per tensor)."""
        spec = self.tensors[x.name]
        lo, hi = self.int_range(x.name)
        k = min(int(np.floor(np.log2(32767 / max(abs(lo), abs(hi), 1)))), limit)
        if k > 0 and (x.name, k) not in self.widened16:
            wide = self.new_tensor(f"{x.name}.x{2**k}", spec.shape, "int16", spec.scale / 2**k)
            mult, shift = quantize_multipliers(effective_multiplier(spec.scale, 1.0, self.tensors[wide].scale))
            self.ops.append(g.Requantize(wide, [x.name], wide, multiplier=mult, shift=shift, clamp=[lo << k, hi << k]))
            self.widened16[x.name, k] = wide
            self.lattice[wide] = self.lattice.get(x.name, 1) * 2**k
        if k <= 0:
            return x, 0
        return replace(x, name=self.widened16[x.name, k]), k

    def as_int(self, v, name: str | None = None) -> _Int:
        """Materialize a pending linear op at its symmetric stream scale (:meth:`stream_scale`); at a
        trained one (StreamQuant) every output integer's threshold is torch's."""
        if isinstance(v, _Int):
            return v
        lo, hi = g.dtype_range(self.stream_dtype)
        levels = None
        if self.trained_stream(v.node) is not None:
            levels = range(lo + 1, hi + 1)
            if v.qweight is not None and v.kind in ("conv2d", "dense"):
                q = v.qweight.q
                v.src = self.lattice_input(v.src, int(q.abs().reshape(q.shape[0], -1).sum(1).max())
                                           << widening_shift(v.qweight.bits, v.qweight.code))
        trained = self.trained_stream(v.node)
        return self.materialize(v, scale=self.stream_scale(v.node), clamp=[lo, hi], name=name or v.node.name,
                                dtype=self.stream_dtype, levels=levels,
                                ratio16=trained is not None and trained.writer_ratio is not None)

    def stream(self, src, m: StreamQuant, node) -> _Int:
        """A trained stream quantizer: its input is already materialized on its grid (:meth:`as_int`,
        :meth:`add`), or is a grid value the IR rescales (exact for power-of-two ratios)."""
        feeds_output = any(u.op == "output" for u in node.users)
        x = _plain(self.as_int(src, name="output" if feeds_output else None), f"layer '{node.target}'")
        spec = self.tensors[x.name]
        if x.factor == 1 and spec.scale == float(m.scale) and spec.dtype == self.stream_dtype and spec.zero_point == 0:
            return x
        lo, hi = m.clamp
        name = "output" if feeds_output else node.target
        return self.rescale(x, self.new_tensor(name, spec.shape, self.stream_dtype, float(m.scale)), [lo, hi])

    def trained_stream(self, node: fx.Node) -> StreamQuant | None:
        for u in node.users:
            if u.op == "call_module" and isinstance(self.modules[u.target], StreamQuant):
                return self.modules[u.target]
        return None

    def stream_scale(self, node: fx.Node) -> float:
        """The scale of a stream tensor: a StreamQuant's that reads it, else the calibrated absmax / dtype
        max, raised by < 2x when neurons read it until their requantization rounds once (see
        :func:`_neuron_input_scale`)."""
        if (trained := self.trained_stream(node)) is not None:
            return float(trained.scale)
        absmax = max(abs(self.rec.lo[node.name]), abs(self.rec.hi[node.name]))
        scale = np.float32(absmax / g.dtype_range(self.stream_dtype)[1] if absmax > 0 else 1.0)
        D = [self.modules[u.target].D for u in node.users
             if u.op == "call_module" and isinstance(self.modules[u.target], MultiSpike) and self.modules[u.target].membrane is None]
        return float(_neuron_input_scale(scale, max(D)) if D else scale)

    def materialize(self, v: _Linear, scale: float, clamp: list[int], name: str, spike_D: int | None = None,
                    dtype: str = "int8", levels: range | None = None, ratio16: bool = False) -> _Int:
        """``levels``: the output integers whose thresholds must be torch's (a Q-SNN membrane's, a
        trained stream's; a neuron's 1..D are implied by its clamp). ``ratio16``: torch's stream
        quantizer scales by the 16x8 kernel's M16 / M (StreamQuant.writer_ratio), so thresholds do."""
        if (v.kind in ("conv2d", "dense") and v.qweight is None and v.planes is None
                and self.bits_for(v.attrs.get("layer")) == export_planes.PLANES_BITS):
            v = export_planes.two_planes(self, v, _post_training_grid) or v
        if dtype == "int16" and v.kind in ("conv2d", "dense"):
            v.src = self.int16_input(v.src)
        elif v.kind in ("conv2d", "dense") and self.tensors[v.src.name].dtype == "int16":
            # TFLite's 16x8 kernels write int16: compute there, then narrow (exact: the clamp fits int8)
            wide = self.materialize(v, scale, clamp, f"{name}.int16", dtype="int16", levels=levels, ratio16=ratio16)
            return self.rescale(wide, self.new_tensor(name, self.tensors[wide.name].shape, dtype, scale, spike_D=spike_D),
                                clamp)
        spec_in = self.tensors[v.src.name]
        s_out = float(np.float32(scale))
        if v.kind == "batch_matmul":
            return export_tensors.requantized_product(self, v, s_out, clamp, name, dtype, spike_D)
        if v.kind == "reduce_sum":
            h, w, c = spec_in.shape
            out = self.new_tensor(name, [1, 1, c], dtype, s_out, spike_D=spike_D)
            sum_scale = np.float32(v.scale)
            if _is_neuron(clamp, s_out):  # the count's real value is exact: fire at exactly torch's counts
                sum_scale = _neuron_sum_scale(sum_scale, float(spec_in.scale) * v.scale, np.float32(spec_in.scale), clamp,
                                              linear_requantizer(spec_in.dtype))
            mult, shift = quantize_multipliers(effective_multiplier(spec_in.scale, sum_scale, s_out))
            self.ops.append(g.ReduceSum(name, [v.src.name], out, multiplier=mult, shift=shift, clamp=clamp,
                                        scale=float(sum_scale)))
            return _Int(out, index=v.attrs.get("index"))
        if v.planes is not None:
            wq, w_scale = v.planes
            bits, code, w = 8, "signed", wq
        elif v.qweight is not None:
            wq, w_scale, bits, code = _trained_grid(v.qweight, v.src.factor)
            w = wq
        else:
            bits = min(self.bits_for(v.attrs["layer"]), 8)  # 16: a layer two planes cannot take keeps 8
            code = "odd" if bits == 1 else "signed"
            w = v.weight * v.src.factor
            wq, w_scale = _post_training_grid(w, bits, code)
        # the IR computes with the weights widened to int8 (q * 2^k): their scale is w_scale / 2^k
        w_scale = (w_scale / np.float32(2 ** widening_shift(bits, code))).astype(np.float32)
        acc_scale = np.float32(spec_in.scale).astype(np.float64) * w_scale.astype(np.float64)
        bias = v.bias.numpy() if v.bias is not None else np.zeros(w.shape[0])
        bias_q = np.round(bias / acc_scale)
        mult, shift = quantize_multipliers(effective_multiplier(spec_in.scale, w_scale, s_out))
        if v.qweight is not None and _is_neuron(clamp, s_out):
            levels = range(clamp[0] + 1, clamp[1] + 1)
        if v.qweight is not None and levels is not None:
            # torch's output is exactly round(coef * acc + bias) on the lattice of accumulators
            coef = spec_in.scale * np.abs((v.qweight.scale * v.src.factor).numpy()) / 2 ** widening_shift(bits, code)
            lattice = self.lattice.get(v.src.name, 1) << widening_shift(bits, code)
            r = 1.0
            if ratio16 and spec_in.dtype == "int16":
                r = reduced_multiplier_ratio(effective_multiplier(spec_in.scale, w_scale, s_out))
            bias_q = _neuron_bias(bias_q, bias * r / s_out, coef * r / s_out, lattice, mult, shift, levels,
                                  linear_requantizer(spec_in.dtype))
        if np.abs(bias_q).max(initial=0) >= 2**31:
            raise EdgesnnError(f"layer '{v.attrs['layer']}': bias does not fit int32 at this input scale")
        common = dict(multiplier=mult, shift=shift, clamp=clamp, bias=bias_q.astype(np.int32),
                      weight_scale=w_scale, weight_bits=bits, weight_code=code)
        if v.kind == "conv2d":
            hin, win_, _ = spec_in.shape
            (kh, kw), (sh, sw), (t, b, l, r) = w.shape[2:], v.attrs["stride"], v.attrs["padding"]
            shape = [(hin + t + b - kh) // sh + 1, (win_ + l + r - kw) // sw + 1, w.shape[0]]
            out = self.new_tensor(name, shape, dtype, s_out, spike_D=spike_D)
            weight = wq.permute(0, 2, 3, 1).numpy().astype(np.int8)  # OIHW -> OHWI
            self.ops.append(g.Conv2D(name, [v.src.name], out, weight=weight, stride=v.attrs["stride"],
                                     padding=v.attrs["padding"], groups=v.attrs["groups"], **common))
        else:
            out = self.new_tensor(name, [w.shape[0]], dtype, s_out, spike_D=spike_D)
            self.ops.append(g.Dense(name, [v.src.name], out, weight=wq.numpy().astype(np.int8), **common))
        return _Int(out, index=v.attrs.get("index"))

    def add(self, a: _Int, b: _Int, node) -> _Int:
        """a + b at the calibrated stream scale, with TFLite's ADD arithmetic.

        Each input's ``factor`` (1/D of spikes, a constant multiplier such as the 0.5 of an
        average) folds into the scale its ADD multiplier uses (real = factor * scale * (q - zp)),
        so the sum is exact up to the output rounding. Inputs may be int8 or int16 in any mix
        (int16 ones symmetric): the left shift is the one of the widest of inputs and output
        (int16: 15, else 20), which keeps every shifted input inside int32. The output is the
        stream dtype. The op records the input scales when a factor makes them differ from the
        tensors' (a TFLite lowering relabels the inputs with them); with mixed dtypes a TFLite
        lowering casts the int8 tensors to int16 (lossless at the same scale) for TFLite's int16
        ADD, whose left shift is that same 15.
        """
        sa, sb = self.tensors[a.name], self.tensors[b.name]
        if sa.shape != sb.shape:
            raise EdgesnnError(f"operation '{node.name}': broadcasting add is not supported ({sa.shape} + {sb.shape})")
        dtype = self.stream_dtype
        scales = [self._add_input_scale(x, node) for x in (a, b)]
        lo, hi = g.dtype_range(dtype)
        out = self.new_tensor(node.name, sa.shape, dtype, self.stream_scale(node))
        left_shift = min(ADD_LEFT_SHIFT[t] for t in (sa.dtype, sb.dtype, dtype))
        mult, shift = add_multipliers(scales[0], scales[1], self.tensors[out].scale, left_shift)
        own = [float(np.float32(self.tensors[x.name].scale)) for x in (a, b)]
        self.ops.append(g.Add(node.name, [a.name, b.name], out, left_shift=left_shift, multiplier=mult, shift=shift,
                              clamp=[lo, hi], input_scales=None if scales == own else scales))
        return _Int(out, index=a.index)

    def _add_input_scale(self, x: _Int, node) -> float:
        """The scale an ADD input carries into its multiplier: factor * scale (checked to be addable)."""
        spec, where = self.tensors[x.name], f"operation '{node.name}'"
        if x.perm is not None:
            raise EdgesnnError(f"{where}: adding flattened values is not supported")
        if spec.dtype not in ADD_LEFT_SHIFT:
            raise EdgesnnError(f"{where}: add takes {' or '.join(ADD_LEFT_SHIFT)} inputs, "
                               f"got {spec.dtype} tensor '{x.name}'")
        if spec.dtype == "int16" and spec.zero_point != 0:
            raise EdgesnnError(f"{where}: an int16 add input must be symmetric (zero point 0), "
                               f"'{x.name}' has {spec.zero_point}")
        scale = float(np.float32(x.factor * spec.scale))
        if not (np.isfinite(scale) and scale > 0):
            raise EdgesnnError(f"{where}: input '{x.name}' carries the factor {x.factor}; add needs a positive scale")
        return scale

    def mul(self, a: _Int, b: _Int, node) -> _Int:
        """Exact integer product (spike masking): the output scale is the product of the input scales."""
        sa, sb = self.tensors[a.name], self.tensors[b.name]
        if a.perm is not None or b.perm is not None or len(sa.shape) != len(sb.shape):
            raise EdgesnnError(f"operation '{node.name}': multiply needs two tensors of the same rank")
        try:
            shape = list(np.broadcast_shapes(tuple(sa.shape), tuple(sb.shape)))
        except ValueError:
            raise EdgesnnError(f"operation '{node.name}': shapes {sa.shape} and {sb.shape} do not broadcast") from None
        lo_a, hi_a = self.int_range(a.name)
        lo_b, hi_b = self.int_range(b.name)
        corners = [x * y for x in (lo_a, hi_a) for y in (lo_b, hi_b)]
        dtype = "int8" if min(corners) >= -128 and max(corners) <= 127 else "int16"
        s_out = float(np.float32(sa.scale) * np.float32(sb.scale))
        out = self.new_tensor(node.name, shape, dtype, s_out)
        mult, shift = quantize_multipliers(effective_multiplier(sa.scale, sb.scale, s_out))
        self.ops.append(g.Mul(node.name, [a.name, b.name], out, multiplier=mult, shift=shift, clamp=list(g.dtype_range(dtype))))
        self.bounds[out] = (min(corners), max(corners))  # a product of spikes (0..16): its sums widen further
        return _Int(out, factor=a.factor * b.factor, index=a.index if sa.shape == sb.shape else None)

    def avg_pool(self, x: _Int, kernel, stride, padding, name: str, where: str) -> _Int:
        if _pair(padding) != [0, 0]:
            raise EdgesnnError(f"{where}: only unpadded average pooling is supported")
        out = self.pool_op(g.SumPool2D, x, kernel, stride, name, widen=kernel[0] * kernel[1])
        out.factor = x.factor / (kernel[0] * kernel[1])
        return out

    def pool_op(self, cls, x: _Int, kernel, stride, name: str, widen: int = 1) -> _Int:
        spec = self.tensors[x.name]
        if spec.zero_point != 0 and cls is g.SumPool2D:
            raise EdgesnnError(f"layer '{name}': average pooling needs a zero-point-free input")
        h, w, c = spec.shape
        shape = [(h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1, c]
        lo, hi = self.int_range(x.name)
        # a window sum gets the width its bound needs: an int16 stream's sums are int32
        dtype = next((t for t in g.DTYPES if g.dtype_range(t)[0] <= lo * widen and hi * widen <= g.dtype_range(t)[1]), None)
        if dtype is None:
            raise EdgesnnError(f"layer '{name}': its window sums ({widen} values in [{lo}, {hi}]) can leave int32")
        spike_D = None if cls is g.SumPool2D else spec.spike_D  # a window sum is a count, not a spike
        if x.amplitude is not None and cls is g.MaxPool2D and (x.amplitude <= 0).any():
            raise EdgesnnError(f"layer '{name}': max pooling of ternary spikes needs positive amplitudes")
        out = self.new_tensor(name, shape, dtype, spec.scale, spike_D=spike_D)
        self.tensors[out].signed = spec.signed if spike_D is not None else False
        self.ops.append(cls(name, [x.name], out, kernel=list(kernel), stride=list(stride)))
        if cls is g.SumPool2D:  # what its readers can see (a neuron maps each value): not the whole dtype
            self.bounds[out] = (lo * widen, hi * widen)
        return _Int(out, factor=x.factor, amplitude=x.amplitude)

    def flatten(self, x: _Int, name: str) -> _Int:
        spec = self.tensors[x.name]
        if len(spec.shape) == 1:
            return x
        h, w, c = spec.shape
        out = self.new_tensor(name, [h * w * c], spec.dtype, spec.scale, spec.zero_point, spec.spike_D)
        self.ops.append(g.Reshape(name, [x.name], out))
        if x.name in self.bounds:  # a flattened window sum keeps its bound (int_range)
            self.bounds[out] = self.bounds[x.name]
        perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()  # IR (h, w, c) -> torch (c, h, w)
        amplitude = None if x.amplitude is None else np.repeat(x.amplitude, h * w)  # torch feature order
        return _Int(out, factor=x.factor, perm=perm, amplitude=amplitude)

    # ---- helpers ----------------------------------------------------------------------------
    def new_tensor(self, name: str, shape, dtype: str, scale: float, zero_point: int = 0, spike_D=None) -> str:
        base, i = name.replace("/", "."), 1
        while name in self.tensors:
            i += 1
            name = f"{base}_{i}"
        self.tensors[name] = g.TensorSpec(list(map(int, shape)), dtype, float(np.float32(scale)), int(zero_point), spike_D)
        return name

    def int_range(self, name: str) -> tuple[int, int]:
        spec = self.tensors[name]
        if name in self.bounds:
            return self.bounds[name]
        if spec.spike_D is not None:
            return (-spec.spike_D if spec.signed else 0), spec.spike_D
        lo, hi = g.dtype_range(spec.dtype)
        return lo - spec.zero_point, hi - spec.zero_point

    def bits_for(self, layer: str) -> int:
        bits = self.weight_bits.get(layer, 8) if isinstance(self.weight_bits, dict) else self.weight_bits
        if not (1 <= int(bits) <= 8 or int(bits) == export_planes.PLANES_BITS):
            raise EdgesnnError(f"weight bits must be between 1 and 8, or {export_planes.PLANES_BITS} "
                               f"(two int8 planes), got {bits}")
        return int(bits)


def _fold_bn(v: _Linear, bn: nn.modules.batchnorm._BatchNorm, node) -> _Linear:
    """W' = W * gamma / sqrt(var + eps); b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(std)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(std)
    k = gamma / std
    w = v.weight * k.view(-1, *([1] * (v.weight.dim() - 1)))
    b = ((v.bias if v.bias is not None else torch.zeros_like(std)) - bn.running_mean.double()) * k + beta
    qw = None if v.qweight is None else _QuantWeight(v.qweight.q, v.qweight.scale * k, v.qweight.bits, v.qweight.code)
    return _Linear(v.kind, v.src, node, w, b, v.scale, v.attrs, qw)


def _scaled(v, c: float, node: fx.Node):
    """A value times a constant: a factor on an integer tensor, folded into a pending linear op."""
    if isinstance(v, _Int):
        return replace(v, factor=v.factor * c)
    if v.kind in ("reduce_sum", "batch_matmul"):
        return _Linear(v.kind, v.src, node, scale=v.scale * c, attrs=v.attrs)
    qw = None if v.qweight is None else _QuantWeight(v.qweight.q, v.qweight.scale * c, v.qweight.bits, v.qweight.code)
    return _Linear(v.kind, v.src, node, v.weight * c, None if v.bias is None else v.bias * c, v.scale, v.attrs, qw)


def _quantized_weight(m: nn.Module) -> _QuantWeight | None:
    from edgesnn.quantize.quantizers import weight_quant  # Brevitas only when a model uses it

    tq = weight_quant(m) if hasattr(m, "weight_quant") else None
    if tq is None:
        return None
    q, scale = tq.integers(m.weight)
    return _QuantWeight(q, scale.double(), tq.bits, tq.code)


def _absorb_amplitude(w: torch.Tensor, qw: _QuantWeight | None, x: _Int, where: str, groups: int = 1):
    """Fold ternary amplitudes a_c into the input columns: W[:, c] *= a_c (float weights only)."""
    if x.amplitude is None:
        return w, qw
    if qw is not None and np.all(x.amplitude == 1):
        return w, qw  # already folded into the trained weights (quantize --method ternary does)
    if qw is not None:
        raise EdgesnnError(f"{where}: ternary spike amplitudes cannot fold into weights already trained on an integer grid")
    a = torch.as_tensor(x.amplitude, dtype=torch.float64)
    if w.shape[1] * groups != a.numel():
        raise EdgesnnError(f"{where}: {a.numel()} spike amplitudes for {w.shape[1] * groups} input channels")
    return w * column_factors(a, w.shape, groups), None


def column_factors(a: torch.Tensor, shape, groups: int = 1) -> torch.Tensor:
    """The factor of each weight when input channel c is scaled by a_c, broadcastable to a weight
    of ``shape`` (out, in / groups, ...): output channel o of group g reads channels g * in / groups
    + j through column j, so a per-channel factor folds exactly into any grouped convolution."""
    out, cols = int(shape[0]), int(shape[1])
    if groups == 1:
        return a.view(1, -1, *([1] * (len(shape) - 2)))
    group = torch.arange(out) // (out // groups)
    return a[group[:, None] * cols + torch.arange(cols)[None, :]].view(out, cols, *([1] * (len(shape) - 2)))


def _trained_grid(qw: _QuantWeight, factor: float):
    """The trained integers, with BN, 1/D and constant factors folded into the per-channel scale."""
    scale = qw.scale * factor
    sign = torch.where(scale < 0, -1, 1).to(torch.int64)
    q = qw.q * sign.view(-1, *([1] * (qw.q.dim() - 1)))  # both codes are symmetric: -q is on the grid
    w_scale = scale.abs().numpy().astype(np.float32)
    return q.double(), np.where(w_scale > 0, w_scale, np.float32(1.0)).astype(np.float32), qw.bits, qw.code


def _post_training_grid(w: torch.Tensor, bits: int, code: str):
    """Per-channel symmetric levels for a float layer: max |w| at the top level (mean |w| for 1 bit)."""
    flat = w.reshape(w.shape[0], -1)
    _, qmax = weight_range(bits, code)
    absmax = flat.abs().amax(dim=1).numpy()
    if bits == 1:
        w_scale = (flat.abs().mean(dim=1).numpy()).astype(np.float32)
    else:
        w_scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    w_scale = np.where(w_scale > 0, w_scale, np.float32(1.0)).astype(np.float32)
    wq = torch.round(w / torch.as_tensor(w_scale, dtype=torch.float64).view(-1, *([1] * (w.dim() - 1))))
    wq = torch.sign(w).clamp(min=0) * 2 - 1 if bits == 1 else wq.clamp(-qmax, qmax)
    return wq, w_scale


def _is_neuron(clamp: list[int], s_out: float) -> bool:
    """A neuron's requantization: integer spikes (scale 1) clamped to [0, D], or ternary ones to [-1, 1]."""
    return s_out == 1.0 and clamp[0] in (0, -clamp[1])


def _torch_first(levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The smallest integer n whose round-half-away-from-zero reaches each level j, given
    x = (j - 0.5) / coef in units of n: n >= x for j >= 1 (a tie rounds up to j), n > x for
    j <= 0 (a tie rounds down, away from zero, to j - 1: a ternary spike's -1 at u = -0.5)."""
    return np.where(levels >= 1, np.ceil(x), np.floor(x) + 1)


def _first_reaching(level, mult: int, shift: int, requantize=multiply_by_quantized_multiplier):
    """The smallest accumulator the (monotone) requantization ``mult, shift`` maps to >= ``level``
    (an int, or an array of levels at once).

    Double rounding moves it a few accumulator steps from the real-valued guess (the 16x8
    kernels' 16-bit multiplier by more, on large levels); a bisection around the guess finds it."""
    levels = np.atleast_1d(np.asarray(level, dtype=np.int64))
    guess = np.ceil((levels - 0.5) / (float(mult) * 2.0 ** (int(shift) - 31))).astype(np.int64)
    width = np.maximum(np.abs(guess) >> 8, 16)  # the 16-bit multiplier errs by < 2^-15 of the accumulator
    lo, hi = guess - width, guess + width
    if (requantize(lo, mult, shift) >= levels).any() or (requantize(hi, mult, shift) < levels).any():
        raise EdgesnnError(f"requantization ({mult}, {shift}) does not reach {int(levels[0])} near its real threshold")
    while (hi - lo > 1).any():  # invariant: lo does not reach the level, hi does
        mid = (lo + hi) // 2
        reached = requantize(mid, mult, shift) >= levels
        hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid)
    return int(hi[0]) if np.ndim(level) == 0 else hi


def _neuron_bias(bias_q: np.ndarray, bias: np.ndarray, coef: np.ndarray, lattice: int, mult, shift, levels,
                 requantize=multiply_by_quantized_multiplier) -> np.ndarray:
    """Per channel, the int32 bias nearest ``bias_q`` whose output reaches each of ``levels`` at exactly torch's accumulators.

    Torch's output is round(coef * acc + bias) with acc a multiple of ``lattice`` (spikes widened
    by 2^k times weights widened by 2^w): a neuron's count (levels 1..D), or a Q-SNN membrane
    integer (levels -qmax+1..qmax). TFLite's requantization rounds twice, so its threshold for a
    level sits up to one accumulator step below torch's; with 1-bit weights a channel's few
    pre-activations then land on a wrong side systematically (e.g. u = 2.49975 fires 3 in the IR,
    2 in torch, for every token). The accumulator grid is ``lattice`` times finer than the values
    acc takes, so a bias a few steps off the rounded one puts every threshold between the same
    two lattice points as torch's; when none does, the rounded one stays.
    """
    out = bias_q.copy()
    levels = np.asarray(list(levels), dtype=np.int64)
    for c in np.nonzero((coef > 0) & (np.asarray(mult) > 0))[0]:
        torch_first = lattice * _torch_first(levels, (levels - 0.5 - bias[c]) / (coef[c] * lattice))
        offset = _first_reaching(levels, int(mult[c]), int(shift[c]), requantize) - torch_first
        lo, hi = offset.max(), (offset + lattice - 1).min()
        if lo <= hi:
            out[c] = np.clip(out[c], lo, hi)
    return out


def _neuron_sum_scale(scale: np.float32, coef: float, s_in: np.float32, clamp: list[int],
                      requantize=multiply_by_quantized_multiplier) -> np.float32:
    """The float32 sum scale nearest ``scale`` whose neuron fires at exactly torch's counts (each
    level j of ``clamp``'s range first reached where torch's rounding of coef * n reaches it).

    A power-of-two multiplier (binary attention: 1/16 * 0.125) makes torch's threshold an exact
    tie, and double rounding fires one count early (63 / 128 -> 1; a ternary 3 * 0.125 -> 1); a
    scale a few float32 steps away moves the multiplier into the binade below, where it rounds once."""
    levels = np.arange(clamp[0] + 1, clamp[1] + 1)
    torch_first = _torch_first(levels, (levels - 0.5) / coef).astype(np.int64)
    for step in range(64):
        for candidate in (np.float32(scale - step * np.spacing(scale)), np.float32(scale + step * np.spacing(scale))):
            mult, shift = quantize_multipliers(effective_multiplier(s_in, candidate, 1.0))
            if np.array_equal(_first_reaching(levels, int(mult[0]), int(shift[0]), requantize), torch_first):
                return candidate
    return scale


def _exact_scale(scale: np.float32, z: np.ndarray, wanted: np.ndarray, s_out: np.float32, clamp) -> np.float32:
    """The float32 input scale nearest ``scale`` whose requantization of the integers ``z`` gives ``wanted``."""
    for step in range(256):
        for candidate in {np.float32(scale - step * np.spacing(scale)), np.float32(scale + step * np.spacing(scale))}:
            mult, shift = quantize_multipliers(effective_multiplier(candidate, 1.0, s_out))
            if np.array_equal(np.clip(multiply_by_quantized_multiplier(z, mult[0], shift[0]), *clamp), wanted):
                return candidate
    return scale


def _neuron_input_scale(scale: np.float32, D: int) -> np.float32:
    """The first float32 scale from ``scale`` up (< 2x) at which a neuron reading the tensor rounds once.

    The neuron requantizes q at the real multiplier ``scale``; TFLite rounds q * scale first at the
    multiplier's binary resolution, which for a fine int16 stream is about one q step, so the q
    just below each threshold j + 0.5 often fires (0.49979 -> 1). Whether it does depends only on
    where the thresholds fall between grid points and where the multiplier sits in its binade,
    so a slightly coarser scale makes every threshold exact: IR and torch then agree whenever the
    stream value itself is on the same side."""
    levels = np.arange(1, D + 1)
    for candidate in (scale * (1 + np.arange(4096) / 4096)).astype(np.float32):
        mult, shift = quantize_multipliers(effective_multiplier(candidate, 1.0, 1.0))
        exact = np.ceil((levels - 0.5) / np.float64(candidate)).astype(np.int64)
        if np.array_equal(_first_reaching(levels, int(mult[0]), int(shift[0])), exact):
            return candidate
    return scale


def _plain(x: _Int, where: str) -> _Int:
    if x.amplitude is not None:
        raise EdgesnnError(f"{where}: ternary spike amplitudes must fold into a following Conv2d or Linear")
    return x


def _bias(m: nn.Module) -> torch.Tensor | None:
    return None if m.bias is None else m.bias.detach().double()


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]
