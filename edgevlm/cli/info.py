"""``edgevlm info MODEL``: architecture, parameters per component, image tokens, chat template."""

from __future__ import annotations

import argparse
import dataclasses

from ..models import LoadedModel, load
from ..models.config import to_dict
from .output import console, print_json, table

HELP = "Describe a model: architecture, parameters per component, image tokens per image, chat template."
IMAGE_SIZES = [(512, 512), (720, 1280), (1080, 1920)]  # (height, width)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (Hugging Face layout) or embedded model name")


def _count(module) -> int:
    """Parameters of a module, quantized layers counted by their logical weight size."""
    from edgevlm.quant.modules import QuantEmbedding, QuantLinear

    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, QuantLinear):
            n += m.in_features * m.out_features
        elif isinstance(m, QuantEmbedding):
            n += m.num_embeddings * m.embedding_dim
    return n


def describe(loaded: LoadedModel) -> dict:
    model = loaded.model
    parts = {}
    for name, module in model.components().items():
        parts[name] = 0 if module is None else _count(module)
    total = _count(model)
    proc = loaded.processor
    info = {
        "path": str(loaded.path),
        "family": loaded.family,
        "model_type": loaded.hf_config.get("model_type"),
        "config": to_dict(loaded.config) if dataclasses.is_dataclass(loaded.config) else {},
        "parameters": {"total": total, **parts},
        "lm_head_tied": parts.get("lm_head") == 0,
        "tokenizer": {
            "vocab_size": proc.tokenizer.vocab_size,
            "bos": proc.tokenizer.bos_token,
            "eos": proc.tokenizer.eos_token,
            "eos_ids": proc.tokenizer.eos_ids,
        },
        "chat_template": None,
        "quantization": None,
    }
    recipe = getattr(model, "quant_recipe", None)
    if recipe is not None:
        from edgevlm.quant.apply import model_bytes

        info["quantization"] = {"recipe": recipe.name, "algorithm": recipe.algorithm, "kv_cache": recipe.kv_cache,
                                "rules": recipe.to_dict()["rules"], "bytes": model_bytes(model)}
    if proc.chat_template is not None:
        info["chat_template"] = {
            "origin": proc.chat_template.origin,
            "example": proc.chat_prompt("Describe the image.", 1 if proc.supports_images else 0),
            "source": proc.chat_template.source,
        }
    if proc.supports_images:
        info["image_tokens"] = {
            "tokens_per_tile": model.tokens_per_tile,
            "per_image": [
                {"height": h, "width": w, "tiles": t, "prompt_tokens": n}
                for h, w in IMAGE_SIZES
                for t, n in [proc.image_token_count(h, w)]
            ],
        }
    return info


def main(args: argparse.Namespace) -> int:
    with console.status(f"loading {args.model}"):
        loaded = load(args.model)
    info = describe(loaded)
    if args.json:
        print_json(info)
        return 0
    console.print(f"[bold]{info['path']}[/]  family [bold]{info['family']}[/] (model_type {info['model_type']})")
    total = info["parameters"]["total"]
    rows = [[k, "tied to token_embedding" if k == "lm_head" and info["lm_head_tied"] else f"{v:,}", f"{100 * v / total:.1f}%"]
            for k, v in info["parameters"].items() if k != "total"]
    rows.append(["total", f"{total:,}", "100%"])
    console.print(table("Parameters", ["component", "parameters", "share"], rows))
    cfg = info["config"]
    text = cfg.get("text", cfg)
    arch = [["text decoder", f"{text['num_hidden_layers']} layers, hidden {text['hidden_size']}, "
             f"{text['num_attention_heads']} heads / {text['num_key_value_heads']} kv, ffn {text['intermediate_size']}, "
             f"vocab {text['vocab_size']}, rope {text['rope']['rope_type']} theta {text['rope']['rope_theta']:g}"]]
    if "vision" in cfg:
        v = cfg["vision"]
        arch.append(["vision encoder", f"{v['num_hidden_layers']} layers, hidden {v['hidden_size']}, {v['num_attention_heads']} heads, "
                     f"{v['image_size']}px / patch {v['patch_size']}"])
    console.print(table("Architecture", ["part", "shape"], arch))
    if info["quantization"]:
        q = info["quantization"]
        rows = [[r["role"] or "any", r["pattern"] or "", r["scheme"]] for r in q["rules"]]
        console.print(table(f"Quantization: recipe {q['recipe']} ({q['algorithm']}), KV cache {q['kv_cache']}, "
                            f"{q['bytes'] / 1e6:.2f} MB of weights", ["role", "path pattern", "scheme"], rows))
    if "image_tokens" in info:
        it = info["image_tokens"]
        rows = [[f"{r['width']}x{r['height']}", r["tiles"], r["prompt_tokens"]] for r in it["per_image"]]
        console.print(table(f"Image tokens ({it['tokens_per_tile']} per tile)", ["image", "tiles", "prompt tokens"], rows))
    if info["chat_template"]:
        console.print(f"[bold]Chat template[/] ({info['chat_template']['origin']}), one user turn renders as:")
        console.print(repr(info["chat_template"]["example"]), markup=False, highlight=False)
    else:
        console.print("[bold]Chat template[/]: none (prompts are plain text)")
    return 0
