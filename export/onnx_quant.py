"""Quantized linears for the ONNX target: ``com.microsoft::MatMulNBits`` and its QDQ rewrite.

Export path: every :class:`~edgevlm.quant.modules.QuantLinear` (and tied LM head) of the reference is
swapped, for the duration of the export, for :class:`NBitsLinear`, which calls the torch custom op
``edgevlm_onnx::matmul_nbits`` on *our stored integers*; :func:`translation_table` maps that op to
one ``MatMulNBits`` node (contrib opset 1 of onnxruntime). Nothing is re-quantized:

- int4 (symmetric or not): the packed bytes ``uint8 [N, K_pad/2]`` are already MatMulNBits' ``B``
  (low nibble first, ``u = q + 8`` so the implicit zero point 8 applies) and are only viewed as
  ``[N, K_pad/g, g/2]``; scales ``[N, G]`` go in as float32 (float16 scales widen exactly);
  asymmetric zero points are packed two per byte per row as MatMulNBits reads them.
- int8 per channel: ``u = q + 128`` (implicit zero point 128 of ``bits=8``) in blocks of a power of
  two dividing K (16..128; K is zero-padded otherwise), the channel's scale repeated per block.

Activation schemes: weight-only (``a=none``) uses ``accuracy_level=0`` (float compute, exact up to
float32 summation order); ``a=token`` (8da4w) and ``a=group32`` use ``accuracy_level=4``, where
onnxruntime quantizes the activations itself to int8 per block of ``block_size`` inputs (symmetric):
close to, but not bit-identical with, the reference's per-token asymmetric int8 (tolerance measured
by the verification). ``a=static`` (NPU W8A8) has no MatMulNBits form and is refused by name.

:func:`to_qdq` rewrites a MatMulNBits graph into the QDQ form NPU execution providers accept:
``DequantizeLinear`` of a constant ``[K, N]`` weight (int4/uint4 with ``axis=0, block_size=g``;
int8 per-axis with ``axis=1``) followed by ``MatMul`` -- the same integers and scales.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from edgevlm.quant.modules import QuantLinear, TiedQuantLinear
from edgevlm.quant.qtensor import unpack_int4

DOMAIN = "com.microsoft"
ACC_FLOAT, ACC_INT8 = 0, 4  # MatMulNBits accuracy_level: float32 compute / int8 activations


class UnsupportedLayer(ValueError):
    """A layer this target cannot represent (named in the message); the export of this target fails, others go on."""


# --- the torch custom op ------------------------------------------------------------------------
@torch.library.custom_op("edgevlm_onnx::matmul_nbits", mutates_args=())
def matmul_nbits(x: torch.Tensor, b: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                 K: int, N: int, bits: int, block_size: int, accuracy_level: int) -> torch.Tensor:
    """What MatMulNBits computes with float accuracy: ``x [..., K] @ dequantize(b).T -> [..., N]``."""
    return x @ dequantize_nbits(b, scales, zeros, K, bits, block_size).t().to(x.dtype)


@matmul_nbits.register_fake
def _(x, b, scales, zeros, K, N, bits, block_size, accuracy_level):
    return x.new_empty((*x.shape[:-1], N))


def dequantize_nbits(b: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, k: int, bits: int,
                     block_size: int) -> torch.Tensor:
    """MatMulNBits' ``B [N, nb, blob]``, ``scales [N, nb]`` (and packed zero points) -> float ``[N, K]``."""
    n, nb, _ = b.shape
    u = (unpack_int4(b) if bits == 4 else b).reshape(n, nb * block_size).float()
    if zeros is None:
        z = torch.full((n, nb), float(1 << (bits - 1)))
    else:
        z = (unpack_int4(zeros)[:, :nb] if bits == 4 else zeros).float()
    w = (u - z.repeat_interleave(block_size, 1)) * scales.float().repeat_interleave(block_size, 1)
    return w[:, :k]


