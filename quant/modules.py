"""Quantized modules that run in PyTorch: the reference every exporter and runtime is checked against.

:class:`QuantLinear` computes what the target computes:

- ``a=none`` (weight-only): ``x @ dequantize(W).T`` in float.
- ``a=token`` (8da4w): each row of ``x`` quantized to int8 with its own scale and zero point
  (asymmetric, range widened to include 0: ``s = (max - min) / 255``, ``zp = -128 - round(min / s)``);
  per weight group an *integer* dot product of ``(xq - zp)`` and the weight codes (int32
  accumulation), then ``y = s_x * sum_g s_w[g] * dot_g``.
- ``a=group32`` (llama.cpp Q8_0 x Q4_0): each run of 32 inputs quantized symmetrically
  (``s = amax / 127``, codes in ``[-127, 127]``); ``y = sum_b s_x[b] * s_w[g(b)] * dot_b``.
- ``a=static`` (NPU W8A8): one calibrated per-tensor scale, codes in ``[-127, 127]`` (values beyond
  the calibrated range saturate); the layer's outlier input channels skip quantization and run
  through a float side path: ``y = s_x * s_w * (xq @ Wq.T) + x[:, outliers] @ W_out.T``.

The integer dot products are computed as float matmuls of integer-valued tensors, exact as long as
every partial sum stays below 2**24 (int4 groups of <= 256 x 8-bit codes) — otherwise in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .qtensor import QWeight, padded
from .recipe import Scheme

_EPS = 1e-12


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x [N, K]`` -> ``(xq - zp)`` as float integers ``[N, K]`` and the scales ``[N]``."""
    lo = x.amin(-1).clamp(max=0)
    hi = x.amax(-1).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=_EPS)
    zp = (-128 - torch.round(lo / scale)).clamp(-128, 127)
    q = (torch.round(x / scale[:, None]) + zp[:, None]).clamp(-128, 127)
    return q - zp[:, None], scale


def quantize_blocks(x: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, K]`` (K a multiple of ``block``) -> codes ``[N, K]`` and scales ``[N, K / block]`` (symmetric)."""
    n, k = x.shape
    xb = x.view(n, k // block, block)
    scale = xb.abs().amax(-1) / 127
    inv = torch.where(scale > 0, 1 / scale.clamp(min=_EPS), torch.zeros_like(scale))
    q = torch.round(xb * inv[..., None]).clamp(-127, 127)
    return q.view(n, k), scale


def quantize_static(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.round(x / scale).clamp(-127, 127)


def _exact_dtype(qw: QWeight) -> torch.dtype:
    return torch.float32 if qw.scheme.weight == "int4" and qw.group <= 256 else torch.float64


def _keep_dtypes(module: nn.Module, apply, fn, recurse):
    """Run ``Module._apply`` (``.to()``, ``.float()``, ...) but keep the stored dtypes of the integer
    weight's buffers: a model moved to bfloat16 still reads float16 scales exactly as saved."""
    dtypes = {n: b.dtype for n, b in module.named_buffers(recurse=False) if b is not None}
    out = apply(fn, recurse)
    for n, dt in dtypes.items():
        b = getattr(module, n)
        if b.dtype != dt:
            setattr(module, n, b.to(dt))
    return out


