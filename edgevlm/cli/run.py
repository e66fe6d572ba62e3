"""``edgevlm run MODEL --prompt TEXT [--image PATH ...] [--backend B]``: generate with any backend.

MODEL is a model directory or zoo name (PyTorch reference) or a bundle (``NAME.evlm``) for any
backend it holds: native (the C++ runtime), onnxruntime, executorch, tvm, or torch on its weights.
"""

from __future__ import annotations

import argparse
import sys

from pathlib import Path

from .. import contract as C
from ..errors import InputError
from ..generate import stream
from ..models import load
from ..sampling import SamplingParams
from ..sdk import BACKENDS
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
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="compute backend (default: native for a bundle, torch for a model directory)")
    p.add_argument("--threads", type=int, default=None, help="compute threads (native, torch)")


def main(args: argparse.Namespace) -> int:
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    is_bundle = (Path(args.model) / C.MANIFEST_FILE).is_file()
    backend = args.backend or ("native" if is_bundle else "torch")
    if backend != "torch" and not is_bundle:
        raise InputError(f"{args.model}: the {backend} backend runs bundles (edgevlm export); this is not one")
    if is_bundle:
        from ..sdk import load as load_session

        with err_console.status(f"loading {args.model} ({backend})"):
            session = load_session(args.model, backend, threads=args.threads, chat=not args.no_chat)
        chat = not args.no_chat
        records = session.stream(args.prompt, args.image, params)
        where = f"{args.model} ({backend})"
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        with err_console.status(f"loading {args.model}"):
            loaded = load(args.model)
        chat = not args.no_chat and loaded.processor.chat_template is not None
        records = stream(loaded, args.prompt, args.image, params, chat=chat, chunk_size=args.chunk_size)
        where = str(loaded.path)
    pieces, tokens, stats = [], [], None
    if not chat and not args.json:
        console.print(args.prompt, end="", style="dim", markup=False, highlight=False)  # a continuation: show what it continues
    for r in records:
        pieces.append(r.text)
        tokens.append(r.token)
        stats = r.stats
        if not args.json:
            sys.stdout.write(r.text)
            sys.stdout.flush()
    text = "".join(pieces)
    if args.json:
        print_json({"model": where, "backend": backend, "prompt": args.prompt, "images": args.image, "text": text,
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
