"""What each backend stores in a bundle: its model bytes and the bytes one decode step must read.

- **model bytes**: the files the backend loads -- the target's files in the manifest (not the ONNX
  QDQ variant nor TVM's aarch64 library), plus the external data files ONNX initializers point at.
- **decoder weight bytes**: the weights of the language model *as that backend stores them*.
  Native: the language-model tensors of ``weights/model.safetensors`` (packed int4 + scales), the
  vision tower and projector left out, and the token-embedding table left out unless the LM head
  is tied to it (a decode step reads one embedding row but the whole LM head). ONNX: the
  ``decode`` graph plus the external data of the initializers it uses (the graphs share one data
  file; the embedding lookup is the separate ``token_embedding`` graph). TVM: the stored parameters
  the ``decode`` function takes. Where one file holds every method (ExecuTorch's ``.pte``), the
  decoder's share cannot be told apart, so the native count of the same tensors scaled by the ratio
  of the two targets' whole sizes stands in. :func:`decoder_bytes` says which rule it used
  (``results.json``: ``sizes.BACKEND.decoder_bytes_method``).
- **KV bytes at depth d**: ``2 (K and V) x layers x kv_heads x head_dim x d x bytes per element``
  -- fp16 (2) or int8 (1, plus a float scale per row and head) for native as the recipe sets it,
  float32 (4) for the Python-driven graphs, whose cache lives in numpy. This is the least a decode
  step at depth d must read; static graphs that attend over the whole cache with a mask read more.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .. import contract as C

TARGET_OF = {"native": C.TARGET_NATIVE, "onnxruntime": C.TARGET_ONNX, "executorch": C.TARGET_EXECUTORCH,
             "tvm": C.TARGET_TVM}
_NOT_DECODER = ("vision", "connector", "projector", "mm_proj", "multi_modal")


def safetensors_sizes(path: Path) -> dict[str, int]:
    """Tensor name -> stored bytes, from a safetensors header (the data is not read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


def decoder_tensor_bytes(sizes: dict[str, int]) -> int:
    """Bytes a decode step reads of these tensors (the rule in the module docstring)."""
    lm = {k: v for k, v in sizes.items() if not any(w in k for w in _NOT_DECODER)}
    has_head = any("lm_head" in k for k in lm)
    return sum(v for k, v in lm.items() if not (has_head and "embed_tokens" in k))


def onnx_graph_bytes(path: Path) -> tuple[int, set[Path]]:
    """(bytes of an ONNX graph's file plus the external data its initializers point at, those data files)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total, data = path.stat().st_size, set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            total += int(info.get("length", 0))
            data.add(path.parent / info["location"])
    return total, data


def _file_bytes(bundle: Path, rels) -> int:
    total, seen = 0, set()
    for rel in rels:
        path = bundle / rel
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
        elif path.suffix == ".onnx" and path.is_file():
            files = [path, *sorted(onnx_graph_bytes(path)[1])]
        else:
            files = [path]
        for p in files:
            if p not in seen and p.is_file():
                seen.add(p)
                total += p.stat().st_size
    return total


# Target files a backend does not load on this machine: the ONNX QDQ variant (the onnxruntime backend
# runs the main graphs) and TVM's cross-compiled aarch64 library.
_OTHER_VARIANTS = ("qdq/", "aarch64")


def target_files(manifest: dict, backend: str) -> list[str]:
    """The files of ``backend``'s target that it loads (relative to the bundle)."""
    entry = manifest.get(C.KEY_TARGETS, {}).get(TARGET_OF.get(backend, backend)) or {}
    files = entry.get(C.KEY_FILES) or {}
    return sorted({v for k, v in files.items() if not k.startswith(_OTHER_VARIANTS)})


def model_bytes(bundle: Path, manifest: dict, backend: str) -> int:
    return _file_bytes(Path(bundle), target_files(manifest, backend))


def kv_bytes(manifest: dict, backend: str, depth: int) -> int:
    """KV cache bytes a decode step reads at ``depth`` cached rows (the module docstring's rule)."""
    text = manifest[C.KEY_TEXT_CONFIG]
    layers, kv_heads = int(text["num_hidden_layers"]), int(text["num_key_value_heads"])
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // int(text["num_attention_heads"]))
    rows = 2 * layers * kv_heads * depth
    if backend == "native":
        recipe = manifest.get(C.KEY_QUANT_RECIPE) or {}
        return rows * (head_dim + 4) if recipe.get("kv_cache") == "int8" else rows * head_dim * 2
    return rows * head_dim * 4


def decoder_bytes(bundle: Path, manifest: dict, backend: str) -> tuple[int, str]:
    """(decoder weight bytes as ``backend`` stores them, how they were counted)."""
    bundle = Path(bundle)
    entry = manifest.get(C.KEY_TARGETS, {}).get(TARGET_OF.get(backend, backend)) or {}
    files = entry.get(C.KEY_FILES) or {}
    native_files = (manifest[C.KEY_TARGETS].get(C.TARGET_NATIVE) or {}).get(C.KEY_FILES) or {}
    native_weights = bundle / native_files.get("weights", f"{C.WEIGHTS_DIR}/model.safetensors")
    if backend == "native" and native_weights.is_file():
        return decoder_tensor_bytes(safetensors_sizes(native_weights)), "language-model tensors of the native weights"
    decode = files.get(C.METHOD_DECODE)
    if decode and decode.endswith(".onnx") and (bundle / decode).is_file():
        return onnx_graph_bytes(bundle / decode)[0], "the decode graph and the external data of its initializers"
    if backend == "tvm":
        sig_rel = files.get("signature")
        folder = (bundle / sig_rel).parent if sig_rel else bundle / C.TARGET_TVM
        counted = _tvm_decode_params(folder)
        if counted:
            return counted, "stored parameters of the decode function"
    if native_weights.is_file():
        native_total = max(1, sum(safetensors_sizes(native_weights).values()))
        ratio = model_bytes(bundle, manifest, backend) / native_total
        return int(decoder_tensor_bytes(safetensors_sizes(native_weights)) * ratio), \
            "native decoder tensors x (this target's size / native size): methods share one file"
    return model_bytes(bundle, manifest, backend), "all of the target's files"


def _tvm_decode_params(folder: Path) -> int:
    methods, params = folder / "methods.json", folder / "params.safetensors"  # export/targets/tvm.py names
    if not methods.is_file() or not params.is_file():
        return 0
    sig = json.loads(methods.read_text()).get("methods", {}).get(C.METHOD_DECODE) or {}
    sizes = safetensors_sizes(params)
    return sum(sizes.get(p, 0) for p in sig.get("params", []))


__all__ = ["TARGET_OF", "decoder_bytes", "decoder_tensor_bytes", "kv_bytes", "model_bytes", "onnx_graph_bytes",
           "safetensors_sizes",
           "target_files"]
