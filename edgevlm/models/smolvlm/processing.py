"""SmolVLM / Idefics3 processing: image splitting, image-token layout, chat template.

An image is resized so its longest edge is ``size.longest_edge``, then (with splitting on) to
multiples of the encoder size S, cut into an R x C grid of S x S tiles, and followed by a global
tile: the whole image resized to S x S. Its prompt text is, per tile row,
``<fake_token_around_image><row_r_col_c><image>*T`` for each column then a newline, and after the
grid ``\\n<fake_token_around_image><global-img><image>*T<fake_token_around_image>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import CheckpointError
from ...processing.chat import ChatTemplate
from ...processing.image import normalize, resample_filter, resize
from ...processing.processor import (
    ImageTiles,
    Processor,
    read_image_processor_config,
    read_processor_config,
)
from ...processing.tokenizer import Tokenizer
from .config import SmolVLMConfig

MAX_IMAGE_SIDE = 4096

DEFAULT_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def longest_edge_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """Size with the longest edge at ``longest``, the other scaled (truncated, rounded up to even)."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    # and never above the absolute maximum side
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIDE:
        width, height = MAX_IMAGE_SIDE, int(MAX_IMAGE_SIDE / aspect)
    elif height > width and height > MAX_IMAGE_SIDE:
        height, width = MAX_IMAGE_SIDE, int(MAX_IMAGE_SIDE * aspect)
    return max(height, 1), max(width, 1)


def grid_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """Size rounded up to multiples of ``tile`` (the longer side first, as Idefics3 does)."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return height, width


class SmolVLMProcessor(Processor):
    supports_images = True
    structured_content = True
    default_chat_template = DEFAULT_CHAT_TEMPLATE

    def __init__(self, tokenizer: Tokenizer, chat_template: ChatTemplate | None, image_config: dict[str, Any],
                 tokens_per_tile: int, tile_size: int):
        super().__init__(tokenizer, chat_template)
        cfg = image_config
        self.tokens_per_tile = tokens_per_tile
        self.tile_size = int((cfg.get("max_image_size") or {}).get("longest_edge", tile_size))
        self.longest_edge = int((cfg.get("size") or {}).get("longest_edge", 4 * self.tile_size))
        self.do_resize = bool(cfg.get("do_resize", True))
        self.do_split = bool(cfg.get("do_image_splitting", True))
        self.resample = resample_filter(cfg.get("resample"), Image.Resampling.LANCZOS)
        self.mean = list(cfg.get("image_mean", [0.5, 0.5, 0.5]))
        self.std = list(cfg.get("image_std", [0.5, 0.5, 0.5]))
        self.rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        if not cfg.get("do_normalize", True):
            self.mean, self.std = [0.0] * 3, [1.0] * 3

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: SmolVLMConfig) -> "SmolVLMProcessor":
        proc = cls(*cls.text_parts(model_dir), read_image_processor_config(model_dir), model_config.tokens_per_tile,
                   model_config.vision.image_size)
        seq_len = read_processor_config(model_dir).get("image_seq_len")
        if seq_len is not None and int(seq_len) != model_config.tokens_per_tile:
            raise CheckpointError(
                f"{model_dir}: processor image_seq_len {seq_len} disagrees with the model's "
                f"{model_config.tokens_per_tile} tokens per tile"
            )
        if proc.tile_size != model_config.vision.image_size:
            raise CheckpointError(
                f"{model_dir}: max_image_size {proc.tile_size} differs from the vision encoder's image_size "
                f"{model_config.vision.image_size}"
            )
        return proc

    def split_grid(self, height: int, width: int) -> tuple[int, int]:
        """Tile rows and columns of an image already resized to multiples of the tile (0, 0: no split)."""
        s = self.tile_size
        return (height // s, width // s) if height > s or width > s else (0, 0)

    def layout(self, height: int, width: int) -> tuple[int, int]:
        """Tile rows and columns for an input image of ``height x width``."""
        if not self.do_split:
            return 0, 0
        if self.do_resize:
            height, width = longest_edge_size(height, width, self.longest_edge)
        return self.split_grid(*grid_size(height, width, self.tile_size))

    def preprocess_image(self, image: np.ndarray) -> ImageTiles:
        s = self.tile_size
        if self.do_resize:
            image = resize(image, *longest_edge_size(*image.shape[:2], self.longest_edge), self.resample)
        rows = cols = 0
        if self.do_split:
            image = resize(image, *grid_size(*image.shape[:2], s), self.resample)
            rows, cols = self.split_grid(*image.shape[:2])
            if rows:
                tiles = [image[r * s:(r + 1) * s, c * s:(c + 1) * s] for r in range(rows) for c in range(cols)]
                tiles.append(resize(image, s, s, self.resample))
            else:
                tiles = [image]
        else:
            tiles = [resize(image, s, s, self.resample)]
        pixels = np.stack([normalize(t, self.mean, self.std, self.rescale) for t in tiles])
        return ImageTiles(pixels, rows, cols)

    def image_prompt(self, tiles: ImageTiles) -> str:
        image = "<image>" * self.tokens_per_tile
        glob = f"<fake_token_around_image><global-img>{image}<fake_token_around_image>"
        if tiles.rows == 0:
            return glob
        grid = "".join(
            "".join(f"<fake_token_around_image><row_{r + 1}_col_{c + 1}>{image}" for c in range(tiles.cols)) + "\n"
            for r in range(tiles.rows)
        )
        return f"{grid}\n{glob}"
