"""Quantize a model in place following a recipe: ``quantize_model(model, recipe, calibration)``.

Every ``nn.Linear`` and the token embedding get a role (:func:`layer_roles`); the recipe's
predicate gives each its scheme. Layers are processed in *stages* (one transformer block, or one
stand-alone layer) in model order; a stage's calibration inputs are captured with every earlier
stage already quantized, so GPTQ and AWQ correct for the errors upstream. Convolutions, norms and
position embeddings stay float.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import InputError
from ..models.base import Model
from .awq import search_clip, search_scales
from .calib import CalibSample
from .gptq import HessianAccumulator, gptq_quantize
from .modules import QuantEmbedding, QuantLinear, TiedQuantLinear
from .qtensor import QWeight, quantize_weight
from .recipe import QuantRecipe, Scheme

STORED_ROWS = 4096  # calibration rows kept per layer for AWQ searches and error reports
_BLOCK = re.compile(r"^(.*\.layers\.\d+)\.")


@dataclass
class LayerReport:
    path: str
    role: str
    scheme: str
    algorithm: str
    shape: list[int]
    float_bytes: int
    quant_bytes: int
    weight_error: float  # ||W - Wq|| / ||W||
    output_error: float | None = None  # ||XW^T - layer_q(X)|| / ||XW^T|| on calibration rows (activations included)
    outliers: int = 0


@dataclass
class QuantReport:
    recipe: dict
    layers: list[LayerReport] = field(default_factory=list)
    float_bytes: int = 0  # every parameter of the float model
    quant_bytes: int = 0  # every tensor of the quantized model (a tied head counted once)
    calibration_samples: int = 0
    calibration_tokens: int = 0
    # layers with weights of a type no scheme applies to (convolutions, position embeddings), kept float
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def layer_roles(model: Model) -> dict[str, str]:
    """Module path -> role for every linear layer and the token embedding."""
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = [(names[id(mod)] + ".", role) for role, mod in model.vision_components().items()]
    lm = names[id(model.language_model)]
    roles = {}
    for path, module in model.named_modules():
        if path == f"{lm}.embed_tokens":
            roles[path] = "token_embedding"
        elif path == f"{lm}.lm_head":
            roles[path] = "lm_head"
        elif isinstance(module, nn.Linear):
            role = next((r for p, r in prefixes if path.startswith(p)), None)
            if role is None and path.startswith(lm + "."):
                role = "decoder"
            if role is not None:
                roles[path] = role
    return roles


def skipped_layers(model: nn.Module, roles: dict[str, str]) -> list[dict]:
    """Layers holding a weight matrix or kernel that no quantization scheme applies to: path, type and
    parameter count of every module with a weight of two or more dimensions that has no role (norms,
    with vector weights, are not layers in this sense)."""
    out = []
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        if path in roles or weight is None or weight.dim() < 2:
            continue
        kind = type(module).__name__
        reason = ("outside the vision tower, projector and language model: no role for the recipe"
                  if isinstance(module, nn.Linear) else f"no quantized form for {kind}")
        out.append({"path": path, "type": kind, "parameters": weight.numel(), "reason": reason + "; kept float"})
    return out


def _stages(paths: list[str]) -> list[list[str]]:
    stages: list[list[str]] = []
    keys: list[str] = []
    for p in paths:
        m = _BLOCK.match(p)
        key = m.group(1) if m else p
        if keys and keys[-1] == key:
            stages[-1].append(p)
        else:
            stages.append([p])
            keys.append(key)
    return stages


class _Stop(Exception):
    pass


@dataclass
class _Capture:
    """What one layer saw during calibration."""

    rows: list[torch.Tensor] = field(default_factory=list)
    hessian: HessianAccumulator | None = None
    amax: torch.Tensor | None = None  # per input channel

    def x(self) -> torch.Tensor:
        x = torch.cat(self.rows)
        if x.shape[0] > STORED_ROWS:
            x = x[torch.linspace(0, x.shape[0] - 1, STORED_ROWS).long()]
        return x


def _run(model: Model, sample: CalibSample) -> None:
    pixels = None if sample.pixel_values is None else sample.pixel_values.to(next(model.parameters()).dtype)
    model(sample.input_ids, pixels)


@torch.no_grad()
def _capture(model: Model, paths: list[str], calib: list[CalibSample], hessian: bool) -> dict[str, _Capture]:
    caps = {p: _Capture(hessian=None) for p in paths}
    seen: set[str] = set()

    def hook(path):
        def fn(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            c = caps[path]
            c.rows.append(x)
            if hessian:
                c.hessian = c.hessian or HessianAccumulator(x.shape[1])
                c.hessian.add(x)
            amax = x.abs().amax(0)
            c.amax = amax if c.amax is None else torch.maximum(c.amax, amax)
            seen.add(path)
            if len(seen) == len(paths):
                raise _Stop
        return fn

    handles = [model.get_submodule(p).register_forward_pre_hook(hook(p)) for p in paths]
    try:
        for sample in calib:
            seen.clear()
            try:
                _run(model, sample)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    missing = [p for p in paths if not caps[p].rows]
    if missing:
        raise InputError(f"calibration data never reached {missing[0]} (a vision layer needs image calibration data)")
    return caps


def _scale_groups(model: Model, stage: list[str]) -> list[tuple[str, list[str]]]:
    """(preceding op, linears reading its output) pairs inside one block that AWQ may rescale."""
    m = _BLOCK.match(stage[0])
    if m is None:
        return []
    block = model.get_submodule(m.group(1))
    b = m.group(1)
    groups = []
    if hasattr(block, "input_layernorm"):  # Llama decoder layer
        attn = block.self_attn
        groups.append((f"{b}.input_layernorm", [f"{b}.self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj")]))
        if attn.num_heads == attn.num_key_value_heads:
            groups.append((f"{b}.self_attn.v_proj", [f"{b}.self_attn.o_proj"]))
        groups.append((f"{b}.post_attention_layernorm", [f"{b}.mlp.gate_proj", f"{b}.mlp.up_proj"]))
        groups.append((f"{b}.mlp.up_proj", [f"{b}.mlp.down_proj"]))
    elif hasattr(block, "layer_norm1"):  # ViT layer
        groups.append((f"{b}.layer_norm1", [f"{b}.self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj")]))
        groups.append((f"{b}.self_attn.v_proj", [f"{b}.self_attn.out_proj"]))
        groups.append((f"{b}.layer_norm2", [f"{b}.mlp.fc1"]))
    return [(prev, lins) for prev, lins in groups if all(p in stage for p in lins)]


@torch.no_grad()
def _fold(prev: nn.Module, s: torch.Tensor) -> None:
    """Divide the output channels of ``prev`` (a norm or linear) by ``s``."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s[:, None])
    else:
        prev.weight.div_(s)
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s)


