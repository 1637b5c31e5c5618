"""What the exporter cannot read is reported before any training, all at once, by module path and
source line; layers of other libraries that compute what a torch layer computes export as it; and
the pooling rewrites (max pool after the neuron, average pool folded into its conv) compute what
the model computes."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgesnn import data, export, pool_order, train
from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike


class Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


class TwoUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), Tanh())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x)).softmax(1)


class ValueBranch(nn.Module):
    """Python control flow on a tensor's values: no trace can follow it (shapes read as numbers can)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.fc(x)


def test_every_unsupported_op_is_named_with_its_module_path_and_source_line(digits):
    with pytest.raises(EdgesnnError) as e:
        export.check(TwoUnsupported(), digits.x_train[:export.CHECK_SAMPLES])
    msg = str(e.value)
    assert "cannot read 2 operation(s)" in msg and "\n" not in msg
    assert "function tanh at body.2 (Tanh), test_check_first.py:" in msg and "return torch.tanh(x)" in msg
    assert "method .softmax at the model's forward, test_check_first.py:" in msg


def test_a_trace_failure_names_the_users_line(digits):
    with pytest.raises(EdgesnnError) as e:
        export.check(ValueBranch(), digits.x_train[:8].flatten(1)[:, :32])
    assert "cannot trace the model with torch.fx" in str(e.value)
    assert "test_check_first.py:" in str(e.value) and "if x.sum() > 0:" in str(e.value)


def test_training_refuses_before_the_first_epoch(tmp_path, monkeypatch, digits):
    from edgesnn import pipeline

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: pytest.fail("trained before checking the model"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "unsupported_net.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes):\n"
        "        super().__init__()\n"
        "        self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.sigmoid(self.fc1(x.flatten(1))))\n\n"
        "def net(in_shape, num_classes):\n"
        "    return Net(num_classes)\n")
    with pytest.raises(EdgesnnError, match=r"function sigmoid at the model's forward, unsupported_net.py:9: return self.fc2"):
        pipeline.train_model("unsupported_net:net", "digits", 50, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


def _pool_net(pool: type, channels: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), pool(2), MultiSpike(4),
                         nn.Flatten(), nn.Linear(channels * 16, 10))


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
def test_pool_rewrites_compute_what_the_model_computes(pool, digits):
    torch.manual_seed(0)
    model = _pool_net(pool)
    train.train(model, digits, 2)
    model.eval()
    gm = pool_order.rewrite(export.trace(copy.deepcopy(model)))
    kinds = [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"]
    if pool is nn.MaxPool2d:
        assert kinds == ["Conv2d", "BatchNorm2d", "MultiSpike", "MaxPool2d", "Flatten", "Linear"]
    else:
        assert kinds == ["Conv2d", "BatchNorm2d", "MultiSpike", "Flatten", "Linear"]
        assert gm.get_submodule(next(n.target for n in gm.graph.nodes if n.op == "call_module")).kernel_size == (4, 4)
    with torch.no_grad():
        want, got = model(digits.x_test), gm(digits.x_test)
    if pool is nn.MaxPool2d:  # max commutes with the neuron exactly
        assert torch.equal(want, got)
    else:  # the combined kernel sums in another order: spikes may differ only at float ties
        assert (want.argmax(1) == got.argmax(1)).float().mean() >= 0.995
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm2d", pool.__name__, "MultiSpike", "Flatten",
                                                 "Linear"]  # the user's model is left as it is


def test_spikingjelly_layers_export_as_torch_layers(digits):
    from spikingjelly.activation_based import layer  # the test extra installs it
    torch.manual_seed(0)
    model = nn.Sequential(layer.Conv2d(1, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8), MultiSpike(4),
                          layer.MaxPool2d(2), layer.Flatten(), layer.Linear(8 * 16, 10))
    train.train(model, digits, 3)
    graph = export.export(model, digits.x_train[:512])
    assert [op.kind for op in graph.ops if op.kind in ("conv2d", "max_pool2d", "dense")] == ["conv2d", "max_pool2d",
                                                                                            "dense"]
    ir = graph.run(data.to_nhwc(digits.x_test)).argmax(1)
    with torch.no_grad():
        torch_pred = model.eval()(digits.x_test).argmax(1).numpy()
    assert np.mean(ir == torch_pred) >= 0.99
    model[0].step_mode = "m"  # multi-step: T x N inputs, which one-step SFA does not deploy
    assert any("in multi-step mode" in b and b.startswith("0 (") for b in export.undeployable_layers(model))


class FunctionalPools(nn.Module):
    """snnTorch's tutorial style: pools as functions between the conv and the neuron."""

    def __init__(self):
        super().__init__()
        self.conv1, self.sn1 = nn.Conv2d(1, 8, 3, padding=1), MultiSpike(4)
        self.conv2, self.sn2 = nn.Conv2d(8, 8, 3, padding=1), MultiSpike(4)
        self.fc = nn.Linear(8 * 4, 10)

    def forward(self, x):
        x = self.sn1(torch.nn.functional.max_pool2d(self.conv1(x), 2))
        x = self.sn2(torch.nn.functional.avg_pool2d(self.conv2(x), 2))
        return self.fc(x.flatten(1))


def test_functional_pools_take_the_module_paths(digits):
    torch.manual_seed(0)
    model = FunctionalPools()
    train.train(model, digits, 3)
    model.eval()
    gm = pool_order.rewrite(export.trace(model))
    kinds = [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"]
    assert kinds == ["Conv2d", "MultiSpike", "MaxPool2d", "Conv2d", "MultiSpike", "Linear"]
    export.check(model, digits.x_train[:export.CHECK_SAMPLES])  # nothing unsupported
    with torch.no_grad():
        assert (gm(digits.x_test).argmax(1) == model(digits.x_test).argmax(1)).float().mean() >= 0.995


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x, y):
        return self.fc(x.flatten(1)) + self.fc(y.flatten(1))


def test_a_second_input_is_refused(digits):
    with pytest.raises(EdgesnnError, match="the exporter supports models with one input tensor"):
        export.export(TwoInputs(), digits.x_train[:8])
