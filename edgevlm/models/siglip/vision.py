"""SigLIP vision tower: patch embedding + learned positions, pre-norm ViT, post-layernorm."""

from __future__ import annotations

import torch
from torch import nn

from ..vit import ViTEncoder, unused_layer_patterns
from .config import SiglipVisionConfig


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` -> ``[N, patches, D]`` (full tiles: positions are 0..patches-1)."""
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        return x + self.position_embedding.weight[None]


class SiglipVisionTower(nn.Module):
    """Features of the configured layer: the post-layernormed last layer by default."""


    def __init__(self, cfg: SiglipVisionConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = ViTEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.feature_layer is None else None

    @staticmethod
    def unused_keys(cfg: SiglipVisionConfig) -> tuple[str, ...]:
        """Checkpoint keys (relative to the tower) that image features never use."""
        post = (r"post_layernorm\.",) if cfg.feature_layer is not None else ()
        return (r"head\.", *post, *unused_layer_patterns(cfg))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embeddings(pixel_values))
        return self.post_layernorm(x) if self.post_layernorm is not None else x
