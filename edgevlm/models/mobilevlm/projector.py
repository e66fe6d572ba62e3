"""MobileVLM's projectors, laid out so the original checkpoints' parameter names load as they are.

LDP (v1, ``ldpnet``): MLP (Linear, GELU, Linear), tokens to a 2-D grid, then two MobileNetV3
inverted-residual blocks (depthwise 3x3 conv, channel LayerNorm, Hardswish, squeeze-excitation with
Hardsigmoid, pointwise conv, channel LayerNorm); the first has stride 1 and a residual, the second
stride 2 (24 x 24 -> 12 x 12) and none.

LDPv2 (``ldpnetv2``): MLP, 2-D average pooling to 12 x 12, then a positional depthwise 3x3 conv
with bias added back to its input (PEG).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """``[B, side*side, C]`` tokens (row-major) -> ``[B, C, side, side]``."""
    b, n, c = x.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} image tokens do not form a square grid")
    return x.transpose(1, 2).reshape(b, c, side, side)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def squeeze_channels(channels: int) -> int:
    """MobileNetV3's squeeze width: channels / 4 rounded to a multiple of 8 (never 10% below)."""
    v = channels // 4
    rounded = max(8, (v + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * v else rounded


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of ``[B, C, H, W]`` at each position."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels(channels), 1)
        self.fc2 = nn.Conv2d(squeeze_channels(channels), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class InvertedResidual(nn.Module):
    """Depthwise conv + LN + Hardswish, SE, pointwise conv + LN; residual when stride is 1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        depthwise = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False), ChannelLayerNorm(channels), nn.Hardswish()
        )
        pointwise = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), ChannelLayerNorm(channels))
        self.block = nn.Sequential(depthwise, SqueezeExcitation(channels), pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.stride == 1 else y


class LDPBlock(nn.Module):
    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        # Identity entries keep the original indices (mlp.1, mlp.3, mb_block.1, mb_block.2)
        self.mlp = nn.Sequential(nn.Identity(), nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.mb_block = nn.Sequential(nn.Identity(), InvertedResidual(hidden, 1), InvertedResidual(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(self.mb_block(to_grid(self.mlp(x))))


class LDPProjector(nn.Module):
    """``ldpnet``: ``[B, 576, C_vision]`` -> ``[B, 144, H]``."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.model = LDPBlock(in_features, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class _PositionalConv(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.peg(grid) + grid


class LDPv2Projector(nn.Module):
    """``ldpnetv2``: ``[B, N, C_vision]`` -> ``[B, 144, H]``."""

    GRID = 12

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.mlp = _MLP(in_features, hidden)
        self.peg = _PositionalConv(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = to_grid(self.mlp(x))
        side = grid.shape[-1]
        if side % self.GRID == 0:  # the usual 24 x 24: plain 2 x 2 average pooling (export friendly)
            k = side // self.GRID
            grid = F.avg_pool2d(grid, k, k)
        else:
            grid = F.adaptive_avg_pool2d(grid, self.GRID)
        return to_tokens(self.peg(grid))


PROJECTORS = {"ldpnet": LDPProjector, "ldpnetv2": LDPv2Projector}
