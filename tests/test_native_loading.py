"""The C++ safetensors and bundle loading (runtimes/core/safetensors.*, bundle.*, sha256.*) against
the Python ``safetensors`` package and export/bundle.py, through runtimes/tests/driver_safetensors.cpp.
Corruption cases are covered by the ctest runtimes/tests/test_safetensors.cpp; here the files are
real ones written by Python.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
          "BOOL": torch.bool}


@pytest.fixture(scope="module")
def driver(native_build) -> Path:
    return native_build / "driver_safetensors"


def run_driver(driver: Path, *args) -> tuple[int, dict]:
    proc = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"driver printed nothing (rc {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(lines[-1])


def python_listing(path: Path) -> dict[str, tuple[str, list[int], str]]:
    """name -> (dtype, shape, sha256 of the bytes), read with the header as the Python package wrote it."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], hashlib.sha256(data[v["data_offsets"][0]:v["data_offsets"][1]]).hexdigest())
            for k, v in header.items()}


def cpp_listing(driver: Path, path: Path) -> tuple[dict, dict]:
    rc, out = run_driver(driver, "list", path)
    assert rc == 0, out
    return {t["name"]: (t["dtype"], t["shape"], t["sha256"]) for t in out["tensors"]}, out["metadata"]


def test_torch_file_every_dtype(driver, tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, (name, dt) in enumerate(DTYPES.items()):
        shape = [(i % 3) + 1, 5, 7 + i] if i % 2 else [11 + i]
        x = torch.randn(shape, generator=g) * 50
        tensors[f"t.{name.lower()}"] = (x > 0) if dt == torch.bool else x.to(dt)
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, 4)
    path = tmp_path / "m.safetensors"
    save_torch(tensors, str(path), metadata={"format": "pt", "edgevlm.quantization": json.dumps({"x": 1})})
    got, meta = cpp_listing(driver, path)
    assert got == python_listing(path)
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert got[name][1] == list(t.shape)
        assert got[name][0] == {v: k for k, v in DTYPES.items()}[t.dtype]
    assert meta == {"format": "pt", "edgevlm.quantization": json.dumps({"x": 1})}


def test_numpy_file_and_expect(driver, tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((4, 6)).astype(np.float32), "q": rng.integers(0, 255, (3, 8), dtype=np.uint8),
              "u64": np.arange(5, dtype=np.uint64)}
    path = tmp_path / "n.safetensors"
    save_numpy(arrays, str(path))
    got, _ = cpp_listing(driver, path)
    for name, a in arrays.items():
        assert got[name][2] == hashlib.sha256(a.tobytes()).hexdigest()
    assert run_driver(driver, "expect", path, "w", "F32", 4, 6)[0] == 0
    assert run_driver(driver, "expect", path, "w", "F32", -1, 6)[0] == 0
    rc, out = run_driver(driver, "expect", path, "w", "F16", 4, 6)
    assert rc == 2 and out["error"] == 3 and "'w'" in out["message"] and "expected F16 [4, 6], got F32 [4, 6]" in out["message"]
    rc, out = run_driver(driver, "expect", path, "q", "U8", 8, 3)
    assert rc == 2 and "expected U8 [8, 3], got U8 [3, 8]" in out["message"] and "n.safetensors" in out["message"]


