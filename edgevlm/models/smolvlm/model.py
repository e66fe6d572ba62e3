"""SmolVLM / Idefics3 for generation."""

from __future__ import annotations

from typing import Any

import torch

from ..base import Model
from ..llama.language import LlamaDecoder
from ..siglip.vision import SiglipVisionTower
from ..vit import prefixed
from .config import SmolVLMConfig
from .projector import PixelShuffleConnector


class SmolVLMForConditionalGeneration(Model):
    family = "smolvlm"
    PREFIXES = (
        ("model.vision_model.", "vision_model."),
        ("model.connector.", "connector."),
        ("model.text_model.", "language_model."),
        ("lm_head.", "language_model.lm_head."),
    )

    def __init__(self, config: SmolVLMConfig):
        super().__init__()
        self.config = config
        self.vision_model = SiglipVisionTower(config.vision)
        self.connector = PixelShuffleConnector(config.vision.hidden_size, config.text.hidden_size, config.scale_factor)
        self.language_model = LlamaDecoder(config.text)
        self.image_token_id = config.image_token_id

    @staticmethod
    def config_from_hf(hf: dict[str, Any]) -> SmolVLMConfig:
        return SmolVLMConfig.from_hf(hf)

    def ignored_keys(self) -> tuple[str, ...]:
        return self.IGNORE + prefixed("model.vision_model.", SiglipVisionTower.unused_keys(self.config.vision))

    def vision_components(self) -> dict[str, torch.nn.Module]:
        return {"vision_encoder": self.vision_model, "projector": self.connector}

    @property
    def tokens_per_tile(self) -> int:
        return self.config.tokens_per_tile

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles ``[N, 3, S, S]`` -> features ``[N, tokens_per_tile, text_hidden]``."""
        return self.connector(self.vision_model(pixel_values))
