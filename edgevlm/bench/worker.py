"""``python -m edgevlm.bench.worker PLAN.json``: measure one backend of a bundle in this process alone.

``edgevlm bench`` starts one worker per backend (and per native chunk size of the sweep), so the
peak RSS a worker reports belongs to that backend only. The plan (written by
:mod:`edgevlm.bench.runner`) names the bundle, backend, threads, the prompts (texts already fitted
to their token counts), the image, generated tokens, warm-up and repeats.

For each prompt the worker runs ``warmup + repeat`` fresh generations through the SDK
(``edgevlm.load(...).generate``, greedy, ``ignore_eos`` so exactly ``gen`` tokens come out) and
summarizes the repeats' :class:`~edgevlm.generate.GenerationStats`. It prints one JSON object on
stdout: ``{"rows": [ResultRow dicts], "runtime", "load_ms", "baseline_rss_mb", "peak_rss_mb"}``,
or ``{"error": "..."}`` with exit code 1. Progress goes to stderr as lines
``@progress {"done": i, "total": n, "what": "..."}``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from importlib import metadata

from .schema import ResultRow, Summary

PROGRESS_PREFIX = "@progress "
_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime",), "executorch": ("executorch",),
                  "tvm": ("apache-tvm", "tvm", "mlc-ai-nightly")}


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ``ru_maxrss`` carries the parent's peak across fork + exec,
    so the high-water mark of this process's own memory (``VmHWM``) is read where there is one."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """Resident memory now (``VmRSS``; the peak where /proc is missing)."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def runtime_name(backend: str) -> str:
    """The runtime behind a backend and its version, e.g. ``onnxruntime 1.20.1``."""
    if backend == "native":
        from .. import _native

        return f"edgevlm-native {_native.version()}"
    for dist in _DISTRIBUTIONS.get(backend, (backend,)):
        try:
            return f"{backend} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return backend


# Python modules each backend imports on first use; imported before the load clock starts, so
# load_ms is the model's load, not the interpreter's one-time import of a runtime.
_RUNTIME_MODULES = {"native": ("edgevlm._native",), "onnxruntime": ("onnxruntime", "edgevlm.export.targets.onnx"),
                    "executorch": ("executorch.runtime", "executorch.kernels.quantized",
                                   "edgevlm.export.targets.executorch"),
                    "tvm": ("tvm", "edgevlm.export.targets.tvm")}


def import_runtime(backend: str) -> None:
    import importlib

    for name in _RUNTIME_MODULES.get(backend, ()):
        importlib.import_module(name)
    if backend != "native":
        importlib.import_module("edgevlm.models")  # the processor the Python sessions load


def thread_env(threads: int) -> dict[str, str]:
    """Environment that holds the Python-driven runtimes to ``threads`` compute threads."""
    n = str(max(1, threads))
    return {"EDGEVLM_ORT_THREADS": n, "TVM_NUM_THREADS": n, "OMP_NUM_THREADS": n}


def _open_lazy_graphs(session) -> None:
    """onnxruntime opens a graph on its first call; open them all now so load time counts it."""
    engine = getattr(session, "engine", None)
    folder, sessions = getattr(engine, "folder", None), getattr(engine, "sessions", None)
    if folder is None or not isinstance(sessions, dict) or not hasattr(engine, "session"):
        return
    from .. import contract as C

    for method in C.METHODS:
        path = folder / f"{method}.onnx"
        if path.is_file() and method not in sessions:
            sessions[method] = engine.session(path)


def _progress(done: int, total: int, what: str) -> None:
    sys.stderr.write(PROGRESS_PREFIX + json.dumps({"done": done, "total": total, "what": what}) + "\n")
    sys.stderr.flush()


def measure(plan: dict) -> dict:
    """Run the plan (see the module docstring) and return the worker's JSON object."""
    from ..processing.image import load_image
    from ..sampling import SamplingParams
    from ..sdk import load  # imported before the clock starts: load_ms is the model's, not Python's

    backend, threads = plan["backend"], int(plan["threads"])
    gen, repeat, warmup = int(plan["gen"]), int(plan["repeat"]), int(plan["warmup"])
    chunk = plan.get("chunk_size")
    images = [load_image(plan["image"])] if plan.get("image") else []
    import_runtime(backend)
    baseline = rss_mb()
    t0 = time.perf_counter()
    session = load(plan["bundle"], backend=backend, threads=threads, chunk_size=chunk, verify=False)
    _open_lazy_graphs(session)
    load_ms = (time.perf_counter() - t0) * 1e3
    params = SamplingParams(max_new_tokens=gen, temperature=0.0, ignore_eos=True)
    prompts = plan["prompts"]
    total, done = len(prompts) * (warmup + repeat), 0
    rows = []
    for prompt in prompts:
        runs = []
        for r in range(warmup + repeat):
            what = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeat}"
            _progress(done, total, f"{prompt['requested']} tokens, {what}")
            stats = session.generate(prompt["text"], images, params).stats
            done += 1
            if r >= warmup:
                runs.append(stats)
        _progress(done, total, f"{prompt['requested']} tokens done")
        rows.append(_row(plan, prompt, runs, load_ms, bool(images)).to_dict())
    peak = peak_rss_mb()
    for row in rows:
        row["peak_rss_mb"], row["baseline_rss_mb"] = round(peak, 2), round(baseline, 2)
    return {"rows": rows, "runtime": runtime_name(backend), "load_ms": round(load_ms, 3),
            "baseline_rss_mb": round(baseline, 2), "peak_rss_mb": round(peak, 2)}


def _row(plan: dict, prompt: dict, runs: list, load_ms: float, image: bool) -> ResultRow:
    first = runs[0]
    chunks = [c for s in runs for c in s.prefill_chunks_ms]
    return ResultRow(
        backend=plan["backend"], requested_prompt_tokens=int(prompt["requested"]),
        runtime=runtime_name(plan["backend"]), device="host", threads=int(plan["threads"]),
        prompt_tokens=first.prompt_tokens, decode_depth=first.prompt_tokens,
        gen_tokens=first.generated_tokens, chunk_size=first.chunk_size,
        chunk_source="load" if plan.get("chunk_size") else "bundle", image=image, image_tiles=first.image_tiles,
        load_ms=round(load_ms, 3),
        preprocess_ms=Summary.of(s.preprocess_ms for s in runs),
        vision_encode_ms=Summary.of(s.vision_encode_ms for s in runs),
        prefill_ms=Summary.of(s.prefill_ms for s in runs),
        prefill_tps=Summary.of(s.prefill_tps for s in runs),
        prefill_chunk_ms=Summary.of(chunks),
        ttft_ms=Summary.of(s.ttft_ms for s in runs),
        decode_tps=Summary.of(s.decode_tps for s in runs),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgevlm.bench.worker PLAN.json", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as f:
            plan = json.load(f)
        os.environ.update(thread_env(int(plan["threads"])))
        out = measure(plan)
    except Exception as e:  # reported to the parent as this backend's failure
        print(json.dumps({"error": f"{type(e).__name__}: {e}".splitlines()[0]}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
