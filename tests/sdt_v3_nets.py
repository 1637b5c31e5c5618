"""An E-SpikeFormer written the way the SDT-V3 code base writes it (project-written, not copied):
its own MultiSpike(min_value, max_value, Norm), shapes read in forward (``B, C, H, W = x.shape``,
``int(C * lamda_ratio)``), token reshapes, transposes and permutes, spike-driven linear attention
``(q @ k^T) @ v * (2 * scale)``, Conv1d + BatchNorm1d MLPs and the ``flatten(2).mean(2)`` head.

The block structure and op sequence follow upstream's Efficient_Spiking_Transformer (downsampling
stem, two stages of separable-conv blocks, two stages of attention blocks); widths and depths are
parameters so a test can run it small on 3x32x32 input.
"""

from __future__ import annotations

import torch
from torch import nn


class _Quant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return torch.round(torch.clamp(x, lo, hi))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.lo) & (x <= ctx.hi)), None, None


class MultiSpike(nn.Module):
    """SDT-V3's integer neuron: round(clamp(x, min, max)) / Norm (Norm defaults to max_value)."""

    def __init__(self, min_value=0, max_value=4, Norm=None):
        super().__init__()
        self.min_value, self.max_value = min_value, max_value
        self.Norm = max_value if Norm is None else Norm

    def forward(self, x):
        return _Quant.apply(x, self.min_value, self.max_value) / self.Norm


class SepConvSpike(nn.Module):
    """Inverted separable conv: spike, 1x1 expand, spike, depthwise kxk, spike, 1x1 project (each + BN)."""

    def __init__(self, dim, expansion=2, kernel_size=7, padding=3):
        super().__init__()
        med = int(expansion * dim)
        self.spike1 = MultiSpike()
        self.pwconv1 = nn.Sequential(nn.Conv2d(dim, med, 1, bias=False), nn.BatchNorm2d(med))
        self.spike2 = MultiSpike()
        self.dwconv = nn.Sequential(nn.Conv2d(med, med, kernel_size, padding=padding, groups=med, bias=False),
                                    nn.BatchNorm2d(med))
        self.spike3 = MultiSpike()
        self.pwconv2 = nn.Sequential(nn.Conv2d(med, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x):
        x = self.pwconv1(self.spike1(x))
        x = self.dwconv(self.spike2(x))
        return self.pwconv2(self.spike3(x))


class ConvBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4):
        super().__init__()
        self.Conv = SepConvSpike(dim)
        self.mlp_ratio = mlp_ratio
        self.spike1 = MultiSpike()
        self.conv1 = nn.Conv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim * mlp_ratio)
        self.spike2 = MultiSpike()
        self.conv2 = nn.Conv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        B, C, H, W = x.shape
        x = self.Conv(x) + x
        x_feat = x
        x = self.spike1(x)
        x = self.bn1(self.conv1(x)).reshape(B, self.mlp_ratio * C, H, W)
        x = self.spike2(x)
        x = self.bn2(self.conv2(x)).reshape(B, C, H, W)
        return x_feat + x


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_conv = nn.Conv1d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_spike = MultiSpike()
        self.fc2_conv = nn.Conv1d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_spike = MultiSpike()
        self.c_hidden = hidden

    def forward(self, x):
        B, C, H, W = x.shape
        N = H * W
        x = x.flatten(2)
        x = self.fc1_spike(x)
        x = self.fc1_conv(x)
        x = self.fc1_bn(x).reshape(B, self.c_hidden, N).contiguous()
        x = self.fc2_spike(x)
        x = self.fc2_conv(x)
        return self.fc2_bn(x).reshape(B, C, H, W).contiguous()


class LinearAttention(nn.Module):
    """Spike-driven linear attention, per head (q k^T) v times 2 * scale, with lamda_ratio wide values."""

    def __init__(self, dim, num_heads=8, lamda_ratio=4):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.lamda_ratio = lamda_ratio
        self.head_spike = MultiSpike()
        self.q_conv = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.q_spike = MultiSpike()
        self.k_conv = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.k_spike = MultiSpike()
        self.v_conv = nn.Sequential(nn.Conv2d(dim, int(dim * lamda_ratio), 1, bias=False),
                                    nn.BatchNorm2d(int(dim * lamda_ratio)))
        self.v_spike = MultiSpike()
        self.attn_spike = MultiSpike()
        self.proj_conv = nn.Sequential(nn.Conv2d(dim * lamda_ratio, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def _heads(self, t, B, N, C):
        return t.flatten(2).transpose(-1, -2).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3).contiguous()

    def forward(self, x):
        B, C, H, W = x.shape
        N = H * W
        C_v = int(C * self.lamda_ratio)
        x = self.head_spike(x)
        q = self._heads(self.q_spike(self.q_conv(x)), B, N, C)
        k = self._heads(self.k_spike(self.k_conv(x)), B, N, C)
        v = self._heads(self.v_spike(self.v_conv(x)), B, N, C_v)
        x = q @ k.transpose(-2, -1)
        x = (x @ v) * (self.scale * 2)
        x = x.transpose(2, 3).reshape(B, C_v, N).contiguous()
        x = self.attn_spike(x)
        x = x.reshape(B, C_v, H, W)
        return self.proj_conv(x).reshape(B, C, H, W)


class AttentionBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4):
        super().__init__()
        self.conv = SepConvSpike(dim, kernel_size=3, padding=1)
        self.attn = LinearAttention(dim, num_heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.conv(x)
        x = x + self.attn(x)
        return x + self.mlp(x)


class DownSampling(nn.Module):
    def __init__(self, c_in, c_out, kernel_size=3, stride=2, padding=1, first_layer=False):
        super().__init__()
        self.encode_conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding)
        self.encode_bn = nn.BatchNorm2d(c_out)
        if not first_layer:
            self.encode_spike = MultiSpike()

    def forward(self, x):
        if hasattr(self, "encode_spike"):
            x = self.encode_spike(x)
        return self.encode_bn(self.encode_conv(x))


