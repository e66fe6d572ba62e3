"""``edgevlm demo``: the README's main job, end to end on the embedded shapes VLM.

1. Draw a held-out shapes picture (saved as ``edgevlm-demo.png``).
2. Export the model to a bundle for every target (4-bit, each target verified against the
   PyTorch reference as it is written); a bundle from an earlier demo run is reused.
3. Ask the picture's questions on every backend that runs here (the PyTorch reference, the C++
   runtime, onnxruntime, ExecuTorch, TVM; CoreML is exported and checked but runs only on Apple
   systems) and print the answers side by side with the truth.
4. A benchmark table from those runs: load time, time to first token, prefill and decode speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from PIL import Image

from .. import contract as C
from ..errors import EdgeVLMError, InputError
from ..sampling import SamplingParams
from ..zoo import shapes_data
from .output import console, err_console, print_json, table

HELP = ("Export the embedded VLM to every target, ask each backend about a freshly drawn picture, "
        "and print the answers and a benchmark table.")

DEMO_LOG = "demo.log"  # other libraries' output during the demo, kept in the bundle

BACKEND_TARGET = {"torch": None, "native": C.TARGET_NATIVE, "onnxruntime": C.TARGET_ONNX,
                  "executorch": C.TARGET_EXECUTORCH, "tvm": C.TARGET_TVM}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="shapes-vlm", help="model (default: the embedded shapes-vlm)")
    p.add_argument("--seed", type=int, default=2, help="which held-out picture to draw")
    p.add_argument("--image-out", type=Path, default=Path("edgevlm-demo.png"), help="where to save the picture")
    p.add_argument("--bundle", type=Path, default=Path("edgevlm-demo.evlm"),
                   help="bundle to write (reused when it already holds the model and targets)")
    p.add_argument("--targets", default=",".join(C.TARGETS), help="targets to export (default: all)")
    p.add_argument("--recipe", default="w4g32", help="quantization preset")
    p.add_argument("--chunk", type=int, default=32, help="prefill chunk size")
    p.add_argument("--max-context", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="compute threads (native, torch)")
    p.add_argument("--fresh", action="store_true", help="export again even if the bundle exists")


def _reusable(bundle: Path, args: argparse.Namespace, targets: list[str]) -> bool:
    """Whether ``bundle`` already holds the demo's model, recipe, chunk, context and targets (sha256 checked)."""
    from ..export.bundle import open_bundle

    if not (bundle / C.MANIFEST_FILE).is_file():
        return False
    try:
        m = open_bundle(bundle).manifest  # sha256 of every file
    except EdgeVLMError:
        return False
    exported = {r["target"] for r in m.get("export_report", []) if r.get("status") != "failed"}
    return (args.model in (m.get("source"), m.get("demo_source")) and set(targets) <= exported
            and (m.get(C.KEY_QUANT_RECIPE) or {}).get("name") == args.recipe
            and m.get(C.KEY_CHUNK_SIZE) == args.chunk and m.get(C.KEY_MAX_CONTEXT) == args.max_context)


def export_demo_bundle(args: argparse.Namespace, targets: list[str]) -> dict:
    from ..export.bundle import open_bundle, write_manifest
    from ..export.core import export_bundle
    from ..quant.recipe import preset

    if not args.fresh and _reusable(args.bundle, args, targets):
        err_console.print(f"[dim]reusing {args.bundle} (already exported with these settings; --fresh exports again)[/]")
        return open_bundle(args.bundle).manifest
    if args.bundle.exists() and not (args.bundle / C.MANIFEST_FILE).is_file():
        raise InputError(f"{args.bundle} exists and is not a bundle; choose another --bundle")
    t0 = time.perf_counter()
    with err_console.status(f"exporting {args.model} to {', '.join(targets)}") as status:
        def log(msg: str) -> None:
            status.update(f"[{time.perf_counter() - t0:5.0f} s] {msg}")
            err_console.print(f"[dim]{time.perf_counter() - t0:5.0f} s  {msg}[/]")

        manifest = export_bundle(args.model, args.bundle, targets, preset(args.recipe), None, args.chunk,
                                 args.max_context, force=True, log=log)
    manifest["demo_source"] = args.model
    write_manifest(args.bundle, manifest)
    return manifest


def ask(session, questions, image) -> tuple[list[str], list]:
    answers, stats = [], []
    params = SamplingParams(max_new_tokens=48)
    for qa in questions:
        result = session.generate(qa.question, [image], params)
        answers.append(result.text.strip())
        stats.append(result.stats)
    return answers, stats


