"""Static KV cache: fixed-size buffers written at absolute positions (contract 3).

The eager models run without a cache. :func:`use_static_kv_cache` swaps a :class:`KVCache` into
every decoder attention layer; from then on the decoder takes a chunk of embeddings with their
absolute positions, writes the chunk's keys and values at those positions and attends over the
whole buffer with a mask derived from positions alone (key slot ``j`` is visible to a query at
position ``p`` iff ``j <= p``). Rows of a chunk may come in any order, so a padded chunk can put
its padding first and its last valid token last.
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values of one attention layer: ``[B, kv_heads, max_context, head_dim]`` each."""

    def __init__(self, kv_heads: int, max_context: int, head_dim: int, dtype: torch.dtype = torch.float32, batch: int = 1):
        super().__init__()
        shape = (batch, kv_heads, max_context, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    @property
    def max_context(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v [B, kv_heads, T, head_dim]`` at positions ``[T]``; return the full buffers."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v


def use_static_kv_cache(model: nn.Module, max_context: int, dtype: torch.dtype = torch.float32, batch: int = 1) -> nn.Module:
    """Give every attention layer with a ``kv_cache`` slot a fresh static cache of ``max_context``."""
    found = 0
    for module in model.modules():
        if hasattr(module, "kv_cache") and hasattr(module, "num_key_value_heads"):
            param = next(module.parameters())
            module.kv_cache = KVCache(module.num_key_value_heads, max_context, module.head_dim, dtype, batch).to(param.device)
            found += 1
    if not found:
        raise ValueError("model has no attention layers that take a KV cache")
    return model


def remove_kv_cache(model: nn.Module) -> nn.Module:
    """Back to the eager, cache-free model."""
    for module in model.modules():
        if isinstance(getattr(module, "kv_cache", None), KVCache):
            module.kv_cache = None
    return model


def kv_cache_context(model: nn.Module) -> int | None:
    """The static cache size installed in ``model``, None if it runs without a cache."""
    for module in model.modules():
        if isinstance(module, KVCache):
            return module.max_context
    return None
