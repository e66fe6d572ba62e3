"""Shared fixtures: tiny checkpoints saved once per session, the shared data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tiny_models  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI must be reproducible: property tests draw the same examples on every run (set
# HYPOTHESIS_PROFILE=explore locally to search with fresh random examples).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DATA = tiny_models.DATA


def pytest_sessionstart(session):
    if not DATA.is_dir():
        raise pytest.UsageError(f"shared test data not found at {DATA} (expected ../shared/data beside the repo)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def images() -> list[Path]:
    return tiny_models.IMAGES


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return tiny_models.make_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def llama_untied_dir(tmp_path_factory) -> Path:
    return tiny_models.make_llama(tmp_path_factory.mktemp("llama_untied"), tie=False, seed=1)


@pytest.fixture(scope="session")
def smolvlm_dir(tmp_path_factory) -> Path:
    return tiny_models.make_smolvlm(tmp_path_factory.mktemp("smolvlm"))


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory) -> Path:
    return tiny_models.make_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="session")
def mobilevlm_dir(tmp_path_factory) -> Path:
    """A tiny random MobileVLM v2 (CLIP tower, LDPv2 projector)."""
    return tiny_models.make_mobilevlm(tmp_path_factory.mktemp("mobilevlm2"), "ldpnetv2")


@pytest.fixture(scope="session")
def mobilevlm_v1_dir(tmp_path_factory) -> Path:
    """A tiny random MobileVLM v1 (CLIP tower, LDP projector: inverted residuals with squeeze-excitation)."""
    return tiny_models.make_mobilevlm(tmp_path_factory.mktemp("mobilevlm1"), "ldpnet")


@pytest.fixture(scope="session")
def native_build() -> Path:
    """The C++ runtime built with its test drivers (see tests/native_build.py)."""
    from native_build import build_native

    return build_native()


@pytest.fixture(scope="session")
def tiny_vlm_bundle(tmp_path_factory) -> Path:
    """A tiny SmolVLM bundle with the native and onnx targets (tiny_models.make_vlm_bundle)."""
    return tiny_models.make_vlm_bundle(tmp_path_factory.mktemp("tiny_vlm_bundle"))


@pytest.fixture(scope="session")
def shapes_native_bundle(tmp_path_factory) -> Path:
    """The embedded shapes-vlm exported as `edgevlm export shapes-vlm -o X --targets native` does (defaults:
    w4g32, chunk 64, context 1024)."""
    from edgevlm.export.core import export_bundle
    from edgevlm.quant.recipe import preset

    out = tmp_path_factory.mktemp("shapes_native") / "shapes.evlm"
    export_bundle("shapes-vlm", out, ["native"], preset("w4g32"), log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def shapes_every_target(tmp_path_factory):
    """The embedded shapes VLM exported by the CLI to every target, with the demo's settings (w4g32,
    chunk 32, context 512), so ``edgevlm demo --bundle`` reuses it. Returns the bundle's folder, the
    export's CompletedProcess and the log folder it used (``EDGEVLM_LOG_DIR``)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("every_target")
    env = {**os.environ, "EDGEVLM_LOG_DIR": str(root / "logs")}
    args = [sys.executable, "-m", "edgevlm", "export", "shapes-vlm", "-o", str(root / "shapes.evlm"), "--targets",
            "native,onnx,executorch,coreml,tvm", "--recipe", "w4g32", "--chunk", "32", "--max-context", "512"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=3600, cwd=root, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"export failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return SimpleNamespace(root=root, bundle=root / "shapes.evlm", export=proc, env=env)
