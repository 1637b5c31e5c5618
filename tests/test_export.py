"""SFA export: the golden interpreter against the torch model it came from."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgesnn import export, models, train
from edgesnn.data import to_nhwc
from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) * 2)


def _spike_layers(model, x):
    """Integer spikes of every MultiSpike, NHWC, from a torch forward pass."""
    out = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, torch.round(o * m.D if m.normalize else o)))
             for n, m in model.named_modules() if isinstance(m, MultiSpike)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, {n: to_nhwc(v).astype(np.int64) for n, v in out.items()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["mlp", "cnn"]),
    width=st.integers(4, 24),
    D=st.integers(1, 8),
    pool=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_interpreter_matches_torch_on_random_models(kind, width, D, pool, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "mlp":
        model = models.SpikingMLP((1, 6, 6), 5, hidden=(width, width), D=D)
    else:
        model = models.SpikingCNN((1, 6, 6), 5, channels=(width, width), pool=(pool, False), hidden=width, D=D)
    _randomize_bn(model, gen)
    model.eval()
    x = torch.randint(0, 17, (96, 1, 6, 6), generator=gen).float() / 16  # on an 8-bit grid: lossless input
    graph = export.export(model, x)
    _, torch_spikes = _spike_layers(model, x)
    values = graph.run_integer(graph.quantize_input(to_nhwc(x)), keep_all=True)
    # The first spiking layer sees exact inputs: 8-bit weights can move u across a rounding
    # boundary by one step only, and rarely. Deeper layers inherit their inputs' flips, so they
    # agree a little less; a wrong fold, layout or scale would break agreement wholesale.
    for i, (name, s) in enumerate(torch_spikes.items()):
        diff = np.abs(values[name].astype(np.int64) - s)
        agree = (diff == 0).mean()
        if i == 0:
            assert diff.max() <= 1 and agree >= 0.99, (name, agree)
        else:
            assert agree >= 0.85, (name, agree)
    # The classifier, given the IR's own last spikes: 8-bit weights and the output rounding only
    # (a flip upstream moves torch's logits, not this arithmetic).
    last = values[list(torch_spikes)[-1]].reshape(len(x), -1)
    with torch.no_grad():
        want = model.classifier(torch.as_tensor(last, dtype=torch.float32) / D).numpy()
    out = graph.dequantize(graph.outputs[0], values[graph.outputs[0]])
    scale = graph.tensors[graph.outputs[0]].scale
    assert np.median(np.abs(out - want)) <= 4 * scale + 1e-6


def test_bn_folding_and_weight_quantization_are_exact_when_representable():
    """Weights on the int8 grid, identity BN, power-of-two scales: the conv accumulator is exact."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
    w = torch.randint(-127, 128, conv.weight.shape).float()
    w[:, 0, 0, 0] = 127  # per-channel max -> scale exactly 1/64
    conv.weight.data = w / 64
    bn = nn.BatchNorm2d(3, eps=0.0)
    model = nn.Sequential(conv, bn, nn.Flatten()).eval()
    x = torch.randint(0, 17, (32, 1, 5, 5)).float() / 16
    graph = export.export(model, x)
    op = graph.ops[0]
    np.testing.assert_array_equal(op.weight[..., 0], w[:, 0].numpy().astype(np.int8))
    np.testing.assert_array_equal(op.weight_scale, np.float32(1 / 64))


def test_exported_digits_cnn_agrees_with_torch(digits, small_cnn_graph):
    model, graph = small_cnn_graph
    pred = graph.run(to_nhwc(digits.x_test)).argmax(1)
    torch_pred = train.predict(model, digits.x_test).numpy()
    assert (pred == torch_pred).mean() >= 0.99


# Post-training export of deep residual/attention stacks flips more spikes than the plain CNN
# (each flip feeds the next layer); quantization-aware fine-tuning is what closes that gap.
@pytest.mark.parametrize("name,min_agreement", [("resnet", 0.97), ("spikeformer", 0.9)])
def test_residual_and_attention_models_export(digits, name, min_agreement):
    """Membrane shortcuts (add), spike masking (mul) and column sums (reduce_sum) all run in the IR."""
    torch.manual_seed(0)
    model = models.build(name, models.default_kwargs(name, digits.in_shape, 10, 4))
    metrics = train.train(model, digits, 15)
    graph = export.export(model, digits.x_train[:512], stream_dtype="int16")
    kinds = {op.kind for op in graph.ops}
    assert {"add", "conv2d", "dense"} <= kinds
    if name == "spikeformer":
        assert {"mul", "reduce_sum"} <= kinds
    pred = graph.run(to_nhwc(digits.x_test)).argmax(1)
    torch_pred = train.predict(model, digits.x_test).numpy()
    assert (pred == torch_pred).mean() >= min_agreement
    assert (pred == digits.y_test.numpy()).mean() >= metrics["test_accuracy"] - 0.05


def test_unknown_layer_is_named_with_what_is_supported():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    with pytest.raises(EdgesnnError) as e:
        export.export(model, torch.rand(8, 4))
    msg = str(e.value)
    assert "layer '1' (Sigmoid) is not supported" in msg and "Conv2d, Linear" in msg and "\n" not in msg


def test_multistep_neuron_is_rejected_with_its_name():
    from edgesnn.neurons import LIF

    model = nn.Sequential(nn.Linear(4, 4), LIF())
    with pytest.raises(EdgesnnError, match=r"layer '1' \(LIF\)"):
        export.export(model, torch.rand(8, 4))


def test_a_factor_left_at_the_output_goes_into_its_scale(digits):
    """A constant after the last pool (a mapped readout's 1/tau) has no layer to fold into: the
    output tensor's scale carries it, so the IR's real logits are torch's, not a multiple of them."""

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.sn, self.pool = torch.nn.Conv2d(1, 4, 3, padding=1), MultiSpike(4), torch.nn.AvgPool2d(8)

        def forward(self, x):
            return (self.pool(self.sn(self.conv(x))) * 0.5).flatten(1)

    torch.manual_seed(0)
    model = Head().eval()
    graph = export.export(model, digits.x_train[:256])
    spec = graph.tensors[graph.outputs[0]]
    ir = graph.run(to_nhwc(digits.x_test)).astype(np.float64) * spec.scale
    with torch.no_grad():
        want = model(digits.x_test).numpy()
    assert np.abs(ir - want).max() <= spec.scale + 1e-6 < np.abs(want).max() / 2  # not off by the factor 0.5
