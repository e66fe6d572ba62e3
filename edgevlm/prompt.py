"""A whole conversation as prompt token ids, and how much of it a session's KV cache already holds.

An OpenAI-style client sends every message of a conversation with each request. A server turns
them into one :class:`Prompt`: the ids a session holds after prefilling the conversation (the chat
template's pieces, image rows laid out, each assistant reply as the ids that were generated for it
when known), and :meth:`edgevlm.sdk.Session.stream_prompt` keeps the longest prefix of it that the
session's cache already holds, so a conversation that grows by one turn costs one turn's prefill.

Rows are compared by *key*: a text row's key is its id; an image row's key also carries a digest
of its turn's pictures, so two different pictures of the same size (same ids) never match. A
prefix never ends inside a turn's image rows: it is cut back to the turn's first image row and
those images are encoded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import InputError

Key = Any  # int (a text row's id) or tuple[int, bytes] (an image row: id, digest of its turn's images)


@dataclass(frozen=True)
class Turn:
    """One message: a user's text and pictures, or an assistant's reply."""

    role: str  # "user" | "assistant"
    text: str = ""
    images: tuple[np.ndarray, ...] = ()  # user turns: RGB uint8 [H, W, 3]
    ids: tuple[int, ...] | None = None  # assistant turns: the ids generated for `text`, when known


@dataclass
class ImageGroup:
    """One turn's pictures and the rows from its first to its last image row, [begin, end)."""

    begin: int
    end: int
    images: list[np.ndarray]


@dataclass
class Prompt:
    ids: list[int]
    keys: list[Key]  # [len(ids)]
    groups: list[ImageGroup] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class PromptModel(Protocol):
    """What building a prompt needs of a model (edgevlm.sdk.Model has it)."""

    image_token_id: int | None

    def turn_ids(self, text: str, image_sizes: Sequence[tuple[int, int]], first: bool) -> list[int]: ...
    def tokenize(self, text: str) -> list[int]: ...


def image_digest(images: Sequence[np.ndarray]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for im in images:
        a = np.ascontiguousarray(im)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


def build_prompt(model: PromptModel, turns: Sequence[Turn]) -> Prompt:
    """The prompt of a conversation: user and assistant turns alternating, from a user turn to a user turn."""
    if not turns:
        raise InputError("the conversation has no messages")
    ids: list[int] = []
    keys: list[Key] = []
    groups: list[ImageGroup] = []
    image_id = model.image_token_id
    for i, turn in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if turn.role != want:
            raise InputError(f"message {i}: expected a {want} message (user and assistant messages alternate, "
                             f"starting and ending with a user message), got {turn.role}")
        if turn.role == "assistant":
            part = list(turn.ids) if turn.ids is not None else model.tokenize(turn.text)
            ids += part
            keys += part
            continue
        sizes = [(int(im.shape[1]), int(im.shape[0])) for im in turn.images]
        part = model.turn_ids(turn.text, sizes, i == 0)
        start = len(ids)
        ids += part
        if not turn.images:
            keys += part
            continue
        digest = image_digest(turn.images)
        rows = [start + j for j, t in enumerate(part) if t == image_id]
        if not rows:
            raise InputError(f"message {i}: its images got no image rows in the prompt")
        keys += [(t, digest) if t == image_id else t for t in part]
        groups.append(ImageGroup(rows[0], rows[-1] + 1, list(turn.images)))
    if turns[-1].role != "user":
        raise InputError("the last message must be a user message")
    return Prompt(ids, keys, groups)


def reusable_prefix(cached: Sequence[Key], prompt: Prompt) -> int:
    """Rows of ``prompt`` that a cache holding ``cached`` (keys, in order) can keep.

    At least the prompt's last row is always prefilled again (its logits start the reply), and a
    prefix ending inside a turn's image rows is cut back to the turn's first image row.
    """
    n = 0
    limit = min(len(cached), len(prompt.keys) - 1)
    while n < limit and cached[n] == prompt.keys[n]:
        n += 1
    for g in prompt.groups:
        if g.begin < n < g.end:
            n = g.begin
    return max(n, 0)


def images_after(prompt: Prompt, n: int) -> list[np.ndarray]:
    """The pictures whose rows lie at or after row ``n`` (a prefix length from reusable_prefix)."""
    return [im for g in prompt.groups if g.begin >= n for im in g.images]


__all__ = ["ImageGroup", "Prompt", "Turn", "build_prompt", "image_digest", "images_after", "reusable_prefix"]
