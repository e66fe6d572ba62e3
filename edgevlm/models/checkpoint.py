"""Reading a local Hugging Face checkpoint directory: config and safetensors weights.

Only safetensors are read. Every header is parsed and checked (sizes, offsets, dtypes) before any
tensor is touched, so a truncated or corrupt file gives an error naming the file and the tensor
instead of a crash. A directory that only holds pickle checkpoints (``pytorch_model.bin`` and
friends) is refused: no pickle is ever loaded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import read_json

CONFIG_FILE = "config.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype name -> (torch dtype, bytes per element)
_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are and what they mean."""

    file: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def read_config(model_dir: Path) -> dict:
    """The parsed ``config.json`` of a model directory."""
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise CheckpointError(f"{model_dir}: not a directory (expected a model directory holding {CONFIG_FILE})")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model directory needs {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate the header of one safetensors file; no tensor data is read."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise CheckpointError(
                f"{path}: corrupt or truncated safetensors file (header of {header_len} bytes, file of {size})"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + header_len
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor '{name}': malformed header entry {info!r}") from e
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor '{name}': unsupported dtype {dtype}")
        if any(d < 0 for d in shape) or not (0 <= begin <= end):
            raise CheckpointError(f"{path}: tensor '{name}': invalid shape {shape} or offsets {begin}..{end}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if end - begin != expected:
            raise CheckpointError(
                f"{path}: tensor '{name}': {end - begin} bytes stored for shape {list(shape)} {dtype} "
                f"({expected} expected)"
            )
        if data_start + end > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor '{name}' ends at byte {data_start + end}, "
                f"file has {size}"
            )
        entries[name] = TensorEntry(path, name, dtype, shape, data_start + begin, data_start + end)
    return entries


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: single file, sharded (index), or any ``*.safetensors``."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        data = read_json(index) or {}
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map'")
        files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index}: names shard {f.name}, which is missing")
        return files
    single = model_dir / SINGLE_WEIGHTS_FILE
    if single.is_file():
        return [single]
    found = sorted(model_dir.glob("*.safetensors"))
    if found:
        return found
    pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in model_dir.glob(pattern)})
    if pickles:
        raise CheckpointError(
            f"{model_dir}: only pickle checkpoints found ({', '.join(pickles)}); edgevlm loads safetensors only "
            "and never unpickles. Convert once with a trusted tool, e.g. transformers: "
            "model.save_pretrained(dir, safe_serialization=True)"
        )
    raise CheckpointError(f"{model_dir}: no weights found (expected {SINGLE_WEIGHTS_FILE} or {INDEX_FILE})")


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """The tensor an entry describes, read from its file (bounds were checked with the header)."""
    dtype, itemsize = _DTYPES[entry.dtype]
    with entry.file.open("rb") as f:
        f.seek(entry.begin)
        data = f.read(entry.end - entry.begin)
    if len(data) != entry.end - entry.begin:
        raise CheckpointError(f"{entry.file}: tensor '{entry.name}': short read (file changed or truncated)")
    if dtype == torch.bfloat16:
        t = torch.frombuffer(bytearray(data), dtype=torch.int16).view(torch.bfloat16) if data else torch.empty(0, dtype=dtype)
    elif data:
        t = torch.frombuffer(bytearray(data), dtype=dtype)
    else:
        t = torch.empty(0, dtype=dtype)
    return t.reshape(entry.shape)


def load_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of a checkpoint by name, and the file each came from (for error messages)."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file in weight_files(model_dir):
        for name, entry in read_safetensors_header(file).items():
            if name in tensors:
                raise CheckpointError(f"{file}: tensor '{name}' also stored in {origin[name]}")
            tensors[name] = read_tensor(entry)
            origin[name] = file
    return tensors, origin
