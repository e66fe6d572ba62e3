"""LLaVA processing: one CLIP-preprocessed tile per image, ``<image>`` repeated once per feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...processing.chat import ChatTemplate, find_chat_template
from ...processing.processor import ImageTiles, Processor, read_image_processor_config
from ...processing.tokenizer import Tokenizer
from ..clip.processing import ClipImageProcessor
from .config import LlavaConfig

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:").
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'text') %}{{ line['text'] }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{{ ' ' }}{% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class LlavaProcessor(Processor):
    supports_images = True
    structured_content = True
    default_chat_template = DEFAULT_CHAT_TEMPLATE

    def __init__(self, tokenizer: Tokenizer, chat_template: ChatTemplate | None, images: ClipImageProcessor,
                 tokens_per_tile: int, image_token: str = "<image>"):
        super().__init__(tokenizer, chat_template)
        self.images = images
        self.tokens_per_tile = tokens_per_tile
        self.image_token = image_token

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: LlavaConfig) -> "LlavaProcessor":
        tokenizer = Tokenizer.from_dir(model_dir)
        template = find_chat_template(model_dir, tokenizer.chat_template) or ChatTemplate(DEFAULT_CHAT_TEMPLATE, "llava default")
        images = ClipImageProcessor(read_image_processor_config(model_dir), model_config.vision.image_size)
        token = tokenizer.id_to_token(model_config.image_token_id) or "<image>"
        return cls(tokenizer, template, images, model_config.tokens_per_tile, token)

    def preprocess_image(self, image: np.ndarray) -> ImageTiles:
        return ImageTiles(self.images(image))

    def image_prompt(self, tiles: ImageTiles) -> str:
        return self.image_token * self.tokens_per_tile
