"""Our quantized modules rewritten into the forms ExecuTorch lowers (used by ``targets/executorch.py``).

The integers and scales are the stored ones (the recipe's RTN/GPTQ/AWQ result); nothing is
re-quantized. Each module below computes, in PyTorch, what its lowered form computes on device:

- :class:`ETLinear` (every :class:`~edgevlm.quant.modules.QuantLinear` and the tied LM head): the
  weight becomes a torchao ``IntxUnpackedToInt8Tensor`` built from our codes (int4 ``q`` in
  ``[-8, 7]`` or int8, one scale per group, zero points 0) with int8 asymmetric per-token dynamic
  activation quantization. ``torch.export`` traces it to torchao's ``choose_qparams_affine`` /
  ``quantize_affine`` / ``dequantize_affine`` pattern around ``linear``, which XNNPACK's partitioner
  takes as one dynamically quantized fully-connected op: ``qd8-f32-qb4w`` (int4 groups, *8da4w*) or
  ``qd8-f32-qc8w`` (int8 per channel, *8da8w*).
- :class:`ETEmbedding` (:class:`~edgevlm.quant.modules.QuantEmbedding`): ExecuTorch's quantized
  embedding ops ``quantized_decomposed::embedding_byte`` (int8 rows) / ``embedding_4bit`` (int4
  groups; its nibble order is the opposite of ours, so the bytes are repacked), run by the kernels
  of ``executorch.kernels.quantized``.

Kernel-level differences from the reference (documented in the target module): XNNPACK keeps
int4 *group* scales in bfloat16, and it applies per-token activation quantization to every
quantized linear, including the layers a weight-only recipe (``w4g32``) computes in float.
"""

from __future__ import annotations

import copy
import math
import types

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.models.llama.rope import apply_rotary
from edgevlm.quant.modules import QuantEmbedding, QuantLinear, TiedQuantLinear
from edgevlm.quant.qtensor import QWeight, unpack_int4


class UnsupportedForExecuTorch(ValueError):
    """A layer whose quantization scheme has no ExecuTorch/XNNPACK form here: the executorch target
    fails with this message (naming the layer) while the other targets go on."""


def _ensure_quant_ops() -> None:
    """Register the ``quantized_decomposed`` embedding ops (and their out variants) with PyTorch."""
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401


