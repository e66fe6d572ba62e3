"""Config of MobileVLM v1/v2: CLIP ViT-L/14-336, LDP or LDPv2 projector, MobileLLaMA decoder.

The original checkpoints name their vision tower (``mm_vision_tower``) instead of embedding its
config; known tower names resolve through the CLIP presets. A ``vision_config`` dict in config.json
(edgevlm's extension, used by small test checkpoints) takes precedence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import UnsupportedModelError
from ..clip.config import PRESETS as CLIP_PRESETS
from ..clip.config import ClipVisionConfig
from ..config import require
from ..llama.config import LlamaConfig

PROJECTOR_TYPES = ("ldpnet", "ldpnetv2")
IMAGE_TOKEN_INDEX = -200  # MobileVLM's virtual id of an image position (never embedded)


@dataclass
class MobileVLMConfig:
    text: LlamaConfig = field(default_factory=LlamaConfig)
    vision: ClipVisionConfig = field(default_factory=ClipVisionConfig)
    projector_type: str = "ldpnetv2"
    select_feature: str = "patch"  # "patch" drops the class token, "cls_patch" keeps it
    pad_to_square: bool = True  # image_aspect_ratio "pad"
    image_token_id: int = IMAGE_TOKEN_INDEX

    def __post_init__(self) -> None:
        require(self.projector_type, "mm_projector_type", PROJECTOR_TYPES)
        require(self.select_feature, "mm_vision_select_feature", ("patch",))

    @property
    def tokens_per_tile(self) -> int:
        """144 for the 24 x 24 patch grid of CLIP-336: LDP halves each side, LDPv2 pools to 12 x 12."""
        side = self.vision.patches_per_side
        return ((side + 1) // 2) ** 2 if self.projector_type == "ldpnet" else 144

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "MobileVLMConfig":
        tower = hf.get("mm_vision_tower", "openai/clip-vit-large-patch14-336")
        if hf.get("vision_tower_type", "clip") != "clip":
            raise UnsupportedModelError(f"vision_tower_type {hf.get('vision_tower_type')!r}; supported: clip")
        layer = int(hf.get("mm_vision_select_layer", -2))
        if isinstance(hf.get("vision_config"), dict):
            vision = ClipVisionConfig.from_hf(hf["vision_config"], feature_layer=layer)
        elif tower in CLIP_PRESETS:
            vision = ClipVisionConfig(**CLIP_PRESETS[tower], feature_layer=layer)
        else:
            raise UnsupportedModelError(
                f"unknown mm_vision_tower {tower!r}; known: {', '.join(k for k in CLIP_PRESETS if '/' in k)} "
                "(or give a vision_config in config.json)"
            )
        if int(hf.get("mm_hidden_size", vision.hidden_size)) != vision.hidden_size:
            raise UnsupportedModelError(f"mm_hidden_size {hf['mm_hidden_size']} differs from the tower's {vision.hidden_size}")
        if hf.get("mm_use_im_start_end") or hf.get("mm_use_im_patch_token"):
            raise UnsupportedModelError("mm_use_im_start_end / mm_use_im_patch_token are not supported")
        projector = str(hf.get("mm_projector_type", "ldpnet"))
        projector = "ldpnetv2" if projector.startswith("ldpnetv2") else "ldpnet" if projector.startswith("ldpnet") else projector
        return cls(
            text=LlamaConfig.from_hf(hf),
            vision=vision,
            projector_type=projector,
            select_feature=hf.get("mm_vision_select_feature", "patch"),
            pad_to_square=hf.get("image_aspect_ratio", "pad") == "pad",
        )
