"""Config of SmolVLM / Idefics3: SigLIP encoder, pixel-shuffle connector, Llama decoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..llama.config import LlamaConfig
from ..siglip.config import SiglipVisionConfig

IDEFICS3_VISION_DEFAULTS = dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=16,
                                image_size=224, patch_size=32)


@dataclass
class SmolVLMConfig:
    text: LlamaConfig = field(default_factory=LlamaConfig)
    vision: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    scale_factor: int = 2
    image_token_id: int = 49190

    def __post_init__(self) -> None:
        side = self.vision.patches_per_side
        if side % self.scale_factor:
            raise ValueError(f"patches per side {side} is not a multiple of scale_factor {self.scale_factor}")

    @property
    def tokens_per_tile(self) -> int:
        """``(image_size / patch_size)^2 / scale_factor^2`` image tokens per encoder tile."""
        return self.vision.num_patches // self.scale_factor**2

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "SmolVLMConfig":
        # transformers' Idefics3 defaults for keys a config.json leaves out
        text_hf = {"rms_norm_eps": 1e-5, **(hf.get("text_config") or {})}
        # The top-level flag decides tying for the composite model (transformers does the same).
        tie = hf.get("tie_word_embeddings", text_hf.get("tie_word_embeddings", False))
        text = LlamaConfig.from_hf(text_hf, tie_word_embeddings=bool(tie))
        vision = SiglipVisionConfig.from_hf({**IDEFICS3_VISION_DEFAULTS, **(hf.get("vision_config") or {})})
        return cls(text=text, vision=vision, scale_factor=int(hf.get("scale_factor", 2)),
                   image_token_id=int(hf.get("image_token_id", 49190)))

    def to_hf(self) -> dict[str, Any]:
        """config.json of an Idefics3 checkpoint (what transformers' Idefics3 classes read)."""
        return {
            "architectures": ["Idefics3ForConditionalGeneration"],
            "model_type": "idefics3",
            "image_token_id": self.image_token_id,
            "scale_factor": self.scale_factor,
            "tie_word_embeddings": self.text.tie_word_embeddings,
            "text_config": self.text.to_hf(),
            "vision_config": self.vision.to_hf("idefics3_vision"),
        }
