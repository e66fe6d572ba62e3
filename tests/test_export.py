"""``edgevlm export`` / ``inspect`` and the bundle, independent of any one target.

The per-target exporters have their own tests (test_export_<target>.py); these check what the
orchestration promises: the bundle verifies itself (sha256) and names a tampered or missing file,
an existing output is not overwritten without ``--force``, a target whose toolchain is missing is
skipped with a message while the others continue, and unknown targets are refused up front.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm import contract as C
from edgevlm.errors import CheckpointError, InputError
from edgevlm.export import base
from edgevlm.export.bundle import open_bundle
from edgevlm.export.core import export_bundle
from edgevlm.quant.recipe import preset


def edgevlm(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgevlm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, llama_dir) -> Path:
    out = tmp_path_factory.mktemp("export") / "llama.evlm"
    export_bundle(llama_dir, out, ["native"], preset("w4g32"), chunk_size=16, max_context=128, log=lambda m: None)
    return out


def test_bundle_layout_and_manifest(bundle):
    b = open_bundle(bundle)
    m = b.manifest
    assert m[C.KEY_SCHEMA_VERSION] == C.SCHEMA_VERSION and m[C.KEY_FAMILY] == "llama"
    assert m[C.KEY_CHUNK_SIZE] == 16 and m[C.KEY_MAX_CONTEXT] == 128
    assert m[C.KEY_QUANT_RECIPE]["name"] == "w4g32"
    assert (bundle / C.TOKENIZER_FILE).is_file() and (bundle / C.WEIGHTS_DIR / "model.safetensors").is_file()
    assert "native" in m[C.KEY_TARGETS] and m[C.KEY_TARGETS]["native"]["checks"]["reload_bit_identical"]
    # every file but the manifest is hashed
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != C.MANIFEST_FILE}
    assert set(m[C.KEY_FILES]) == on_disk


def test_tampered_file_is_named(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy.evlm"
    shutil.copytree(bundle, copy)
    weights = copy / C.WEIGHTS_DIR / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"weights/model.safetensors does not match its sha256"):
        open_bundle(copy)
    (copy / C.TOKENIZER_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer.json is missing"):
        open_bundle(copy)


def test_manifest_entry_outside_bundle_refused(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy.evlm"
    shutil.copytree(bundle, copy)
    m = json.loads((copy / C.MANIFEST_FILE).read_text())
    m[C.KEY_FILES]["../outside"] = "0" * 64
    (copy / C.MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="outside the bundle"):
        open_bundle(copy)


def test_existing_output_needs_force(llama_dir, tmp_path):
    out = tmp_path / "x.evlm"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="--force"):
        export_bundle(llama_dir, out, ["native"], preset("w4g32"), chunk_size=16, max_context=128, log=lambda m: None)
    # even with --force, a folder that is not a bundle is never deleted
    with pytest.raises(InputError, match="not a bundle"):
        export_bundle(llama_dir, out, ["native"], preset("w4g32"), chunk_size=16, max_context=128, force=True,
                      log=lambda m: None)
    assert (out / "keep.txt").read_text() == "user data"


def test_missing_toolchain_is_skipped_others_continue(llama_dir, tmp_path, monkeypatch):
    """A target whose packages are absent is skipped with the pip command; native still exports."""
    fake = type(sys)("edgevlm.export.targets.fake")
    fake.TOOLCHAIN = ("edgevlm_no_such_package_xyz",)
    monkeypatch.setitem(base.TARGETS, "fake", "fake")
    monkeypatch.setitem(sys.modules, "edgevlm.export.targets.fake", fake)
    logs: list[str] = []
    m = export_bundle(llama_dir, tmp_path / "b.evlm", ["fake", "native"], preset("w4g32"), chunk_size=16,
                      max_context=128, log=logs.append)
    report = {r["target"]: r for r in m["export_report"]}
    assert report["fake"]["status"] == "skipped"
    assert "edgevlm_no_such_package_xyz" in report["fake"]["message"] and "pip install" in report["fake"]["message"]
    assert report["native"]["status"] == "ok" and "native" in m[C.KEY_TARGETS] and "fake" not in m[C.KEY_TARGETS]
    assert any("skipped" in line for line in logs)


def test_unknown_target_refused_before_work(llama_dir, tmp_path):
    with pytest.raises(InputError, match=r"unknown target 'tflite'; known: native, onnx"):
        export_bundle(llama_dir, tmp_path / "b.evlm", ["tflite"], preset("w4g32"), log=lambda m: None)
    assert not (tmp_path / "b.evlm").exists()


def test_cli_export_inspect_and_errors(llama_dir, tmp_path):
    out = tmp_path / "cli.evlm"
    r = edgevlm("export", llama_dir, "-o", out, "--targets", "native", "--chunk", "16", "--max-context", "128", "--json")
    report = json.loads(r.stdout)["targets"]
    assert [t["target"] for t in report] == ["native"] and report[0]["status"] == "ok"
    shown = edgevlm("inspect", out)
    assert "native" in shown.stdout and "files verified (sha256)" in shown.stdout
    again = edgevlm("export", llama_dir, "-o", out, "--targets", "native", check=False)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    missing = edgevlm("inspect", tmp_path / "none.evlm", check=False)
    assert missing.returncode == 2 and "no such bundle" in missing.stderr
