"""CLIP vision tower: class token + patch embedding, pre-layernorm, pre-norm ViT.

Only hidden states feed the projectors of LLaVA and MobileVLM, so the post-layernorm (which CLIP
applies to the pooled class token) is not built.
"""

from __future__ import annotations

import torch
from torch import nn

from ..vit import ViTEncoder, unused_layer_patterns
from .config import ClipVisionConfig


class ClipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` -> ``[N, 1 + patches, D]``, class token first."""
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight[None]


class ClipVisionTower(nn.Module):
    """Hidden state of the configured layer ``[N, 1 + patches, D]`` (class token included)."""

    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = ClipVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = ViTEncoder(cfg)

    @staticmethod
    def unused_keys(cfg: ClipVisionConfig) -> tuple[str, ...]:
        """Checkpoint keys (relative to the tower) that image features never use."""
        return (r"post_layernorm\.", *unused_layer_patterns(cfg))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
