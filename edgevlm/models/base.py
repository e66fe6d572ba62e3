"""The interface every model family implements, and checkpoint loading shared by all of them.

A model is a text decoder (``language_model``), optionally with a vision tower and projector.
Everything downstream (generation, quantization, exporters, runtimes) uses only these methods:

- ``embed(ids, image_features)``: token embeddings with image features scattered in at the
  image-token positions -> ``[1, T, H]``
- ``encode_images(pixel_values [N, 3, S, S])`` -> ``[N, tokens_per_tile, H]``, projector included
- ``prefill(embeds [1, C, H], input_pos [C])`` -> logits of the chunk's last row ``[1, V]``
  (needs a static KV cache, see :mod:`edgevlm.models.cache`)
- ``decode(embeds [1, 1, H], input_pos [1])`` -> ``[1, V]``: the same step for one row
- ``forward(ids, pixel_values)`` -> logits ``[1, T, V]``: the eager, cache-free reference
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    from .llama.language import LlamaDecoder


_INIT_MODULES = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv2d, nn.Conv1d, nn.BatchNorm2d)


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build modules without random initialization (their weights are loaded right after)."""
    saved = {cls: cls.reset_parameters for cls in _INIT_MODULES}
    try:
        for cls in _INIT_MODULES:
            cls.reset_parameters = lambda self: None
        yield
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn


