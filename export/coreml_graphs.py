"""The PyTorch modules the CoreML target hands to coremltools, and an engine that runs them here.

CoreML models do not run on Linux, so the numerics that can be checked here are those of the exact
torch modules given to ``coremltools.convert``. They differ from the shared static graphs
(:mod:`edgevlm.export.graphs`) in two ways, both needed by CoreML:

- **Integer weights as ``torchao::dequantize_affine``.** Every weight-only :class:`QuantLinear`
  (and the quantized token embedding / tied LM head) becomes :class:`DequantLinear` /
  :class:`DequantEmbedding`: our stored codes as ``int8`` tensors (int4 codes ``[-8, 7]``, i.e. the
  stored nibble minus 8) and our scales, dequantized by ``torchao::dequantize_affine`` with block
  ``(1, g)``. coremltools converts that op to ``constexpr_blockwise_shift_scale`` with int4 (range
  ``[-8, 7]``) or int8 (range ``[-128, 127]``) data: the stored integers and scales go into the
  ``.mlpackage`` unchanged, nothing is quantized again.
- **A stateful KV cache.** :class:`StatefulDecoder` keeps the cache in registered buffers, one key
  and one value buffer per layer, ``[max_context, kv_heads, head_dim]`` (position first, so the
  chunk's rows are written with one ``index_put`` that coremltools turns into ``scatter_nd``), and
  mutates them in place; coremltools makes each a ``ct.StateType``. CoreML states are float16, so
  rows are rounded to float16 before they are written (``x.half().float()``): the torch module
  stores exactly what the CoreML state will hold.

:class:`TorchGraphEngine` runs these modules through :class:`edgevlm.export.backend.GraphEngine`'s
chunking, so they are verified teacher-forced like every backend that runs here.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgevlm import contract as C
from edgevlm.models.base import Model

from .backend import GraphEngine


class CoreMLUnsupported(Exception):
    """A layer or option the CoreML target cannot represent (named in the message)."""


def _dequant_op():
    import torchao.quantization.quant_primitives  # noqa: F401  (registers torch.ops.torchao.*)

    return torch.ops.torchao.dequantize_affine


def _integer_parts(qweight, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int, int]:
    """``(data int8 [O, K_pad], scales fp32 [O, G], zero int8 [O, G] | None, group, qmin, qmax)``."""
    from edgevlm.quant.qtensor import unpack_int4

    scheme = qweight.scheme
    if scheme.activations != "none":
        raise CoreMLUnsupported(f"{name}: activation quantization a={scheme.activations} has no CoreML equivalent "
                                "(CoreML runs weight-only int4/int8); export with a weight-only recipe such as w4g32")
    scales = qweight.scales.float().contiguous()
    if scheme.weight == "int4":
        data = (unpack_int4(qweight.data).to(torch.int16) - 8).to(torch.int8)  # nibble u -> u - 8 in [-8, 7]
        zero = None if scheme.symmetric else (qweight.zeros.to(torch.int16) - 8).to(torch.int8)
        return data.contiguous(), scales, zero, qweight.group, -8, 7
    if scheme.weight == "int8":
        return qweight.data.contiguous(), scales, None, qweight.group, -128, 127
    raise CoreMLUnsupported(f"{name}: weight scheme {scheme.weight} unknown to the CoreML target")


class _Dequant(nn.Module):
    def __init__(self, qweight, name: str):
        super().__init__()
        data, scales, zero, group, self.qmin, self.qmax = _integer_parts(qweight, name)
        self.register_buffer("data", data)
        self.register_buffer("scales", scales)
        self.register_buffer("zero", zero)
        self.group = group
        self.rows, self.cols = qweight.shape
        self.name = name

    def dequantized(self) -> torch.Tensor:
        """The float weight ``[O, K_pad]`` (what ``constexpr_blockwise_shift_scale`` yields on device)."""
        return _dequant_op()(self.data, [1, self.group], self.scales, self.zero, torch.int8, self.qmin, self.qmax)


class DequantLinear(_Dequant):
    """``x @ W.T (+ b)`` with ``W`` dequantized from stored integers (weight-only QuantLinear)."""

    def __init__(self, qweight, bias: torch.Tensor | None, name: str):
        super().__init__(qweight, name)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.data.shape[1] - self.cols
        if pad:  # padded input columns meet zero activations, as in the reference
            x = F.pad(x, (0, pad))
        return F.linear(x, self.dequantized(), self.bias)


class DequantEmbedding(_Dequant):
    """A token embedding whose table is dequantized from stored integers."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.dequantized()
        if w.shape[1] != self.cols:
            w = w[:, : self.cols]
        return F.embedding(ids, w)


