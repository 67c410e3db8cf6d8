"""CAM++ speaker encoder of IndexTTS2 (`campplus_cn_common.bin`): Kaldi fbank -> style vector.

A plain re-implementation of upstream's `indextts/s2mel/modules/campplus/{DTDNN.py,layers.py}` (from
3D-Speaker; architecture §2.4), inference only: BatchNorm always uses its running statistics (the
loader returns the model in eval mode; export it in eval mode). Attribute names equal the keys of the
official file, BatchNorm buffers (`running_mean`, `running_var`, int64 `num_batches_tracked`) included.

Only `feat_dim` and `embedding_size` (the style width, `s2mel.style_encoder.dim`) are parameters, as
upstream builds it; every other width is fixed in upstream's code and is a constant here.

    fbank (B, T, 80) -> FCM 2-D conv head (frequency 80 -> 10) -> (B, 320, T)
      -> TDNN k5 stride 2 -> 3 x [CAM dense block, transit] -> BN-ReLU -> mean ++ unbiased std
      -> Conv1x1 + BatchNorm(affine=False) -> style (B, embedding_size)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import load_strict, read_state_dict

HEAD_CHANNELS = 32  # FCM m_channels
GROWTH_RATE = 32  # channels each dense layer adds
BN_SIZE = 4  # dense-layer bottleneck = BN_SIZE * GROWTH_RATE = 128
INIT_CHANNELS = 128  # TDNN output
BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))  # (layers, kernel, dilation) of block1..3
CAM_REDUCTION = 2  # CAMLayer context bottleneck = bottleneck // 2
SEG_LEN = 100  # CAMLayer segment pooling window (frames after the stride-2 TDNN)


def bn_relu(channels: int) -> nn.Sequential:
    """upstream get_nonlinear('batchnorm-relu'): keys `batchnorm.*` (the ReLU has none)."""
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels), relu=nn.ReLU()))


# --- FCM head (2-D convolutions over (frequency, time)) -----------------------------------------


class BasicResBlock(nn.Module):
    """Two 3x3 conv-BN with a residual; stride only on the frequency axis."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()  # identity; keys shortcut.0 / .1 when it projects
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class FCM(nn.Module):
    """(B, F, T) -> (B, HEAD_CHANNELS * F // 8, T): conv, 2 x 2 res blocks, conv, each halving F."""

    def __init__(self, feat_dim: int):
        super().__init__()
        m = HEAD_CHANNELS
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.layer1 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.layer2 = nn.Sequential(BasicResBlock(m, m, 2), BasicResBlock(m, m, 1))
        self.conv2 = nn.Conv2d(m, m, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m)
        self.out_channels = m * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))  # (B, m, F, T)
        out = self.layer2(self.layer1(out))  # (B, m, F/4, T)
        out = F.relu(self.bn2(self.conv2(out)))  # (B, m, F/8, T)
        return out.flatten(1, 2)  # (B, m * F/8, T), channel-major


# --- x-vector trunk (1-D over time) -------------------------------------------------------------


class TDNNLayer(nn.Module):
    """Conv1d (no bias, "same" padding for odd kernels) + BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                dilation=dilation, bias=False)
        self.nonlinear = bn_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def seg_pooling(x: torch.Tensor, seg_len: int = SEG_LEN) -> torch.Tensor:
    """(B, C, T) -> (B, C, T): every frame gets the mean of its seg_len-frame segment.

    Upstream: avg_pool1d(kernel = stride = seg_len, ceil_mode=True) — the last, partial segment is
    averaged over the frames it has — then each segment value is repeated seg_len times and cut to
    T. The repeat and the cut read T from the tensor, so a graph stays dynamic in T."""
    seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)  # (B, C, ceil(T / seg_len))
    seg = seg.unsqueeze(-1).expand(-1, -1, -1, seg_len).flatten(2)  # (B, C, seg_len * ceil(T / seg_len))
    return seg[..., : x.shape[-1]]  # (B, C, T)


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by sigmoid(MLP(global mean + segment mean))."""

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, padding=padding,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // CAM_REDUCTION, 1)
        self.linear2 = nn.Conv1d(bn_channels // CAM_REDUCTION, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)  # (B, out, T)
        context = x.mean(-1, keepdim=True) + seg_pooling(x)  # (B, bn, T)
        m = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))  # (B, out, T)
        return y * m


class CAMDenseTDNNLayer(nn.Module):
    """BN-ReLU, Conv1x1 -> bottleneck, BN-ReLU, CAMLayer -> growth channels."""

    def __init__(self, in_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        bn_channels = BN_SIZE * GROWTH_RATE
        self.nonlinear1 = bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, GROWTH_RATE, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    """Densely connected layers `tdnnd1..N`: each appends GROWTH_RATE channels to its input."""

    def __init__(self, num_layers: int, in_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"tdnnd{i + 1}",
                            CAMDenseTDNNLayer(in_channels + i * GROWTH_RATE, kernel_size, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)  # (B, C + GROWTH_RATE, T)
        return x


class TransitLayer(nn.Module):
    """BN-ReLU then Conv1x1 (no bias)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.nonlinear = bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    """(B, C, T) -> (B, 2C): mean and unbiased (T - 1) standard deviation over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    """Conv1x1 (no bias) on the pooled vector, then BatchNorm1d(affine=False) (get_nonlinear 'batchnorm_')."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(out_channels, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.unsqueeze(-1)).squeeze(-1)  # (B, out)
        return self.nonlinear(x)


class CAMPPlus(nn.Module):
    """forward(fbank (B, T, feat_dim)) -> style (B, embedding_size).

    upstream feeds `fbank - fbank.mean(0)` of a 16 kHz Kaldi fbank (upstream-quirks 7)."""

    def __init__(self, feat_dim: int = 80, embedding_size: int = 192,
                 blocks: tuple[tuple[int, int, int], ...] = BLOCKS):
        """`blocks` exists for tests only (a shallower net exports faster); checkpoints use BLOCKS."""
        super().__init__()
        self.head = FCM(feat_dim)
        channels = self.head.out_channels
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["tdnn"] = TDNNLayer(channels, INIT_CHANNELS, 5, stride=2)
        channels = INIT_CHANNELS
        for i, (num_layers, kernel_size, dilation) in enumerate(blocks, start=1):
            layers[f"block{i}"] = CAMDenseTDNNBlock(num_layers, channels, kernel_size, dilation)
            channels += num_layers * GROWTH_RATE
            layers[f"transit{i}"] = TransitLayer(channels, channels // 2)
            channels //= 2
        layers["out_nonlinear"] = bn_relu(channels)
        layers["stats"] = StatsPool()
        layers["dense"] = DenseLayer(2 * channels, embedding_size)
        self.xvector = nn.Sequential(layers)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.head(fbank.transpose(1, 2))  # (B, F, T) -> (B, 320, T)
        return self.xvector(x)  # (B, embedding_size)


def load_campplus(path: str | Path, style_dim: int) -> CAMPPlus:
    """CAMPPlus(80, style_dim) from `campplus_cn_common.bin` (a plain state dict), strictly, in eval mode."""
    path = Path(path)
    model = CAMPPlus(feat_dim=80, embedding_size=style_dim)
    load_strict(model, read_state_dict(path), path)
    return model.eval()
