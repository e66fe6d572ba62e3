"""Config of SigLIP vision towers (SmolVLM / Idefics3 use a SigLIP encoder without its head)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..vit import ViTConfig


@dataclass
class SiglipVisionConfig(ViTConfig):
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6


PRESETS: dict[str, dict[str, Any]] = {
    # SmolVLM-256M / 500M: SigLIP base patch-16 at 512 px
    "smolvlm-256m": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8),
}
