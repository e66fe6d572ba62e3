"""Run ``edgevlm bench``: check the inputs, start one worker process per backend, assemble the document.

:func:`run_bench` is the whole host benchmark as a function (the CLI is a thin layer over it); it
returns the ``results.json`` document of :mod:`edgevlm.bench.schema`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .. import contract as C
from ..errors import InputError
from . import bundle_sizes
from .probe import memory_bandwidth
from .prompts import build_prompts
from .schema import BACKENDS, SCHEMA_VERSION, ResultRow, skipped_row
from .worker import PROGRESS_PREFIX, thread_env

_PACKAGE_OF = {"native": "edgevlm._native", "onnxruntime": "onnxruntime", "executorch": "executorch", "tvm": "tvm"}
DEFAULT_SWEEP = (16, 32, 64, 128)


@dataclass
class BenchSettings:
    bundle: Path
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    prompt_tokens: list[int] = field(default_factory=lambda: [128, 512])
    gen: int = 64
    threads: int = 2
    repeat: int = 5
    warmup: int = 1
    image: Path | None = None  # None: a generated shapes picture for a VLM (unless no_image)
    no_image: bool = False
    chunk_sizes: list[int] | None = None  # native sweep; None: DEFAULT_SWEEP within the context; []: none
    out_dir: Path | None = None  # where a generated picture is written


class Progress:
    """What the runner reports while it works; the CLI shows it with rich on stderr."""

    def start(self, name: str, total: int) -> None: ...

    def update(self, name: str, done: int, total: int, what: str) -> None: ...

    def finish(self, name: str, note: str = "") -> None: ...

    def __call__(self, message: str) -> None:  # the peers' progress(message)
        ...


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag}: expected positive integers, got {text!r}")
    return values


def parse_backends(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise InputError(f"--backends: unknown backend {', '.join(unknown) or repr(text)}; "
                         f"choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def read_manifest(bundle: Path) -> dict:
    from ..export.bundle import open_bundle

    if not bundle.exists():
        raise InputError(f"{bundle}: no such bundle")
    if not (bundle / C.MANIFEST_FILE).is_file():
        raise InputError(f"{bundle}: not a bundle ({C.MANIFEST_FILE} missing); make one with `edgevlm export`")
    return open_bundle(bundle, verify=False).manifest


def unavailable_reason(backend: str, manifest: dict) -> str | None:
    """Why ``backend`` cannot run this bundle here, or None."""
    target = bundle_sizes.TARGET_OF[backend]
    if target not in manifest[C.KEY_TARGETS]:
        have = ", ".join(b for b, t in bundle_sizes.TARGET_OF.items() if t in manifest[C.KEY_TARGETS]) or "none"
        return f"not in the bundle (no {target} target; it has: {have})"
    package = _PACKAGE_OF[backend]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"package {package} is not installed"
    return None


def default_image(out_dir: Path) -> Path:
    """A generated shapes picture (the embedded model's kind of image), written to ``out_dir``."""
    from PIL import Image

    from ..zoo import shapes_data

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench-image.png"
    Image.fromarray(shapes_data.render(shapes_data.make_scene(shapes_data.HELDOUT_BASE))).save(path)
    return path


def sweep_sizes(settings: BenchSettings, manifest: dict) -> list[int]:
    """Native chunk sizes to sweep besides the bundle's own (which the main run measures)."""
    own, context = int(manifest[C.KEY_CHUNK_SIZE]), int(manifest[C.KEY_MAX_CONTEXT])
    sizes = DEFAULT_SWEEP if settings.chunk_sizes is None else settings.chunk_sizes
    return sorted({c for c in sizes if c != own and c <= context})


def run_worker(plan: dict, progress: Progress, name: str) -> dict:
    """Run one worker process on ``plan``; its JSON object (``{"error": ...}`` when it failed)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(plan, f)
        plan_path = f.name
    env = {**os.environ, **thread_env(int(plan["threads"]))}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgevlm.bench.worker", plan_path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        tail: list[str] = []
        for line in proc.stderr:
            if line.startswith(PROGRESS_PREFIX):
                p = json.loads(line[len(PROGRESS_PREFIX):])
                progress.update(name, p["done"], p["total"], p["what"])
            elif line.strip():
                tail = (tail + [line.rstrip()])[-20:]
                sys.stderr.write(line)  # the worker's libraries: into the command's log (edgevlm.cli.library_log)
        proc.wait()
        reader.join()
    finally:
        os.unlink(plan_path)
    text = "".join(out).strip()
    try:
        result = json.loads(text.splitlines()[-1]) if text else {}
    except json.JSONDecodeError:
        result = {}
    if proc.returncode != 0 or "rows" not in result:
        why = result.get("error") or (tail[-1] if tail else f"exit code {proc.returncode}")
        return {"error": why}
    return result


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> dict:
    """The host benchmark; see :mod:`edgevlm.bench` and docs/BENCHMARK.md."""
    progress = progress or Progress()
    s = settings
    manifest = read_manifest(s.bundle)
    if s.gen < 1 or s.repeat < 1 or s.warmup < 0 or s.threads < 1:
        raise InputError("--gen, --repeat and --threads must be >= 1, --warmup >= 0")
    context = int(manifest[C.KEY_MAX_CONTEXT])
    for n in s.prompt_tokens:
        if n + s.gen > context:
            raise InputError(f"--prompt-tokens {n} + --gen {s.gen} do not fit the bundle's context of {context} tokens")
    has_vision = bool(manifest.get(C.KEY_IMAGE_PREPROCESSING))
    image = s.image
    if image is not None:
        if not has_vision:
            raise InputError(f"--image: {s.bundle} is a text-only model")
        if not Path(image).is_file():
            raise InputError(f"--image {image}: no such file")
    elif has_vision and not s.no_image:
        image = default_image(s.out_dir or Path(tempfile.mkdtemp(prefix="edgevlm-bench-")))

    from ..models import load_processor

    _, processor = load_processor(s.bundle / C.WEIGHTS_DIR)
    prompts = build_prompts(processor, s.prompt_tokens, image)
    if image is not None:
        from ..processing.image import load_image

        load_image(image)  # an unreadable picture is bad input, reported before any worker starts

    progress.start("bandwidth probe", 1)
    probe = memory_bandwidth(s.threads)
    progress.finish("bandwidth probe", f"{probe['memory_bandwidth_gbs']:.1f} GB/s")
    machine_gbs = probe["memory_bandwidth_gbs"]

    base_plan = {"bundle": str(s.bundle), "threads": s.threads, "gen": s.gen, "repeat": s.repeat, "warmup": s.warmup,
                 "image": str(image) if image else None, "prompts": [vars(p) for p in prompts]}
    results, sweep = [], []
    for backend in s.backends:
        reason = unavailable_reason(backend, manifest)
        if reason is None:
            total = len(prompts) * (s.warmup + s.repeat)
            progress.start(backend, total)
            out = run_worker({**base_plan, "backend": backend}, progress, backend)
            reason = out.get("error") and f"failed: {out['error']}"
            progress.finish(backend, reason or "")
        if reason:
            results += [skipped_row(backend, reason, n, threads=s.threads) for n in s.prompt_tokens]
            continue
        results += [_complete(ResultRow.from_dict(r), s.bundle, manifest, machine_gbs) for r in out["rows"]]
        if backend == "native":
            sweep += _native_sweep(s, manifest, base_plan, progress, machine_gbs)
    return {
        "schema_version": SCHEMA_VERSION, "tool": "edgevlm bench", "edgevlm_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(s.bundle.resolve()), "bundle_name": bundle_name(s.bundle),
        "model": {"family": manifest.get(C.KEY_FAMILY), "chunk_size": manifest[C.KEY_CHUNK_SIZE],
                  "max_context": context, "targets": sorted(manifest[C.KEY_TARGETS]),
                  "quant_recipe": (manifest.get(C.KEY_QUANT_RECIPE) or {}).get("name"), "vision": has_vision},
        "settings": {"backends": s.backends, "prompt_tokens": s.prompt_tokens, "gen": s.gen, "threads": s.threads,
                     "repeat": s.repeat, "warmup": s.warmup, "image": str(image) if image else None,
                     "chunk_sizes": sweep_sizes(s, manifest), "device": "host"},
        "machine": machine_info(probe),
        "compare": {"requested": False, "available": False, "reason": "not requested"},
        "sizes": {b: _sizes(s.bundle, manifest, b) for b in s.backends if unavailable_reason(b, manifest) is None},
        "results": [r.to_dict() for r in results],
        "chunk_sweep": [r.to_dict() for r in sweep],
    }


def _sizes(bundle: Path, manifest: dict, backend: str) -> dict:
    weights, method = bundle_sizes.decoder_bytes(bundle, manifest, backend)
    return {"model_bytes": bundle_sizes.model_bytes(bundle, manifest, backend), "decoder_bytes": weights,
            "decoder_bytes_method": method, "files": bundle_sizes.target_files(manifest, backend)}


def _native_sweep(s: BenchSettings, manifest: dict, base_plan: dict, progress: Progress, machine_gbs: float) -> list:
    """Prefill at other chunk sizes (native sets the chunk at load time): one worker per size, gen 1."""
    rows = []
    for c in sweep_sizes(s, manifest):
        name = f"native chunk {c}"
        progress.start(name, len(base_plan["prompts"]) * (s.warmup + s.repeat))
        out = run_worker({**base_plan, "backend": "native", "chunk_size": c, "gen": 1}, progress, name)
        progress.finish(name, out.get("error", ""))
        if "rows" in out:
            rows += [_complete(ResultRow.from_dict(r), s.bundle, manifest, machine_gbs) for r in out["rows"]]
    return rows


def _complete(row: ResultRow, bundle: Path, manifest: dict, machine_gbs: float) -> ResultRow:
    """Sizes and bandwidth, which the bundle (not the worker) knows."""
    row.model_bytes = bundle_sizes.model_bytes(bundle, manifest, row.backend)
    weights, _ = bundle_sizes.decoder_bytes(bundle, manifest, row.backend)
    row.decode_bytes_per_token = weights + bundle_sizes.kv_bytes(manifest, row.backend, row.decode_depth)
    return row.with_bandwidth(machine_gbs)


def bundle_name(bundle: Path) -> str:
    name = Path(bundle).resolve().name
    return name[: -len(C.BUNDLE_SUFFIX)] if name.endswith(C.BUNDLE_SUFFIX) else name


def machine_info(probe: dict | None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_bandwidth_gbs": (probe or {}).get("memory_bandwidth_gbs", 0.0), "bandwidth_probe": probe}


__all__ = ["BenchSettings", "Progress", "bundle_name", "parse_backends", "parse_int_list", "read_manifest",
           "run_bench", "unavailable_reason"]