class Model(nn.Module):
    """Base of every family's top-level model."""

    family: ClassVar[str] = ""
    # (checkpoint prefix, our prefix) pairs; the longest matching prefix wins in both directions.
    PREFIXES: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Checkpoint keys that are not weights of ours (buffers, unused heads, unused layers).
    IGNORE: ClassVar[tuple[str, ...]] = (r"(^|\.)rotary_emb\.inv_freq$",)

    language_model: "LlamaDecoder"
    image_token_id: int | None = None
    kv_cache_quant: str = "float"  # "int8" once a quantization recipe asks for an int8 KV cache

    # --- the interface -----------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise InputError(f"{self.family} is a text-only model: it takes no images")

    @property
    def tokens_per_tile(self) -> int:
        """Image features one encoder tile produces (0 for text-only models)."""
        return 0

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings ``[B, T, H]`` of ids ``[B, T]``, image features ``[N, T_img, H]`` merged in order."""
        slots = input_ids == self.image_token_id if self.image_token_id is not None else None
        # image slots may hold a virtual id outside the vocabulary (MobileVLM): embed them as 0
        embeds = self.language_model.embed_tokens(input_ids.masked_fill(slots, 0) if slots is not None else input_ids)
        n_slots = int(slots.sum()) if slots is not None else 0
        n_features = 0 if image_features is None else image_features.shape[0] * image_features.shape[1]
        if n_slots != n_features:
            raise InputError(
                f"the prompt has {n_slots} image tokens but the images give {n_features} features "
                f"({self.tokens_per_tile} per tile); use one image placeholder per image"
            )
        if n_features:
            embeds = embeds.masked_scatter(slots[..., None], image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
        return embeds

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Eager logits ``[B, T, V]`` of a whole prompt (no cache): the parity reference."""
        features = self.encode_images(pixel_values) if pixel_values is not None else None
        embeds = self.embed(input_ids, features)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.language_model(embeds, positions)

    def prefill(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """Run one chunk through the cached decoder; logits ``[B, V]`` of its last row."""
        hidden = self.language_model.hidden_states(embeds, input_pos)
        return self.language_model.lm_head(hidden[:, -1])

    def decode(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """One embedding row ``[B, 1, H]`` at position ``[1]`` -> logits ``[B, V]`` (prefill with C = 1)."""
        return self.prefill(embeds, input_pos)

    # --- description ---------------------------------------------------------------------
    def vision_components(self) -> dict[str, nn.Module]:
        """The vision tower and projector, by role (empty for text-only models)."""
        return {}

    def components(self) -> dict[str, nn.Module | None]:
        """Every part by role: vision tower, projector, token embedding, decoder, LM head (None when tied)."""
        lm = self.language_model
        tied = getattr(lm.lm_head, "tied", False) or lm.lm_head.weight is lm.embed_tokens.weight
        decoder = nn.ModuleList([*lm.layers, lm.norm])
        return {**self.vision_components(), "token_embedding": lm.embed_tokens, "decoder": decoder,
                "lm_head": None if tied else lm.lm_head}

    # --- training and saving -----------------------------------------------------------------
    def init_weights(self, std: float = 0.02) -> None:
        """Fresh weights for training from scratch: normal(0, std) matrices, zero biases, unit norms."""
        from .llama.language import RMSNorm

        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under their checkpoint names (a tied LM head stored once), contiguous."""
        return {self.checkpoint_key(name): t.detach().contiguous() for name, t in self.state_dict(keep_vars=False).items()
                if not (name.endswith("lm_head.weight") and self.language_model.lm_head.weight is self.language_model.embed_tokens.weight)}

    # --- checkpoint translation -----------------------------------------------------------
    def ignored_keys(self) -> tuple[str, ...]:
        """Regexes of checkpoint keys to skip; families add config-dependent ones."""
        return self.IGNORE

    def _rename(self, key: str, pairs: list[tuple[str, str]]) -> str | None:
        best = max((p for p in pairs if key.startswith(p[0])), key=lambda p: len(p[0]), default=None)
        return None if best is None else best[1] + key[len(best[0]):]

    def checkpoint_key(self, ours: str) -> str:
        """The checkpoint name of one of our parameters (for error messages)."""
        return self._rename(ours, [(o, c) for c, o in self.PREFIXES]) or ours

    def sanitize(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint tensors renamed to our parameter names; ignored keys dropped.

        Families override this to reshape or split tensors; unknown keys are kept (and then
        reported as unexpected by :meth:`load_checkpoint`).
        """
        out: dict[str, torch.Tensor] = {}
        ignore = [re.compile(p) for p in self.ignored_keys()]
        for key, tensor in weights.items():
            if any(p.search(key) for p in ignore):
                continue
            out[self._rename(key, list(self.PREFIXES)) or key] = tensor
        return out

    def load_checkpoint(self, weights: dict[str, torch.Tensor], origin: dict[str, Path], model_dir: Path) -> None:
        """Load checkpoint tensors, checking that every parameter is present with its shape."""
        renamed = self.sanitize(weights)
        source = {self._rename(k, list(self.PREFIXES)) or k: k for k in weights}
        expected = self.state_dict()
        # Second names of shared parameters (a tied LM head): derived, never read from the checkpoint.
        tied = {n for n, _ in self.named_parameters(remove_duplicate=False)} - {n for n, _ in self.named_parameters()}
        files = sorted(set(origin.values()))
        searched = files[0] if len(files) == 1 else f"{model_dir} ({len(files)} weight files)"
        for name, param in expected.items():
            ckpt_key = source.get(name, self.checkpoint_key(name))
            where = origin.get(ckpt_key, searched)
            if name not in renamed:
                if name in tied:
                    continue
                raise CheckpointError(f"{where}: missing tensor '{ckpt_key}' (needed for {name})")
            got = renamed[name]
            if tuple(got.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{where}: tensor '{ckpt_key}' has shape {list(got.shape)}, expected {list(param.shape)}"
                )
        unexpected = sorted(source.get(k, k) for k in renamed if k not in expected)
        if unexpected:
            shown = ", ".join(f"'{k}'" for k in unexpected[:5])
            more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
            raise CheckpointError(
                f"{origin.get(unexpected[0], model_dir)}: tensors that this {self.family} architecture does not have: "
                f"{shown}{more} (does config.json match the weights?)"
            )
        with torch.no_grad():
            for name, param in expected.items():
                if name in renamed and name not in tied:
                    param.copy_(renamed[name].to(param.dtype))
