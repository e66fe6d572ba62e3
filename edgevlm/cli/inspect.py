"""``edgevlm inspect NAME.evlm``: what a bundle holds and how each target verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgevlm import contract as C

from .output import console, print_json, table

HELP = "Show a bundle: model, recipe, targets with their files, sizes, export times and verification (sha256 checked)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (NAME.evlm)")


def print_targets(path: Path, manifest: dict) -> None:
    rows = []
    n = manifest.get("verification_tokens", 64)
    for rep in manifest.get("export_report", []):
        v = rep.get("verification") or {}
        if rep["status"] != "ok":
            rows.append([rep["target"], rep["status"], "", "", "", "", "", rep["message"]])
            continue
        rows.append([rep["target"], "ok",
                     "yes" if v.get("first16_identical") else ("no" if v else "-"),
                     f"{100 * v['agreement']:.1f}%" if v else "-",
                     f"{v['max_abs_logit_error']:.2e}" if v else "-",
                     f"{rep['size_bytes'] / 1e6:.2f} MB", f"{rep['export_seconds']:.1f} s",
                     rep.get("message", "") if not v else ""])
    console.print(table(f"{path}: targets (greedy vs the PyTorch quantized reference, {n} tokens x 3 prompts, teacher-forced)",
                        ["target", "status", "first 16 identical", f"agreement /{n}", "max |logit err|", "size", "export",
                         "note"], rows))


def main(args: argparse.Namespace) -> int:
    from edgevlm.export.bundle import open_bundle

    bundle = open_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print_json({k: v for k, v in m.items() if k != C.KEY_FILES} | {"files": len(m[C.KEY_FILES])})
        return 0
    recipe = m.get(C.KEY_QUANT_RECIPE) or {}
    console.print(f"[bold]{bundle.path}[/]  family {m[C.KEY_FAMILY]}, recipe {recipe.get('name', 'float')} "
                  f"({recipe.get('algorithm', '-')}), chunk {m[C.KEY_CHUNK_SIZE]}, context {m[C.KEY_MAX_CONTEXT]}, "
                  f"{len(m[C.KEY_FILES])} files verified (sha256)")
    print_targets(bundle.path, m)
    return 0
