"""GPTQ (Frantar et al., 2022): quantize columns one at a time, pushing each column's error onto the
columns not yet quantized through the inverse Hessian of the layer's calibration inputs.

``H = X^T X / N`` over the calibration rows ``X [N, K]`` of the layer, plus ``damping * mean(diag H)``
on the diagonal. Columns are taken in order (or, with ``act_order``, by decreasing ``diag H``) in
lazy-update blocks of 128. Groups stay contiguous in the original column order, so the result is
an ordinary group-wise weight that every runtime reads: without act-order a group's scale is found
from the already-updated weights when its first column comes up; with act-order all group scales
are fixed up front from the original weights ("static groups"). A group's range is shrunk by the factor
in ``[0.5, 1]`` minimizing ``sum |w - deq(q(w))|^2.4`` (the reference GPTQ quantizer's "mse" option).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .qtensor import QWeight, group_params, mse_clip, padded, quantize_groups
from .recipe import Scheme


class HessianAccumulator:
    """Running ``X^T X / N`` of a layer's inputs (float64)."""

    def __init__(self, k: int):
        self.h = torch.zeros(k, k, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        m = x.shape[0]
        self.h.mul_(self.n / (self.n + m)).addmm_(x.t(), x, alpha=1 / (self.n + m))
        self.n += m


def _inverse_cholesky(h: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of ``H^-1``, raising the damping until ``H`` is positive definite."""
    mean_diag = h.diagonal().mean()
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(8):
        damp = damping * (10**attempt)
        lower, info = torch.linalg.cholesky_ex(h + damp * mean_diag * eye)
        if int(info) == 0:
            inv = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(inv, upper=True)
    raise InputError("GPTQ: the calibration Hessian is not positive definite even with heavy damping; "
                     "use more calibration data")


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, scheme: Scheme, damping: float = 0.01,
                  act_order: bool = False, block: int = 128) -> QWeight:
    """GPTQ-quantize ``w [O, K]`` given the input Hessian ``h [K, K]``."""
    o, k = w.shape
    g = scheme.group_for(k)
    kp = padded(k, g)
    block = max(block, g) // g * g
    w = F.pad(w.detach().double(), (0, kp - k))
    h = F.pad(h.double(), (0, kp - k, 0, kp - k)).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    n_groups = kp // g
    scales = torch.zeros(o, n_groups, dtype=torch.float32)
    zeros = None if scheme.symmetric else torch.zeros(o, n_groups, dtype=torch.float32)
    if act_order:  # static groups from the original weights
        wg = w.float().view(o, n_groups, g)
        s, z = group_params(wg, scheme, mse_clip(wg, scheme))
        scales[:] = s
        if zeros is not None:
            zeros[:] = z
        perm = torch.argsort(h.diagonal(), descending=True)
    else:
        perm = torch.arange(kp)
    w = w[:, perm]
    h = h[perm][:, perm]
    hinv = _inverse_cholesky(h, damping)
    codes = torch.zeros(o, kp, dtype=torch.float32)

    for i1 in range(0, kp, block):
        i2 = min(i1 + block, kp)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            gi = col // g
            if not act_order and col % g == 0:  # the group starts here: its scale from the updated weights
                wg = w1[:, i:i + g].float()[:, None, :]
                s, z = group_params(wg, scheme, mse_clip(wg, scheme))
                scales[:, gi] = s[:, 0]
                if zeros is not None:
                    zeros[:, gi] = z[:, 0]
            z = None if zeros is None else zeros[:, gi]
            q = quantize_groups(w1[:, i].float()[:, None], scales[:, gi], z, scheme)[:, 0]
            codes[:, col] = q
            deq = ((q - (0 if z is None else z)) * scales[:, gi]).double()
            err = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return QWeight.from_codes(codes, scales, zeros, scheme, (o, k))
