"""The runtime issue's performance benchmark: edgevlm's runtimes side by side with the peers.

    python benchmarks/runtime_vs_peers.py [--out DIR] [--repeat 5] [--gen 64] [--threads 2]
                                          [--prompt-tokens 128,512] [--peers llama.cpp,onnxruntime-genai]

1. Creates a SmolLM2-135M-shaped Llama with random weights (tests/tiny_models.make_llama: 30
   layers, hidden 576, 9 heads / 3 KV heads, MLP 1536, vocabulary 49152, tied head), in DIR/s135.
2. Exports it: ``edgevlm export DIR/s135 -o DIR/s135.evlm --targets native,executorch --recipe 8da4w
   --chunk 64 --max-context 1024``.
3. Measures, each runtime in its own process, the same prompt lengths and generated tokens on the
   same thread count: edgevlm native and ExecuTorch 8da4w (XNNPACK) of the bundle through
   ``edgevlm.bench.runner.run_bench`` (the ``edgevlm bench`` workers), and llama.cpp Q4_0 and
   onnxruntime-genai int4 of the same float checkpoint through ``edgevlm.bench.peers.run_peers``.
4. Prints ONE table (prefill tok/s at each prompt length, decode tok/s at each depth, load time,
   peak RSS, model size; medians, min-max beside them) with the settings, and writes
   DIR/runtime_vs_peers.json (the ``edgevlm bench`` results document with the peer rows in
   ``compare_results``) and DIR/runtime_vs_peers.md (the table).

The model, bundle and peer conversions in DIR are reused by later runs (``--fresh`` redoes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S135 = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            intermediate_size=1536, max_position_embeddings=2048, rope_theta=100000.0, vocab_size=49152)
LABELS = {
    "native": "edgevlm native (8da4w)",
    "executorch": "ExecuTorch XNNPACK (8da4w .pte)",
    "onnxruntime-genai": "onnxruntime-genai (int4)",
    "llama.cpp": "llama.cpp (Q4_0)",
}
WEIGHTS = {
    "native": "int4 g32 sym linears x int8 per-token activations; int8 per-channel embedding/head (8da4w)",
    "executorch": "the same 8da4w weights, lowered to XNNPACK (int4 g32 x dynamic int8 activations)",
    "onnxruntime-genai": "model builder -p int4 -e cpu: int4 g32 symmetric MatMulNBits, int8 activations "
                         "(accuracy_level 4), tied embedding/head int4 g32; KV float32",
    "llama.cpp": "GGUF from edgevlm/bench/gguf.py: Q4_0 linears (int4 g32 x Q8_0 activations), Q8_0 tied "
                 "embedding/head; KV f16",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_model(out: Path, layers: int) -> Path:
    if (out / "config.json").is_file():
        return out
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models

    log(f"creating the SmolLM2-135M-shaped random Llama in {out}")
    return tiny_models.make_llama(out, tie=True, seed=0, **{**S135, "num_hidden_layers": layers})


def export_bundle(model: Path, bundle: Path) -> Path:
    if (bundle / "manifest.json").is_file():
        return bundle
    cmd = [sys.executable, "-m", "edgevlm", "export", str(model), "-o", str(bundle), "--targets", "native,executorch",
           "--recipe", "8da4w", "--chunk", "64", "--max-context", "1024", "--force"]
    log("exporting: edgevlm " + " ".join(cmd[3:]) + f" (log: {bundle.parent / 'export.log'})")
    t0 = time.perf_counter()
    with open(bundle.parent / "export.log", "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"export failed (exit {done.returncode}); see {bundle.parent / 'export.log'}")
    log(f"exported in {time.perf_counter() - t0:.0f} s")
    return bundle


class Say:
    """The runner's progress interface (and the peers' ``progress(message)``) as log lines."""

    def start(self, name: str, total: int) -> None:
        log(f"{name}: start ({total} runs)" if total > 1 else f"{name}: start")

    def update(self, name: str, done: int, total: int, what: str) -> None:
        pass

    def finish(self, name: str, note: str = "") -> None:
        log(f"{name}: done {note}".rstrip())

    def __call__(self, message: str) -> None:
        log(message)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cell(summary: dict) -> str:
    if not summary or not summary.get("n"):
        return "-"
    return f"{summary['median']:.1f} ({summary['min']:.0f}-{summary['max']:.0f})"


def table(rows: list[dict], lengths: list[int], gen: int, threads: int) -> str:
    """One markdown table: a line per runtime, prefill and decode per length."""
    order = [b for b in LABELS if any(r["backend"] == b for r in rows)]
    head = (["runtime"] + [f"prefill tok/s @{n}" for n in lengths] + [f"decode tok/s @depth {n}" for n in lengths]
            + ["load ms", "peak RSS MB (+model)", "model MB"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for backend in order:
        mine = {r["requested_prompt_tokens"]: r for r in rows if r["backend"] == backend}
        skipped = next((r["skipped"] for r in mine.values() if r.get("skipped")), None)
        if skipped:
            notes.append(f"{LABELS[backend]}: skipped: {skipped}")
            lines.append(f"| {LABELS[backend]} | " + " | ".join(["skipped"] * (len(head) - 1)) + " |")
            continue
        any_row = next(iter(mine.values()))
        cells = ([_cell(mine.get(n, {}).get("prefill_tps")) for n in lengths]
                 + [_cell(mine.get(n, {}).get("decode_tps")) for n in lengths]
                 + [f"{any_row['load_ms']:.0f}",
                    f"{any_row['peak_rss_mb']:.0f} (+{any_row['peak_rss_mb'] - any_row['baseline_rss_mb']:.0f})",
                    f"{any_row['model_bytes'] / 1e6:.1f}"])
        lines.append(f"| {LABELS[backend]} | " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(notes)
    return out


def settings_text(doc: dict, args, rows: list[dict], load_before: str, load_after: str) -> str:
    chunks = {}
    for r in rows:
        if not r.get("skipped"):
            chunks[r["backend"]] = r["chunk_size"] or "whole prompt"
    runtimes = {r["backend"]: r["runtime"] for r in rows if r.get("runtime")}
    lines = [
        f"Model: SmolLM2-135M-shaped Llama, random weights ({args.layers} layers, hidden 576, 9/3 heads, MLP 1536, vocab 49152, "
        f"tied head), float checkpoint {doc['peers_source']}",
        f"Workload: prompts of exactly {', '.join(map(str, args.prompt_tokens))} tokens, then {args.gen} greedy tokens "
        f"with EOS ignored (decode tok/s = {args.gen - 1} steps after the first token, at depth = prompt length); "
        f"{args.threads} threads for every runtime; 1 warm-up + {args.repeat} runs, median (min-max); "
        "each runtime in its own process",
        "Prefill chunk: " + ", ".join(f"{LABELS[b]} {c}" for b, c in chunks.items()),
        "Weights: " + "; ".join(f"{LABELS[b]}: {WEIGHTS[b]}" for b in LABELS if b in chunks),
        "Runtimes: " + ", ".join(f"{v}" for v in runtimes.values()),
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, measured read bandwidth "
        f"{doc['machine']['memory_bandwidth_gbs']:.1f} GB/s; load average before {load_before}, after {load_after}",
        "Prompt ids: native/ExecuTorch a chat-templated text of exactly N tokens (edgevlm bench); peers the "
        "edgevlm-bench id sequence (ordinary vocabulary ids), N of them",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runtime-vs-peers"))
    ap.add_argument("--prompt-tokens", type=lambda s: [int(x) for x in s.split(",")], default=[128, 512])
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peers", default="llama.cpp,onnxruntime-genai")
    ap.add_argument("--layers", type=int, default=30, help="decoder layers (30: SmolLM2-135M; fewer for a quick trial)")
    ap.add_argument("--fresh", action="store_true", help="recreate the model, the bundle and the peer conversions")
    args = ap.parse_args(argv)

    from edgevlm.bench.peers import run_peers
    from edgevlm.bench.runner import BenchSettings, run_bench
    from edgevlm.bench.schema import ResultRow

    out = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    model = make_model(out / "s135", args.layers)
    bundle = export_bundle(model, out / "s135.evlm")

    load_before = load_average()
    log(f"load average {load_before}; measuring edgevlm native and ExecuTorch")
    say = Say()
    doc = run_bench(BenchSettings(bundle=bundle, backends=["native", "executorch"], prompt_tokens=args.prompt_tokens,
                                  gen=args.gen, threads=args.threads, repeat=args.repeat, warmup=1, chunk_sizes=[]),
                    say)
    load_between = load_average()
    log(f"load average {load_between}; measuring the peers")
    peer_rows = run_peers(bundle, args.prompt_tokens, args.gen, args.threads, args.repeat, say, hf_dir=model,
                          workdir=out / "peers", peers=[p for p in args.peers.split(",") if p])
    gbs = doc["machine"]["memory_bandwidth_gbs"]
    peer_rows = [ResultRow.from_dict(r).with_bandwidth(gbs).to_dict() if not r["skipped"] else r for r in peer_rows]
    load_after = load_average()
    doc["compare"] = {"requested": True, "available": True,
                      "reason": "; ".join(f"{r['backend']}: {r['skipped']}" for r in peer_rows if r["skipped"]) or None}
    doc["compare_results"] = peer_rows
    doc["peers_source"] = str(model)
    doc["load_average"] = {"before": load_before, "before_peers": load_between, "after": load_after}
    doc["host"] = {"node": platform.node(), "cpus": os.cpu_count()}

    rows = doc["results"] + peer_rows
    text = table(rows, args.prompt_tokens, args.gen, args.threads)
    settings = settings_text(doc, args, rows, f"{load_before} (before the peers {load_between})", load_after)
    doc["table_markdown"] = text
    doc["settings_text"] = settings
    (out / "runtime_vs_peers.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "runtime_vs_peers.md").write_text(text + "\n\n" + settings + "\n")
    print(text)
    print()
    print(settings)
    print(f"\nwritten: {out / 'runtime_vs_peers.json'}, {out / 'runtime_vs_peers.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
