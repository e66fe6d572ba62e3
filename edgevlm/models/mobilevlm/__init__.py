"""MobileVLM v1/v2: CLIP ViT, LDP / LDPv2 projector, MobileLLaMA decoder."""

from .config import MobileVLMConfig
from .model import MobileVLMForCausalLM
from .processing import MobileVLMProcessor

MODEL = MobileVLMForCausalLM
PROCESSOR = MobileVLMProcessor

__all__ = ["MobileVLMConfig", "MobileVLMForCausalLM", "MobileVLMProcessor"]
