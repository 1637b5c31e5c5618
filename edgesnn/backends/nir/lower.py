"""IR -> NIR: the real-valued spiking network other tools simulate, plus the exact program for edgesnn.

Time convention (docs/nir.md): a sample runs for a window of T = max D steps with the image
presented at every step. Every tensor except the input is read as its sum over the window, which
is the IR's real value: an SFA neuron's count s is s unit spikes, a synapse's output summed over
the window is W·(summed input) + T·b. So

- a synapse (Affine / Conv2d) has the IR's real weights W = integer x channel scale; one reading
  the image (the same value every step) has W / T; its bias is (b + offset) / T, with offset
  0.5 before a neuron (SFA rounds: s = floor(u + 0.5)) and 0 otherwise;
- an SFA neuron is an IF node, r = 1, threshold 1: integrating u + 0.5 over the window it fires
  floor(u + 0.5) times with reset by subtraction (in NIR's continuous time, reset to 0 at the
  threshold is the same thing) and at most once a step, so at most T times;
- sum pooling, flatten: SumPool2d, Flatten (torch's C, H, W order; dense columns permuted).

What NIR cannot say stays in the metadata: integer weights and bit widths, int32 biases, the
fixed-point requantization, clamps of neurons with D < T and of streams, the input quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesnn.backends.nir.program import encode, real_weight, to_torch_layout
from edgesnn.errors import EdgesnnError
from edgesnn.ir import graph as g

CHAIN_OPS = ("conv2d", "dense", "requantize", "sum_pool2d", "reshape")
SUPPORTED = ("a chain of conv2d, dense, sum_pool2d, reshape (flatten) and requantize ops with unsigned spikes "
             "(the mlp and cnn families, compressed or not)")
NO_NIR_NODE = {  # IR ops NIR 1.0 has no node for, wherever they are in the graph
    "transpose": "NIR has no node that permutes a tensor's axes (its Flatten only merges them, in place)",
    "batch_matmul": "NIR has no node for the product of two activation tensors (its synapses, Affine, Linear and "
                    "Conv, hold fixed weights)",
}


@dataclass
class _Value:
    """What the current NIR edge carries: ``kind`` 'input' (the image, every step), 'stream' (a
    synapse's output, summed over the window) or 'spikes'; ``synapse``: the node a neuron on this
    stream takes its offset from; ``hwc``: the IR shape a flat value was flattened from."""

    node: str
    kind: str
    synapse: str | None = None
    hwc: list[int] | None = None


def lower(graph: g.Graph):
    """(nir.NIRGraph, program) for an IR graph; refuses, naming the op, what NIR cannot express."""
    import nir

    _check_chain(graph)
    T = max((t.spike_D for t in graph.tensors.values() if t.spike_D), default=1)
    spec_in = graph.tensors[graph.input]
    nodes = {"input": nir.Input(input_type=np.array(_torch_shape(spec_in.shape)))}
    edges, weights, neurons = [], {}, {}
    names = set(nodes) | {"output"}
    v = _Value("input", "input")

    def add(name: str, node) -> str:
        base, i = name, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.add(name)
        nodes[name] = node
        edges.append((v.node, name))
        return name

    for op in graph.ops:
        spec_out = graph.tensors[op.output]
        where = f"op '{op.name}' ({op.kind})"
        if spec_out.spike_D is not None and spec_out.signed:
            raise EdgesnnError(f"{where}: signed (ternary) spikes have no NIR neuron; NIR export takes {SUPPORTED}")
        if op.kind in ("conv2d", "dense"):
            node, hwc = _synapse(nir, op, graph, v, T, fires=spec_out.spike_D is not None, where=where)
            name = add(op.name, node)
            weights[op.name] = {"node": name, "hwc": hwc}
            v = _Value(name, "stream", synapse=name)
            if spec_out.spike_D is not None:
                v = _Value(add(f"{op.output}.neuron", _neuron(nir, spec_out)), "spikes")
                neurons[v.node] = spec_out.spike_D
        elif op.kind == "requantize":
            if op.input_scale is not None:
                raise EdgesnnError(f"{where} folds a constant factor, which NIR export does not carry; "
                                   f"it takes {SUPPORTED}")
            if spec_out.spike_D is not None and v.kind != "spikes":  # a neuron on a membrane stream
                if v.synapse is None:
                    raise EdgesnnError(f"{where}: a neuron that does not read a synapse's output has no NIR form")
                nodes[v.synapse].bias = (nodes[v.synapse].bias + np.float32(0.5 / T)).astype(np.float32)
                v = _Value(add(f"{op.output}.neuron", _neuron(nir, spec_out)), "spikes")
                neurons[v.node] = spec_out.spike_D
            # otherwise the same real value on another grid (spike headroom, int16 copies, membranes)
        elif op.kind == "sum_pool2d":
            name = add(op.name, nir.SumPool2d(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                                              padding=np.array([0, 0])))
            v = _Value(name, v.kind)  # no synapse: a neuron on a pooled stream (offset x window) is refused
        elif op.kind == "reshape":
            shape_in = graph.tensors[op.inputs[0]].shape
            if len(shape_in) == 3 and len(spec_out.shape) == 1:
                name = add(op.name, nir.Flatten(input_type={"input": np.array(_torch_shape(shape_in))},
                                                start_dim=0, end_dim=-1))
                v = _Value(name, v.kind, synapse=None, hwc=list(shape_in))
            elif shape_in != spec_out.shape:  # _check_reshapes refused it already
                raise EdgesnnError(f"{where}: {_reshape_refusal(shape_in, spec_out.shape)}")
        else:
            raise EdgesnnError(f"{where} has no NIR form; NIR export takes {SUPPORTED}")
    out_shape = _torch_shape(graph.tensors[graph.outputs[0]].shape)
    nodes["output"] = nir.Output(output_type=np.array(out_shape))
    edges.append((v.node, "output"))
    program = encode(graph, weights, T, neurons)
    nir_graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)
    return nir_graph, program


def _synapse(nir, op, graph: g.Graph, v: _Value, T: int, fires: bool, where: str):
    """The NIR Conv2d / Affine of a conv2d / dense op (real weights, bias as the window convention asks)."""
    spec_in = graph.tensors[op.inputs[0]]
    hwc = v.hwc if op.kind == "dense" else None
    w = to_torch_layout(real_weight(op), op.kind, hwc)
    acc_scale = np.float64(np.float32(spec_in.scale)) * np.asarray(op.weight_scale, np.float64)
    bias = (op.bias.astype(np.float64) * acc_scale + (0.5 if fires else 0.0)) / T
    w = w / T if v.kind == "input" else w
    if op.kind == "dense":
        return nir.Affine(weight=w.astype(np.float32), bias=bias.astype(np.float32)), hwc
    t, b, l, r = op.padding
    if t != b or l != r:
        raise EdgesnnError(f"{where}: asymmetric padding {op.padding} has no NIR Conv2d form")
    h, wd, _ = spec_in.shape
    return nir.Conv2d(input_shape=(h, wd), weight=w.astype(np.float32), stride=tuple(op.stride), padding=(t, l),
                      dilation=(1, 1), groups=int(op.groups), bias=bias.astype(np.float32)), None


def _neuron(nir, spec: g.TensorSpec):
    """IF, r = 1, threshold 1, reset to 0 (= by subtraction in continuous time): fires the count s."""
    shape = _torch_shape(spec.shape)
    return nir.IF(r=np.ones(shape, np.float32), v_threshold=np.ones(shape, np.float32),
                  v_reset=np.zeros(shape, np.float32), metadata={"edgesnn_D": int(spec.spike_D), "reset": "subtract"})


def _check_chain(graph: g.Graph) -> None:
    """No op NIR has no node for, no reshape NIR cannot express (both named before the topology), then:
    each op reads the previous op's output, and the last op writes the one output."""
    for op in graph.ops:
        if op.kind in NO_NIR_NODE:
            raise EdgesnnError(f"op '{op.name}' ({op.kind}) has no NIR form: {NO_NIR_NODE[op.kind]}")
    for op in graph.ops:
        shape_in, shape_out = graph.tensors[op.inputs[0]].shape, graph.tensors[op.output].shape
        if op.kind == "reshape" and shape_in != shape_out and not (len(shape_in) == 3 and len(shape_out) == 1):
            raise EdgesnnError(f"op '{op.name}' (reshape) has no NIR form: {_reshape_refusal(shape_in, shape_out)}")
    previous = graph.input
    for op in graph.ops:
        if op.kind not in CHAIN_OPS:
            raise EdgesnnError(f"op '{op.name}' ({op.kind}) has no NIR form; NIR export takes {SUPPORTED}")
        if op.inputs != [previous]:
            raise EdgesnnError(f"op '{op.name}' ({op.kind}) reads {op.inputs}, not only the previous op's output; "
                               f"NIR export takes {SUPPORTED}")
        previous = op.output
    if graph.outputs != [previous]:
        raise EdgesnnError(f"the graph's outputs {graph.outputs} are not its last op's; NIR export takes {SUPPORTED}")


def _reshape_refusal(shape_in, shape_out) -> str:
    return (f"reshaping {tuple(shape_in)} (rank {len(shape_in)}) to {tuple(shape_out)} (rank {len(shape_out)}) is not "
            "a flatten; NIR export flattens an (H, W, C) image to a vector (NIR's Flatten, in torch's C, H, W order) "
            "and reshapes nothing else")


def _torch_shape(shape) -> list[int]:
    """IR (H, W, C) -> NIR/torch (C, H, W); flat shapes as they are."""
    return [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)