def main(args: argparse.Namespace) -> int:
    from .. import sdk
    from ..export.base import missing_toolchain, target_module
    from .inspect import print_targets

    started = time.perf_counter()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(C.TARGETS))
    if unknown:
        raise InputError(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(C.TARGETS)}")
    scene = shapes_data.make_scene(shapes_data.HELDOUT_BASE + args.seed)
    image = shapes_data.render(scene)
    Image.fromarray(image).save(args.image_out)
    questions = shapes_data.questions(scene)

    manifest = export_demo_bundle(args, targets)
    log = args.library_log
    log.move_to(args.bundle / DEMO_LOG)
    exported = manifest[C.KEY_TARGETS]
    backends = [b for b, t in BACKEND_TARGET.items() if t is None or t in exported]
    runs: dict[str, dict] = {}
    for backend in backends:
        target = BACKEND_TARGET[backend]
        if target is not None and target != C.TARGET_NATIVE and missing_toolchain(target_module(target)):
            continue
        with err_console.status(f"{backend}: answering {len(questions)} questions"):
            t = time.perf_counter()
            try:
                session = sdk.load(args.bundle, backend, threads=args.threads)
                load_ms = (time.perf_counter() - t) * 1e3
                answers, stats = ask(session, questions, image)
            except Exception as e:  # one backend failing is reported; the others still answer
                why = str(e) if isinstance(e, EdgeVLMError) else f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                runs[backend] = {"error": why}
                err_console.print(f"[red]{backend}: {why}[/]" + (f" (details in {log.path})" if log.path else ""),
                                  highlight=False)
                continue
        runs[backend] = {"load_ms": load_ms, "answers": answers, "stats": stats}
        err_console.print(f"[dim]{backend}: answered in {(time.perf_counter() - t):.1f} s[/]")

    ran = [b for b in backends if b in runs and "answers" in runs[b]]
    records = []
    for i, qa in enumerate(questions):
        record = {"question": qa.question, "truth": qa.answer, "answers": {}}
        for b in ran:
            answer = runs[b]["answers"][i]
            record["answers"][b] = {"answer": answer, "correct": _same(answer, qa.answer)}
        records.append(record)
    bench = {b: _bench_row(runs[b], questions) for b in ran}
    not_run = {t: "not exported" for t in C.TARGETS if t not in exported}
    if C.TARGET_COREML in exported:
        not_run[C.TARGET_COREML] = "runs only on Apple systems (spec and numerics checked at export)"
    not_run |= {b: runs[b]["error"] for b in runs if "error" in runs[b]}

    if args.json:
        print_json({"model": args.model, "bundle": str(args.bundle), "image": str(args.image_out), "seed": scene.seed,
                    "backends": ran, "questions": records, "benchmark": bench, "not_run": not_run,
                    "export_report": manifest.get("export_report", []), "log": str(log.path) if log.path else None,
                    "seconds": round(time.perf_counter() - started, 1)})
        return 0 if ran else 1
    print_targets(args.bundle, manifest)
    shapes = f"{len(scene.shapes)} shape{'s' if len(scene.shapes) > 1 else ''}"
    console.print(f"picture: {args.image_out} ({scene.width}x{scene.height}, {shapes})")
    rows = []
    for rec in records:
        cells = []
        for b in ran:
            a = rec["answers"][b]
            cells.append(a["answer"] if a["correct"] else f"{a['answer']} (x)")
        rows.append([rec["question"], rec["truth"], *cells])
    console.print(table(f"{args.model}: answers per backend ((x) = differs from the truth)",
                        ["question", "truth", *ran], rows))
    console.print(table("speed (medians over the questions; each backend in this process, threads "
                        f"{args.threads or 'default'})",
                        ["backend", "load ms", "TTFT ms", "prefill tok/s", "decode tok/s", "correct"],
                        [[b, f"{bench[b]['load_ms']:.0f}", f"{bench[b]['ttft_ms']:.1f}", f"{bench[b]['prefill_tps']:.0f}",
                          f"{bench[b]['decode_tps']:.0f}", f"{bench[b]['correct']}/{len(questions)}"] for b in ran]))
    for name, why in not_run.items():
        console.print(f"[dim]{name}: {why}[/]")
    console.print(f"[dim]demo finished in {time.perf_counter() - started:.0f} s[/]")
    return 0 if ran else 1


def _same(answer: str, truth: str) -> bool:
    return shapes_data.normalize_answer(answer) == shapes_data.normalize_answer(truth)


def _bench_row(run: dict, questions) -> dict:
    stats = run["stats"]
    decode = [s.decode_tps for s in stats if s.decode_tps > 0]
    return {"load_ms": round(run["load_ms"], 1),
            "ttft_ms": round(statistics.median(s.ttft_ms for s in stats), 2),
            "prefill_tps": round(statistics.median(s.prefill_tps for s in stats), 1),
            "decode_tps": round(statistics.median(decode), 1) if decode else 0.0,
            "correct": sum(_same(a, qa.answer) for a, qa in zip(run["answers"], questions))}
