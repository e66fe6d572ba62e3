"""``edgevlm quantize MODEL -o OUT_DIR --recipe w4g32 [--algo rtn|gptq|awq] [--calib PATH ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError
from .output import console, err_console, print_json, table

HELP = "Quantize a model directory to 4/8 bits with a recipe (RTN, GPTQ or AWQ) and write it as a model directory."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgevlm.quant.recipe import ALGORITHMS, PRESETS, ROLES

    p.add_argument("model", help="model directory (Hugging Face layout) or embedded model name")
    p.add_argument("-o", "--output", type=Path, required=True, help="output model directory")
    p.add_argument("--recipe", default="w4g32", help=f"preset ({', '.join(PRESETS)}) or a recipe JSON file")
    p.add_argument("--algo", choices=ALGORITHMS, default=None, help="algorithm for int4 layers (default: the recipe's)")
    p.add_argument("--calib", action="append", default=[], metavar="PATH",
                   help="calibration data: text file, image, folder, or 'shapes' (repeatable)")
    p.add_argument("--calib-samples", type=int, default=128, help="samples per calibration source")
    p.add_argument("--set", action="append", default=[], metavar="ROLE=SCHEME",
                   help=f"override one role's scheme, e.g. vision_encoder=int4:g32 (roles: {', '.join(ROLES)})")
    p.add_argument("--kv-cache", choices=("float", "int8"), default=None, help="KV cache format recorded in the recipe")
    p.add_argument("--act-order", action="store_true", help="GPTQ: columns by decreasing Hessian diagonal")


def build_recipe(args: argparse.Namespace):
    from edgevlm.quant.recipe import QuantRecipe, Rule, Scheme, preset

    path = Path(args.recipe)
    if path.suffix == ".json":
        if not path.is_file():
            raise InputError(f"{path}: recipe file not found")
        recipe = QuantRecipe.from_json(path.read_text(encoding="utf-8"))
    else:
        recipe = preset(args.recipe)
    for item in args.set:
        role, sep, scheme = item.partition("=")
        if not sep:
            raise InputError(f"--set {item!r}: expected ROLE=SCHEME, e.g. vision_encoder=int4:g32")
        recipe = recipe.with_rule(Rule(Scheme.parse(scheme), role=role.strip()))
    changes = {}
    if args.algo:
        changes["algorithm"] = args.algo
    if args.kv_cache:
        changes["kv_cache"] = args.kv_cache
    if args.act_order:
        changes["gptq_act_order"] = True
    return recipe.replace(**changes) if changes else recipe


def main(args: argparse.Namespace) -> int:
    from edgevlm.models import load
    from edgevlm.quant.apply import quantize_model
    from edgevlm.quant.calib import default_calibration, load_calibration
    from edgevlm.quant.storage import save_quantized

    recipe = build_recipe(args)
    with err_console.status(f"loading {args.model}"):
        loaded = load(args.model)
    sources = args.calib or (default_calibration(loaded.processor, loaded.path.name) if recipe.needs_calibration else None)
    calib = None
    if sources:
        with err_console.status(f"reading calibration data ({', '.join(map(str, sources))})"):
            calib = load_calibration(loaded.processor, sources, args.calib_samples)
    elif recipe.needs_calibration:
        raise InputError(f"{recipe.algorithm} with recipe {recipe.name!r} needs calibration data: --calib PATH "
                         "(text file, image folder, or 'shapes')")
    with Progress(TextColumn(f"quantizing ({recipe.algorithm})"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stage]}"), TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("quantize", total=None, stage="")

        def on_stage(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, stage=stage)

        report = quantize_model(loaded.model, recipe, calib, on_stage)
    out = save_quantized(loaded.model, loaded.path, args.output, loaded.hf_config, report)
    if args.json:
        print_json({"output": str(out), **report.to_dict()})
        return 0
    rows = [[r.path, r.scheme, r.algorithm, "x".join(map(str, r.shape)), f"{r.weight_error:.4f}",
             "" if r.output_error is None else f"{r.output_error:.4f}", f"{r.float_bytes / 1024:.1f}", f"{r.quant_bytes / 1024:.1f}"]
            for r in report.layers]
    console.print(table(f"{loaded.path.name} -> {out} (recipe {recipe.name}, {recipe.algorithm})",
                        ["layer", "scheme", "algo", "shape", "weight err", "output err", "KiB before", "KiB after"], rows))
    if report.skipped:
        console.print(table("kept float (no quantized form for the layer type)", ["layer", "type", "parameters"],
                            [[d["path"], d["type"], f"{d['parameters']:,}"] for d in report.skipped]))
    calib_note = f", calibration {report.calibration_samples} samples / {report.calibration_tokens} tokens" if calib else ""
    console.print(f"weights {report.float_bytes / 1e6:.2f} MB -> {report.quant_bytes / 1e6:.2f} MB "
                  f"({report.float_bytes / max(report.quant_bytes, 1):.1f}x smaller){calib_note}; "
                  f"KV cache {recipe.kv_cache}; report in {out / 'quant_report.json'}")
    return 0
