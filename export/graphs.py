"""Static-shape graphs of one model, shared by every exporter (contract 2 method names).

- :class:`VisionEncoderGraph`: pixels ``[N, 3, S, S]`` -> features ``[N, T_img, H]`` (projector included)
- :class:`TokenEmbeddingGraph`: ids ``[1, C]`` -> embeddings ``[1, C, H]``
- :class:`StepGraph`: the decoder step used for both ``prefill`` (C rows) and ``decode`` (1 row):
  ``(embeds [1, C, H], input_pos [C] int64, k_cache [L, Hkv, S, D], v_cache [L, Hkv, S, D])`` ->
  ``(logits [1, V] of the last row, k_cache, v_cache)``. The cache is an explicit input and output
  (functional), so the same graph runs in onnxruntime, TVM and ExecuTorch without hidden state; the
  runtime keeps the two cache tensors between calls. With ``targets [C]`` int64 as a fifth input the
  same graph is ``score``: ``(logprobs [C], k_cache, v_cache)``, the log-probability of each row's target.

The graphs wrap the eager model's own modules: a graph computes what the reference computes.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevlm.models.base import Model
from edgevlm.models.cache import remove_kv_cache


class _SlotCache:
    """One layer's cache for the duration of one graph call: reads the input, records the output."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v  # [1, Hkv, S, D]

    @property
    def max_context(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k = self.k.index_copy(2, input_pos, k.to(self.k.dtype))
        self.v = self.v.index_copy(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v


def cache_shape(model: Model, max_context: int) -> tuple[int, int, int, int]:
    cfg = model.language_model.config
    return (cfg.num_hidden_layers, cfg.num_key_value_heads, max_context, cfg.head_dim)


def score_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[i, targets[i]]`` for logits ``[C, V]``, targets ``[C]`` -> ``[C]``, in fp32.

    Written with max / exp / sum / log / gather, which every target's importer takes."""
    logits = logits.float()
    top = logits.amax(dim=-1, keepdim=True)
    lse = top + torch.log(torch.exp(logits - top).sum(dim=-1, keepdim=True))
    return (logits.gather(1, targets[:, None]) - lse)[:, 0]


class StepGraph(nn.Module):
    """The decoder step; a target changes how the cache is written through ``slot_class``.

    Without ``targets`` it is ``prefill`` / ``decode``: logits ``[1, V]`` of the last row. With
    ``targets [C]`` (the id that follows each row) it is ``score``: the log-probability ``[C]`` of
    each target, teacher-forced, for perplexity."""

    slot_class = _SlotCache

    def __init__(self, model: Model):
        super().__init__()
        remove_kv_cache(model)
        self.lm = model.language_model
        self.attn = [layer.self_attn for layer in self.lm.layers]

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                targets: torch.Tensor | None = None):
        slots = [self.slot_class(k_cache[i:i + 1], v_cache[i:i + 1]) for i in range(len(self.attn))]
        try:
            for a, s in zip(self.attn, slots, strict=True):
                a.kv_cache = s
            hidden = self.lm.hidden_states(embeds, input_pos)
        finally:
            for a in self.attn:
                a.kv_cache = None
        k, v = torch.cat([s.k for s in slots]), torch.cat([s.v for s in slots])
        if targets is None:
            return self.lm.lm_head(hidden[:, -1]), k, v
        return score_targets(self.lm.lm_head(hidden[0]), targets), k, v


class TokenEmbeddingGraph(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.embed_tokens = model.language_model.embed_tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)


class VisionEncoderGraph(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixel_values)


def example_inputs(model: Model, method: str, chunk_size: int, max_context: int, image_size: int | None = None):
    """Example arguments of a method, with the static shapes it is exported at."""
    h = model.language_model.config.hidden_size
    if method == "vision_encoder":
        return (torch.zeros(1, 3, image_size, image_size),)
    if method == "token_embedding":
        return (torch.zeros(1, chunk_size, dtype=torch.long),)
    rows = 1 if method == "decode" else chunk_size
    shape = cache_shape(model, max_context)
    step = (torch.zeros(1, rows, h), torch.arange(rows, dtype=torch.long), torch.zeros(shape), torch.zeros(shape))
    return (*step, torch.zeros(rows, dtype=torch.long)) if method == "score" else step
