"""Graph adaptations for the TVM target: the shared static graphs, made importable by TVM's Relax
PyTorch frontend without changing what they compute.

- :func:`packed_copy`: a copy of the quantized model whose integer layers dequantize *inside the
  graph* from the stored tensors (int4 packed two per byte + scales, int8 + scales), so the
  exported functions take the packed integers as parameters and the artifact stays int4. The
  dequantization is the reference's own code (:meth:`QWeight.dequantize`), so the weights are the
  reference's exact values; only the matmul's summation order can differ.
- :class:`TvmStepGraph`: :class:`~edgevlm.export.graphs.StepGraph` with a KV-cache write that TVM
  imports (``index_copy`` decomposes into an ``index_put`` the frontend rejects): every cache slot
  takes the chunk row written at its position (a gather and a select; positions of one chunk are
  distinct), bit-identical to ``index_copy``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgevlm.models.base import Model
from edgevlm.quant.modules import QuantLinear, TiedQuantLinear, _exact_dtype
from edgevlm.quant.qtensor import QWeight

from .graphs import StepGraph, _SlotCache


class PackedLinear(QuantLinear):
    """A :class:`QuantLinear` that recomputes its weight from the stored integers on every call
    (no cache): traced by ``torch.export``, the unpacking becomes part of the graph."""

    @property
    def weight(self) -> torch.Tensor:
        if self.outlier_idx is not None and self.outlier_idx.numel():
            raise NotImplementedError("float outlier columns are only used by the static-activation path")
        return self.qweight.dequantize()

    def _codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        qw = self.qweight
        codes = qw.codes().to(_exact_dtype(qw)).view(self.out_features, -1, qw.group).permute(1, 2, 0)
        return codes, self.scales.float().t()[:, None, :]


def _packed(module: QuantLinear | TiedQuantLinear) -> PackedLinear:
    if isinstance(module, TiedQuantLinear):
        emb = module.embedding[0]  # shares the embedding's tensors: stored once
        qw = QWeight(module.scheme, (module.out_features, module.in_features), emb.qdata, emb.scales, emb.zeros)
        return PackedLinear(qw)
    return PackedLinear(module.qweight, None if module.bias is None else module.bias.data, module.act_scale,
                        module.outlier_idx, module.outlier_weight)


def _buffers_to_parameters(model: nn.Module) -> None:
    """Make every persistent buffer (integer weights, scales, zero points) a frozen parameter:
    TVM's importer keeps parameters as function inputs but binds buffers as constants, which
    constant folding would then dequantize into float. A tensor shared by two modules (a tied
    head) becomes one parameter object, so it stays one input."""
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is None or name in module._non_persistent_buffers_set:
                continue
            if id(buf) not in made:
                made[id(buf)] = buf if isinstance(buf, nn.Parameter) else nn.Parameter(buf, requires_grad=False)
            del module._buffers[name]
            module.register_parameter(name, made[id(buf)])


def packed_copy(model: Model) -> Model:
    """A deep copy of ``model`` with every quantized linear replaced by a :class:`PackedLinear`
    and every stored tensor a parameter.

    The copy leaves the reference untouched (its weight caches would otherwise be traced as float
    constants, or filled with fake tensors during tracing).
    """
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (QuantLinear, TiedQuantLinear)) and not isinstance(child, PackedLinear):
                setattr(module, child_name, _packed(child))
    _buffers_to_parameters(model)
    return model.eval()


class _GatherSlotCache(_SlotCache):
    """The graphs' slot cache writing by gather + select instead of ``index_copy`` (which TVM's
    importer breaks on)."""

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        slots = torch.arange(self.k.shape[2], dtype=input_pos.dtype)
        hit = (slots[:, None] == input_pos[None, :]).to(torch.int64)  # [S, C]: slot s written by row c
        rows = torch.arange(input_pos.shape[0], dtype=torch.int64)
        src = (hit * rows[None, :]).sum(1)  # [S] the row written at each slot (0 where none)
        written = (hit.sum(1) > 0)[None, None, :, None]  # [1, 1, S, 1]
        self.k = torch.where(written, k.to(self.k.dtype).index_select(2, src), self.k)
        self.v = torch.where(written, v.to(self.v.dtype).index_select(2, src), self.v)
        return self.k, self.v


class TvmStepGraph(StepGraph):
    """The decoder step (``prefill`` / ``decode`` / ``score``) as :class:`StepGraph` defines it, with the
    gather-based cache write; same inputs, outputs and values."""

    slot_class = _GatherSlotCache


def graph_for(model: Model, method: str) -> nn.Module:
    """The module traced for one contract method of the (packed) model."""
    from edgevlm import contract as C

    from .graphs import TokenEmbeddingGraph, VisionEncoderGraph

    if method in (C.METHOD_PREFILL, C.METHOD_DECODE, C.METHOD_SCORE):
        return TvmStepGraph(model).eval()
    if method == C.METHOD_TOKEN_EMBEDDING:
        return TokenEmbeddingGraph(model).eval()
    if method == C.METHOD_VISION_ENCODER:
        return VisionEncoderGraph(model).eval()
    raise ValueError(f"unknown method {method!r}")
