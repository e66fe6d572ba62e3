"""Llama-family text decoder: SmolLM2, Llama 2/3, MobileLLaMA, TinyLlama, llama2.c models."""

from .config import LlamaConfig, RopeConfig, preset
from .language import LlamaDecoder
from .model import LlamaForCausalLM

__all__ = ["LlamaConfig", "RopeConfig", "LlamaDecoder", "LlamaForCausalLM", "preset"]

from ...processing.processor import Processor as _TextProcessor  # noqa: E402

MODEL = LlamaForCausalLM
PROCESSOR = _TextProcessor
