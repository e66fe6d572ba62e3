"""MobileVLM v1/v2 (no transformers class exists): loads the original checkpoints' key names."""

from __future__ import annotations

from typing import Any

import torch

from ..base import Model
from ..clip.vision import ClipVisionTower
from ..llama.language import LlamaDecoder
from ..vit import prefixed
from .config import MobileVLMConfig
from .projector import PROJECTORS


class MobileVLMForCausalLM(Model):
    family = "mobilevlm"
    TOWER_PREFIXES = ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower.vision_tower.")
    PREFIXES = (
        *((p, "vision_tower.") for p in TOWER_PREFIXES),
        ("model.mm_projector.", "mm_projector."),
        ("model.", "language_model."),
        ("lm_head.", "language_model.lm_head."),
    )

    def __init__(self, config: MobileVLMConfig):
        super().__init__()
        self.config = config
        self.vision_tower = ClipVisionTower(config.vision)
        self.mm_projector = PROJECTORS[config.projector_type](config.vision.hidden_size, config.text.hidden_size)
        self.language_model = LlamaDecoder(config.text)
        self.image_token_id = config.image_token_id

    @staticmethod
    def config_from_hf(hf: dict[str, Any]) -> MobileVLMConfig:
        return MobileVLMConfig.from_hf(hf)

    def ignored_keys(self) -> tuple[str, ...]:
        unused = ClipVisionTower.unused_keys(self.config.vision)
        return self.IGNORE + tuple(p for t in self.TOWER_PREFIXES for p in prefixed(t, unused)) + (r"(^|\.)position_ids$",)

    def vision_components(self) -> dict[str, torch.nn.Module]:
        return {"vision_encoder": self.vision_tower, "projector": self.mm_projector}

    @property
    def tokens_per_tile(self) -> int:
        return self.config.tokens_per_tile

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.vision_tower(pixel_values)[:, 1:]  # "patch": drop the class token
        return self.mm_projector(features)
