"""MobileVLM processing: pad to square with the mean color, CLIP preprocessing, and the original
prompt splice: the prompt is split at ``<image>``, each piece tokenized on its own (one BOS kept
at the front), and each image takes ``tokens_per_tile`` virtual positions (id -200)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...processing.image import ImageLike, load_image
from ...processing.processor import ImageTiles, ModelInputs, read_image_processor_config
from ..clip.processing import ClipImageProcessor, SingleTileProcessor
from .config import IMAGE_TOKEN_INDEX, MobileVLMConfig

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# MobileVLM's "v1" conversation: "{system} USER: <image>\n{prompt} ASSISTANT:"
DEFAULT_CHAT_TEMPLATE = (
    '{{ "' + SYSTEM + ' " }}'
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{{ ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{{ '</s>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class MobileVLMProcessor(SingleTileProcessor):
    default_chat_template = DEFAULT_CHAT_TEMPLATE
    image_token_id = IMAGE_TOKEN_INDEX

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: MobileVLMConfig) -> "MobileVLMProcessor":
        images = ClipImageProcessor(read_image_processor_config(model_dir), model_config.vision.image_size,
                                    pad_to_square=model_config.pad_to_square)
        return cls(*cls.text_parts(model_dir), images, model_config.tokens_per_tile)

    def image_prompt(self, tiles: ImageTiles) -> str:
        return ""  # images are spliced in as ids, not text

    def image_token_count(self, height: int, width: int) -> tuple[int, int]:
        return 1, self.tokens_per_tile

    def __call__(self, text: str, images: Sequence[ImageLike] = ()) -> ModelInputs:
        pieces = text.split(self.image_token)
        if len(pieces) - 1 != len(images):
            raise InputError(f"the prompt has {len(pieces) - 1} image placeholders ({self.image_token}) "
                             f"but {len(images)} images were given")
        bos = self.tokenizer.bos_id
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            chunk = self.tokenizer.encode(piece)
            if i > 0:
                if chunk[:1] == [bos]:
                    chunk = chunk[1:]
                ids += [self.image_token_id] * self.tokens_per_tile
            ids += chunk
        if not images:
            return ModelInputs(ids)
        pixels = [self.preprocess_image(load_image(im)).pixel_values for im in images]
        return ModelInputs(ids, np.concatenate(pixels), [1] * len(images))
