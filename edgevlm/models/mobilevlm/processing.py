"""MobileVLM processing: pad to square with the mean color, CLIP preprocessing, and the original
prompt splice: the prompt is split at ``<image>``, each piece tokenized on its own (one BOS kept
at the front), and each image takes ``tokens_per_tile`` virtual positions (id -200)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...processing.chat import ChatTemplate, find_chat_template
from ...processing.image import ImageLike, load_image
from ...processing.processor import ImageTiles, ModelInputs, Processor, read_image_processor_config
from ...processing.tokenizer import Tokenizer
from ..clip.processing import ClipImageProcessor
from .config import MobileVLMConfig

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


class MobileVLMProcessor(Processor):
    supports_images = True
    structured_content = True
    default_chat_template = DEFAULT_CHAT_TEMPLATE

    def __init__(self, tokenizer: Tokenizer, chat_template: ChatTemplate | None, images: ClipImageProcessor,
                 tokens_per_tile: int, image_token_id: int):
        super().__init__(tokenizer, chat_template)
        self.images = images
        self.tokens_per_tile = tokens_per_tile
        self.image_token_id = image_token_id

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: MobileVLMConfig) -> "MobileVLMProcessor":
        tokenizer = Tokenizer.from_dir(model_dir)
        template = find_chat_template(model_dir, tokenizer.chat_template) or ChatTemplate(DEFAULT_CHAT_TEMPLATE, "mobilevlm default")
        images = ClipImageProcessor(read_image_processor_config(model_dir), model_config.vision.image_size,
                                    pad_to_square=model_config.pad_to_square)
        return cls(tokenizer, template, images, model_config.tokens_per_tile, model_config.image_token_id)

    def preprocess_image(self, image: np.ndarray) -> ImageTiles:
        return ImageTiles(self.images(image))

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
