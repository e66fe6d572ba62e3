"""The Idefics3 connector: pixel shuffle (space-to-depth) then one linear projection."""

from __future__ import annotations

import torch
from torch import nn


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``[N, side*side, D]`` -> ``[N, (side/scale)^2, D*scale^2]``.

    Output token ``(r, c)`` concatenates the ``scale x scale`` block of input patches at rows
    ``r*scale + i`` and columns ``c*scale + j``, ordered by ``i`` then ``j``.
    """
    n, seq, d = x.shape
    side = int(round(seq**0.5))
    out = side // scale
    x = x.view(n, out, scale, out, scale, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, out * out, scale * scale * d)


class ModalityProjection(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PixelShuffleConnector(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int, scale_factor: int):
        super().__init__()
        self.scale_factor = scale_factor
        self.modality_projection = ModalityProjection(vision_hidden * scale_factor**2, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.modality_projection(pixel_shuffle(features, self.scale_factor))
