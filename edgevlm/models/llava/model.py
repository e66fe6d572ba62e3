"""LLaVA-1.5 style model (transformers ``LlavaForConditionalGeneration`` checkpoints, both the
transformers-5 key layout and the older ``language_model.model.*`` one)."""

from __future__ import annotations

from typing import Any

import torch

from ..base import Model
from ..clip.vision import ClipVisionTower
from ..llama.language import LlamaDecoder
from ..siglip.vision import SiglipVisionTower
from ..vit import prefixed
from .config import LlavaConfig
from .projector import MultiModalProjector


class LlavaForConditionalGeneration(Model):
    family = "llava"
    TOWER_PREFIXES = ("model.vision_tower.vision_model.", "vision_tower.vision_model.", "model.vision_tower.", "vision_tower.")
    PREFIXES = (
        *((p, "vision_tower.") for p in TOWER_PREFIXES),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model."),
        ("language_model.model.", "language_model."),
        ("lm_head.", "language_model.lm_head."),
        ("language_model.lm_head.", "language_model.lm_head."),
    )

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.config = config
        tower = ClipVisionTower if config.vision_model_type == "clip_vision_model" else SiglipVisionTower
        self.vision_tower = tower(config.vision)
        self.multi_modal_projector = MultiModalProjector(
            config.vision.hidden_size, config.text.hidden_size, config.projector_act, config.projector_bias
        )
        self.language_model = LlamaDecoder(config.text)
        self.image_token_id = config.image_token_id

    @staticmethod
    def config_from_hf(hf: dict[str, Any]) -> LlavaConfig:
        return LlavaConfig.from_hf(hf)

    def ignored_keys(self) -> tuple[str, ...]:
        unused = self.vision_tower.unused_keys(self.config.vision)
        return self.IGNORE + tuple(p for t in self.TOWER_PREFIXES for p in prefixed(t, unused)) + (r"(^|\.)position_ids$",)

    def vision_components(self) -> dict[str, torch.nn.Module]:
        return {"vision_encoder": self.vision_tower, "projector": self.multi_modal_projector}

    @property
    def tokens_per_tile(self) -> int:
        return self.config.tokens_per_tile

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.vision_tower(pixel_values)
        if self.config.has_class_token and self.config.select_strategy == "default":
            features = features[:, 1:]
        return self.multi_modal_projector(features)
