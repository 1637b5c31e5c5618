"""Small models written the way each library's users write them (project-written, in the library's
style), for the neuron-map tests (tests/test_neuron_map.py): snnTorch with init_hidden=True and an
output Leaky(output=True) returning (spk, mem); SpikingJelly in single-step mode with its own
layers; an SDT-V3-style MultiSpike(min_value, max_value, Norm)."""

import snntorch as snn
import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn


class Block(nn.Module):
    """conv -> Leaky, the Leaky at ``sn`` (snnTorch's hidden neurons return spikes only)."""

    def __init__(self, c_in: int, c_out: int, threshold: float):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.sn = snn.Leaky(beta=0.9, threshold=threshold, spike_grad=snn.surrogate.atan(), init_hidden=True)

    def forward(self, x):
        return self.sn(self.conv(x))


class Head(nn.Module):
    """The output layer: Linear -> Leaky(output=True), which returns (spk, mem)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(features, num_classes)
        self.lif = snn.Leaky(beta=0.9, init_hidden=True, output=True)

    def forward(self, x):
        return self.lif(self.fc(x))


class SnnTorchNet(nn.Module):
    """Named submodules (blocks.0.sn, head.lif): the layers a path key names."""

    def __init__(self, in_shape, num_classes: int, width: int = 6):
        super().__init__()
        c, h, w = in_shape
        self.blocks = nn.ModuleList([Block(c, width, 0.5), Block(width, width, 1.0)])
        self.pool = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.head = Head(width * (h // 2) * (w // 2), num_classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.flat(self.pool(x)))


def snntorch_net(in_shape, num_classes: int, width: int = 6) -> nn.Module:
    return SnnTorchNet(in_shape, num_classes, width)


def snntorch_sequential(in_shape, num_classes: int) -> nn.Module:
    """snnTorch's tutorial form: an nn.Sequential whose last Leaky has output=True."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, 32), snn.Leaky(beta=0.5, threshold=0.25, init_hidden=True),
        nn.Linear(32, num_classes), snn.Leaky(beta=0.5, init_hidden=True, output=True),
    )


def spikingjelly_net(in_shape, num_classes: int, width: int = 6) -> nn.Module:
    """SpikingJelly's single-step conv net: its own layers, IF and LIF neurons, a LIF output layer
    (classified by its firing, or read out as logits)."""
    c, h, w = in_shape
    return nn.Sequential(
        layer.Conv2d(c, width, 3, padding=1, bias=False), layer.BatchNorm2d(width),
        neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Conv2d(width, width, 3, padding=1, bias=False), layer.BatchNorm2d(width),
        neuron.LIFNode(tau=2.0, v_threshold=0.5, surrogate_function=surrogate.ATan()),
        layer.AvgPool2d(2), layer.Flatten(),
        layer.Linear(width * (h // 2) * (w // 2), 32), neuron.LIFNode(tau=4.0, v_reset=None),
        layer.Linear(32, num_classes), neuron.LIFNode(tau=2.0),
    )


def spikingjelly_mlp(in_shape, num_classes: int, step_mode: str = "s") -> nn.Module:
    c, h, w = in_shape
    return nn.Sequential(
        layer.Flatten(step_mode=step_mode), layer.Linear(c * h * w, 32, step_mode=step_mode),
        neuron.IFNode(v_threshold=0.5, step_mode=step_mode),
        layer.Linear(32, num_classes, step_mode=step_mode), neuron.LIFNode(tau=2.0, step_mode=step_mode),
    )


class Quant(torch.autograd.Function):
    """SDT-V3's quantizer: round(clamp(x, min, max)), straight-through inside."""

    @staticmethod
    def forward(ctx, x, min_value, max_value):
        ctx.save_for_backward(x)
        ctx.min, ctx.max = min_value, max_value
        return torch.round(torch.clamp(x, min=min_value, max=max_value))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.min) & (x <= ctx.max)).to(grad.dtype), None, None


class MultiSpike(nn.Module):
    """SDT-V3's multi-level spike: round(clamp(x, min_value, max_value)) / Norm, Norm = max_value if None."""

    def __init__(self, min_value=0, max_value=4, Norm=None):
        super().__init__()
        self.Norm = max_value if Norm is None else Norm
        self.min_value, self.max_value = min_value, max_value

    def forward(self, x):
        return Quant.apply(x, self.min_value, self.max_value) / self.Norm


def sdt_net(in_shape, num_classes: int, norm=1, width: int = 6) -> nn.Module:
    """Conv-BN-MultiSpike twice, the second with SDT-V3's MultiSpike(Norm=...) of its last stage."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), MultiSpike(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), MultiSpike(max_value=2, Norm=norm),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(width * (h // 2) * (w // 2), num_classes),
    )


def reset(net: nn.Module) -> None:
    """Every neuron back to rest, with each library's own call (snntorch.utils.reset looks at the
    top-level modules only, so each Leaky resets itself)."""
    from spikingjelly.activation_based import functional

    for m in net.modules():
        if isinstance(m, snn.Leaky):
            m.reset_mem()
    functional.reset_net(net)


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, epochs: int = 2, lr: float = 1e-2) -> nn.Module:
    """Train the way a library's user does for static images at one timestep: each batch from rest,
    the library's surrogate gradients, Adam; ``loss(output, y)``. Returns the model in eval mode, at rest."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=order).split(64):
            reset(net)
            value = loss(net(x[idx]), y[idx])
            opt.zero_grad()
            value.backward()
            opt.step()
    reset(net)
    return net.eval()