class ESpikeFormer(nn.Module):
    """Stages as upstream: stem /2, conv stage, /2, conv stage, /2, two conv blocks, /2, attention
    blocks, stride-1 downsampling, attention blocks; head flatten(2).mean(2) -> MultiSpike(Norm=1) -> Linear."""

    def __init__(self, in_channels=3, num_classes=10, embed_dim=(8, 16, 32, 32), num_heads=8, mlp_ratio=4,
                 depths=(1, 1)):
        super().__init__()
        e = embed_dim
        self.downsample1_1 = DownSampling(in_channels, e[0] // 2, 7, 2, 3, first_layer=True)
        self.ConvBlock1_1 = nn.ModuleList([ConvBlock(e[0] // 2, mlp_ratio)])
        self.downsample1_2 = DownSampling(e[0] // 2, e[0])
        self.ConvBlock1_2 = nn.ModuleList([ConvBlock(e[0], mlp_ratio)])
        self.downsample2 = DownSampling(e[0], e[1])
        self.ConvBlock2_1 = nn.ModuleList([ConvBlock(e[1], mlp_ratio)])
        self.ConvBlock2_2 = nn.ModuleList([ConvBlock(e[1], mlp_ratio)])
        self.downsample3 = DownSampling(e[1], e[2])
        self.block3 = nn.ModuleList([AttentionBlock(e[2], num_heads, mlp_ratio) for _ in range(depths[0])])
        self.downsample4 = DownSampling(e[2], e[3], stride=1)
        self.block4 = nn.ModuleList([AttentionBlock(e[3], num_heads, mlp_ratio) for _ in range(depths[1])])
        self.head = nn.Linear(e[3], num_classes)
        self.spike = MultiSpike(Norm=1)

    def forward(self, x):
        x = self.downsample1_1(x)
        for blk in self.ConvBlock1_1:
            x = blk(x)
        x = self.downsample1_2(x)
        for blk in self.ConvBlock1_2:
            x = blk(x)
        x = self.downsample2(x)
        for blk in [*self.ConvBlock2_1, *self.ConvBlock2_2]:
            x = blk(x)
        x = self.downsample3(x)
        for blk in self.block3:
            x = blk(x)
        x = self.downsample4(x)
        for blk in self.block4:
            x = blk(x)
        x = x.flatten(2).mean(2)
        return self.head(self.spike(x))


def espikeformer(in_shape=(3, 32, 32), num_classes=10, **kwargs) -> nn.Module:
    return ESpikeFormer(in_shape[0], num_classes, **kwargs)


def with_firing_statistics(model: nn.Module) -> nn.Module:
    """Untrained BatchNorm statistics drawn so every neuron fires some of the time (identity
    statistics leave the deep layers silent), q, k and v more, so the attention's own neuron fires
    too; for tests and benchmarks of an untrained model. Draws from torch's global generator."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.3, 1.5)
                m.weight.uniform_(0.8, 1.6)
                attention_input = name.endswith(("q_conv.1", "k_conv.1", "v_conv.1"))
                m.bias.uniform_(1.0, 3.0) if attention_input else m.bias.uniform_(0.0, 0.6)
    return model


CONFIGS = {"t": (24, 48, 96, 128), "s": (32, 64, 128, 192), "m": (48, 96, 192, 240), "l": (64, 128, 256, 360)}


def espikeformer_config(name: str, in_shape=(3, 224, 224), num_classes=1000) -> nn.Module:
    """Upstream's published sizes (Efficient_Spiking_Transformer_t/s/m/l: these embed widths, 8
    heads, mlp ratio 4, 6 + 2 attention blocks): -S 5.1 M, -M 10.0 M, -L 19.0 M parameters."""
    return ESpikeFormer(in_shape[0], num_classes, embed_dim=CONFIGS[name], depths=(6, 2))
