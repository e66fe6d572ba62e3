"""Config of LLaVA-1.5 style models: a CLIP (or SigLIP) tower, a 2-layer MLP projector, a Llama decoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import UnsupportedModelError
from ..clip.config import ClipVisionConfig
from ..config import require
from ..llama.config import LlamaConfig
from ..siglip.config import SiglipVisionConfig
from ..vit import ViTConfig

VISION_TOWERS = {"clip_vision_model": ClipVisionConfig, "siglip_vision_model": SiglipVisionConfig}


@dataclass
class LlavaConfig:
    text: LlamaConfig = field(default_factory=LlamaConfig)
    vision: ViTConfig = field(default_factory=ClipVisionConfig)
    vision_model_type: str = "clip_vision_model"
    select_strategy: str = "default"  # "default" drops the class token, "full" keeps it
    projector_act: str = "gelu"
    projector_bias: bool = True
    image_token_id: int = 32000

    def __post_init__(self) -> None:
        require(self.select_strategy, "vision_feature_select_strategy", ("default", "full"))
        require(self.vision_model_type, "vision tower model_type", tuple(VISION_TOWERS))

    @property
    def has_class_token(self) -> bool:
        return self.vision_model_type == "clip_vision_model"

    @property
    def tokens_per_tile(self) -> int:
        drop = 1 if self.has_class_token and self.select_strategy == "default" else 0
        return self.vision.num_patches + (1 if self.has_class_token else 0) - drop

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "LlavaConfig":
        text_hf = dict(hf.get("text_config") or {"model_type": "llama"})
        if text_hf.get("model_type", "llama") != "llama":
            raise UnsupportedModelError(f"LLaVA text model {text_hf.get('model_type')!r}; supported: llama")
        tie = hf.get("tie_word_embeddings", text_hf.get("tie_word_embeddings", False))
        vision_hf = dict(hf.get("vision_config") or {"model_type": "clip_vision_model"})
        kind = require(vision_hf.get("model_type", "clip_vision_model"), "vision tower model_type", tuple(VISION_TOWERS))
        layer = hf.get("vision_feature_layer", -2)
        if not isinstance(layer, int):
            raise UnsupportedModelError(f"vision_feature_layer {layer!r}: only a single layer index is supported")
        return cls(
            text=LlamaConfig.from_hf(text_hf, tie_word_embeddings=bool(tie)),
            vision=VISION_TOWERS[kind].from_hf(vision_hf, feature_layer=layer),
            vision_model_type=kind,
            select_strategy=hf.get("vision_feature_select_strategy", "default"),
            projector_act=hf.get("projector_hidden_act", "gelu"),
            projector_bias=bool(hf.get("multimodal_projector_bias", True)),
            image_token_id=int(hf.get("image_token_id", hf.get("image_token_index", 32000))),
        )
