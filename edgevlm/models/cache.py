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


class Int8KVCache(nn.Module):
    """An int8 KV cache: every key and value vector (one token, one head) has its own scale.

    ``k, v int8 [B, kv_heads, max_context, head_dim]``, scales ``float [B, kv_heads, max_context, 1]``;
    a vector is stored as ``round(x / s)`` with ``s = max|x| / 127`` and read back as ``q * s``.
    """

    def __init__(self, kv_heads: int, max_context: int, head_dim: int, dtype: torch.dtype = torch.float32, batch: int = 1):
        super().__init__()
        shape = (batch, kv_heads, max_context, head_dim)
        self.dtype = dtype
        for name in ("k", "v"):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.int8), persistent=False)
            self.register_buffer(f"{name}_scale", torch.zeros(shape[:3] + (1,), dtype=torch.float32), persistent=False)

    @property
    def max_context(self) -> int:
        return self.k.shape[2]

    @staticmethod
    def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = x.float().abs().amax(-1, keepdim=True) / 127
        q = torch.round(x.float() / scale.clamp(min=1e-12)).clamp(-127, 127)
        return q.to(torch.int8), scale

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for name, x in (("k", k), ("v", v)):
            q, s = self.quantize(x)
            getattr(self, name).index_copy_(2, input_pos, q)
            getattr(self, f"{name}_scale").index_copy_(2, input_pos, s)
            out.append((getattr(self, name).float() * getattr(self, f"{name}_scale")).to(self.dtype))
        return out[0], out[1]


KV_CACHE_KINDS = {"float": KVCache, "int8": Int8KVCache}


def use_static_kv_cache(model: nn.Module, max_context: int, dtype: torch.dtype = torch.float32, batch: int = 1,
                        kind: str | None = None) -> nn.Module:
    """Give every attention layer with a ``kv_cache`` slot a fresh static cache of ``max_context``.

    ``kind`` is ``float`` or ``int8``; by default the model's own (its quantization recipe's) choice.
    """
    kind = kind or getattr(model, "kv_cache_quant", "float")
    if kind not in KV_CACHE_KINDS:
        raise ValueError(f"KV cache kind {kind!r} unknown; choose from {', '.join(KV_CACHE_KINDS)}")
    cls = KV_CACHE_KINDS[kind]
    found = 0
    for module in model.modules():
        if hasattr(module, "kv_cache") and hasattr(module, "num_key_value_heads"):
            param = next(module.parameters(), None)
            if param is None:
                param = next(module.buffers())
            module.kv_cache = cls(module.num_key_value_heads, max_context, module.head_dim, dtype, batch).to(param.device)
            found += 1
    if not found:
        raise ValueError("model has no attention layers that take a KV cache")
    return model


def remove_kv_cache(model: nn.Module) -> nn.Module:
    """Back to the eager, cache-free model."""
    for module in model.modules():
        if isinstance(getattr(module, "kv_cache", None), (KVCache, Int8KVCache)):
            # unregister the child module too, so the attribute can later hold a plain object
            # (the exporters' functional slot caches) instead of a None child module
            module._modules.pop("kv_cache", None)
            module.kv_cache = None
    return model


def kv_cache_context(model: nn.Module) -> int | None:
    """The static cache size installed in ``model``, None if it runs without a cache."""
    for module in model.modules():
        if isinstance(module, (KVCache, Int8KVCache)):
            return module.max_context
    return None
