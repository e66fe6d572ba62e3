"""``edgevlm eval MODEL --vqa [--n 500]`` / ``--ppl TEXT_FILE``: task accuracy and perplexity."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError
from ..evaluate import perplexity, vqa_accuracy
from ..models import load
from .output import console, err_console, print_json, table

HELP = "Measure quality: exact-match VQA accuracy on held-out shapes questions, or perplexity on a text file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory (Hugging Face layout) or embedded model name")
    p.add_argument("--vqa", action="store_true", help="held-out shapes VQA accuracy, overall and per question type")
    p.add_argument("--n", type=int, default=500, help="number of held-out questions for --vqa")
    p.add_argument("--ppl", type=Path, metavar="TEXT_FILE", help="perplexity on a text file (documents split by <|endoftext|>)")
    p.add_argument("--max-tokens", type=int, default=None, help="cut each document to this many tokens (default: the context)")


def main(args: argparse.Namespace) -> int:
    if args.vqa == (args.ppl is not None):
        raise InputError("give exactly one of --vqa or --ppl TEXT_FILE")
    with err_console.status(f"loading {args.model}"):
        loaded = load(args.model)
    if args.ppl is not None:
        result = perplexity(loaded, args.ppl, args.max_tokens)
        if args.json:
            print_json({"model": str(loaded.path), "text": str(args.ppl), **result.to_dict()})
        else:
            console.print(table(f"Perplexity of {loaded.path.name} on {args.ppl.name}", ["documents", "tokens", "loss (nats)", "perplexity"],
                                [[result.documents, result.tokens, f"{result.loss:.4f}", f"{result.perplexity:.3f}"]]))
        return 0
    with Progress(TextColumn("questions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("vqa", total=args.n)
        result = vqa_accuracy(loaded.model, loaded.processor, args.n, on_item=lambda: progress.advance(task))
    if args.json:
        print_json({"model": str(loaded.path), **result.to_dict()})
        return 0
    rows = [[kind, result.counts[kind], f"{100 * acc:.1f}%"] for kind, acc in result.by_type.items()]
    rows.append(["overall", result.n, f"{100 * result.accuracy:.1f}%"])
    console.print(table(f"Held-out VQA exact match: {loaded.path.name}", ["question type", "questions", "accuracy"], rows))
    for m in result.mistakes[:5]:
        console.print(f"[dim]wrong: {m['question']!r} -> {m['prediction']!r} (expected {m['answer']!r})[/]")
    return 0
