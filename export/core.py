"""``export_bundle``: checkpoint -> quantized reference -> every requested target, each verified.

1. Load the checkpoint, quantize it with the recipe, and write the quantized model directory into
   the bundle (``weights/``). The reference for every check is that directory *read back*, so all
   targets are compared with exactly what was stored.
2. Greedy reference runs (PyTorch, static KV cache, the same chunk plan) on three prompts.
3. For each target: check its toolchain (a missing one is skipped with a message, the others go
   on), export, and, where it runs here, verify it teacher-forced against the reference.
4. Write the manifest with every file's sha256 and each target's verification table.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgevlm import contract as C
from edgevlm.engine import TorchEngine
from edgevlm.errors import EdgeVLMError, InputError
from edgevlm.models import LoadedModel, load

from .backend import check_prompt, reference_run
from .base import ExportContext, missing_toolchain, target_module
from .bundle import base_manifest, open_bundle, write_manifest

N_TOKENS = 64
DEFAULT_MAX_CONTEXT = 2048


@dataclass
class TargetReport:
    target: str
    status: str  # ok | skipped | failed
    message: str = ""
    export_seconds: float = 0.0
    size_bytes: int = 0
    files: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    verification: dict | None = None


def verification_prompts(loaded: LoadedModel) -> list[tuple[str, list]]:
    """Three prompts: image+text ones for a vision-language model, and text-only ones."""
    proc = loaded.processor
    if not proc.supports_images:
        texts = ["Once upon a time", "The little dog", "Tell me a story about the sea."]
        return [(proc.chat_prompt(t) if proc.chat_template else t, []) for t in texts]
    from edgevlm.zoo import shapes_data

    pictures = [shapes_data.render(shapes_data.make_scene(s)) for s in (7, 11)]
    return [(proc.chat_prompt("Describe the image.", 1), [pictures[0]]),
            (proc.chat_prompt("What color is the circle?", 1), [pictures[1]]),
            (proc.chat_prompt("How many shapes are there?"), [])]


def prepare_output(out: Path, force: bool) -> None:
    if out.exists():
        if not force:
            raise InputError(f"{out} exists; pass --force to replace it")
        if out.is_dir() and any(out.iterdir()) and not (out / C.MANIFEST_FILE).is_file() and not (out / C.WEIGHTS_DIR).is_dir():
            raise InputError(f"{out} exists and is not a bundle; refusing to delete it even with --force")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)


def dir_size(root: Path, files: dict) -> int:
    total = 0
    for rel in set(files.values()):
        p = root / rel
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def export_bundle(model: str | Path, out: Path, targets: list[str], recipe, calib=None, chunk_size: int = 64,
                  max_context: int | None = None, force: bool = False, log: Callable[[str], None] = print,
                  score: bool = False) -> dict:
    """Export ``model`` to the bundle ``out`` for ``targets``; returns the manifest.

    ``max_context`` (the static KV cache length) defaults to the model's positions, at most 2048.
    ``score`` adds the optional ``score`` method to the graph targets that run here (perplexity of
    the exported graphs: ``edgevlm eval BUNDLE --ppl``).
    """
    from edgevlm.quant.apply import quantize_model
    from edgevlm.quant.storage import save_quantized

    modules = {t: target_module(t) for t in targets}  # unknown names fail before any work
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to replace it")
    source = load(model)
    limit = source.model.language_model.config.max_position_embeddings
    max_context = min(DEFAULT_MAX_CONTEXT, limit) if max_context is None else max_context
    if max_context > limit:
        raise InputError(f"--max-context {max_context} exceeds the model's {limit} positions")
    if chunk_size < 1 or chunk_size > max_context:
        raise InputError(f"chunk size {chunk_size} must be in 1..max context ({max_context})")
    prepare_output(out, force)
    t0 = time.perf_counter()
    report = quantize_model(source.model, recipe, calib) if recipe is not None else None
    save_quantized(source.model, source.path, out / C.WEIGHTS_DIR, source.hf_config, report) if recipe is not None \
        else shutil.copytree(source.path, out / C.WEIGHTS_DIR)
    # the tokenizer as the Python processor runs it: its post-processor already holds tokenizer_config.json's
    # add_bos_token / add_eos_token (which the C++ runtime does not read), so both add the same special tokens
    source.processor.tokenizer.backend.save(str(out / C.TOKENIZER_FILE))
    log(f"quantized with {recipe.name if recipe else 'no recipe'} ({recipe.algorithm if recipe else '-'}) in {time.perf_counter() - t0:.1f} s")

    reference = load(out / C.WEIGHTS_DIR)
    manifest = base_manifest(reference, chunk_size, max_context)
    manifest["source"] = str(model)  # as given: a zoo name or a path (edgevlm demo reuses a bundle of its model)
    ctx = ExportContext(reference, out, chunk_size, max_context, manifest, score=score)
    prompts = verification_prompts(reference)
    ref_engine = TorchEngine(reference.model, max_context, chunk_size)
    runs = []
    for text, images in prompts:
        inputs = reference.processor(text, images)
        if len(inputs.input_ids) + N_TOKENS > max_context:
            raise InputError(f"--max-context {max_context} is too small for the verification prompts")
        runs.append((text, inputs, *reference_run(ref_engine, inputs, N_TOKENS)))
    from edgevlm.models.cache import remove_kv_cache

    remove_kv_cache(reference.model)
    reports = []
    for name, module in modules.items():
        rep = TargetReport(name, "ok")
        missing = missing_toolchain(module)
        if missing:
            rep.status, rep.message = "skipped", f"toolchain not installed: {', '.join(missing)} (pip install {' '.join(missing)})"
            log(f"{name}: skipped, {rep.message}")
            reports.append(rep)
            continue
        log(f"{name}: exporting")
        try:
            t = time.perf_counter()
            result = module.export(ctx, out / name)
            rep.export_seconds = round(time.perf_counter() - t, 2)
            rep.files, rep.checks, rep.message = result.files, result.checks, result.note
            rep.size_bytes = dir_size(out, result.files)
            if getattr(module, "RUNS_HERE", False):
                log(f"{name}: verifying against the reference on {len(runs)} prompts")
                engine = module.open_engine(out, manifest)
                checks = [check_prompt(engine, text, inputs, toks, logits) for text, inputs, toks, logits in runs]
                from .backend import Verification

                rep.verification = Verification(checks).to_dict()
        except EdgeVLMError:
            raise
        except Exception as e:  # a failing target is reported; the others still export
            rep.status = "failed"
            rep.message = f"{type(e).__name__}: {e}".splitlines()[0][:400]
            rep.checks["traceback"] = traceback.format_exc(limit=6)[-2000:]
            sys.stderr.write(f"edgevlm export: target {name} failed:\n{traceback.format_exc()}")  # the command's log
            log(f"{name}: FAILED: {rep.message}")
        reports.append(rep)
        if rep.status == "ok":
            manifest[C.KEY_TARGETS][name] = {"files": rep.files, "export_seconds": rep.export_seconds,
                                             "size_bytes": rep.size_bytes, "checks": rep.checks,
                                             "verification": rep.verification, "note": rep.message}
    manifest["export_report"] = [rep.__dict__ for rep in reports]
    manifest["verification_tokens"] = N_TOKENS
    write_manifest(out, manifest)
    open_bundle(out)  # the bundle verifies itself
    return manifest


__all__ = ["export_bundle", "verification_prompts"]