def test_sha256_matches_hashlib(driver, tmp_path):
    rng = np.random.default_rng(2)
    for n in (0, 1, 55, 56, 63, 64, 65, 1000, (1 << 20) + 17):
        p = tmp_path / f"f{n}"
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        rc, out = run_driver(driver, "sha256", p)
        assert rc == 0 and out["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest(), n


def test_truncated_python_file_is_an_error(driver, tmp_path):
    path = tmp_path / "t.safetensors"
    save_torch({"a": torch.ones(16, 16), "b": torch.zeros(3)}, str(path))
    raw = path.read_bytes()
    for cut in (0, 5, 8, 20, len(raw) - 1):
        (tmp_path / "cut.safetensors").write_bytes(raw[:cut])
        rc, out = run_driver(driver, "list", tmp_path / "cut.safetensors")
        assert rc == 2 and out["error"] == 3 and "cut.safetensors" in out["message"], (cut, out)


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory, llama_dir) -> Path:
    out = tmp_path_factory.mktemp("q") / "llama-q4"
    proc = subprocess.run(["edgevlm", "quantize", str(llama_dir), "-o", str(out), "--algo", "rtn"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"edgevlm quantize failed here: {proc.stderr[-2000:]}")
    return out


def fake_bundle(root: Path, weights: Path) -> Path:
    """A bundle around a weights directory, its manifest written by export/bundle.py write_manifest."""
    from edgevlm import contract as C
    from edgevlm.export.bundle import write_manifest

    bundle = root / "m.evlm"
    shutil.copytree(weights, bundle / C.WEIGHTS_DIR)
    shutil.copy2(bundle / C.WEIGHTS_DIR / C.TOKENIZER_FILE, bundle / C.TOKENIZER_FILE)
    manifest = {C.KEY_SCHEMA_VERSION: C.SCHEMA_VERSION, C.KEY_FAMILY: "llama", C.KEY_TEXT_CONFIG: {},
                C.KEY_SPECIAL_TOKENS: {}, C.KEY_CHAT_TEMPLATE: None, C.KEY_CHUNK_SIZE: 16, C.KEY_MAX_CONTEXT: 256,
                C.KEY_TARGETS: {}, C.KEY_FILES: {}}
    write_manifest(bundle, manifest)
    return bundle


def test_quantized_bundle(driver, tmp_path, quantized_dir):
    bundle = fake_bundle(tmp_path, quantized_dir)
    rc, out = run_driver(driver, "bundle", bundle)
    assert rc == 0, out
    weights = bundle / "weights" / "model.safetensors"
    assert {t["name"]: (t["dtype"], t["shape"], t["sha256"]) for t in out["weights"]["tensors"]} == python_listing(weights)
    assert "edgevlm.quantization" in out["weights"]["metadata"]
    layers = json.loads((bundle / "weights" / "config.json").read_text())["quantization_config"]["layers"]
    assert out["quantized"] and set(out["layers"]) == set(layers)
    for path, e in layers.items():
        got = out["layers"][path]
        assert got["kind"] == e["kind"] and got["scheme"] == e["scheme"]
        if e["kind"] != "tied_lm_head":
            assert (got["bits"], got["group_size"], got["symmetric"], got["shape"]) == (
                e["bits"], e["group_size"], e["symmetric"], e["shape"])

    # tamper with one byte of the weights: verification names the file; without it the header still loads
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    rc, out = run_driver(driver, "bundle", bundle)
    assert rc == 2 and out["error"] == 3 and "weights/model.safetensors" in out["message"] and "sha256" in out["message"]
    assert run_driver(driver, "bundle", bundle, "--no-verify")[0] == 0
    # a listed file removed
    (bundle / "tokenizer.json").unlink()
    rc, out = run_driver(driver, "bundle", bundle)
    assert rc == 2 and out["error"] == 2 and "tokenizer.json" in out["message"] and "missing" in out["message"]
    # the Python reader agrees that this bundle is broken
    from edgevlm.errors import CheckpointError
    from edgevlm.export.bundle import open_bundle

    with pytest.raises(CheckpointError):
        open_bundle(bundle)


def test_unquantized_bundle(driver, tmp_path, llama_dir):
    bundle = fake_bundle(tmp_path, llama_dir)
    rc, out = run_driver(driver, "bundle", bundle)
    assert rc == 0, out
    assert not out["quantized"] and out["family"] == "llama"
    assert {t["name"]: (t["dtype"], t["shape"], t["sha256"]) for t in out["weights"]["tensors"]} == python_listing(
        bundle / "weights" / "model.safetensors")
