"""Residual streams and outputs trained on the IR's integer grid (quantize --stream-dtype, issue 18)."""

import numpy as np
import pytest
import torch
from torch import nn

from edgesnn import export, models
from edgesnn.data import to_nhwc
from edgesnn.errors import EdgesnnError
from edgesnn.ir import interpreter
from edgesnn.neurons import MultiSpike, StreamQuant
from edgesnn.quantize import streams


def test_stream_quant_scale_is_the_power_of_two_covering_the_stream():
    q = StreamQuant(8).train()
    q(torch.tensor([-3.0, 1.0]))
    assert float(q.scale) == 2.0**-5  # 3 / 127 = 0.0236 -> 1/32
    q16 = StreamQuant(16).train()
    q16(torch.tensor([3.0]))
    assert float(q16.scale) == 2.0**-13


def test_stream_quant_rounds_half_away_from_zero_and_clamps():
    """TFLite's ADD ends in a rounding divide that rounds ties away from zero; so does the stream."""
    q = StreamQuant(8)
    q.scale.fill_(0.5)
    x = torch.tensor([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 100.0, -100.0], requires_grad=True)
    y = q.eval()(x)
    assert y.tolist() == [-1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 63.5, -64.0]
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]  # straight through inside the clamp only


def test_stream_quant_without_a_scale_refuses():
    with pytest.raises(EdgesnnError, match="stream quantizer has no scale"):
        StreamQuant(8).eval()(torch.ones(2))


def _quantizer_inputs(gm: nn.Module) -> list[str]:
    return [n.args[0].name for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), StreamQuant)]


def test_insert_quantizes_adds_their_off_grid_operands_and_the_output():
    model = models.build("resnet", models.default_kwargs("resnet", [1, 8, 8], 10, 4))
    names = set(model.state_dict())
    gm = streams.insert(model, 8)
    inputs = _quantizer_inputs(gm)
    adds = [n.name for n in gm.graph.nodes if streams.is_add(n)]
    assert adds and all(a in inputs for a in adds)  # every residual sum
    assert inputs[-1] == "classifier"  # the logits
    # a branch's BatchNorm result is off the grid; the stream it adds to after the first block is not
    assert not any(name.startswith("add") and inputs.count(name) > 1 for name in inputs)
    assert names <= set(gm.state_dict())  # every weight keeps its name
    assert {k for k in gm.state_dict() if k.startswith("streams.")} == {
        f"streams.{i}.{b}" for i in range(len(inputs)) for b in ("absmax", "scale")}


def test_spikes_and_halved_streams_are_on_the_grid():
    """Spikes (k / D) and a stream times 0.5 reach an add exactly: no quantizer before them."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.sn = MultiSpike(4)

        def forward(self, x):
            u = self.fc(x)
            return self.sn(u) + (u + u) * 0.5

    inputs = _quantizer_inputs(streams.insert(Net(), 8))
    assert inputs.count("fc") == 1 and "sn" not in inputs and "mul" not in inputs


def _trained_streams(bits: int) -> nn.Module:
    torch.manual_seed(0)
    model = models.build("resnet", models.default_kwargs("resnet", [1, 8, 8], 10, 4))
    gm = streams.insert(model, bits).train()
    with torch.no_grad():
        gm(torch.rand(64, 1, 8, 8))  # one training batch sets every stream's scale
    return gm.eval()


def test_export_uses_the_trained_streams_and_reproduces_their_integers():
    gm = _trained_streams(8)
    x = torch.rand(32, 1, 8, 8)
    graph = export.export(gm, x, stream_dtype="int8")
    scales = {float(q.scale) for q in gm.streams}
    adds = [op for op in graph.ops if type(op).__name__ == "Add"]
    assert adds and all(graph.tensors[op.output].scale in scales for op in adds)
    spec = graph.tensors[graph.input]
    xq = np.clip(np.round(to_nhwc(x) / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
    out = interpreter.execute(graph, xq)[graph.outputs[0]]
    with torch.no_grad():
        logits = gm(x).numpy()
    assert graph.tensors[graph.outputs[0]].scale == float(gm.streams[-1].scale)
    np.testing.assert_array_equal(out.astype(np.float64) * graph.tensors[graph.outputs[0]].scale, logits)


def test_export_refuses_a_stream_dtype_the_model_was_not_trained_with():
    gm = _trained_streams(8)
    with pytest.raises(EdgesnnError, match="residual streams were trained as int8.*--stream-dtype int8, not int16"):
        export.export(gm, torch.rand(4, 1, 8, 8), stream_dtype="int16")
