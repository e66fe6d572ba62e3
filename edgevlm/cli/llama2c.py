"""``edgevlm import-llama2c MODEL.bin TOKENIZER.bin -o DIR``: llama2.c checkpoint -> HF layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import console, print_json

HELP = "Convert a llama2.c model and tokenizer into a Hugging Face-layout Llama checkpoint directory."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_bin", type=Path, help="llama2.c model file (e.g. stories260K.bin)")
    p.add_argument("tokenizer_bin", type=Path, help="llama2.c tokenizer file (e.g. tok512.bin)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")


def main(args: argparse.Namespace) -> int:
    from ..llama2c import import_llama2c

    out = import_llama2c(args.model_bin, args.tokenizer_bin, args.output)
    files = sorted(p.name for p in out.iterdir())
    if args.json:
        print_json({"output": str(out), "files": files})
    else:
        console.print(f"wrote {args.output}: {', '.join(files)}")
    return 0