def _schema():
    from onnx.defs import OpSchema

    P, A, INT = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType.INT
    opt = OpSchema.FormalParameterOption.Optional
    return OpSchema("MatMulNBits", DOMAIN, 1, inputs=[P("A", "T1"), P("B", "T2"), P("scales", "T1"),
                                                       P("zero_points", "T3", param_option=opt)],
                    outputs=[P("Y", "T1")],
                    type_constraints=[("T1", ["tensor(float)"], ""), ("T2", ["tensor(uint8)"], ""),
                                      ("T3", ["tensor(uint8)"], "")],
                    attributes=[A(name, INT) for name in ("K", "N", "bits", "block_size", "accuracy_level")])


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: our op -> one MatMulNBits node."""
    from onnxscript import values

    op = values.Op(values.Opset(DOMAIN, 1), "MatMulNBits", _schema())

    def to_matmul_nbits(x, b, scales, zeros, K: int, N: int, bits: int, block_size: int, accuracy_level: int):
        attrs = dict(K=K, N=N, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
        return op(x, b, scales, zeros, **attrs) if zeros is not None else op(x, b, scales, **attrs)

    return {torch.ops.edgevlm_onnx.matmul_nbits.default: to_matmul_nbits}


# --- the swapped-in module ----------------------------------------------------------------------
def int8_block(k: int) -> int:
    """Block size for an int8 per-channel layer: the largest power of two in 16..128 dividing K (else 32)."""
    for bs in (128, 64, 32, 16):
        if k % bs == 0:
            return bs
    return 32


class NBitsLinear(nn.Module):
    """A quantized linear as MatMulNBits sees it (buffers in MatMulNBits' layout, built from our integers)."""

    def __init__(self, layer: QuantLinear | TiedQuantLinear, name: str):
        super().__init__()
        if isinstance(layer, TiedQuantLinear):
            layer(torch.zeros(1, layer.in_features))  # builds its inner QuantLinear on the embedding's integers
            layer = layer._inner[0]
        scheme = layer.scheme
        if scheme.activations == "static":
            raise UnsupportedLayer(f"onnx: layer {name!r} uses static int8 activations ({scheme}); MatMulNBits has no "
                             "static-activation form -- export this recipe to another target")
        qw = layer.qweight
        n, k = qw.shape
        self.K, self.N = k, n
        self.accuracy_level = ACC_FLOAT if scheme.activations == "none" else ACC_INT8
        zeros = None
        if scheme.weight == "int4":
            self.bits, self.block_size = 4, qw.group
            nb = qw.k_pad // qw.group
            b = qw.data.reshape(n, nb, qw.group // 2)
            scales = qw.scales.float()
            if qw.zeros is not None:  # [N, nb] -> packed [N, ceil(nb / 2)], low nibble first
                z = qw.zeros if nb % 2 == 0 else torch.cat([qw.zeros, torch.zeros(n, 1, dtype=torch.uint8)], 1)
                zeros = z[:, 0::2] | (z[:, 1::2] << 4)
        elif scheme.weight == "int8":
            self.bits, self.block_size = 8, int8_block(k)
            nb = -(-k // self.block_size)
            u = (qw.data[:, :k].to(torch.int16) + 128).to(torch.uint8)
            u = torch.nn.functional.pad(u, (0, nb * self.block_size - k), value=128)  # padding codes are zeros
            b = u.reshape(n, nb, self.block_size)
            scales = qw.scales.float().reshape(n, 1).expand(n, nb)
        else:
            raise UnsupportedLayer(f"onnx: layer {name!r} has an unsupported weight scheme {scheme.weight!r}")
        self.register_buffer("b", b.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("zeros", None if zeros is None else zeros.contiguous())
        bias = getattr(layer, "bias", None)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.edgevlm_onnx.matmul_nbits(x, self.b, self.scales, self.zeros, self.K, self.N, self.bits,
                                                self.block_size, self.accuracy_level)
        return y if self.bias is None else y + self.bias


@contextmanager
def nbits_linears(model: nn.Module):
    """Swap every quantized linear of ``model`` for :class:`NBitsLinear` inside the ``with`` block, then restore."""
    swaps = []
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, (QuantLinear, TiedQuantLinear)):
                full = f"{name}.{child_name}" if name else child_name
                swaps.append((mod, child_name, child, NBitsLinear(child, full)))
    try:
        for parent, child_name, _, new in swaps:
            setattr(parent, child_name, new)
        yield len(swaps)
    finally:
        for parent, child_name, old, _ in swaps:
            setattr(parent, child_name, old)


# --- QDQ rewrite --------------------------------------------------------------------------------
def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _int4_tensor(name: str, dtype: int, values: np.ndarray):
    """An ONNX INT4/UINT4 initializer from integer ``values`` (packed two per byte, low nibble first, flat order)."""
    from onnx import TensorProto

    flat = (np.ascontiguousarray(values).reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    t = TensorProto(name=name, data_type=dtype, dims=list(values.shape))
    t.raw_data = (flat[0::2] | (flat[1::2] << 4)).tobytes()
    return t


def to_qdq(model):
    """A copy of the ONNX ``model`` with every MatMulNBits replaced by DequantizeLinear (block-wise int4 or
    per-axis int8, constant weights ``[K, N]``) + MatMul. Needs opset >= 21 for int4 and block_size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    used_elsewhere = {i for n in graph.node if not (n.domain == DOMAIN and n.op_type == "MatMulNBits") for i in n.input}
    nodes, drop = [], set()
    for node in graph.node:
        if not (node.domain == DOMAIN and node.op_type == "MatMulNBits"):
            nodes.append(node)
            continue
        a = _attrs(node)
        k, n, bits, bs = a["K"], a["N"], a["bits"], a["block_size"]
        b = numpy_helper.to_array(inits[node.input[1]])
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, -1).astype(np.float32)
        has_zp = len(node.input) > 3 and node.input[3]
        nb = b.shape[1]
        u = (unpack_int4(torch.from_numpy(b.copy())).numpy() if bits == 4 else b).reshape(n, nb * bs)[:, :k]
        pre = node.name or node.output[0]
        new_inits = []
        if bits == 4:
            if has_zp:
                zp = unpack_int4(torch.from_numpy(numpy_helper.to_array(inits[node.input[3]]))).numpy()[:, :nb]
                new_inits += [_int4_tensor(f"{pre}_w", TensorProto.UINT4, u.T), _int4_tensor(f"{pre}_zp", TensorProto.UINT4, zp.T)]
            else:
                new_inits.append(_int4_tensor(f"{pre}_w", TensorProto.INT4, u.T.astype(np.int16) - 8))
            s = numpy_helper.from_array(np.ascontiguousarray(scales.T), f"{pre}_s")  # [nb, N]
            dq_attrs = dict(axis=0, block_size=bs)
        else:
            if not np.all(scales == scales[:, :1]):
                raise ValueError(f"{pre}: int8 MatMulNBits with per-block scales; expected one scale per channel")
            q = (u.astype(np.int16) - 128).astype(np.int8)
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(q.T), f"{pre}_w"))
            s = numpy_helper.from_array(np.ascontiguousarray(scales[:, 0]), f"{pre}_s")  # [N]
            dq_attrs = dict(axis=1)
        new_inits.append(s)
        graph.initializer.extend(new_inits)
        dq_in = [f"{pre}_w", f"{pre}_s"] + ([f"{pre}_zp"] if bits == 4 and has_zp else [])
        nodes.append(helper.make_node("DequantizeLinear", dq_in, [f"{pre}_wdq"], name=f"{pre}_dq", **dq_attrs))
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{pre}_wdq"], list(node.output), name=f"{pre}_mm"))
        drop.update(i for i in node.input[1:] if i and i not in used_elsewhere)
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < 21:
            imp.version = 21  # int4 DequantizeLinear with block_size; the rest of the graph is unchanged from 18+
    if not any(n.domain == DOMAIN for n in graph.node):
        keep_imports = [i for i in model.opset_import if i.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep_imports)
    return model


__all__ = ["NBitsLinear", "UnsupportedLayer", "dequantize_nbits", "int8_block", "matmul_nbits", "nbits_linears", "to_qdq", "translation_table"]
