"""Text-only Llama-family causal LM (SmolLM2, Llama 2/3, MobileLLaMA, TinyLlama, stories260K)."""

from __future__ import annotations

from typing import Any

from ..base import Model
from .config import LlamaConfig
from .language import LlamaDecoder


class LlamaForCausalLM(Model):
    family = "llama"
    PREFIXES = (("model.", "language_model."), ("lm_head.", "language_model.lm_head."))

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.language_model = LlamaDecoder(config)

    @staticmethod
    def config_from_hf(hf: dict[str, Any]) -> LlamaConfig:
        return LlamaConfig.from_hf(hf)
