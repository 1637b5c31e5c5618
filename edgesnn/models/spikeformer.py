"""Spike-driven transformer (Meta-SpikeFormer / E-SpikeFormer style) for one-timestep SFA training.

The residual stream carries membrane potentials (real values): every residual branch starts with
a ``MultiSpike`` neuron and ends with a BatchNorm, so all weighted layers see integer spikes
(s / D) and every add is membrane + membrane ("membrane shortcut", Spike-driven Transformer V2).
Input is a plain (B, C, H, W) tensor: one timestep, no time axis.

The forward code uses only the vocabulary the fx-based SFA exporter understands: Conv2d,
BatchNorm2d, Linear, MultiSpike (a leaf module), AdaptiveAvgPool2d(1), tensor + tensor,
tensor * tensor, tensor * python float, ``Tensor.sum(dim=(2, 3), keepdim=True)`` and
``torch.flatten(x, 1)``. No reshapes, no softmax, no control flow on tensor values.

Two BESTformer options (both off by default): ``binary_attention`` (1-bit attention map, see
:class:`SDSA`) and ``reversible`` (BESTformer's reversible block and two averaged heads, see
:class:`SpikeFormer`). Both stay inside the vocabulary above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgesnn.errors import EdgesnnError
from edgesnn.neurons import MultiSpike

__all__ = [
    "ConvBN",
    "Residual",
    "SpikeSepConv",
    "ChannelMLP",
    "SDSA",
    "Downsample",
    "SpikeFormer",
    "second_head_names",
    "e_spikeformer_5m_config",
]


class ConvBN(nn.Sequential):
    """Bias-free conv + BN: the BN carries the bias, and the exporter folds the pair into one conv."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Residual(nn.Module):
    """Membrane shortcut: the branch adds to the membrane stream, never to spikes."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class SpikeSepConv(nn.Module):
    """Inverted separable conv (MobileNetV2 style), the token mixer of the CNN stages.

    Every conv reads spikes, so each is an accumulate-only layer once deployed.
    """

    def __init__(self, channels: int, D: int = 4, expansion: int = 2):
        super().__init__()
        hidden = expansion * channels
        self.sn1 = MultiSpike(D, normalize=True)
        self.pw1 = ConvBN(channels, hidden, 1)
        self.sn2 = MultiSpike(D, normalize=True)
        self.dw = ConvBN(hidden, hidden, 3, groups=hidden)
        self.sn3 = MultiSpike(D, normalize=True)
        self.pw2 = ConvBN(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.sn1(x))
        x = self.dw(self.sn2(x))
        return self.pw2(self.sn3(x))


class ChannelMLP(nn.Module):
    """Per-token MLP as two 1x1 convs, so tokens never leave the (B, C, H, W) layout."""

    def __init__(self, channels: int, ratio: int = 4, D: int = 4):
        super().__init__()
        hidden = ratio * channels
        self.sn1 = MultiSpike(D, normalize=True)
        self.fc1 = ConvBN(channels, hidden, 1)
        self.sn2 = MultiSpike(D, normalize=True)
        self.fc2 = ConvBN(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.sn2(self.fc1(self.sn1(x))))


class SDSA(nn.Module):
    """Spike-driven self-attention (Spike-driven Transformer V1 form): linear, no softmax.

    ``k * v`` is a mask of spikes, its column sum over all tokens is an integer count per channel,
    and a neuron turns the count into a channel mask for ``q``: integer masking and additions only.
    The count grows with the number of tokens, so ``attn_scale`` (a fixed python float, not a
    parameter) brings it into the neuron's [0, D] range before rounding; the exporter folds it
    into that neuron's requantization. Heads would not change anything here (the column sum is
    already per channel), so there is no ``heads`` argument.

    ``binary_attention`` (BESTformer's binary attention map): the map neuron ``attn_sn`` is a
    ``MultiSpike(1)``, so the mask is 1 bit per channel, 1 iff ``attn_scale * col >= 0.5``,
    instead of D + 1 integer levels; ``q * mask`` then only gates q's spikes. How this maps to
    BESTformer, whose map is ``attn = LIF(Q K^T)`` (threshold 1, soft reset) followed by
    ``(attn V) * 0.125 * lambda``:

    - This SDSA is the linear (Spike-driven Transformer V1) form: the "map" is the per-channel
      mask computed from the column sums of ``K * V``; there is no N x N token-token matrix, so
      the binarized quantity is the channel map, not ``Q K^T``.
    - One timestep: the neuron fires iff its input reaches 0.5 (round-to-nearest spike,
      threshold 0.5 on ``attn_scale * count``, i.e. count >= 4 tokens at the default 0.125);
      with no second step the soft reset has nothing to act on.
    - BESTformer's learnable per-head, per-timestep lambda is not used: ``attn_scale`` is a fixed
      python float because the SFA exporter folds only constant scales into the neuron's
      requantization (a learnable scale would be a parameter in the traced graph). Its constant
      0.125 is ``attn_scale``'s default.
    - The binary (sign) weights of BESTformer are a quantizer's business, not this option's.

    Parameter names do not change with ``binary_attention`` (the neuron has no parameters).
    """

    def __init__(self, channels: int, D: int = 4, attn_scale: float = 0.125, binary_attention: bool = False):
        super().__init__()
        self.attn_scale = float(attn_scale)
        self.binary_attention = bool(binary_attention)
        self.sn = MultiSpike(D, normalize=True)
        self.q = ConvBN(channels, channels, 1)
        self.k = ConvBN(channels, channels, 1)
        self.v = ConvBN(channels, channels, 1)
        self.q_sn = MultiSpike(D, normalize=True)
        self.k_sn = MultiSpike(D, normalize=True)
        self.v_sn = MultiSpike(D, normalize=True)
        self.attn_sn = MultiSpike(1 if binary_attention else D, normalize=True)
        self.proj = ConvBN(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sn(x)
        q = self.q_sn(self.q(s))
        k = self.k_sn(self.k(s))
        v = self.v_sn(self.v(s))
        col = (k * v).sum(dim=(2, 3), keepdim=True)
        mask = self.attn_sn(col * self.attn_scale)
        return self.proj(q * mask)


class Downsample(nn.Module):
    """Strided 3x3 conv between stages; it reads spikes like every other weighted layer."""

    def __init__(self, c_in: int, c_out: int, D: int = 4):
        super().__init__()
        self.sn = MultiSpike(D, normalize=True)
        self.conv = ConvBN(c_in, c_out, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.sn(x))


def _cnn_block(channels: int, mlp_ratio: int, D: int) -> nn.Sequential:
    return nn.Sequential(
        Residual(SpikeSepConv(channels, D)),
        Residual(ChannelMLP(channels, mlp_ratio, D)),
    )


def _transformer_block(channels: int, mlp_ratio: int, D: int, attn_scale: float,
                       binary_attention: bool = False) -> nn.Sequential:
    return nn.Sequential(
        Residual(SDSA(channels, D, attn_scale, binary_attention)),
        Residual(ChannelMLP(channels, mlp_ratio, D)),
    )


class SpikeFormer(nn.Module):
    """Meta-SpikeFormer-style network: CNN stages first, spike-driven transformer stages after.

    Layout: stem (conv + BN on the raw input, no neuron: the input is not a spike) -> stage 0 ->
    [Downsample -> stage i] for every further stage -> head (MultiSpike -> global average pool ->
    Linear). Stage i has ``depths[i]`` blocks; the first ``cnn_stages`` stages use
    SpikeSepConv + ChannelMLP blocks, the rest SDSA + ChannelMLP blocks.

    The default is the small two-stage model for 8x8 digits: ``channels=(16, 32)`` with one CNN
    stage of ``cnn_blocks`` blocks and one transformer stage of ``transformer_blocks`` blocks.
    Any number of stages (>= 2) works through ``depths`` and ``cnn_stages``; see
    :func:`e_spikeformer_5m_config` for an ImageNet-sized one. ``image_size`` is only checked
    against the total stride (each stage must see a whole number of tokens); the traced graph
    does not depend on it.

    ``binary_attention``: every SDSA uses BESTformer's 1-bit attention map (see :class:`SDSA`).

    ``reversible`` (BESTformer's reversible block): inside every stage, with the stage input as
    x_{-1} = x_0 and F_1, F_2, ... the stage's residual branches in order (token mixer, MLP,
    token mixer, MLP, ...), ``x_{i+1} = F_i(x_i) + (x_{i-1} + x_i) / 2``; the stage output is the
    last x. The first step is computed as ``F_1(x_0) + x_0`` (the same float value, since
    (x_0 + x_0) / 2 == x_0 exactly, and one add less in the IR). A Downsample acts on the last
    stream and the next stage restarts with x_{-1} = x_0 = its output. At the end, two heads,
    each MultiSpike -> global average pool -> Linear: ``head_sn``/``fc`` on the last stream x_L
    (the non-reversible model's head) and the second head ``head2_sn``/``fc2`` on the stream
    before it, x_{L-1} (x_L itself when the last stage has no blocks); the logits are their mean,
    computed as ``A * 0.5 + B * 0.5``: the same float value as (A + B) * 0.5, but the exporter
    folds each 0.5 into its Linear, so the IR's output tensor carries the averaged logits' own
    scale (a trailing ``* 0.5`` would stay a factor on the graph output, which no op applies).

    Parameter names are those of the non-reversible model for every shared layer (the blocks
    keep their ``Residual(...).branch`` modules; only the forward differs), so a float
    spikeformer checkpoint loads into a reversible one with ``strict=False`` and only the second
    head's parameters missing (:func:`second_head_names`: ``fc2.weight``, ``fc2.bias``). With
    the same seed, the shared layers are also initialized identically (``fc2`` is created last).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 8,
        channels: Sequence[int] = (16, 32),
        cnn_blocks: int = 1,
        transformer_blocks: int = 1,
        mlp_ratio: int = 4,
        D: int = 4,
        *,
        depths: Sequence[int] | None = None,
        cnn_stages: int | None = None,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        attn_scale: float = 0.125,
        binary_attention: bool = False,
        reversible: bool = False,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise EdgesnnError(f"SpikeFormer needs at least two stages (channels), got {channels}")
        if cnn_stages is None:
            cnn_stages = len(channels) // 2
        if not 0 <= cnn_stages <= len(channels):
            raise EdgesnnError(f"cnn_stages must be in [0, {len(channels)}], got {cnn_stages}")
        if depths is None:
            depths = (cnn_blocks,) * cnn_stages + (transformer_blocks,) * (len(channels) - cnn_stages)
        depths = tuple(int(d) for d in depths)
        if len(depths) != len(channels) or any(d < 0 for d in depths):
            raise EdgesnnError(f"depths {depths} must give a block count >= 0 for each of the {len(channels)} stages")
        total_stride = stem_stride * 2 ** (len(channels) - 1)
        if image_size % total_stride:
            raise EdgesnnError(
                f"image_size {image_size} is not divisible by the total stride {total_stride} "
                f"(stem stride {stem_stride}, {len(channels) - 1} downsamples)"
            )
        self.channels, self.depths, self.cnn_stages, self.D = channels, depths, cnn_stages, D
        self.image_size = image_size
        self.binary_attention, self.reversible = bool(binary_attention), bool(reversible)
        self.token_grids = tuple(image_size // (stem_stride * 2**i) for i in range(len(channels)))

        self.stem = ConvBN(in_channels, channels[0], stem_kernel, stride=stem_stride)
        stages: list[nn.Module] = []
        for i, (c, depth) in enumerate(zip(channels, depths)):
            layers: list[nn.Module] = [Downsample(channels[i - 1], c, D)] if i else []
            for _ in range(depth):
                if i < cnn_stages:
                    layers.append(_cnn_block(c, mlp_ratio, D))
                else:
                    layers.append(_transformer_block(c, mlp_ratio, D, attn_scale, binary_attention))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head_sn = MultiSpike(D, normalize=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)
        if self.reversible:
            self.head2_sn = MultiSpike(D, normalize=True)
            self.fc2 = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reversible:
            return self._forward_reversible(x)
        x = self.stages(self.stem(x))
        x = self.pool(self.head_sn(x))
        return self.fc(torch.flatten(x, 1))

    def _forward_reversible(self, x: torch.Tensor) -> torch.Tensor:
        prev = x = self.stem(x)
        for stage in self.stages:
            prev, x = _reversible_stage(stage, x)
        a = self.fc2(torch.flatten(self.pool(self.head2_sn(prev)), 1))
        b = self.fc(torch.flatten(self.pool(self.head_sn(x)), 1))
        return a * 0.5 + b * 0.5


def _reversible_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_{L-1}, x_L) of one stage: x_{i+1} = F_i(x_i) + (x_{i-1} + x_i) / 2, x_{-1} = x_0 = input."""
    prev = x
    for layer in stage:
        if isinstance(layer, Downsample):
            prev = x = layer(x)
            continue
        for residual in layer:
            mid = x if prev is x else (prev + x) * 0.5  # first step: (x_0 + x_0) / 2 is x_0 itself
            prev, x = x, residual.branch(x) + mid
    return prev, x


def second_head_names(model: SpikeFormer) -> list[str]:
    """State-dict keys a reversible SpikeFormer has beyond the non-reversible one (its second head)."""
    if not getattr(model, "reversible", False):
        return []
    return [k for k in model.state_dict() if k.startswith(("head2_sn.", "fc2."))]


def e_spikeformer_5m_config() -> dict:
    """Constructor kwargs for a ~5M-parameter E-SpikeFormer-like model on 224x224x3, 1000 classes.

    Structure only (no published weights): it follows Meta-SpikeFormer's layout — a 7x7 stride-2
    stem, two single-block CNN stages at 112 and 56, a two-block CNN stage at 28, then transformer
    stages of 6 and 2 blocks at 14 and 7 — with widths chosen to land near 5M parameters.
    """
    return dict(
        in_channels=3,
        num_classes=1000,
        image_size=224,
        channels=(32, 64, 128, 192, 224),
        depths=(1, 1, 2, 6, 2),
        cnn_stages=3,
        mlp_ratio=4,
        D=4,
        stem_kernel=7,
        stem_stride=2,
        attn_scale=0.125,
    )
