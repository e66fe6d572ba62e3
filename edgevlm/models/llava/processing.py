"""LLaVA processing: one CLIP-preprocessed tile per image, ``<image>`` repeated once per feature."""

from __future__ import annotations

from pathlib import Path

from ...processing.processor import ImageTiles, read_image_processor_config
from ..clip.processing import ClipImageProcessor, SingleTileProcessor
from .config import LlavaConfig

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:").
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'text') %}{{ line['text'] }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{{ ' ' }}{% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class LlavaProcessor(SingleTileProcessor):
    """``<image>`` repeated once per image feature."""

    default_chat_template = DEFAULT_CHAT_TEMPLATE

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: LlavaConfig) -> "LlavaProcessor":
        images = ClipImageProcessor(read_image_processor_config(model_dir), model_config.vision.image_size)
        proc = cls(*cls.text_parts(model_dir), images, model_config.tokens_per_tile)
        proc.image_token = proc.tokenizer.id_to_token(model_config.image_token_id) or "<image>"
        return proc

    def image_prompt(self, tiles: ImageTiles) -> str:
        return self.image_token * self.tokens_per_tile
