"""Models written the way snnTorch's and SpikingJelly's tutorials write them, at one timestep, with
each library's own training loop. docs/bring-your-model.md shows this file verbatim (a test
checks it) and runs its commands on these models (tests/test_bring_library_models.py).

snnTorch: conv -> F.max_pool2d -> Leaky(init_hidden=True), an output Leaky(output=True) whose
membrane is the logits (cross-entropy on it, as snnTorch's tutorial 5 does at each step).
SpikingJelly: its own layers, Conv2d -> BatchNorm2d -> MaxPool2d -> IFNode (pool before the
neuron), or the neuron before the pool as its CSNN tutorial does; a Linear head gives the logits.
"""

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate as snn_surrogate
from snntorch import utils as snn_utils
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


class SnnTorchNet(nn.Module):
    """snnTorch's convolutional tutorial net, sized for 8x8 digits."""

    def __init__(self, in_shape=(1, 8, 8), num_classes=10, beta=0.5):
        super().__init__()
        c, h, w = in_shape
        grad = snn_surrogate.fast_sigmoid(slope=25)
        self.conv1 = nn.Conv2d(c, 12, 3, padding=1)
        self.lif1 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True)
        self.conv2 = nn.Conv2d(12, 32, 3, padding=1)
        self.lif2 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True)
        self.fc = nn.Linear(32 * (h // 4) * (w // 4), num_classes)
        self.lif3 = snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True)

    def forward(self, x):
        x = self.lif1(F.max_pool2d(self.conv1(x), 2))
        x = self.lif2(F.max_pool2d(self.conv2(x), 2))
        return self.lif3(self.fc(torch.flatten(x, 1)))  # (spikes, membrane)


def snntorch_net(in_shape, num_classes):
    return SnnTorchNet(in_shape, num_classes)


def spikingjelly_net(in_shape, num_classes, channels=16, pool_first=True, pool="max"):
    """SpikingJelly's CSNN, single-step; pool_first puts each pool (max or avg) before its IFNode."""
    c, h, w = in_shape
    pooling = {"max": layer.MaxPool2d, "avg": layer.AvgPool2d}[pool]

    def block(c_in):
        conv = [layer.Conv2d(c_in, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels)]
        spike = neuron.IFNode(surrogate_function=surrogate.ATan())
        return conv + ([pooling(2, 2), spike] if pool_first else [spike, pooling(2, 2)])

    return nn.Sequential(*block(c), *block(channels), layer.Flatten(),
                         layer.Linear(channels * (h // 4) * (w // 4), num_classes))


def spikingjelly_neuron_first(in_shape, num_classes):
    return spikingjelly_net(in_shape, num_classes, pool_first=False)


def train(net, x, y, epochs, reset, logits, lr=1e-2, batch=64):
    """Adam on cross-entropy, each batch from rest (``reset`` is the library's call), the library's
    surrogate gradients; ``logits(output)`` picks the class scores. Returns the test-mode model."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(batch):
            reset(net)
            loss = F.cross_entropy(logits(net(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    reset(net)
    return net.eval()


def accuracy(net, x, y, reset, logits):
    reset(net)
    with torch.no_grad():
        return float((logits(net(x)).argmax(1) == y).float().mean())


SNNTORCH = dict(reset=snn_utils.reset, logits=lambda out: out[1])  # Leaky(output=True): (spk, mem)
SPIKINGJELLY = dict(reset=functional.reset_net, logits=lambda out: out)