def _static_params(scheme: Scheme, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outlier channel indices and the per-tensor activation scale of the remaining channels."""
    out = set()
    if scheme.outliers:
        out |= set(torch.topk(amax, min(scheme.outliers, amax.numel() - 1)).indices.tolist())
    if scheme.outlier_threshold:
        out |= set(torch.nonzero(amax > scheme.outlier_threshold * amax.median()).flatten().tolist())
    idx = torch.tensor(sorted(out), dtype=torch.long)
    inlier = amax.clone()
    inlier[idx] = 0
    return idx, (inlier.max() / 127).clamp(min=1e-8)


def _quantize_linear(lin: nn.Linear, scheme: Scheme, recipe: QuantRecipe, cap: _Capture | None,
                     clip: torch.Tensor | None) -> tuple[QuantLinear, str]:
    w = lin.weight.detach().float()
    algorithm = "rtn"
    act_scale = outlier_idx = outlier_w = None
    if scheme.activations == "static":
        if cap is None:
            raise InputError("static activation scales need calibration data (--calib)")
        outlier_idx, act_scale = _static_params(scheme, cap.amax)
        outlier_w = w[:, outlier_idx].clone()
        w = w.index_fill(1, outlier_idx, 0.0)
    if scheme.weight == "int4" and recipe.algorithm == "gptq":
        qw = gptq_quantize(w, cap.hessian.h, scheme, recipe.gptq_damping, recipe.gptq_act_order)
        algorithm = "gptq"
    elif scheme.weight == "int4" and recipe.algorithm == "awq":
        qw = quantize_weight(w, scheme, clip if clip is not None else 1.0)
        algorithm = "awq"
    else:
        qw = quantize_weight(w, scheme)
    bias = None if lin.bias is None else lin.bias.detach().float()
    return QuantLinear(qw, bias, act_scale, outlier_idx, outlier_w), algorithm


def _report(path: str, role: str, lin: nn.Module, q: nn.Module, algorithm: str, x: torch.Tensor | None) -> LayerReport:
    w = lin.weight.detach().float()
    bias = getattr(lin, "bias", None)
    err = float((w - q.weight.float()).norm() / w.norm().clamp(min=1e-12))
    out_err = None
    if x is not None:
        with torch.no_grad():
            ref = x @ w.t()
            got = q(x) - (0 if bias is None else bias.float())
            out_err = float((ref - got).norm() / ref.norm().clamp(min=1e-12))
    nbias = 0 if bias is None else bias.numel()
    qbytes = sum(t.numel() * t.element_size() for t in q.buffers()) + 4 * nbias
    n_out = 0 if getattr(q, "outlier_idx", None) is None else q.outlier_idx.numel()
    return LayerReport(path, role, str(q.scheme), algorithm, list(w.shape), (w.numel() + nbias) * 4, qbytes, err, out_err, n_out)


@torch.no_grad()
def quantize_model(model: Model, recipe: QuantRecipe, calib: list[CalibSample] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> QuantReport:
    """Replace ``model``'s layers by quantized ones following ``recipe``; returns the per-layer report.

    ``progress(stage, done, total)`` is called after each stage.
    """
    model.eval()
    if recipe.needs_calibration and not calib:
        raise InputError(f"recipe {recipe.name!r} with {recipe.algorithm} needs calibration data (--calib)")
    float_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    roles = layer_roles(model)
    lm = model.language_model
    tied = lm.lm_head.weight is lm.embed_tokens.weight
    schemes = {p: recipe.scheme_for(p, r) for p, r in roles.items()}
    linear_paths = [p for p in roles if roles[p] != "token_embedding" and not (tied and roles[p] == "lm_head")
                    and schemes[p].quantized]
    report = QuantReport(recipe.to_dict(), calibration_samples=len(calib or []),
                         calibration_tokens=sum(s.tokens for s in calib or []), skipped=skipped_layers(model, roles))
    stages = _stages(linear_paths)
    for n_done, stage in enumerate(stages, 1):
        caps = _capture(model, stage, calib, recipe.algorithm == "gptq") if calib else {}
        clips: dict[str, torch.Tensor] = {}
        if recipe.algorithm == "awq" and calib:
            xs = {p: caps[p].x() for p in stage}
            for prev_path, lins in _scale_groups(model, stage):
                if not all(schemes[p].weight == "int4" for p in lins):
                    continue
                weights = [model.get_submodule(p).weight.detach().float() for p in lins]
                s = search_scales(xs[lins[0]], weights, [schemes[p] for p in lins], recipe.awq_grid)
                _fold(model.get_submodule(prev_path), s)
                for p in lins:
                    model.get_submodule(p).weight.mul_(s)
                    xs[p] = xs[p] / s
            for p in stage:
                if schemes[p].weight == "int4":
                    clips[p] = search_clip(xs[p], model.get_submodule(p).weight.detach().float(), schemes[p])
            for p in stage:
                caps[p].rows = [xs[p]]
        for p in stage:
            lin = model.get_submodule(p)
            q, algorithm = _quantize_linear(lin, schemes[p], recipe, caps.get(p), clips.get(p))
            report.layers.append(_report(p, roles[p], lin, q, algorithm, caps[p].x() if p in caps else None))
            _set_module(model, p, q)
        if progress is not None:
            progress(stage[0], n_done, len(stages))

    emb_path = next(p for p, r in roles.items() if r == "token_embedding")
    emb_scheme = schemes[emb_path]
    if emb_scheme.quantized:
        qe = QuantEmbedding(quantize_weight(lm.embed_tokens.weight, emb_scheme))
        report.layers.append(_report(emb_path, "token_embedding", lm.embed_tokens, qe, "rtn", None))
        head_path = next(p for p, r in roles.items() if r == "lm_head")
        _set_module(model, emb_path, qe)
        if tied:
            _set_module(model, head_path, TiedQuantLinear(qe, schemes[head_path]))
    elif tied and schemes[next(p for p, r in roles.items() if r == "lm_head")].quantized:
        raise InputError("the LM head is tied to a float token embedding: quantize the embedding too, or keep both float")
    model.quant_recipe = recipe
    model.kv_cache_quant = recipe.kv_cache
    report.quant_bytes = model_bytes(model)
    report.float_bytes = float_bytes
    return report


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and persistent buffer (shared tensors counted once)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding, TiedQuantLinear))}


__all__ = ["LayerReport", "QuantReport", "layer_roles", "quantize_model", "model_bytes", "quantized_layers", "QWeight"]
