"""LLaVA-1.5 style: CLIP (or SigLIP) vision tower, 2-layer MLP projector, Llama decoder."""

from .config import LlavaConfig
from .model import LlavaForConditionalGeneration
from .processing import LlavaProcessor

MODEL = LlavaForConditionalGeneration
PROCESSOR = LlavaProcessor

__all__ = ["LlavaConfig", "LlavaForConditionalGeneration", "LlavaProcessor"]
