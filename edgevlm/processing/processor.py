"""From a user's text and images to model inputs: chat template, image tiles, prompt token ids.

Each family subclasses :class:`Processor` with its image preprocessing and its expansion of one
image placeholder into the image-token string the model was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import read_json
from .chat import ChatTemplate, Message, find_chat_template, user_message
from .image import ImageLike, load_image
from .tokenizer import Tokenizer


MAX_IMAGES_PER_TURN = 4  # the chat format a bundle records covers up to this many images in one turn


@dataclass
class ImageTiles:
    """One preprocessed image: encoder tiles and how they were laid out."""

    pixel_values: np.ndarray  # [tiles, 3, S, S] float32
    rows: int = 0  # split grid (0 x 0 when the image was not split)
    cols: int = 0


@dataclass
class ModelInputs:
    input_ids: list[int]
    pixel_values: np.ndarray | None = None  # [total_tiles, 3, S, S] float32, every image in order
    tiles_per_image: list[int] = field(default_factory=list)


def read_image_processor_config(model_dir: Path) -> dict[str, Any]:
    """Image processor settings: ``preprocessor_config.json`` or the nested ``image_processor``
    of ``processor_config.json`` (transformers 5 layout)."""
    model_dir = Path(model_dir)
    flat = read_json(model_dir / "preprocessor_config.json")
    if flat is not None:
        return flat
    nested = (read_json(model_dir / "processor_config.json") or {}).get("image_processor")
    return nested if isinstance(nested, dict) else {}


def read_processor_config(model_dir: Path) -> dict[str, Any]:
    return read_json(Path(model_dir) / "processor_config.json") or {}


class Processor:
    """Text-only processing: chat template and tokenizer. VLM families extend it with images."""

    image_token = "<image>"
    supports_images = False
    default_chat_template: str | None = None  # used when the checkpoint has none
    structured_content = False  # message content as a list of typed parts (VLM templates)

    def __init__(self, tokenizer: Tokenizer, chat_template: ChatTemplate | None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def from_dir(cls, model_dir: Path, model_config: Any) -> "Processor":
        return cls(*cls.text_parts(model_dir))

    @classmethod
    def text_parts(cls, model_dir: Path) -> tuple[Tokenizer, ChatTemplate | None]:
        """The checkpoint's tokenizer and chat template (the family's default template if it has none)."""
        tokenizer = Tokenizer.from_dir(model_dir)
        template = find_chat_template(model_dir, tokenizer.chat_template)
        if template is None and cls.default_chat_template is not None:
            template = ChatTemplate(cls.default_chat_template, f"{cls.__name__} default")
        return tokenizer, template

    # --- images ---------------------------------------------------------------------------
    def preprocess_image(self, image: np.ndarray) -> ImageTiles:
        raise InputError("this model takes no images")

    def image_prompt(self, tiles: ImageTiles) -> str:
        """The text that replaces one image placeholder."""
        raise InputError("this model takes no images")

    def layout(self, height: int, width: int) -> tuple[int, int]:
        """Split grid (rows, cols) for an image of this size; (0, 0) when not split."""
        return 0, 0

    def image_token_count(self, height: int, width: int) -> tuple[int, int]:
        """(encoder tiles, prompt tokens) that one image of ``height x width`` costs."""
        rows, cols = self.layout(height, width)
        tiles = rows * cols + 1 if rows else 1
        text = self.image_prompt(ImageTiles(np.empty((tiles, 0)), rows, cols))
        return tiles, len(self.tokenizer.encode(text, add_special_tokens=False))

    # --- prompts --------------------------------------------------------------------------
    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """Messages through the chat template (plain concatenation of texts when there is none)."""
        if self.chat_template is None:
            return "".join(_message_text(m) for m in messages)
        tok = self.tokenizer
        return self.chat_template.render(
            messages, add_generation_prompt, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "",
            unk_token=tok.unk_token or "", pad_token=tok.pad_token or "",
        )

    def chat_prompt(self, text: str, n_images: int = 0) -> str:
        """A one-turn user prompt with ``n_images`` image placeholders, through the chat template."""
        if self.chat_template is None:
            return self.image_token * n_images + text
        return self.render([user_message(text, n_images, self.structured_content)])

    def chat_format(self, max_images: int = MAX_IMAGES_PER_TURN) -> dict[str, Any] | None:
        """The chat template reduced to the pieces a runtime without Jinja concatenates.

        Rendering a user turn with ``n`` images and the text T gives ``first[n] + T + tail`` for the
        first turn, and ``next[n] + T + tail`` appended after the assistant's reply for later turns
        (``next`` starts with what closes the reply, e.g. the end-of-turn marker). Image
        placeholders stay as ``image_token``; the runtime expands them. None when the model has no
        template (prompts are taken as they are) or the template is not of this shape.
        """
        if self.chat_template is None:
            return None
        s1, s2, s3 = "\x01", "\x02", "\x03"
        first, nxt, tails = {}, {}, set()
        for n in range(max_images + 1 if self.supports_images else 1):
            one = self.render([user_message(s1, n, self.structured_content)])
            two = self.render([user_message(s1, 0, self.structured_content),
                               {"role": "assistant", "content": [{"type": "text", "text": s2}] if self.structured_content else s2},
                               user_message(s3, n, self.structured_content)])
            if one.count(s1) != 1 or two.count(s2) != 1 or two.count(s3) != 1:
                return None
            head, tail = one.split(s1)
            between, tail2 = two.split(s2)[1].split(s3)
            first[str(n)], nxt[str(n)] = head, between
            tails |= {tail, tail2}
        if len(tails) != 1:
            return None
        return {"image_token": self.image_token, "first": first, "next": nxt, "tail": tails.pop(),
                "max_images": max_images if self.supports_images else 0}

    def __call__(self, text: str, images: Sequence[ImageLike] = ()) -> ModelInputs:
        """Tokenize ``text`` whose image placeholders (one per image) are expanded to image tokens."""
        if not self.supports_images:
            if images:
                raise InputError("this is a text-only model: it takes no images")
            return ModelInputs(self.tokenizer.encode(text))
        n_placeholders = text.count(self.image_token)
        if n_placeholders != len(images):
            raise InputError(
                f"the prompt has {n_placeholders} image placeholders ({self.image_token}) but {len(images)} images were given"
            )
        if not images:
            return ModelInputs(self.tokenizer.encode(text))
        processed = [self.preprocess_image(load_image(im)) for im in images]
        parts = text.split(self.image_token)
        expanded = parts[0] + "".join(self.image_prompt(t) + rest for t, rest in zip(processed, parts[1:]))
        return ModelInputs(
            self.tokenizer.encode(expanded),
            np.concatenate([t.pixel_values for t in processed]),
            [t.pixel_values.shape[0] for t in processed],
        )


def _message_text(message: Message) -> str:
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")
