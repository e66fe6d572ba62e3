"""The bundle: ``NAME.evlm/``, the contract between exporters and runtimes (ARCHITECTURE contract 1).

Layout::

    NAME.evlm/
      manifest.json     keys in edgevlm.contract; sha256 of every other file under "files"
      tokenizer.json
      weights/          the quantized model directory (config.json with quantization_config,
                        model.safetensors with int4 packed + scales, tokenizer and processor files):
                        the native runtime reads it, edgevlm.models.load reads it
      onnx/ executorch/ coreml/ tvm/     one folder per exported target

:func:`open_bundle` checks the manifest and every file's sha256 before anything is used, and names
the first missing, extra-sized or tampered file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevlm import contract as C
from edgevlm.errors import CheckpointError, InputError
from edgevlm.models import LoadedModel
from edgevlm.models.config import to_dict


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_preprocessing(loaded: LoadedModel) -> dict | None:
    """The image processor's parameters, as the C++ preprocessing (runtimes/core/image.cpp) reads them."""
    proc = loaded.processor
    if not proc.supports_images:
        return None
    kind = {"smolvlm": "idefics3", "llava": "clip", "mobilevlm": "pad_square"}.get(loaded.family, loaded.family)
    out: dict[str, Any] = {C.IMAGE_KIND: kind, C.IMAGE_TOKENS_PER_TILE: loaded.model.tokens_per_tile}
    image = getattr(proc, "images", None) or getattr(proc, "image", None) or proc
    if kind == "idefics3":
        out[C.IMAGE_SIZE] = image.tile_size
        out[C.IMAGE_LONGEST_EDGE] = image.longest_edge
        out[C.IMAGE_SPLIT] = image.do_split
    else:  # CLIP-style: resize the shortest edge (or to a fixed size), center crop, optional pad to square
        out[C.IMAGE_SIZE] = list(image.crop_hw)
        if image.shortest_edge is not None:
            out["shortest_edge"] = image.shortest_edge
        else:
            out["resize_size"] = [int(v) for v in image.size_hw]
        out["do_center_crop"] = image.do_crop
        out["pad_to_square"] = image.pad_to_square
    out["do_resize"] = image.do_resize
    out[C.IMAGE_MEAN] = list(image.mean)
    out[C.IMAGE_STD] = list(image.std)
    out["rescale_factor"] = image.rescale
    out[C.IMAGE_RESAMPLE] = getattr(image.resample, "name", str(image.resample)).lower()
    return out


def special_tokens(loaded: LoadedModel) -> dict:
    tok = loaded.processor.tokenizer
    out = {C.TOKEN_BOS: tok.bos_id, C.TOKEN_EOS: list(tok.eos_ids),
           C.TOKEN_PAD: None, C.TOKEN_IMAGE: loaded.model.image_token_id}
    return out


def base_manifest(loaded: LoadedModel, chunk_size: int, max_context: int) -> dict:
    cfg = loaded.config
    d = to_dict(cfg) if dataclasses.is_dataclass(cfg) else {}
    text = d.pop("text", d)
    vision = d.pop("vision", None)
    template = loaded.processor.chat_template
    recipe = getattr(loaded.model, "quant_recipe", None)
    manifest = {
        C.KEY_SCHEMA_VERSION: C.SCHEMA_VERSION,
        C.KEY_FAMILY: loaded.family,
        "model_type": loaded.hf_config.get("model_type"),
        C.KEY_TEXT_CONFIG: text,
        C.KEY_SPECIAL_TOKENS: special_tokens(loaded),
        C.KEY_CHAT_TEMPLATE: None if template is None else template.source,
        C.KEY_CHAT_FORMAT: loaded.processor.chat_format(),
        C.KEY_QUANT_RECIPE: None if recipe is None else recipe.to_dict(),
        C.KEY_CHUNK_SIZE: chunk_size,
        C.KEY_MAX_CONTEXT: max_context,
        C.KEY_TARGETS: {},
        C.KEY_FILES: {},
    }
    if vision is not None:
        manifest[C.KEY_VISION_CONFIG] = vision
        manifest[C.KEY_PROJECTOR_CONFIG] = d  # what remains: scale factor, projector type, image token id, ...
        manifest[C.KEY_IMAGE_PREPROCESSING] = image_preprocessing(loaded)
    return manifest


LOG_SUFFIX = ".log"  # logs at the bundle's root (export.log) keep growing after the manifest is written: not hashed


def write_manifest(root: Path, manifest: dict) -> None:
    """Hash every file under ``root`` (but the manifest and the root's logs) into the manifest and write it."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.parent == root and p.suffix == LOG_SUFFIX:
            continue
        if p.is_file() and p.name != C.MANIFEST_FILE:
            files[p.relative_to(root).as_posix()] = sha256(p)
    manifest[C.KEY_FILES] = files
    (root / C.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def targets(self) -> dict:
        return self.manifest[C.KEY_TARGETS]

    @property
    def weights_dir(self) -> Path:
        return self.path / C.WEIGHTS_DIR

    def target_file(self, target: str, method: str) -> Path:
        if target not in self.targets:
            raise InputError(f"{self.path}: the bundle has no {target!r} target (it has: {', '.join(self.targets) or 'none'})")
        files = self.targets[target].get("files", {})
        if method not in files:
            raise CheckpointError(f"{self.path}: target {target!r} has no file for method {method!r}")
        return self.path / files[method]


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read a bundle's manifest; with ``verify``, check every file against its sha256 first."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: no such bundle directory")
    mpath = root / C.MANIFEST_FILE
    if not mpath.is_file():
        raise CheckpointError(f"{root}: not a bundle ({C.MANIFEST_FILE} missing)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{mpath}: expected a JSON object")
    missing = [k for k in C.MANIFEST_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise CheckpointError(f"{mpath}: missing keys {', '.join(missing)}")
    if manifest[C.KEY_SCHEMA_VERSION] != C.SCHEMA_VERSION:
        raise CheckpointError(f"{mpath}: schema version {manifest[C.KEY_SCHEMA_VERSION]!r} unsupported (this edgevlm reads {C.SCHEMA_VERSION})")
    if verify:
        verify_files(root, manifest)
    return Bundle(root, manifest)


def verify_files(root: Path, manifest: dict) -> None:
    files = manifest[C.KEY_FILES]
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{root / C.MANIFEST_FILE}: no file list to verify")
    for rel, digest in files.items():
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise CheckpointError(f"{root / C.MANIFEST_FILE}: file entry {rel!r} points outside the bundle")
        if not p.is_file():
            raise CheckpointError(f"{root}: file {rel} is missing")
        if sha256(p) != digest:
            raise CheckpointError(f"{root}: file {rel} does not match its sha256 in the manifest (modified or corrupt)")
