"""``edgevlm run MODEL --prompt TEXT [--image PATH ...]``: generate with the PyTorch reference."""

from __future__ import annotations

import argparse
import sys

from ..generate import stream
from ..models import load
from ..sampling import SamplingParams
from .output import console, err_console, print_json

HELP = "Generate text from a prompt (and images) with a model."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (Hugging Face layout) or embedded model name")
    p.add_argument("--prompt", default="", help="user prompt (empty: generate from BOS)")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="image file (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-chat", action="store_true", help="use the prompt as-is, without the chat template")
    p.add_argument("--chunk-size", type=int, default=64, help="prefill chunk size")
    p.add_argument("--backend", choices=["torch"], default="torch", help="compute backend")


def main(args: argparse.Namespace) -> int:
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    with err_console.status(f"loading {args.model}"):
        loaded = load(args.model)
    chat = not args.no_chat and loaded.processor.chat_template is not None
    pieces, tokens, stats = [], [], None
    if not chat and not args.json:
        console.print(args.prompt, end="", style="dim", markup=False, highlight=False)  # a continuation: show what it continues
    for r in stream(loaded, args.prompt, args.image, params, chat=chat, chunk_size=args.chunk_size):
        pieces.append(r.text)
        tokens.append(r.token)
        stats = r.stats
        if not args.json:
            sys.stdout.write(r.text)
            sys.stdout.flush()
    text = "".join(pieces)
    if args.json:
        print_json({"model": str(loaded.path), "prompt": args.prompt, "images": args.image, "text": text,
                    "tokens": tokens, "stats": stats.to_dict() if stats else None})
        return 0
    sys.stdout.write("\n")
    sys.stdout.flush()
    if stats is not None:
        err_console.print(
            f"[dim]{stats.prompt_tokens} prompt tokens, TTFT {stats.ttft_ms:.0f} ms "
            f"(prefill {stats.prefill_tps:.0f} tok/s); {stats.generated_tokens} tokens at {stats.decode_tps:.1f} tok/s; "
            f"finish: {stats.finish_reason}; peak RSS {stats.peak_rss_mb:.0f} MB[/]"
        )
    return 0
