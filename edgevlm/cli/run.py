"""``edgevlm run MODEL --prompt TEXT [--image PATH ...] [--backend B]``: generate with any backend.

MODEL is a model directory or zoo name (PyTorch reference) or a bundle (``NAME.evlm``) for any
backend it holds: native (the C++ runtime), onnxruntime, executorch, tvm, or torch on its weights.
``--interactive`` chats turn by turn on stdin, keeping the KV cache between turns.
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
from ..sdk import BACKENDS, collect
from .output import console, err_console, out, print_json

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
    p.add_argument("-i", "--interactive", action="store_true",
                   help="chat turn by turn on stdin (/image PATH attaches a picture to the next turn, "
                        "/reset starts over, /quit or end of input leaves)")


def main(args: argparse.Namespace) -> int:
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    is_bundle = (Path(args.model) / C.MANIFEST_FILE).is_file()
    backend = args.backend or ("native" if is_bundle else "torch")
    if backend != "torch" and not is_bundle:
        if not Path(args.model).exists():
            raise InputError(f"{args.model}: no such bundle")
        raise InputError(f"{args.model}: the {backend} backend runs bundles (edgevlm export); this is not one")
    if args.interactive:
        return interactive(args, backend, params)
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
    if not chat and not args.json:
        console.print(args.prompt, end="", style="dim", markup=False, highlight=False)  # a continuation: show what it continues
    result = collect(_echo(records, show=not args.json))
    stats = result.stats
    if args.json:
        print_json({"model": where, "backend": backend, "prompt": args.prompt, "images": args.image, "text": result.text,
                    "tokens": result.tokens, "stats": stats.to_dict()})
        return 0
    out().write("\n")
    out().flush()
    err_console.print(
        f"[dim]{stats.prompt_tokens} prompt tokens, TTFT {stats.ttft_ms:.0f} ms "
        f"(prefill {stats.prefill_tps:.0f} tok/s); {stats.generated_tokens} tokens at {stats.decode_tps:.1f} tok/s; "
        f"finish: {stats.finish_reason}; peak RSS {stats.peak_rss_mb:.0f} MB[/]"
    )
    return 0


INTERACTIVE_HELP = "commands: /image PATH (attach to the next turn), /reset (new conversation), /quit"


def interactive(args: argparse.Namespace, backend: str, params: SamplingParams) -> int:
    """A multi-turn chat on stdin: each turn reuses the KV cache of the ones before it.

    A bad turn (unreadable image, a turn that overflows the context) prints its error and the chat
    goes on; the conversation is unchanged by it. ``--json`` prints one JSON line per turn.
    """
    from ..sdk import load as load_session

    with err_console.status(f"loading {args.model} ({backend})"):
        extra = {"chunk_size": args.chunk_size} if backend == "torch" else {}
        session = load_session(args.model, backend, threads=args.threads, chat=not args.no_chat, **extra)
    if not args.json:
        err_console.print(f"[dim]{args.model} ({backend}). {INTERACTIVE_HELP}[/]")
    images: list[str] = []
    turn = 0
    while True:
        if not args.json and sys.stdin.isatty():
            err_console.print("[bold]>[/] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            session.reset()
            images.clear()
            turn = 0
            _say(args, {"event": "reset"}, "[dim]new conversation[/]")
            continue
        if line.startswith("/image"):
            path = line[len("/image"):].strip()
            if not Path(path).is_file():
                _say(args, {"event": "error", "error": f"{path}: no such image file"}, f"[red]{path}: no such image file[/]")
                continue
            images.append(path)
            _say(args, {"event": "image", "image": path}, f"[dim]{path} goes with the next turn[/]")
            continue
        if line.startswith("/"):
            _say(args, {"event": "error", "error": f"unknown command {line.split()[0]}"},
                 f"[red]unknown command {line.split()[0]}[/]; {INTERACTIVE_HELP}")
            continue
        try:
            reply = collect(_echo(session.chat_stream(line, images, params), show=not args.json))
        except InputError as e:
            _say(args, {"event": "error", "error": str(e)}, f"[red]error: {e}[/]")
            continue
        finally:
            images = []
        turn += 1
        stats = reply.stats
        if args.json:
            print_json_line({"event": "reply", "turn": turn, "prompt": line, "text": reply.text, "tokens": reply.tokens,
                             "stats": stats.to_dict()})
        else:
            out().write("\n")
            out().flush()
            err_console.print(f"[dim]turn {turn}: {stats.prompt_tokens} new prompt tokens, TTFT {stats.ttft_ms:.0f} ms, "
                              f"{stats.generated_tokens} tokens at {stats.decode_tps:.1f} tok/s[/]")
    return 0


def _echo(records, show: bool):
    """The stream's records, each piece written to stdout as it comes (when ``show``)."""
    for r in records:
        if show:
            out().write(r.text)
            out().flush()
        yield r


def _say(args: argparse.Namespace, record: dict, text: str) -> None:
    if args.json:
        print_json_line(record)
    else:
        err_console.print(text)


def print_json_line(record: dict) -> None:
    import json

    out().write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    out().flush()
