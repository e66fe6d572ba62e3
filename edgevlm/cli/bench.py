"""``edgevlm bench BUNDLE``: load time, TTFT (preprocess, vision, prefill), decode tok/s, RSS, bandwidth.

Each backend runs in its own process (honest peak RSS); medians with min and max over ``--repeat``
runs after a warm-up. Writes ``results.json``, ``results.csv`` and ``report.html`` (with plots) to
``--out`` (default ``bench-NAME/``) and prints a table (``--json``: the document). ``--device
adb:SERIAL`` runs the native runtime on a phone instead; ``--compare`` adds peer runtimes.
Definitions, the JSON schema and the phone steps: docs/BENCHMARK.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import contract as C
from ..errors import InputError
from .output import console, err_console, make_console, print_json

HELP = "Benchmark a bundle on each backend: TTFT breakdown, decode tok/s, RSS, memory bandwidth."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle directory (NAME.evlm) written by `edgevlm export`")
    p.add_argument("--backends", default="native,onnxruntime,executorch,tvm",
                   help="comma-separated backends (default: all; one the bundle lacks is reported as skipped)")
    p.add_argument("--prompt-tokens", default="128,512", help="prompt lengths in tokens, comma-separated")
    p.add_argument("--gen", type=int, default=64, help="tokens generated per run (EOS ignored)")
    p.add_argument("--image", type=Path, default=None,
                   help="image in every prompt (default for a VLM: a generated shapes picture)")
    p.add_argument("--no-image", action="store_true", help="text-only prompts, also for a VLM")
    p.add_argument("--threads", type=int, default=2, help="compute threads")
    p.add_argument("--repeat", type=int, default=5, help="measured runs per prompt length (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per prompt length")
    p.add_argument("--chunk-sizes", default=None,
                   help="native prefill chunk sizes to sweep (default 16,32,64,128; 'none' for no sweep)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: bench-NAME/)")
    p.add_argument("--compare", action="store_true",
                   help="also run peer runtimes on the same weights (onnxruntime-genai, llama.cpp) when installed")
    p.add_argument("--device", default=None, metavar="adb:SERIAL",
                   help="run the native runtime on a device over adb (the aarch64 edgevlm-bench program)")
    p.add_argument("--binary", type=Path, default=None,
                   help="with --device: the aarch64 edgevlm-bench program (default build/arm/edgevlm-bench)")


class RichProgress:
    """:class:`edgevlm.bench.runner.Progress` as rich progress bars on stderr."""

    def __init__(self, console: Console):
        self.bars = Progress(TextColumn("{task.fields[name]:<18}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                             disable=not console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start(self, name: str, total: int) -> None:
        self.tasks[name] = self.bars.add_task("", total=total, name=name)

    def update(self, name: str, done: int, total: int, what: str) -> None:
        self.bars.update(self.tasks[name], completed=done, total=total, description=what)

    def finish(self, name: str, note: str = "") -> None:
        task = self.bars.tasks[self.tasks[name]] if name in self.tasks else None
        if task is not None:
            self.bars.update(task.id, completed=task.total, description=note or "done")
            if not self.bars.console.is_terminal:  # no live bars into a file or pipe: a line per step
                self.bars.console.print(f"{name}: {note or 'done'} ({task.elapsed or 0:.0f} s)", markup=False,
                                        highlight=False)

    def __call__(self, message: str) -> None:
        if "peers" not in self.tasks:
            self.start("peers", 1)
        self.bars.update(self.tasks["peers"], description=message)
        if not self.bars.console.is_terminal:
            self.bars.console.print(message, markup=False, highlight=False)


def main(args: argparse.Namespace) -> int:
    from ..bench import report, runner

    bundle = Path(args.bundle)
    runner.read_manifest(bundle)  # a missing or broken bundle is one line, before anything runs
    settings = runner.BenchSettings(
        bundle=bundle, backends=runner.parse_backends(args.backends),
        prompt_tokens=runner.parse_int_list(args.prompt_tokens, "--prompt-tokens"), gen=args.gen,
        threads=args.threads, repeat=args.repeat, warmup=args.warmup, image=args.image, no_image=args.no_image,
        chunk_sizes=_chunk_sizes(args.chunk_sizes),
        out_dir=args.out or Path(f"bench-{runner.bundle_name(bundle)}"))
    if args.image is not None and args.no_image:
        raise InputError("--image and --no-image contradict each other")
    with RichProgress(err_console) as progress:
        if args.device:
            doc = _on_device(args, settings, progress)
        else:
            doc = runner.run_bench(settings, progress)
        if args.compare:
            _compare(doc, settings, progress)
    files = report.write_all(doc, settings.out_dir)
    if args.json:
        print_json(doc)
    else:
        wide = console if console.is_terminal else make_console(width=220)
        wide.print(report.table(doc))
        console.print(f"wrote {', '.join(str(p) for p in files.values())}", style="dim", markup=False, highlight=False)
    return 0


def _chunk_sizes(text: str | None) -> list[int] | None:
    from ..bench.runner import parse_int_list

    if text is None:
        return None
    if text.strip().lower() in ("none", "0", ""):
        return []
    return parse_int_list(text, "--chunk-sizes")


def _compare(doc: dict, settings, progress: RichProgress) -> None:
    """``--compare``: rows of the peer runtimes (edgevlm.bench.peers), or why there are none."""
    from ..bench.schema import ResultRow

    try:
        from ..bench import peers
    except ImportError as e:
        doc["compare"] = {"requested": True, "available": False,
                          "reason": f"peer runtimes are not available in this install ({e})"}
        return
    gbs = (doc.get("machine") or {}).get("memory_bandwidth_gbs", 0.0)
    rows = peers.run_peers(settings.bundle, settings.prompt_tokens, settings.gen, settings.threads, settings.repeat,
                           progress)
    rows = [ResultRow.from_dict(r).with_bandwidth(gbs).to_dict() for r in rows]
    missing = sorted({r["backend"] for r in rows if r.get("skipped")})
    doc["compare"] = {"requested": True, "available": True,
                      "reason": f"missing: {', '.join(missing)}" if missing else ""}
    doc["compare_results"] = rows


def _on_device(args: argparse.Namespace, settings, progress: RichProgress) -> dict:
    """The native runtime on a device over adb: push, run edgevlm-bench, parse its JSON."""
    import json

    from ..bench import device, runner

    serial = device.parse_device(args.device)
    manifest = runner.read_manifest(settings.bundle)
    reason = runner.unavailable_reason("native", manifest)
    if reason and "not in the bundle" in reason:
        raise InputError(f"{settings.bundle}: the native backend is {reason}")
    binary = args.binary or device.DEFAULT_BINARY
    if not binary.is_file():
        raise InputError(f"{binary}: no aarch64 edgevlm-bench; build it (docs/BENCHMARK.md) or pass --binary")
    image = settings.image
    if image is not None and not image.is_file():
        raise InputError(f"--image {image}: no such file")
    if image is None and manifest.get(C.KEY_IMAGE_PREPROCESSING) and not settings.no_image:
        image = runner.default_image(settings.out_dir)  # as on the host: a VLM's image turn is measured
    settings.image = image
    cmds = device.adb_commands(serial, settings.bundle, binary, settings.prompt_tokens, settings.gen, settings.threads,
                               settings.repeat, settings.warmup, image)
    progress.start(args.device, len(cmds))
    out = device.run_commands(cmds, lambda what: progress.update(args.device, 0, len(cmds), what))
    progress.finish(args.device)
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        raise InputError(f"{args.device}: edgevlm-bench did not print JSON: {out.strip()[:200]}") from None
    return device_document(data, settings, manifest, args.device)


def device_document(data: dict, settings, manifest: dict, where: str) -> dict:
    """The results document of an ``edgevlm-bench`` JSON object run on ``where``."""
    from .. import __version__
    from ..bench import bundle_sizes, device, runner
    from ..bench.schema import SCHEMA_VERSION

    rows = device.parse_native_bench(data, where)
    weights, _ = bundle_sizes.decoder_bytes(settings.bundle, manifest, "native")
    for r in rows:
        r.model_bytes = bundle_sizes.model_bytes(settings.bundle, manifest, "native")
        r.decode_bytes_per_token = weights + bundle_sizes.kv_bytes(manifest, "native", r.decode_depth)
        r.with_bandwidth(0.0)  # no probe on the device: achieved GB/s only
    return {"schema_version": SCHEMA_VERSION, "tool": "edgevlm bench", "edgevlm_version": __version__,
            "bundle": str(settings.bundle.resolve()), "bundle_name": runner.bundle_name(settings.bundle),
            "model": {"family": manifest.get("family"), "chunk_size": manifest.get("chunk_size"),
                      "max_context": manifest.get("max_context")},
            "settings": {"backends": ["native"], "prompt_tokens": settings.prompt_tokens, "gen": settings.gen,
                         "threads": settings.threads, "repeat": settings.repeat, "warmup": settings.warmup,
                         "image": str(settings.image) if settings.image else None, "chunk_sizes": [],
                         "device": where},
            "machine": {"platform": where, "cpu": "", "cores": 0, "memory_bandwidth_gbs": 0.0, "bandwidth_probe": None},
            "compare": {"requested": False, "available": False, "reason": "not requested"},
            "results": [r.to_dict() for r in rows], "chunk_sweep": []}
