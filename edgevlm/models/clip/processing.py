"""CLIP-style image preprocessing (LLaVA-1.5, MobileVLM): optional pad to square with the mean
color, resize of the shortest edge, center crop, normalize. One tile per image."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...processing.chat import ChatTemplate
from ...processing.image import (
    center_crop,
    expand_to_square,
    normalize,
    resample_filter,
    resize,
)
from ...processing.processor import ImageTiles, Processor
from ...processing.tokenizer import Tokenizer

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ClipImageProcessor:
    def __init__(self, cfg: dict[str, Any], image_size: int, pad_to_square: bool = False):
        size = cfg.get("size") or {"shortest_edge": image_size}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = cfg.get("crop_size") or {"height": image_size, "width": image_size}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        self.shortest_edge = size.get("shortest_edge")
        self.size_hw = (size.get("height"), size.get("width"))
        self.crop_hw = (int(crop["height"]), int(crop["width"]))
        self.do_resize = bool(cfg.get("do_resize", True))
        self.do_crop = bool(cfg.get("do_center_crop", True))
        self.pad_to_square = bool(cfg.get("do_pad", pad_to_square))
        self.resample = resample_filter(cfg.get("resample"), Image.Resampling.BICUBIC)
        self.mean = list(cfg.get("image_mean", OPENAI_CLIP_MEAN))
        self.std = list(cfg.get("image_std", OPENAI_CLIP_STD))
        self.rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        if not cfg.get("do_normalize", True):
            self.mean, self.std = [0.0] * 3, [1.0] * 3

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.shortest_edge is None:
            return int(self.size_hw[0]), int(self.size_hw[1])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` -> float32 ``[1, 3, crop_h, crop_w]``."""
        if self.pad_to_square:
            image = expand_to_square(image, tuple(int(m * 255) for m in self.mean))
        if self.do_resize:
            image = resize(image, *self.output_size(*image.shape[:2]), self.resample)
        if self.do_crop:
            image = center_crop(image, *self.crop_hw)
        return normalize(image, self.mean, self.std, self.rescale)[None]


class SingleTileProcessor(Processor):
    """Processing for models that see each image as one CLIP-preprocessed tile (LLaVA, MobileVLM)."""

    supports_images = True
    structured_content = True

    def __init__(self, tokenizer: Tokenizer, chat_template: ChatTemplate | None, images: ClipImageProcessor,
                 tokens_per_tile: int):
        super().__init__(tokenizer, chat_template)
        self.images = images
        self.tokens_per_tile = tokens_per_tile

    def preprocess_image(self, image: np.ndarray) -> ImageTiles:
        return ImageTiles(self.images(image))
