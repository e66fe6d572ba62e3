"""``python -m edgevlm.quant.report``: the quality of every quantization choice, measured in one run.

1. stories260K perplexity on a real text (TinyStories) for fp32 and int4 g32/g64/g128, each with
   RTN, GPTQ and AWQ (calibrated on a different text), plus the dynamic-activation schemes.
2. shapes-vlm held-out VQA accuracy: fp32, int4 g32 language model + int8 vision tower, and the
   int4 vision tower, each algorithm.
3. NPU W8A8 (static per-tensor activations) with and without the float outlier-channel path:
   logit MSE against fp32, perplexity and accuracy.
4. int8 KV cache: the perplexity and accuracy change.

Prints tables and writes every number to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..cli.output import console, err_console, table
from ..evaluate import all_logits, perplexity, vqa_accuracy
from ..models import LoadedModel, load
from .apply import quantize_model
from .calib import CalibSample, load_calibration, shapes_samples
from .recipe import QuantRecipe, preset

SHARED_TEXT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "text"  # a source checkout


def _quantized(name: str, recipe: QuantRecipe | None, calib: list[CalibSample]) -> tuple[LoadedModel, dict]:
    loaded = load(name)
    info = {"bytes": sum(p.numel() * p.element_size() for p in loaded.model.parameters())}
    if recipe is not None:
        t = time.perf_counter()
        rep = quantize_model(loaded.model, recipe, calib)
        info = {"bytes": rep.quant_bytes, "quantize_s": round(time.perf_counter() - t, 2)}
    return loaded, info


@torch.inference_mode()
def logit_mse(ref: LoadedModel, other: LoadedModel, samples: list[CalibSample]) -> float:
    """Mean squared logit difference over every position of every sample."""
    total, count = 0.0, 0
    for s in samples:
        a = all_logits(ref.model, s.input_ids, s.pixel_values)
        b = all_logits(other.model, s.input_ids, s.pixel_values)
        total += float((a.float() - b.float()).pow(2).sum())
        count += a.numel()
    return total / count


def text_section(calib_file: Path, eval_file: Path, progress) -> dict:
    base = load("stories260k")
    calib = load_calibration(base.processor, [calib_file])
    mse_samples = load_calibration(base.processor, [eval_file], max_samples=16)
    fp = perplexity(base, eval_file)
    rows = {"fp32": {"perplexity": fp.perplexity, "loss": fp.loss, "tokens": fp.tokens,
                     "bytes": sum(p.numel() * 4 for p in base.model.parameters())}}
    plans = [(f"w4g{g}/{a}", preset(f"w4g{g}").replace(algorithm=a)) for g in (32, 64, 128) for a in ("rtn", "gptq", "awq")]
    plans += [("8da4w/gptq", preset("8da4w").replace(algorithm="gptq")), ("w4a8g32/gptq", preset("w4a8g32").replace(algorithm="gptq")),
              ("w8a8-static/rtn", preset("w8a8-static")), ("w8a8-npu/rtn", preset("w8a8-npu")),
              ("fp32+kv-int8", None), ("w4g32/gptq+kv-int8", preset("w4g32").replace(algorithm="gptq", kv_cache="int8"))]
    task = progress.add_task("stories260K", total=len(plans))
    for name, recipe in plans:
        loaded, info = _quantized("stories260k", recipe, calib)
        if recipe is None:
            loaded.model.kv_cache_quant = "int8"
        r = perplexity(loaded, eval_file)
        rows[name] = {**info, "perplexity": r.perplexity, "loss": r.loss,
                      "increase_pct": 100 * (r.perplexity / fp.perplexity - 1),
                      "logit_mse": logit_mse(base, loaded, mse_samples)}
        progress.advance(task)
    return {"model": "stories260k", "calibration": str(calib_file), "calibration_tokens": sum(c.tokens for c in calib),
            "eval": str(eval_file), "eval_tokens": fp.tokens, "results": rows}


def vision_section(n: int, progress) -> dict:
    base = load("shapes-vlm")
    calib = load_calibration(base.processor, ["shapes"], max_samples=64)
    mse_samples = shapes_samples(base.processor, 16, start=100_000)  # not the calibration scenes
    plans = [("fp32", None)]
    plans += [(f"w4g32/{a}", preset("w4g32").replace(algorithm=a)) for a in ("rtn", "gptq", "awq")]
    plans += [(f"w4g32-vision4/{a}", preset("w4g32-vision4").replace(algorithm=a)) for a in ("rtn", "gptq", "awq")]
    plans += [("8da4w/gptq", preset("8da4w").replace(algorithm="gptq")),
              ("w8a8-static/rtn", preset("w8a8-static")), ("w8a8-npu/rtn", preset("w8a8-npu")),
              ("fp32+kv-int8", None), ("w4g32/gptq+kv-int8", preset("w4g32").replace(algorithm="gptq", kv_cache="int8"))]
    task = progress.add_task("shapes-vlm", total=len(plans) * n)
    rows = {}
    for name, recipe in plans:
        loaded, info = _quantized("shapes-vlm", recipe, calib)
        if name == "fp32+kv-int8":
            loaded.model.kv_cache_quant = "int8"
        v = vqa_accuracy(loaded.model, loaded.processor, n, on_item=lambda: progress.advance(task))
        rows[name] = {**info, "accuracy": v.accuracy, "by_type": v.by_type,
                      "logit_mse": 0.0 if name == "fp32" else logit_mse(base, loaded, mse_samples)}
    fp = rows["fp32"]["accuracy"]
    for r in rows.values():
        r["change_points"] = 100 * (r["accuracy"] - fp)
    return {"model": "shapes-vlm", "questions": n, "calibration": "shapes (64 training-split scenes)", "results": rows}


def _print(text: dict, vision: dict) -> None:
    if not console.is_terminal:
        console.width = max(console.width, 150)
    t = text["results"]
    fp = t["fp32"]["perplexity"]
    rows = [[name, f"{r['perplexity']:.4f}", "" if name == "fp32" else f"{r['increase_pct']:+.2f}%",
             "" if name == "fp32" else f"{r['logit_mse']:.5f}", f"{r['bytes'] / 1024:.0f} KiB"] for name, r in t.items()]
    console.print(table(f"stories260K perplexity on {Path(text['eval']).name} ({text['eval_tokens']:,} tokens; fp32 {fp:.4f})",
                        ["recipe/algorithm", "perplexity", "vs fp32", "logit MSE", "weights"], rows))
    v = vision["results"]
    types = list(v["fp32"]["by_type"])
    rows = [[name, f"{100 * r['accuracy']:.1f}%", "" if name == "fp32" else f"{r['change_points']:+.1f}",
             *[f"{100 * r['by_type'][k]:.0f}" for k in types], "" if name == "fp32" else f"{r['logit_mse']:.5f}",
             f"{r['bytes'] / 1024:.0f} KiB"] for name, r in v.items()]
    console.print(table(f"shapes-vlm held-out VQA exact match ({vision['questions']} questions)",
                        ["recipe/algorithm", "accuracy", "points", *types, "logit MSE", "weights"], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevlm.quant.report", description=__doc__.splitlines()[0])
    p.add_argument("--calib-text", type=Path, default=SHARED_TEXT / "tinystories_sample.txt")
    p.add_argument("--eval-text", type=Path, default=SHARED_TEXT / "tinystories_valid_excerpt.txt")
    p.add_argument("--n", type=int, default=500, help="held-out shapes questions per configuration")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("quant_report.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        text = text_section(args.calib_text.resolve(), args.eval_text.resolve(), progress)
        vision = vision_section(args.n, progress)
    _print(text, vision)
    args.out.write_text(json.dumps({"text": text, "vision": vision}, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
