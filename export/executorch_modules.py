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


# --- core ATen forms -----------------------------------------------------------------------------
# ExecuTorch decomposes a graph to core ATen a second time (a whole-graph re-trace, the slowest
# step of lowering after XNNPACK's own passes) only when the graph still holds an operator with a
# decomposition: ``transpose``, ``softmax``, ``silu``, ``arange(end)``, ``rsub``, ``where`` with
# scalars. The forwards below use their core forms directly (``permute``, ``_softmax``,
# ``x * sigmoid(x)``, ...), which is what those decompositions produce, so that step is skipped.


def _swap12(x: torch.Tensor) -> torch.Tensor:
    """``x.transpose(1, 2)`` as the core ``permute``."""
    dims = list(range(x.dim()))
    dims[1], dims[2] = 2, 1
    return x.permute(dims)


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    """``softmax(x, -1)`` as the core ``_softmax`` (what ``softmax.int`` decomposes to)."""
    return torch.ops.aten._softmax.default(x, -1, False)


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU as ``x * sigmoid(x)`` (its decomposition; XNNPACK has no SiLU kernel either)."""
    return x * torch.sigmoid(x)


def _core_act(act):
    """An activation in its core ATen form where it has one."""
    return _silu if act is F.silu else act


# --- decoder ops in forms XNNPACK takes whole ---------------------------------------------------
# Every operator XNNPACK cannot take splits the graph into one more delegate (slower to lower and to
# run). The decoder's own forward has three per layer: RMSNorm's mean over a rank-3 tensor, the
# cache write (index_copy) and SDPA's boolean mask with the GQA repeat_interleave. The forwards
# below compute the same values with operators XNNPACK runs, so each method lowers to a few
# delegates instead of several per layer. What depends only on positions (the one-hot write matrix,
# the additive mask) is computed outside the delegates without splitting them.


def _rmsnorm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with the mean over a ``[B, T, 1, H]`` view (XNNPACK's global average pooling); float32
    graphs need no casts (each would be one more node for every lowering pass to trace)."""
    dtype = x.dtype
    b, t, hdim = x.shape
    xf = x if dtype == torch.float32 else x.float()
    ms = xf.view(b, t, 1, hdim).pow(2).mean((2, 3), keepdim=True).view(b, t, 1)
    y = xf * torch.rsqrt(ms + self.eps)
    return self.weight * (y if dtype == torch.float32 else y.to(dtype))


class StepPositions:
    """What one decoder step derives from its positions alone, computed once per graph (not per layer).

    ``write [Hkv, S, T]``: the one-hot cache-write matrix (slot ``s`` takes chunk row ``t`` iff
    ``input_pos[t] == s``) for each kv head; ``keep [S, 1]``: 1 where no row is written;
    ``bias [g*T, S]``: the additive attention mask (0 where slot ``j <= input_pos[t]``, ``-inf``
    elsewhere; contract 3), repeated for the ``g`` query heads that share a kv head.
    """

    def __init__(self, input_pos: torch.Tensor, max_context: int, kv_heads: int, groups: int, dtype: torch.dtype):
        slots = torch.arange(0, max_context, 1, device=input_pos.device)
        onehot = (slots[:, None] == input_pos[None, :]).to(dtype)  # [S, T]
        self.keep = onehot.sum(-1, keepdim=True).neg() + 1.0
        # bmm (XNNPACK's mm wants a constant weight), one matrix per kv head: the write needs no permutes
        self.write = onehot[None].expand(kv_heads, -1, -1)
        visible = slots[None, :] <= input_pos[:, None]  # [T, S]
        zero, never = torch.full((), 0.0, dtype=dtype), torch.full((), float("-inf"), dtype=dtype)
        self.bias = torch.where(visible, zero, never).repeat(groups, 1)


