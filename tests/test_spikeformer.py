"""SpikeFormer: shapes, integer spikes, the exporter's fx vocabulary, gradients, size, learning."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
from torch import fx, nn

from edgesnn.errors import EdgesnnError
from edgesnn.export import trace  # the exporter's view: neurons are single opaque nodes
from edgesnn.models.spikeformer import SDSA, SpikeFormer, e_spikeformer_5m_config
from edgesnn.neurons import MultiSpike

ALLOWED_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, MultiSpike, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_forward_shape_default():
    torch.manual_seed(0)
    model = SpikeFormer()
    assert model(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    assert model.channels == (16, 32) and model.depths == (1, 1) and model.cnn_stages == 1
    assert sum(isinstance(m, SDSA) for m in model.modules()) == 1


@pytest.mark.parametrize("train", [True, False])
def test_every_multispike_emits_integers_over_D(train):
    torch.manual_seed(0)
    model = SpikeFormer(D=4).train(train)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append((m.D, o))) for m in model.modules() if isinstance(m, MultiSpike)]
    model(torch.randn(4, 1, 8, 8) * 3)
    for h in hooks:
        h.remove()
    assert len(outputs) == len(hooks) > 10
    for D, out in outputs:
        s = out * D
        assert torch.equal(s, torch.round(s)), "not a multiple of 1/D"
        assert s.min() >= 0 and s.max() <= D


def test_fx_graph_uses_only_exporter_vocabulary():
    torch.manual_seed(0)
    model = SpikeFormer()
    gm = trace(model)
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    gm.eval()
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)

    modules = dict(gm.named_modules())
    seen = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            assert isinstance(mod, ALLOWED_MODULES), f"{node.target}: {type(mod).__name__}"
            if isinstance(mod, nn.AdaptiveAvgPool2d):
                assert mod.output_size in (1, (1, 1))
        elif node.op == "call_function":
            seen.add(node.target)
            if node.target is operator.add:
                assert all(isinstance(a, fx.Node) for a in node.args) and not node.kwargs
            elif node.target is operator.mul:
                a, b = node.args
                assert isinstance(a, fx.Node) and (isinstance(b, fx.Node) or type(b) is float), node.args
            elif node.target is torch.flatten:
                assert node.args[1:] == (1,) and not node.kwargs
            else:
                pytest.fail(f"call_function {node.target} is outside the exporter's vocabulary")
        elif node.op == "call_method":
            seen.add(node.target)
            assert node.target == "sum", node.target
            assert node.args[1:] == () and node.kwargs == {"dim": (2, 3), "keepdim": True}
        else:
            assert node.op in ("placeholder", "output"), node.op
    assert seen == {operator.add, operator.mul, torch.flatten, "sum"}
    # The plain tracer (which inlines MultiSpike) must not fail either.
    fx.symbolic_trace(model)


def test_gradients_reach_the_stem():
    torch.manual_seed(0)
    model = SpikeFormer()
    loss = nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.arange(8))
    loss.backward()
    grad = model.stem[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_e_spikeformer_5m_config_size_and_small_forward():
    config = e_spikeformer_5m_config()
    model = SpikeFormer(**config)
    assert 4_500_000 <= n_params(model) <= 5_500_000
    assert model.token_grids[-1] == 7  # 224 / 32: Meta-SpikeFormer's last stage works on 7x7 tokens
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    trace(model)


def test_bad_configurations_raise_one_error_type():
    with pytest.raises(EdgesnnError):
        SpikeFormer(channels=(16,))
    with pytest.raises(EdgesnnError):
        SpikeFormer(image_size=7)
    with pytest.raises(EdgesnnError):
        SpikeFormer(channels=(8, 16, 32), depths=(1, 1))


def test_training_lowers_loss_on_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = np.random.default_rng(0).choice(len(digits.target), 256, replace=False)
    x = torch.tensor(digits.data[idx] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[idx], dtype=torch.long)

    torch.manual_seed(0)
    model = SpikeFormer()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(x), y).item()
    assert final < losses[0]
    assert min(losses[-5:]) < 0.9 * losses[0]
