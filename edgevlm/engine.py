"""What a backend must provide to generate, and the chunked-prefill plan every backend shares.

A backend is an :class:`Engine`: it embeds tokens, encodes images, runs static prefill chunks of
``chunk_size`` rows and single-row decode steps against its own KV cache. The orchestration (which
rows go into which chunk at which positions) is written once here, so the PyTorch reference, the
exported graphs and the native runtime all follow the same plan.

Chunk plan for a prompt of ``n`` rows starting at position ``start``: full chunks of C rows in
order; a shorter last chunk is padded at its *front* with zero rows placed at the free positions
just after the prompt, so the chunk's last row is always the prompt's last token (whose logits the
prefill returns) and padding is never visible to real tokens (the mask is position-based). When
a padded chunk would run past the context, the last rows go through single-row steps instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .errors import InputError
from .models.base import Model
from .models.cache import use_static_kv_cache


@dataclass(frozen=True)
class Chunk:
    """Rows ``[begin, end)`` of the prompt, run as one step of ``size`` rows."""

    begin: int
    end: int
    size: int  # rows in the static step: chunk size C, or 1 for a single-row step
    positions: tuple[int, ...]  # one per row of the step, padding rows first

    @property
    def pad(self) -> int:
        return self.size - (self.end - self.begin)


def plan_chunks(n: int, start: int, chunk_size: int, max_context: int) -> list[Chunk]:
    """Split ``n`` prompt rows at absolute positions ``start..start+n-1`` into static steps."""
    if chunk_size < 1:
        raise InputError(f"chunk size must be >= 1, got {chunk_size}")
    if start + n > max_context:
        raise InputError(
            f"prompt of {n} tokens starting at position {start} does not fit the context of {max_context} tokens"
        )
    plan: list[Chunk] = []
    row = 0
    while row < n:
        left = n - row
        pos = start + row
        if left >= chunk_size:
            plan.append(Chunk(row, row + chunk_size, chunk_size, tuple(range(pos, pos + chunk_size))))
            row += chunk_size
        elif pos + chunk_size <= max_context:
            pad = tuple(range(pos + left, pos + chunk_size))
            plan.append(Chunk(row, n, chunk_size, pad + tuple(range(pos, pos + left))))
            row = n
        else:
            plan.extend(Chunk(r, r + 1, 1, (start + r,)) for r in range(row, n))
            row = n
    return plan


class Engine(Protocol):
    """One backend's compute. Arrays are numpy float32 / int64; batch size is 1."""

    chunk_size: int
    max_context: int
    tokens_per_tile: int

    def embed(self, ids: np.ndarray) -> np.ndarray: ...  # [T] -> [1, T, H]
    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray: ...  # [N, 3, S, S] -> [N, T_img, H]
    def prefill(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray: ...  # [1, C, H], [C] -> [V]
    def decode(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray: ...  # [1, 1, H], [1] -> [V]
    def reset(self) -> None: ...


@dataclass
class PrefillTimings:
    chunks_ms: list[float] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(self.chunks_ms)


def run_prefill(engine: Engine, embeds: np.ndarray, start: int, timings: PrefillTimings | None = None) -> np.ndarray:
    """Feed prompt embeddings ``[1, n, H]`` at positions ``start..`` in planned steps; last logits ``[V]``."""
    n = embeds.shape[1]
    logits = None
    for chunk in plan_chunks(n, start, engine.chunk_size, engine.max_context):
        rows = embeds[:, chunk.begin:chunk.end]
        if chunk.pad:
            rows = np.concatenate([np.zeros((1, chunk.pad, rows.shape[2]), rows.dtype), rows], axis=1)
        positions = np.asarray(chunk.positions, dtype=np.int64)
        t0 = time.perf_counter()
        logits = engine.prefill(rows, positions) if chunk.size > 1 else engine.decode(rows, positions)
        if timings is not None:
            timings.chunks_ms.append((time.perf_counter() - t0) * 1e3)
    if logits is None:
        raise InputError("empty prompt: nothing to prefill")
    return logits


def merge_image_features(embeds: np.ndarray, ids: np.ndarray, image_token_id: int | None, features: np.ndarray | None) -> np.ndarray:
    """Scatter image features ``[N, T_img, H]`` into the image-token rows of ``embeds [1, T, H]``."""
    slots = np.flatnonzero(ids == image_token_id) if image_token_id is not None else np.zeros(0, dtype=np.int64)
    n_features = 0 if features is None else features.shape[0] * features.shape[1]
    if len(slots) != n_features:
        raise InputError(f"the prompt has {len(slots)} image tokens but the images give {n_features} features")
    if n_features:
        embeds = embeds.copy()
        embeds[0, slots] = features.reshape(n_features, -1)
    return embeds


class TorchEngine:
    """The PyTorch reference backend: an edgevlm model with a static KV cache."""

    def __init__(self, model: Model, max_context: int, chunk_size: int = 64, kv_dtype: torch.dtype = torch.float32):
        if chunk_size > max_context:
            raise InputError(f"chunk size {chunk_size} is larger than the context {max_context}")
        self.model = use_static_kv_cache(model, max_context, kv_dtype)
        self.chunk_size = chunk_size
        self.max_context = max_context
        self.tokens_per_tile = model.tokens_per_tile
        self.image_token_id = model.image_token_id
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def embed(self, ids: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        vocab = self.model.language_model.embed_tokens.num_embeddings
        ids = torch.where((ids >= 0) & (ids < vocab), ids, 0)  # virtual image ids get features later
        return self.model.language_model.embed_tokens(ids[None]).float().numpy()

    @torch.inference_mode()
    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.model.encode_images(torch.from_numpy(pixel_values).to(self.dtype)).float().numpy()

    @torch.inference_mode()
    def prefill(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        logits = self.model.prefill(torch.from_numpy(embeds).to(self.dtype), torch.from_numpy(positions))
        return logits[0].float().numpy()

    @torch.inference_mode()
    def decode(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        logits = self.model.decode(torch.from_numpy(embeds).to(self.dtype), torch.from_numpy(positions))
        return logits[0].float().numpy()

    def reset(self) -> None:
        for module in self.model.modules():
            if hasattr(module, "kv_cache") and module.kv_cache is not None:
                module.kv_cache.k.zero_()
                module.kv_cache.v.zero_()