class QuantLinear(nn.Module):
    """A linear layer with integer weights (:class:`~edgevlm.quant.qtensor.QWeight`) and its activation scheme."""

    def __init__(self, qweight: QWeight, bias: torch.Tensor | None = None,
                 act_scale: torch.Tensor | None = None, outlier_idx: torch.Tensor | None = None,
                 outlier_weight: torch.Tensor | None = None):
        super().__init__()
        self.scheme: Scheme = qweight.scheme
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qdata", qweight.data)
        self.register_buffer("scales", qweight.scales)
        self.register_buffer("zeros", qweight.zeros)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        static = self.scheme.activations == "static"
        self.register_buffer("act_scale", act_scale if static else None)  # [] calibrated, static only
        self.register_buffer("outlier_idx", outlier_idx if static else None)  # int64 [n_out]
        self.register_buffer("outlier_weight", outlier_weight if static else None)  # float [O, n_out]
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def qweight(self) -> QWeight:
        return QWeight(self.scheme, (self.out_features, self.in_features), self.qdata, self.scales, self.zeros)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight ``[O, K]`` (for inspection and weight-only compute)."""
        if "w" not in self._cache:
            w = self.qweight.dequantize()
            if self.outlier_idx is not None and self.outlier_idx.numel():
                w = w.index_copy(1, self.outlier_idx, self.outlier_weight.float())
            self._cache["w"] = w
        return self._cache["w"]

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        self._cache.clear()
        return _keep_dtypes(self, super()._apply, fn, recurse)

    def _codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight codes grouped ``[G, g, O]`` (exact dtype) and scales ``[G, 1, O]``."""
        if "codes" not in self._cache:
            qw = self.qweight
            g = qw.group
            codes = qw.codes().to(_exact_dtype(qw)).view(self.out_features, -1, g).permute(1, 2, 0).contiguous()
            self._cache["codes"] = codes
            self._cache["wscale"] = self.scales.float().t()[:, None, :].contiguous()
        return self._cache["codes"], self._cache["wscale"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.scheme.activations
        if act == "none":
            y = F.linear(x, self.weight.to(x.dtype))
        else:
            shape = x.shape
            x2 = x.reshape(-1, shape[-1]).float()
            if act == "token":
                y = self._forward_token(x2)
            elif act == "group32":
                y = self._forward_group32(x2)
            else:
                y = self._forward_static(x2)
            y = y.to(x.dtype).view(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _grouped_dots(self, a: torch.Tensor) -> torch.Tensor:
        """Integer dot products per weight group: codes ``a [N, K]`` -> ``[G, N, O]``."""
        codes, _ = self._codes()
        g = codes.shape[1]
        a = F.pad(a, (0, padded(self.in_features, g) - self.in_features))
        a = a.to(codes.dtype).view(a.shape[0], -1, g).transpose(0, 1)  # [G, N, g]
        return torch.bmm(a, codes)

    def _forward_token(self, x: torch.Tensor) -> torch.Tensor:
        a, sx = quantize_per_token(x)
        _, sw = self._codes()
        dots = self._grouped_dots(a)  # [G, N, O]
        return (dots.float() * sw).sum(0) * sx[:, None]

    def _forward_group32(self, x: torch.Tensor) -> torch.Tensor:
        codes, sw = self._codes()
        g = codes.shape[1]
        if g % 32:
            raise ValueError(f"group32 activations need weight groups that are multiples of 32, got {g}")
        k_pad = padded(self.in_features, g)
        a, sx = quantize_blocks(F.pad(x, (0, k_pad - self.in_features)))  # [N, K_pad], [N, K_pad/32]
        n = a.shape[0]
        per = g // 32
        a = a.to(codes.dtype).view(n, -1, 32).transpose(0, 1)  # [B, N, 32]
        w = codes.view(-1, per, 32, self.out_features).flatten(0, 1)  # [B, 32, O]
        dots = torch.bmm(a, w).float()  # [B, N, O]
        blk_scale = sx.t()[:, :, None] * sw.repeat_interleave(per, dim=0)  # [B, N, O]
        return (dots * blk_scale).sum(0)

    def _forward_static(self, x: torch.Tensor) -> torch.Tensor:
        inlier = x
        if self.outlier_idx is not None and self.outlier_idx.numel():
            inlier = x.index_fill(1, self.outlier_idx, 0.0)
        q = quantize_static(inlier, self.act_scale.float())
        dots = self._grouped_dots(q)  # [1, N, O] (per-channel int8: one group)
        _, sw = self._codes()
        y = (dots.float() * sw).sum(0) * self.act_scale.float()
        if self.outlier_idx is not None and self.outlier_idx.numel():
            y = y + x[:, self.outlier_idx] @ self.outlier_weight.float().t()
        return y

    def extra_repr(self) -> str:
        n_out = 0 if self.outlier_idx is None else self.outlier_idx.numel()
        return f"in={self.in_features}, out={self.out_features}, scheme={self.scheme}" + (f", outliers={n_out}" if n_out else "")


class QuantEmbedding(nn.Module):
    """A token embedding with integer rows (one group per row for int8, ``g`` columns for int4)."""

    def __init__(self, qweight: QWeight):
        super().__init__()
        self.scheme = qweight.scheme
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.register_buffer("qdata", qweight.data)
        self.register_buffer("scales", qweight.scales)
        self.register_buffer("zeros", qweight.zeros)

    @property
    def qweight(self) -> QWeight:
        return QWeight(self.scheme, (self.num_embeddings, self.embedding_dim), self.qdata, self.scales, self.zeros)

    def _apply(self, fn, recurse=True):
        return _keep_dtypes(self, super()._apply, fn, recurse)

    @property
    def weight(self) -> torch.Tensor:
        return self.qweight.dequantize()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = QWeight(self.scheme, (ids.numel(), self.embedding_dim), self.qdata[ids.reshape(-1)],
                       self.scales[ids.reshape(-1)], None if self.zeros is None else self.zeros[ids.reshape(-1)])
        return rows.dequantize().view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, scheme={self.scheme}"


class TiedQuantLinear(nn.Module):
    """An LM head that reads the quantized token embedding's integers (tied weights stay tied)."""

    tied = True

    def __init__(self, embedding: QuantEmbedding, scheme: Scheme):
        super().__init__()
        self.embedding = [embedding]  # a plain list: not a submodule, not saved twice
        self.scheme = Scheme(weight=embedding.scheme.weight, group_size=embedding.scheme.group_size,
                             symmetric=embedding.scheme.symmetric, scale_dtype=embedding.scheme.scale_dtype,
                             activations=scheme.activations if scheme.activations in ("none", "token") else "none")
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings
        self._inner: list[QuantLinear] = []

    def _load_from_state_dict(self, *args, **kwargs):
        self._inner.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._inner:
            emb = self.embedding[0]
            self._inner.append(QuantLinear(QWeight(self.scheme, (self.out_features, self.in_features),
                                                   emb.qdata, emb.scales, emb.zeros)))
        return self._inner[0](x)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding[0].weight

    def extra_repr(self) -> str:
        return f"tied to the token embedding, scheme={self.scheme}"