def _intx_weight(qw: QWeight, path: str) -> torch.Tensor:
    """Our integer weight as torchao's ``IntxUnpackedToInt8Tensor`` ``[O, K_pad]`` with 8-bit dynamic activations."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
        IntxUnpackedToInt8TensorActivationQuantization,
    )

    scheme = qw.scheme
    if scheme.activations == "static":
        raise UnsupportedForExecuTorch(
            f"{path}: static activation quantization ({scheme}) has no XNNPACK form here; "
            "use a weight-only or per-token recipe (w4g32, 8da4w) for the executorch target")
    if scheme.weight == "int4" and not scheme.symmetric:
        raise UnsupportedForExecuTorch(
            f"{path}: asymmetric int4 ({scheme}) is not lowered (XNNPACK's blockwise int4 kernels take "
            "symmetric weights); use a symmetric int4 scheme for the executorch target")
    codes = qw.codes()  # signed q [O, K_pad], as float
    if scheme.weight == "int4":
        target = torch.int4
    elif scheme.weight == "int8":
        target = torch.int8
    else:
        raise UnsupportedForExecuTorch(f"{path}: unexpected weight type {scheme.weight!r}")
    scales = qw.scales.float()
    return IntxUnpackedToInt8Tensor(
        codes.to(torch.int8).contiguous(), scales.contiguous(), torch.zeros_like(scales, dtype=torch.int8),
        target, (1, qw.group), torch.float32, IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN)


class ETLinear(nn.Module):
    """A quantized linear as XNNPACK runs it: 8-bit dynamic per-token activations x our int4/int8 weight."""

    def __init__(self, qw: QWeight, bias: torch.Tensor | None, path: str):
        super().__init__()
        self.in_features, self.out_features = qw.shape[1], qw.shape[0]
        self.k_pad = qw.k_pad
        self.scheme = qw.scheme
        self.linear = nn.Linear(self.k_pad, self.out_features, bias=bias is not None)
        self.linear.weight = nn.Parameter(_intx_weight(qw, path), requires_grad=False)
        if bias is not None:
            self.linear.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k_pad != self.in_features:  # zero columns meet zero inputs
            x = F.pad(x, (0, self.k_pad - self.in_features))
        return self.linear(x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, scheme={self.scheme} (XNNPACK qd8 x {self.scheme.weight})"


class ETEmbedding(nn.Module):
    """A quantized token embedding through ExecuTorch's ``embedding_byte`` / ``embedding_4bit`` ops."""

    def __init__(self, qw: QWeight, path: str):
        super().__init__()
        scheme = qw.scheme
        self.dim = qw.shape[1]
        zeros = None
        if scheme.weight == "int8":
            data, self.qmin, self.qmax, self.op = qw.data.to(torch.int8), -128, 127, "embedding_byte"
        elif scheme.weight == "int4":
            # ours: element 2i in the low nibble; ExecuTorch's embedding_4bit: element 2i in the high nibble
            u = unpack_int4(qw.data)
            data, self.qmin, self.qmax, self.op = (u[:, 1::2] | (u[:, 0::2] << 4)).to(torch.uint8), -8, 7, "embedding_4bit"
            if not scheme.symmetric:
                zeros = qw.zeros.float() - 8  # the op reads (u - 8) - (z - 8)
        else:
            raise UnsupportedForExecuTorch(f"{path}: unexpected embedding weight type {scheme.weight!r}")
        self.register_buffer("weight", data.contiguous())
        self.register_buffer("scales", qw.scales.float().contiguous())
        self.register_buffer("zeros", zeros)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        op = getattr(torch.ops.quantized_decomposed, self.op)
        out = op.default(self.weight, self.scales, self.zeros, self.qmin, self.qmax, ids)
        return out[..., : self.dim]


# --- decoder ops in forms XNNPACK takes whole ---------------------------------------------------
# Every operator XNNPACK cannot take splits the graph into one more delegate (slower to lower and to
# run). The decoder's own forward has three per layer: RMSNorm's mean over a rank-3 tensor, the
# cache write (index_copy) and SDPA's boolean mask with the GQA repeat_interleave. The forwards
# below compute the same values with operators XNNPACK runs, so each method lowers to a few
# delegates instead of several per layer. What depends only on positions (the one-hot write matrix,
# the additive mask) is computed outside the delegates without splitting them.


