"""Quantized checkpoints: a model directory like any other, with integer weights in safetensors.

``save_quantized`` writes ``OUT/`` with the source directory's tokenizer, processor and template
files, a ``config.json`` carrying ``quantization_config`` (``quant_method: "edgevlm"``, the recipe,
and every quantized layer's scheme, algorithm, shape and outlier count), and one
``model.safetensors`` holding the model's tensors under edgevlm's own module paths:

- ``<layer>.qdata``: int4 ``uint8 [O, K_pad/2]`` (two codes per byte, element ``2i`` in the low
  nibble; symmetric codes stored as ``q + 8``) or int8 ``int8 [O, K_pad]``
- ``<layer>.scales`` ``[O, G]`` (float32 or float16), ``<layer>.zeros`` ``uint8 [O, G]`` (asymmetric)
- static activations: ``<layer>.act_scale`` ``[]``, ``<layer>.outlier_idx`` ``int64 [n]``,
  ``<layer>.outlier_weight`` ``float32 [O, n]``
- every float tensor (norms, biases, convolutions, AWQ-rescaled norms) as is.

The safetensors metadata repeats the quantization config (key ``edgevlm.quantization``), so the
weights file alone says how to read it. ``edgevlm.models.load`` recognizes the directory and
rebuilds the quantized modules before loading; the tensors come back bit-identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..models.base import Model
from ..models.checkpoint import CONFIG_FILE, SINGLE_WEIGHTS_FILE
from .apply import QuantReport, layer_roles
from .modules import QuantEmbedding, QuantLinear, TiedQuantLinear
from .qtensor import QWeight, padded
from .recipe import QuantRecipe, Scheme

QUANT_METHOD = "edgevlm"
FORMAT_VERSION = 1
METADATA_KEY = "edgevlm.quantization"
REPORT_FILE = "quant_report.json"
_SKIP = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def quantization_config(model: Model) -> dict:
    layers = {}
    for path, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            shape = [m.out_features, m.in_features] if isinstance(m, QuantLinear) else [m.num_embeddings, m.embedding_dim]
            entry = {"scheme": str(m.scheme), "bits": m.scheme.bits, "group_size": m.qweight.group,
                     "symmetric": m.scheme.symmetric, "shape": shape,
                     "kind": "linear" if isinstance(m, QuantLinear) else "embedding"}
            if isinstance(m, QuantLinear) and m.outlier_idx is not None:
                entry["outliers"] = int(m.outlier_idx.numel())
            layers[path] = entry
        elif isinstance(m, TiedQuantLinear):
            layers[path] = {"scheme": str(m.scheme), "kind": "tied_lm_head"}
    recipe: QuantRecipe = model.quant_recipe
    return {"quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION, "recipe": recipe.to_dict(),
            "kv_cache": recipe.kv_cache, "layers": layers}


def save_quantized(model: Model, source_dir: Path, out_dir: Path, hf_config: dict,
                   report: QuantReport | None = None, algorithms: dict[str, str] | None = None) -> Path:
    """Write the quantized ``model`` (loaded from ``source_dir``) as a model directory ``out_dir``."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if out_dir.resolve() == source_dir.resolve():
        raise CheckpointError(f"{out_dir}: refusing to overwrite the source model directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in source_dir.iterdir():
        if f.is_file() and f.suffix not in _SKIP and f.name not in (CONFIG_FILE, REPORT_FILE) and not f.name.endswith(".index.json"):
            shutil.copy2(f, out_dir / f.name)
    qconfig = quantization_config(model)
    if report is not None:
        for layer in report.layers:
            if layer.path in qconfig["layers"]:
                qconfig["layers"][layer.path]["algorithm"] = layer.algorithm
    config = {**hf_config, "quantization_config": qconfig}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen and t.numel():  # a tied LM head is stored once, as the embedding
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().contiguous().clone()
    save_file(tensors, out_dir / SINGLE_WEIGHTS_FILE, metadata={"format": "pt", METADATA_KEY: json.dumps(qconfig)})
    if report is not None:
        (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return out_dir


def is_quantized(hf_config: dict) -> bool:
    q = hf_config.get("quantization_config")
    return isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD


def _empty_qweight(scheme: Scheme, shape: list[int], where: str) -> QWeight:
    o, k = shape
    g = scheme.group_for(k)
    kp = padded(k, g)
    sdtype = torch.float16 if scheme.scale_dtype == "float16" else torch.float32
    data = torch.zeros(o, kp // 2, dtype=torch.uint8) if scheme.weight == "int4" else torch.zeros(o, kp, dtype=torch.int8)
    zeros = None if scheme.symmetric else torch.zeros(o, kp // g, dtype=torch.uint8)
    return QWeight(scheme, (o, k), data, torch.zeros(o, kp // g, dtype=sdtype), zeros)


def prepare_quantized(model: Model, hf_config: dict, where: Path) -> None:
    """Swap ``model``'s layers for empty quantized ones, as ``config.json`` describes them."""
    from .apply import _set_module

    q = hf_config["quantization_config"]
    if q.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: quantized checkpoint format {q.get('format_version')!r} unsupported "
                              f"(this edgevlm reads {FORMAT_VERSION})")
    try:
        recipe = QuantRecipe.from_dict(q["recipe"])
        layers = dict(q["layers"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: malformed quantization_config ({e!r})") from None
    roles = layer_roles(model)
    embedding = None
    for path, entry in sorted(layers.items(), key=lambda kv: kv[1].get("kind") == "tied_lm_head"):
        if path not in roles:
            raise CheckpointError(f"{where}: quantized layer '{path}' does not exist in this {model.family} model")
        try:
            scheme = Scheme.parse(entry["scheme"])
            kind = entry["kind"]
            if kind == "tied_lm_head":
                if embedding is None:
                    raise CheckpointError(f"{where}: tied LM head '{path}' without a quantized token embedding")
                _set_module(model, path, TiedQuantLinear(embedding, scheme))
                continue
            shape = [int(v) for v in entry["shape"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: malformed quantization entry for '{path}' ({e!r})") from None
        current = model.get_submodule(path)
        expected = list(current.weight.shape)
        if shape != expected:
            raise CheckpointError(f"{where}: quantized layer '{path}' has shape {shape}, the model expects {expected}")
        qw = _empty_qweight(scheme, shape, path)
        if kind == "embedding":
            embedding = QuantEmbedding(qw)
            _set_module(model, path, embedding)
        else:
            bias = None if getattr(current, "bias", None) is None else torch.zeros_like(current.bias)
            n = int(entry.get("outliers", 0))
            static = scheme.activations == "static"
            _set_module(model, path, QuantLinear(
                qw, bias, torch.zeros((), dtype=torch.float32) if static else None,
                torch.zeros(n, dtype=torch.long) if static else None,
                torch.zeros(shape[0], n, dtype=torch.float32) if static else None))
    model.quant_recipe = recipe
    model.kv_cache_quant = recipe.kv_cache


def load_quantized_state(model: Model, weights: dict[str, torch.Tensor], origin: dict[str, Path], where: Path) -> None:
    """Load edgevlm-named tensors into a prepared quantized model, every name and shape checked."""
    expected = model.state_dict()
    tied = {n for n, t in expected.items() if n.endswith("lm_head.weight")} - set(weights)
    for name, t in expected.items():
        if name not in weights:
            if name in tied:
                continue
            raise CheckpointError(f"{where}: missing tensor '{name}'")
        got = weights[name]
        if tuple(got.shape) != tuple(t.shape) or got.dtype != t.dtype:
            raise CheckpointError(f"{origin.get(name, where)}: tensor '{name}' is {got.dtype} {list(got.shape)}, "
                                  f"expected {t.dtype} {list(t.shape)}")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensors {', '.join(unexpected[:5])}")
    model.load_state_dict({k: v for k, v in weights.items()}, strict=False)
