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
    # a prefill chunk that also returns log p(targets[i] | rows up to i): [1, C, H], [C], [C] -> [C]
    def score(self, embeds: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray: ...
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


def score_chunks(n: int, chunk_size: int) -> list[Chunk]:
    """Static chunks of ``chunk_size`` rows covering prompt rows ``0..n-1`` from an empty cache, for scoring.

    Unlike :func:`plan_chunks`, no step is a single row (graphs export ``score`` at C rows only): a
    short last chunk instead re-runs the rows before it, so it ends at row ``n - 1`` (re-running a
    row writes the same keys and values at the same position, so the cache is unchanged), and
    only its new rows are scored. A prompt shorter than C is padded at the front with rows at the
    free positions after it, as :func:`plan_chunks` pads."""
    if chunk_size < 1:
        raise InputError(f"chunk size must be >= 1, got {chunk_size}")
    plan = []
    for row in range(0, n, chunk_size):
        end = min(row + chunk_size, n)
        if end - row == chunk_size:
            plan.append(Chunk(row, end, chunk_size, tuple(range(row, end))))
        elif n >= chunk_size:
            plan.append(Chunk(n - chunk_size, n, chunk_size, tuple(range(n - chunk_size, n))))
        else:
            plan.append(Chunk(0, n, chunk_size, tuple(range(n, chunk_size)) + tuple(range(n))))
    return plan


def run_score(engine: Engine, embeds: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Teacher-forced log-probabilities ``[n - 1]``: ``out[i] = log p(ids[i + 1] | ids[..i])``.

    ``embeds [1, n, H]`` are the rows of ``ids [n]``, run from an empty cache in
    :func:`score_chunks` steps through ``engine.score``."""
    n = embeds.shape[1]
    if n < 2:
        raise InputError("scoring needs at least two tokens")
    if n > engine.max_context:
        raise InputError(f"{n} tokens do not fit the context of {engine.max_context} tokens")
    ids = np.asarray(ids, dtype=np.int64)
    targets = np.zeros(n, dtype=np.int64)
    targets[:-1] = ids[1:]  # the last row's target is past the text: computed, never used
    out = np.zeros(n - 1, dtype=np.float64)
    done = 0  # rows scored so far
    for chunk in score_chunks(n, engine.chunk_size):
        rows, tgt = embeds[:, chunk.begin:chunk.end], targets[chunk.begin:chunk.end]
        if chunk.pad:
            rows = np.concatenate([np.zeros((1, chunk.pad, rows.shape[2]), rows.dtype), rows], axis=1)
            tgt = np.concatenate([np.zeros(chunk.pad, np.int64), tgt])
        logprobs = engine.score(rows, np.asarray(chunk.positions, dtype=np.int64), tgt)[chunk.pad:]
        new = logprobs[done - chunk.begin:]  # an overlapping last chunk: only the rows not scored yet
        keep = min(len(new), n - 1 - done)
        out[done:done + keep] = new[:keep]
        done = chunk.end
    return out


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
        self.vocab_size = model.language_model.config.vocab_size
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

    @torch.inference_mode()
    def score(self, embeds: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        lm = self.model.language_model
        hidden = lm.hidden_states(torch.from_numpy(embeds).to(self.dtype), torch.from_numpy(positions))
        logits = lm.lm_head(hidden[0]).float()
        return torch.log_softmax(logits, dim=-1).gather(1, torch.from_numpy(targets)[:, None])[:, 0].numpy()

    def reset(self) -> None:
        for module in self.model.modules():
            if hasattr(module, "kv_cache") and module.kv_cache is not None:
                module.kv_cache.k.zero_()
                module.kv_cache.v.zero_()