def _attention_forward(self, x, cos, sin, mask, input_pos):
    """The Llama attention with the cache write as a one-hot matmul and grouped-query attention by reshape.

    Batch 1 (the graphs' shape). The cache write ``cache * keep + onehot @ k`` (``onehot [S, T]``
    from the positions) is exact: every product is by 0 or 1. Query heads ``j*g .. j*g+g-1`` share
    kv head ``j`` (as ``repeat_interleave`` arranges them), so the queries are viewed
    ``[Hkv, g*T, D]`` and attention is two batched matmuls over the kv heads. With q/k/v fused
    (:func:`_fuse_projections`) one linear computes all three and RoPE rotates q and k together.
    The position-derived tensors come from :class:`StepPositions` when the step graph set them.
    """
    slot = self.kv_cache
    if slot is None or mask.dim() != 2 or x.shape[0] != 1:
        return self._reference_forward(x, cos, sin, mask, input_pos)
    _, t, _ = x.shape
    h, hkv, d = self.num_heads, self.num_key_value_heads, self.head_dim
    s = slot.k.shape[2]
    g = h // hkv
    if hasattr(self, "qkv_proj"):
        qkv = _swap12(self.qkv_proj(x).view(1, t, h + 2 * hkv, d))  # [1, H + 2 Hkv, T, D]
        qk = apply_rotary(qkv[:, : h + hkv], cos, sin)
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + hkv:]
    else:
        q = _swap12(self.q_proj(x).view(1, t, h, d))
        k = _swap12(self.k_proj(x).view(1, t, hkv, d))
        v = _swap12(self.v_proj(x).view(1, t, hkv, d))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    dt = slot.k.dtype
    pos = getattr(self, "_step_positions", None) or StepPositions(input_pos, s, hkv, g, dt)

    def write(cache: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        new = new if new.dtype == dt else new.to(dt)
        put = torch.bmm(pos.write, new.reshape(hkv, t, d)).view(1, hkv, s, d)  # [Hkv, S, T] @ [Hkv, T, D]
        return cache * pos.keep + put

    slot.k, slot.v = write(slot.k, k), write(slot.v, v)
    qg = q.reshape(hkv, g * t, d)
    kc, vc = slot.k.view(hkv, s, d), slot.v.view(hkv, s, d)
    if kc.dtype != q.dtype:
        kc, vc = kc.to(q.dtype), vc.to(q.dtype)
    scores = torch.bmm(qg, _swap12(kc)) * (1.0 / math.sqrt(d))  # [Hkv, g*T, S]
    probs = _softmax_last(scores + pos.bias.to(q.dtype))
    out = torch.bmm(probs, vc).view(1, h, t, d)
    return self.o_proj(_swap12(out).reshape(1, t, h * d))


class ETStepGraph(nn.Module):
    """:class:`~edgevlm.export.graphs.StepGraph` (same inputs, outputs and values) with the
    position-derived tensors (:class:`StepPositions`) computed once for all layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from .graphs import StepGraph

        self.step = StepGraph(model)

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                targets: torch.Tensor | None = None):
        attn = self.step.attn
        groups = attn[0].num_heads // attn[0].num_key_value_heads
        positions = StepPositions(input_pos, k_cache.shape[2], attn[0].num_key_value_heads, groups, k_cache.dtype)
        for a in attn:
            a._step_positions = positions
        try:
            return self.step(embeds, input_pos, k_cache, v_cache, targets)
        finally:
            for a in attn:
                a._step_positions = None


def _fused_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The gated MLP with gate and up projections as one linear (one activation quantization)."""
    gu = self.gate_up_proj(x)
    n = gu.shape[-1] // 2
    return self.down_proj(_core_act(self.act)(gu[..., :n]) * gu[..., n:])


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The gated MLP (projections not fused) with the activation in its core form."""
    return self.down_proj(_core_act(self.act)(self.gate_proj(x)) * self.up_proj(x))


def _vit_fused_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    n, p, d = x.shape
    h, hd = self.num_heads, self.head_dim
    qkv = _swap12(self.qkv_proj(x).view(n, p, 3 * h, hd))  # [N, 3H, P, hd]
    q, k, v = (qkv[:, i * h:(i + 1) * h].reshape(n * h, p, hd) for i in range(3))
    return _vit_attend(self, q, k, v, n, p, d)


# --- vision ops in forms XNNPACK takes whole ----------------------------------------------------
# The vision towers (SigLIP, CLIP) and projectors have the same problem: XNNPACK has no LayerNorm,
# and SDPA without a mask decomposes (torch 2.13) into a "fully masked row" guard whose
# ``full_like`` the ExecuTorch emitter of 1.5.1 cannot serialize (``aten::full_like() expected at
# most 4 argument(s) but received 5``: the out variant gets ``pin_memory``). XNNPACK also ignores
# GELU's ``approximate="tanh"`` (it always runs the erf form). The forwards below compute the
# reference's values with operators XNNPACK runs, so the encoder lowers to one delegate.


def _layernorm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim with both means over a ``[B, T, 1, H]`` view (global average pooling)."""
    if x.dim() != 3 or self.normalized_shape != (x.shape[-1],):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
    b, t, hdim = x.shape
    x4 = x.view(b, t, 1, hdim)
    xc = x4 - x4.mean((2, 3), keepdim=True)
    var = (xc * xc).mean((2, 3), keepdim=True)
    y = (xc * torch.rsqrt(var + self.eps)).view(b, t, hdim)
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def _vit_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The ViT's bidirectional attention as two batched matmuls over (image, head)."""
    if hasattr(self, "qkv_proj"):
        return _vit_fused_attention_forward(self, x)
    n, p, d = x.shape
    h, hd = self.num_heads, self.head_dim

    def heads(proj: nn.Module) -> torch.Tensor:
        return _swap12(proj(x).view(n, p, h, hd)).reshape(n * h, p, hd)

    return _vit_attend(self, heads(self.q_proj), heads(self.k_proj), heads(self.v_proj), n, p, d)


def _vit_attend(self, q, k, v, n: int, p: int, d: int) -> torch.Tensor:
    h, hd = self.num_heads, self.head_dim
    probs = _softmax_last(torch.bmm(q, _swap12(k)) * (1.0 / math.sqrt(hd)))
    out = _swap12(torch.bmm(probs, v).view(n, h, p, hd)).reshape(n, p, d)
    return self.out_proj(out)


_GELU_TANH_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation written out (XNNPACK's GELU is the erf form only)."""
    return 0.5 * x * (1.0 + torch.tanh(_GELU_TANH_C * (x + 0.044715 * (x * x * x))))


def _rewrite_vision_ops(model: nn.Module) -> int:
    from edgevlm.models.vit import ACTIVATIONS, ViTAttention

    tanh_gelus = {id(ACTIVATIONS["gelu_pytorch_tanh"]), id(ACTIVATIONS["gelu_new"])}
    n = 0
    for module in model.modules():
        if type(module) is ViTAttention:
            module.forward = types.MethodType(_vit_attention_forward, module)
            n += 1
        elif type(module) is nn.LayerNorm:
            module.forward = types.MethodType(_layernorm_forward, module)
        if id(getattr(module, "act", None)) in tanh_gelus:
            module.act = _gelu_tanh
    return n


def _rewrite_decoder_ops(model: nn.Module) -> int:
    from edgevlm.models.llama.language import MLP, Attention, RMSNorm

    n = 0
    for module in model.modules():
        if type(module) is Attention:
            module._reference_forward = module.forward
            module.forward = types.MethodType(_attention_forward, module)
            n += 1
        elif type(module) is RMSNorm:
            module.forward = types.MethodType(_rmsnorm_forward, module)
        elif type(module) is MLP and not hasattr(module, "gate_up_proj"):
            module.forward = types.MethodType(_mlp_forward, module)
    return n


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _fusable(layers: list) -> bool:
    """Linears reading one input that can become one: the same integer scheme and input width, no
    outlier path, biases on all or none."""
    if not all(type(m) is QuantLinear for m in layers):
        return False
    first = layers[0]
    return all(m.scheme == first.scheme and m.in_features == first.in_features
               and (m.outlier_idx is None or not m.outlier_idx.numel())
               and (m.bias is None) == (first.bias is None) for m in layers)


def _concat_qweights(layers: list[QuantLinear]) -> tuple[QWeight, torch.Tensor | None]:
    """The weights of ``layers`` stacked along the output dimension: the same integers and scales, so
    one linear computes every layer's outputs side by side (exact, also with per-token activation
    quantization, which depends on the shared input only)."""
    qws = [m.qweight for m in layers]
    zeros = None if qws[0].zeros is None else torch.cat([q.zeros for q in qws])
    fused = QWeight(qws[0].scheme, (sum(q.shape[0] for q in qws), qws[0].shape[1]), torch.cat([q.data for q in qws]),
                    torch.cat([q.scales for q in qws]), zeros)
    bias = None if layers[0].bias is None else torch.cat([m.bias.detach() for m in layers])
    return fused, bias


def _fuse_projections(model: nn.Module) -> int:
    """q/k/v of every attention and gate/up of every gated MLP as one :class:`ETLinear` each.

    Fewer linears mean fewer nodes for ExecuTorch's lowering passes to trace (each quantized linear
    is five to seven nodes) and fewer kernel calls at run time. Layers whose schemes differ (a recipe
    rule for one of them) stay separate.
    """
    from edgevlm.models.llama.language import MLP, Attention
    from edgevlm.models.vit import ViTAttention

    groups = {Attention: (("q_proj", "k_proj", "v_proj"), "qkv_proj"),
              ViTAttention: (("q_proj", "k_proj", "v_proj"), "qkv_proj"),
              MLP: (("gate_proj", "up_proj"), "gate_up_proj")}
    n = 0
    for path, module in list(model.named_modules()):
        spec = groups.get(type(module))
        if spec is None:
            continue
        names, fused_name = spec
        layers = [getattr(module, name) for name in names]
        if not _fusable(layers):
            continue
        qw, bias = _concat_qweights(layers)
        setattr(module, fused_name, ETLinear(qw, bias, f"{path}.{fused_name}"))
        for name in names:
            delattr(module, name)
        if type(module) is MLP:
            module.forward = types.MethodType(_fused_mlp_forward, module)
        n += 1
    return n


def executorch_model(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """A copy of the quantized reference with every quantized module in its ExecuTorch form.

    Returns the copy and a count of the rewritten modules by kind. Float modules stay as they are
    (XNNPACK runs them in fp32). A scheme without an ExecuTorch form raises
    :class:`UnsupportedForExecuTorch` naming the module.
    """
    _ensure_quant_ops()
    model = copy.deepcopy(model)
    counts = {"linear_int4": 0, "linear_int8": 0, "embedding": 0}
    counts["fused_projections"] = _fuse_projections(model)
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
        _set_module(model, path, new)
    for module in model.modules():
        if isinstance(module, ETLinear):
            counts[f"linear_{module.scheme.weight}"] += 1
    counts["attention_rewritten"] = _rewrite_decoder_ops(model)
    counts["vision_attention_rewritten"] = _rewrite_vision_ops(model)
    from torchao.utils import unwrap_tensor_subclass

    unwrap_tensor_subclass(model)  # the subclass weights export as their plain parts
    return model.eval(), counts


__all__ = ["ETEmbedding", "ETLinear", "ETStepGraph", "StepPositions", "UnsupportedForExecuTorch", "executorch_model"]
