"""AWQ (Lin et al., 2023): activation-aware per-input-channel scales, then a clipping search.

For a set of linears reading the same input ``X`` (q/k/v after the attention norm, gate/up after
the MLP norm, o_proj after v_proj, down_proj after up_proj), channel ``j`` is scaled by
``s_j = mean|X_j| ** a`` (normalized to a geometric mean of 1): the weights' columns are multiplied
by ``s`` before quantization and ``X`` divided by it, which the preceding norm or linear absorbs
exactly (its weight and bias divided by ``s``). The exponent ``a`` is found by grid search on
``[0, 1)`` minimizing the output error of the quantized linears on the calibration rows. Then each
weight group's range is shrunk by the factor in ``[0.5, 1]`` that minimizes that group's output
error (the "auto clip" step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .qtensor import fake_quantize, group_params, padded, quantize_groups
from .recipe import Scheme

CLIP_GRID = 20
CLIP_MIN = 0.5
CLIP_TOKENS = 512


def _out_error(x: torch.Tensor, weights: list[torch.Tensor], fake: list[torch.Tensor]) -> float:
    return sum(float((x @ (w - q).t()).pow(2).mean()) for w, q in zip(weights, fake, strict=True))


@torch.no_grad()
def search_scales(x: torch.Tensor, weights: list[torch.Tensor], schemes: list[Scheme], grid: int = 20) -> torch.Tensor:
    """Per-channel scales ``[K]`` for linears ``weights [O_i, K]`` reading rows ``x [N, K]``."""
    x = x.float()
    x_mean = x.abs().mean(0)
    best_err, best = float("inf"), torch.ones_like(x_mean)
    for step in range(grid):
        ratio = step / grid
        s = x_mean.pow(ratio).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        fake = [fake_quantize(w * s, sch) / s for w, sch in zip(weights, schemes, strict=True)]
        err = _out_error(x, weights, fake)
        if err < best_err:
            best_err, best = err, s
    return best


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, scheme: Scheme, grid: int = CLIP_GRID) -> torch.Tensor:
    """Per-group range factors ``[O, G]`` minimizing each group's output error on rows ``x [N, K]``."""
    x = x.float()
    if x.shape[0] > CLIP_TOKENS:  # evenly spaced rows, deterministic
        x = x[torch.linspace(0, x.shape[0] - 1, CLIP_TOKENS).long()]
    o, k = w.shape
    g = scheme.group_for(k)
    kp = padded(k, g)
    wg = F.pad(w.float(), (0, kp - k)).view(o, -1, g)  # [O, G, g]
    xg = F.pad(x, (0, kp - k)).view(x.shape[0], -1, g).permute(1, 2, 0)  # [G, g, N]
    best_err = torch.full(wg.shape[:2], float("inf"))
    best = torch.ones(wg.shape[:2])
    for step in range(grid + 1):
        c = 1.0 - (1.0 - CLIP_MIN) * step / grid
        scale, zero = group_params(wg, scheme, c)
        q = quantize_groups(wg, scale, zero, scheme)
        deq = (q - (0 if zero is None else zero[..., None])) * scale[..., None]
        diff = (wg - deq).transpose(0, 1)  # [G, O, g]
        err = torch.bmm(diff, xg).pow(2).mean(-1).t()  # [O, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, c), best)
    return best


@torch.no_grad()
def awq_linear(x: torch.Tensor, w: torch.Tensor, scheme: Scheme, grid: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ for one linear alone: channel scales ``s [K]`` and the dequantized weight of ``w * s``.

    The layer then computes ``(x / s) @ deq.T``; in a model ``1 / s`` is folded into the op before.
    """
    from .qtensor import quantize_weight

    s = search_scales(x, [w.float()], [scheme], grid)
    ws = w.float() * s
    clip = search_clip(x / s, ws, scheme)
    return s, quantize_weight(ws, scheme, clip).dequantize()