def _rmsnorm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with the mean over a ``[B, T, 1, H]`` view (XNNPACK's global average pooling)."""
    dtype = x.dtype
    b, t, hdim = x.shape
    x = x.float()
    ms = x.view(b, t, 1, hdim).pow(2).mean((2, 3), keepdim=True).view(b, t, 1)
    return self.weight * (x * torch.rsqrt(ms + self.eps)).to(dtype)


def _attention_forward(self, x, cos, sin, mask, input_pos):
    """The Llama attention with the cache write as a one-hot matmul and grouped-query attention by reshape.

    Batch 1 (the graphs' shape). The cache write ``cache * keep + onehot @ k`` (``onehot [S, T]``
    from the positions) is exact: every product is by 0 or 1. Query heads ``j*g .. j*g+g-1`` share
    kv head ``j`` (as ``repeat_interleave`` arranges them), so the queries are viewed
    ``[Hkv, g*T, D]`` and attention is two batched matmuls over the kv heads.
    """
    slot = self.kv_cache
    if slot is None or mask.dim() != 2 or x.shape[0] != 1:
        return self._reference_forward(x, cos, sin, mask, input_pos)
    _, t, _ = x.shape
    h, hkv, d = self.num_heads, self.num_key_value_heads, self.head_dim
    s = slot.k.shape[2]
    q = self.q_proj(x).view(1, t, h, d).transpose(1, 2)
    k = self.k_proj(x).view(1, t, hkv, d).transpose(1, 2)
    v = self.v_proj(x).view(1, t, hkv, d).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    dt = slot.k.dtype
    onehot = (torch.arange(s, device=x.device)[:, None] == input_pos[None, :]).to(dt)  # [S, T]
    keep = 1.0 - onehot.sum(-1, keepdim=True)  # [S, 1]
    onehot = onehot[None]  # bmm: XNNPACK's mm wants a constant weight

    def write(cache: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        rows = new.to(dt).permute(0, 2, 1, 3).reshape(1, t, hkv * d)  # [1, T, Hkv*D]
        put = torch.bmm(onehot, rows).view(s, hkv, d).permute(1, 0, 2).reshape(1, hkv, s, d)
        return cache * keep + put

    slot.k, slot.v = write(slot.k, k), write(slot.v, v)
    g = h // hkv
    qg = q.reshape(hkv, g * t, d)
    kc, vc = slot.k.to(q.dtype).view(hkv, s, d), slot.v.to(q.dtype).view(hkv, s, d)
    scores = torch.bmm(qg, kc.transpose(1, 2)) * (1.0 / math.sqrt(d))  # [Hkv, g*T, S]
    add = torch.where(mask, 0.0, float("-inf")).to(q.dtype).repeat(g, 1)  # [g*T, S]
    probs = torch.softmax(scores + add, dim=-1)
    out = torch.bmm(probs, vc).view(1, h, t, d)
    return self.o_proj(out.transpose(1, 2).reshape(1, t, h * d))


def _rewrite_decoder_ops(model: nn.Module) -> int:
    from edgevlm.models.llama.language import Attention, RMSNorm

    n = 0
    for module in model.modules():
        if type(module) is Attention:
            module._reference_forward = module.forward
            module.forward = types.MethodType(_attention_forward, module)
            n += 1
        elif type(module) is RMSNorm:
            module.forward = types.MethodType(_rmsnorm_forward, module)
    return n


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def executorch_model(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """A copy of the quantized reference with every quantized module in its ExecuTorch form.

    Returns the copy and a count of the rewritten modules by kind. Float modules stay as they are
    (XNNPACK runs them in fp32). A scheme without an ExecuTorch form raises
    :class:`UnsupportedForExecuTorch` naming the module.
    """
    _ensure_quant_ops()
    model = copy.deepcopy(model)
    counts = {"linear_int4": 0, "linear_int8": 0, "embedding": 0}
    for path, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            if module.outlier_idx is not None and module.outlier_idx.numel():
                raise UnsupportedForExecuTorch(f"{path}: float outlier channels are not lowered to ExecuTorch")
            new = ETLinear(module.qweight, module.bias, path)
        elif isinstance(module, TiedQuantLinear):
            emb = module.embedding[0]
            new = ETLinear(QWeight(module.scheme, (module.out_features, module.in_features), emb.qdata, emb.scales,
                                   emb.zeros), None, path)
        elif isinstance(module, QuantEmbedding):
            new = ETEmbedding(module.qweight, path)
            counts["embedding"] += 1
        else:
            continue
        if isinstance(new, ETLinear):
            counts[f"linear_{new.scheme.weight}"] += 1
        _set_module(model, path, new)
    counts["attention_rewritten"] = _rewrite_decoder_ops(model)
    from torchao.utils import unwrap_tensor_subclass

    unwrap_tensor_subclass(model)  # the subclass weights export as their plain parts
    return model.eval(), counts


__all__ = ["ETEmbedding", "ETLinear", "UnsupportedForExecuTorch", "executorch_model"]