def coreml_model(model: Model) -> Model:
    """A copy of ``model`` with every quantized module replaced by its dequantize_affine form."""
    from edgevlm.quant.modules import QuantEmbedding, QuantLinear, TiedQuantLinear

    model = copy.deepcopy(model)
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, QuantLinear):
                if child.outlier_idx is not None and child.outlier_idx.numel():
                    raise CoreMLUnsupported(f"{name}: float outlier channels are not supported by the CoreML target")
                new = DequantLinear(child.qweight, child.bias, name)
            elif isinstance(child, TiedQuantLinear):
                emb = child.embedding[0]
                tied = type(emb.qweight)(child.scheme, (child.out_features, child.in_features), emb.qdata, emb.scales, emb.zeros)
                new = DequantLinear(tied, None, name)
            elif isinstance(child, QuantEmbedding):
                new = DequantEmbedding(child.qweight, name)
            else:
                continue
            setattr(parent, child_name, new)
    return model.eval()


class _StateSlot:
    """One layer's cache during one call: writes rows into the layer's buffers in place."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v  # [S, Hkv, D]

    @property
    def max_context(self) -> int:
        return self.k.shape[0]

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        # k, v [1, Hkv, T, D] -> rows [T, Hkv, D], rounded to the float16 the CoreML state holds
        self.k.index_put_((input_pos,), k[0].transpose(0, 1).to(torch.float16).float())
        self.v.index_put_((input_pos,), v[0].transpose(0, 1).to(torch.float16).float())
        return self.k.permute(1, 0, 2)[None], self.v.permute(1, 0, 2)[None]


class StatefulDecoder(nn.Module):
    """``(embeds [1, C, H], input_pos [C]) -> logits [1, V]`` of the last row; the KV cache is state.

    Buffers ``k_cache_{i}``, ``v_cache_{i}`` ``[max_context, kv_heads, head_dim]`` (float32 here,
    float16 values; float16 CoreML states after conversion). The same module serves prefill
    (C rows) and decode (1 row).
    """

    def __init__(self, model: Model, max_context: int):
        super().__init__()
        self.lm = model.language_model
        cfg = self.lm.config
        self.n_layers = cfg.num_hidden_layers
        for i in range(self.n_layers):
            for kind in ("k", "v"):
                self.register_buffer(f"{kind}_cache_{i}", torch.zeros(max_context, cfg.num_key_value_heads, cfg.head_dim))

    def state_names(self) -> list[str]:
        return [f"{kind}_cache_{i}" for i in range(self.n_layers) for kind in ("k", "v")]

    def reset(self) -> None:
        with torch.no_grad():
            for name in self.state_names():
                getattr(self, name).zero_()

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        attn = [layer.self_attn for layer in self.lm.layers]
        try:
            for i, a in enumerate(attn):
                a.kv_cache = _StateSlot(getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}"))
            hidden = self.lm.hidden_states(embeds, input_pos)
        finally:
            for a in attn:
                a.kv_cache = None
        return self.lm.lm_head(hidden[:, -1])


class TokenEmbedding(nn.Module):
    """``ids [1, C] -> embeddings [1, C, H]``."""

    def __init__(self, model: Model):
        super().__init__()
        self.embed_tokens = model.language_model.embed_tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids)


class VisionEncoder(nn.Module):
    """``pixel_values [1, 3, S, S] -> image_features [1, T_img, H]`` (projector included)."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixel_values)


class TorchGraphEngine(GraphEngine):
    """An :class:`~edgevlm.engine.Engine` over the exact torch modules converted to CoreML."""

    def __init__(self, manifest: dict, decoder: StatefulDecoder, embedding: TokenEmbedding, vision: VisionEncoder | None):
        self.decoder, self.embedding, self.vision = decoder, embedding, vision
        super().__init__(manifest)

    def reset(self) -> None:
        self.decoder.reset()

    @torch.no_grad()
    def run(self, method: str, *arrays: np.ndarray) -> list[np.ndarray]:
        if method == C.METHOD_TOKEN_EMBEDDING:
            return [self.embedding(torch.from_numpy(arrays[0])).numpy()]
        if method == C.METHOD_VISION_ENCODER and self.vision is not None:
            return [self.vision(torch.from_numpy(arrays[0])).numpy()]
        raise ValueError(f"no torch module for method {method!r}")

    @torch.no_grad()
    def _step(self, method: str, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        logits = self.decoder(torch.from_numpy(embeds.astype(np.float32)), torch.from_numpy(positions.astype(np.int64)))
        return logits[0].float().numpy()


__all__ = ["CoreMLUnsupported", "DequantEmbedding", "DequantLinear", "StatefulDecoder", "TokenEmbedding",
           "TorchGraphEngine", "VisionEncoder", "coreml_model"]
