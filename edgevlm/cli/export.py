"""``edgevlm export MODEL -o NAME.evlm --targets native,onnx,executorch,coreml,tvm --recipe w4g32 ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgevlm import contract as C

from ..errors import InputError
from .output import console, err_console, print_json
from .quantize import build_recipe

EXPORT_LOG = "export.log"  # other libraries' output during the export, kept in the bundle

HELP = "Quantize a checkpoint and export it to a bundle for every requested target, each verified against the reference."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (Hugging Face layout) or embedded model name")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to write (NAME.evlm)")
    p.add_argument("--targets", default=",".join(C.TARGETS), help=f"comma-separated targets (default: all: {','.join(C.TARGETS)})")
    p.add_argument("--recipe", default="w4g32", help="quantization preset or recipe JSON file ('float' for none)")
    p.add_argument("--algo", choices=("rtn", "gptq", "awq"), default=None, help="algorithm for int4 layers")
    p.add_argument("--calib", action="append", default=[], metavar="PATH", help="calibration data (repeatable)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--set", action="append", default=[], metavar="ROLE=SCHEME", help="override one role's scheme")
    p.add_argument("--kv-cache", choices=("float", "int8"), default=None)
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--chunk", type=int, default=64, help="prefill chunk size C (static)")
    p.add_argument("--max-context", type=int, default=None,
                   help="KV cache length (static; default: the model's positions, at most 2048)")
    p.add_argument("--score", action="store_true",
                   help="also export the `score` method (teacher-forced log-probabilities) so that "
                        "`edgevlm eval BUNDLE --ppl` measures perplexity on the onnxruntime, executorch and tvm backends")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")


def main(args: argparse.Namespace) -> int:
    from edgevlm.export.core import export_bundle
    from edgevlm.models import load
    from edgevlm.quant.calib import default_calibration, load_calibration

    from .inspect import print_targets

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise InputError("--targets is empty")
    recipe = None if args.recipe == "float" else build_recipe(args)
    calib = None
    if recipe is not None and (args.calib or recipe.needs_calibration):
        source = load(args.model)
        sources = args.calib or default_calibration(source.processor, source.path.name)
        if not sources:
            raise InputError(f"{recipe.algorithm} needs calibration data: --calib PATH (text file, image folder, or 'shapes')")
        calib = load_calibration(source.processor, sources, args.calib_samples)
    with err_console.status("exporting") as status:
        manifest = export_bundle(args.model, args.output, targets, recipe, calib, args.chunk, args.max_context,
                                 args.force, log=lambda msg: status.update(msg) or err_console.print(f"[dim]{msg}[/]"),
                                 score=args.score)
    log = args.library_log
    log.move_to(args.output / EXPORT_LOG)
    if args.json:
        print_json({"bundle": str(args.output), "targets": manifest["export_report"],
                    "log": str(log.path) if log.path else None})
    else:
        print_targets(args.output, manifest)
    failed = [r for r in manifest["export_report"] if r["status"] == "failed"]
    for r in failed:
        err_console.print(f"edgevlm export: target {r['target']} failed: {r['message']}"
                          + (f" (details in {log.path})" if log.path else ""), highlight=False, soft_wrap=True)
    return 1 if failed else 0
