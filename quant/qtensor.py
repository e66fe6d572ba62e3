"""Group-wise integer weights: quantize, pack, unpack, dequantize.

A weight ``[O, K]`` is split along its input dimension into groups of ``g`` columns (int8
per-channel: one group of all ``K``). ``K`` is first padded with zero columns to a multiple of
``g`` (zeros never change a group's scale, and meet zero activations at run time), so every row
has ``G = K_pad / g`` groups with one scale each (and one zero point when asymmetric).

Integer grids (torchao's conventions, so an ExecuTorch export can take the integers as they are):

- symmetric int4: ``q = clamp(round(w / s), -8, 7)`` with ``s = amax / 7.5``; int8: ``[-128, 127]``,
  ``s = amax / 127.5``. ``w ~= q * s``.
- asymmetric int4: the group's range widened to include 0, ``s = (max - min) / 15``,
  ``z = clamp(-round(min / s), 0, 15)``, ``q = clamp(round(w / s) + z, 0, 15)``, ``w ~= (q - z) * s``.

Rounding is half to even everywhere (``torch.round``, C's ``nearbyint``).

Storage: int4 codes are *unsigned nibbles* ``u`` in ``0..15`` (symmetric: ``u = q + 8``, so an
implicit zero point of 8 as in ONNX ``MatMulNBits`` and llama.cpp ``Q4_0``; asymmetric: ``u = q``),
packed two per byte along ``K``: element ``2i`` in the low nibble, ``2i + 1`` in the high nibble
of byte ``i`` -> ``uint8 [O, K_pad / 2]``. int8 codes are stored as ``int8 [O, K_pad]``. Scales are
``[O, G]`` in the scheme's scale dtype, zero points ``uint8 [O, G]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .recipe import Scheme

_EPS = 1e-12


def pack_int4(u: torch.Tensor) -> torch.Tensor:
    """Unsigned nibbles ``[..., 2n]`` (values 0..15) -> bytes ``uint8 [..., n]``, low nibble first."""
    if u.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even last dimension, got {u.shape[-1]}")
    if u.numel() and (int(u.min()) < 0 or int(u.max()) > 15):
        raise ValueError("int4 codes must be in 0..15")
    u = u.to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Bytes ``uint8 [..., n]`` -> unsigned nibbles ``uint8 [..., 2n]`` (inverse of :func:`pack_int4`)."""
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)


def padded(k: int, group: int) -> int:
    return -(-k // group) * group


def qrange(scheme: Scheme) -> tuple[int, int]:
    if scheme.weight == "int4":
        return (-8, 7) if scheme.symmetric else (0, 15)
    return (-128, 127)


def group_params(w: torch.Tensor, scheme: Scheme, clip: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zero points) ``[..., ]`` of groups ``w [..., g]``, the group range shrunk by ``clip``.

    Scales come back already rounded to the scheme's scale dtype (as float32), so codes computed with
    them reproduce exactly what a runtime reading the stored scales computes.
    """
    qmin, qmax = qrange(scheme)
    if scheme.symmetric:
        amax = w.abs().amax(-1) * clip
        scale = (amax / ((qmax - qmin) / 2)).clamp(min=_EPS)
        zero = None
    else:
        lo = w.amin(-1).clamp(max=0) * clip
        hi = w.amax(-1).clamp(min=0) * clip
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=_EPS)
    if scheme.scale_dtype == "float16":
        scale = scale.clamp(min=6.2e-5, max=65504).half().float()
    if not scheme.symmetric:
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero


def quantize_groups(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, scheme: Scheme) -> torch.Tensor:
    """Integer codes (as float) of ``w [..., g]`` with per-group ``scale``/``zero [...]``."""
    qmin, qmax = qrange(scheme)
    q = torch.round(w / scale[..., None])
    if zero is not None:
        q = q + zero[..., None]
    return q.clamp(qmin, qmax)


def mse_clip(w: torch.Tensor, scheme: Scheme, grid: int = 20, min_ratio: float = 0.5, norm: float = 2.4) -> torch.Tensor:
    """Per-group range factors ``[...]`` of groups ``w [..., g]`` minimizing ``sum |w - deq(q(w))|^norm``
    (the GPTQ reference quantizer's "mse" search)."""
    best_err = torch.full(w.shape[:-1], float("inf"))
    best = torch.ones(w.shape[:-1])
    for step in range(grid + 1):
        c = 1.0 - (1.0 - min_ratio) * step / grid
        scale, zero = group_params(w, scheme, c)
        q = quantize_groups(w, scale, zero, scheme)
        deq = (q - (0 if zero is None else zero[..., None])) * scale[..., None]
        err = (w - deq).abs().pow(norm).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, c), best)
    return best


@dataclass
class QWeight:
    """An integer weight: codes, scales, zero points and the scheme; shapes as in the module doc."""

    scheme: Scheme
    shape: tuple[int, int]  # (O, K) of the float weight
    data: torch.Tensor  # int4: uint8 [O, K_pad/2] packed; int8: int8 [O, K_pad]
    scales: torch.Tensor  # [O, G]
    zeros: torch.Tensor | None  # uint8 [O, G] (asymmetric only)

    @property
    def group(self) -> int:
        return self.scheme.group_for(self.shape[1])

    @property
    def k_pad(self) -> int:
        return padded(self.shape[1], self.group)

    def codes(self) -> torch.Tensor:
        """Signed integer weights ``q - z`` as float ``[O, K_pad]`` (what the integer kernels multiply)."""
        if self.scheme.weight == "int4":
            u = unpack_int4(self.data).float()
            if self.scheme.symmetric:
                return u - 8
            return u - self.zeros.float().repeat_interleave(self.group, dim=1)
        return self.data.float()

    def dequantize(self) -> torch.Tensor:
        """The float weight ``[O, K]`` these integers stand for."""
        w = self.codes() * self.scales.float().repeat_interleave(self.group, dim=1)
        return w[:, : self.shape[1]]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scales, self.zeros) if t is not None)

    @classmethod
    def from_codes(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, scheme: Scheme,
                   shape: tuple[int, int]) -> QWeight:
        """Build from codes ``q [O, K_pad]`` on the scheme's grid (as :func:`quantize_groups` returns them)."""
        sdtype = torch.float16 if scheme.scale_dtype == "float16" else torch.float32
        if scheme.weight == "int4":
            u = q + 8 if scheme.symmetric else q
            data = pack_int4(u.to(torch.uint8))
        else:
            data = q.to(torch.int8)
        return cls(scheme, tuple(shape), data.contiguous(), scale.to(sdtype).contiguous(),
                   None if zero is None else zero.to(torch.uint8).contiguous())


def quantize_weight(w: torch.Tensor, scheme: Scheme, clip: torch.Tensor | float = 1.0) -> QWeight:
    """Round-to-nearest quantization of ``w [O, K]``; ``clip`` ``[O, G]`` (or a number) shrinks group ranges."""
    w = w.detach().float()
    o, k = w.shape
    g = scheme.group_for(k)
    wp = torch.nn.functional.pad(w, (0, padded(k, g) - k)).view(o, -1, g)
    scale, zero = group_params(wp, scheme, clip)
    q = quantize_groups(wp, scale, zero, scheme).view(o, -1)
    return QWeight.from_codes(q, scale, zero, scheme, (o, k))


def fake_quantize(w: torch.Tensor, scheme: Scheme, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """``dequantize(quantize(w))``, for searches."""
    return quantize_weight(w, scheme, clip).dequantize()
