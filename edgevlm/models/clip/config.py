"""Config of CLIP vision towers (LLaVA-1.5 and MobileVLM use CLIP ViT-L/14 at 336 px)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..vit import ViTConfig


@dataclass
class ClipVisionConfig(ViTConfig):
    patch_size: int = 32  # transformers' CLIPVisionConfig default
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


PRESETS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14
    ),
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14
    ),
    "openai/clip-vit-base-patch16": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16
    ),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14),
}
