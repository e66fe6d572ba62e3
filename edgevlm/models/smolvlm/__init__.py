"""SmolVLM / Idefics3: SigLIP encoder, pixel-shuffle connector, Llama decoder, image splitting."""

from .config import SmolVLMConfig
from .model import SmolVLMForConditionalGeneration
from .processing import SmolVLMProcessor

__all__ = ["SmolVLMConfig", "SmolVLMForConditionalGeneration", "SmolVLMProcessor"]

MODEL = SmolVLMForConditionalGeneration
PROCESSOR = SmolVLMProcessor
