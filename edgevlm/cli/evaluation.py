"""``edgevlm eval MODEL_OR_BUNDLE --vqa [--n 500]`` / ``--ppl TEXT_FILE``: task accuracy and perplexity.

A model directory (or embedded model name) runs on the PyTorch reference. A bundle runs on the
backends it ships (``--backend B`` or ``--backends a,b,...`` for one table side by side): exactly
the weights and graphs a device runs, with the same questions, documents and protocol as the
reference (:mod:`edgevlm.evaluate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import contract as C
from ..errors import InputError
from .output import console, err_console, print_json, table

HELP = "Measure quality: exact-match VQA accuracy on held-out shapes questions, or perplexity on a text file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundle (NAME.evlm), model directory (Hugging Face layout) or embedded model name")
    p.add_argument("--vqa", action="store_true", help="held-out shapes VQA accuracy, overall and per question type")
    p.add_argument("--n", type=int, default=500, help="number of held-out questions for --vqa")
    p.add_argument("--ppl", type=Path, metavar="TEXT_FILE", help="perplexity on a text file (documents split by <|endoftext|>)")
    p.add_argument("--max-tokens", type=int, default=None, help="cut each document to this many tokens (default: the context)")
    p.add_argument("--backend", default=None,
                   help="for a bundle: the backend to measure (native, onnxruntime, executorch, tvm, torch; default native)")
    p.add_argument("--backends", default=None, metavar="A,B,...", help="for a bundle: several backends, side by side")
    p.add_argument("--threads", type=int, default=None, help="compute threads (native, torch)")


def _backends(args: argparse.Namespace, is_bundle: bool) -> list[str]:
    from ..sdk import BACKENDS

    if args.backend and args.backends:
        raise InputError("give --backend or --backends, not both")
    names = [b.strip() for b in (args.backends or args.backend or "").split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise InputError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if len(set(names)) != len(names):
        raise InputError("a backend is named twice")
    if not is_bundle:
        if any(b != "torch" for b in names):
            raise InputError(f"{args.model} is a model, not a bundle: it runs on the torch backend only "
                             "(`edgevlm export` writes a bundle for the others)")
        return ["torch"]
    return names or ["native"]


def main(args: argparse.Namespace) -> int:
    if args.vqa == (args.ppl is not None):
        raise InputError("give exactly one of --vqa or --ppl TEXT_FILE")
    if args.max_tokens is not None and args.max_tokens < 2:
        raise InputError(f"--max-tokens must be >= 2, got {args.max_tokens}")
    is_bundle = (Path(args.model) / C.MANIFEST_FILE).is_file()
    backends = _backends(args, is_bundle)
    results = {}
    for backend in backends:
        results[backend] = _measure(args, backend, is_bundle)
    name = Path(args.model).name
    if args.json:
        docs = {b: {"model": str(args.model), "backend": b, **({"text": str(args.ppl)} if args.ppl else {}), **r.to_dict()}
                for b, r in results.items()}
        print_json(next(iter(docs.values())) if len(docs) == 1 else {"model": str(args.model), "results": docs})
        return 0
    if args.ppl is not None:
        _print_perplexity(name, args.ppl, results)
    else:
        _print_vqa(name, results)
    return 0


def _measure(args: argparse.Namespace, backend: str, is_bundle: bool):
    from ..evaluate import perplexity, session_perplexity, session_vqa_accuracy, vqa_accuracy

    with err_console.status(f"{backend}: loading {args.model}"):
        if is_bundle:
            from .. import sdk

            session = sdk.load(args.model, backend, threads=args.threads)
        else:
            from ..models import load

            loaded = load(args.model)
    if args.ppl is not None:
        with err_console.status(f"{backend}: perplexity on {args.ppl}"):
            if is_bundle:
                return session_perplexity(session, args.ppl, args.max_tokens)
            return perplexity(loaded, args.ppl, args.max_tokens)
    with Progress(TextColumn(f"{backend}: questions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("vqa", total=args.n)
        advance = lambda: progress.advance(task)  # noqa: E731
        if is_bundle:
            if not _has_vision(args.model):
                raise InputError("VQA needs a vision-language model; this one is text-only")
            return session_vqa_accuracy(session, args.n, on_item=advance)
        return vqa_accuracy(loaded.model, loaded.processor, args.n, on_item=advance)


def _has_vision(bundle: str) -> bool:
    import json

    manifest = json.loads((Path(bundle) / C.MANIFEST_FILE).read_text())
    return bool(manifest.get(C.KEY_IMAGE_PREPROCESSING))


def _print_perplexity(name: str, text: Path, results: dict) -> None:
    ref = results.get("torch")
    rows = []
    for b, r in results.items():
        delta = f"{100 * (r.perplexity / ref.perplexity - 1):+.2f}%" if ref is not None and b != "torch" else ""
        rows.append([b, r.documents, r.tokens, f"{r.loss:.4f}", f"{r.perplexity:.3f}", delta])
    console.print(table(f"Perplexity of {name} on {text.name}", ["backend", "documents", "tokens", "loss (nats)",
                                                                  "perplexity", "vs torch"], rows))


def _print_vqa(name: str, results: dict) -> None:
    backends = list(results)
    first = results[backends[0]]
    rows = [[kind, first.counts[kind], *(f"{100 * results[b].by_type.get(kind, 0.0):.1f}%" for b in backends)]
            for kind in first.by_type]
    rows.append(["overall", first.n, *(f"{100 * results[b].accuracy:.1f}%" for b in backends)])
    console.print(table(f"Held-out VQA exact match: {name}", ["question type", "questions", *backends], rows))
    shown = None
    for b in backends:
        mistakes = results[b].mistakes
        if shown is not None and mistakes == shown:
            console.print(f"[dim]{b}: the same wrong answers as {backends[0]}[/]")
            continue
        for m in mistakes[:5]:
            console.print(f"[dim]{b}: wrong: {m['question']!r} -> {m['prediction']!r} (expected {m['answer']!r})[/]",
                          highlight=False)
        shown = mistakes if shown is None else shown
