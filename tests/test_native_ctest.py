"""The C++ runtime's own tests in the two builds CI must prove: under AddressSanitizer and
UndefinedBehaviorSanitizer on the host, and cross-compiled for aarch64 under qemu-user.

Under the sanitizers: every ctest, every driver-based pytest (tokenizer, image, engine, loading of
corrupt files; the drivers are rebuilt with ``-DEDGEVLM_SANITIZE=ON``), and the whole session path
(``edgevlm-run`` on a VLM bundle with an image, and on a tampered bundle). Any sanitizer report
aborts the program (``-fno-sanitize-recover=all``), so a report is a failure.

Slow (each builds the runtime once more); CI runs them after the default suite (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm.export.core import export_bundle
from edgevlm.quant.recipe import preset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cmake_build(build: Path, *options: str) -> None:
    subprocess.run(["cmake", "-S", str(ROOT / "runtimes"), "-B", str(build), "-DEDGEVLM_BUILD_PYTHON=OFF",
                    "-DEDGEVLM_BUILD_TESTS=ON", *options], check=True, capture_output=True, text=True)
    proc = subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def ctest(build: Path, *options: str) -> str:
    proc = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure", *options], capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def asan_build() -> Path:
    build = ROOT / "build" / "pytest-sanitize"
    cmake_build(build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DEDGEVLM_SANITIZE=ON")
    return build


def test_ctests_under_sanitizers(asan_build):
    out = ctest(asan_build)
    assert "100% tests passed" in out


def test_driver_tests_under_sanitizers(asan_build):
    env = dict(os.environ, EDGEVLM_NATIVE_BUILD_DIR=str(asan_build),
               EDGEVLM_NATIVE_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEVLM_SANITIZE=ON",
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    files = ["tests/test_native_tokenizer.py", "tests/test_native_image.py", "tests/test_native_codecs.py",
             "tests/test_native_engine.py",
             "tests/test_native_loading.py", "tests/test_native_kernels.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *files],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and "failed" not in proc.stdout


def test_session_path_under_sanitizers(asan_build, smolvlm_dir, images, tmp_path):
    """edgevlm-run under the sanitizers: a VLM turn with a picture gives the tokens of the normal
    build; a tampered bundle is refused with an error, not a crash or a report."""
    bundle = tmp_path / "tiny.evlm"
    export_bundle(smolvlm_dir, bundle, ["native"], preset("w4g32"), chunk_size=16, max_context=512, log=lambda m: None)
    args = [str(bundle), "--prompt", "What is in the picture?", "--image", str(images[0]), "--max-new-tokens", "12",
            "--threads", "2", "--json"]
    sanitized = subprocess.run([str(asan_build / "edgevlm-run"), *args], capture_output=True, text=True, timeout=1200)
    assert sanitized.returncode == 0, sanitized.stderr[-4000:]
    from edgevlm.sdk import native_tool

    normal = subprocess.run([str(native_tool("edgevlm-run")), *args], capture_output=True, text=True, timeout=600)
    assert normal.returncode == 0, normal.stderr
    assert json.loads(sanitized.stdout)["tokens"] == json.loads(normal.stdout)["tokens"]

    weights = next((bundle / "native").glob("*.safetensors"), None) or next(bundle.rglob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    for extra in ([], ["--no-verify"]):  # the sha256 check, then the safetensors bounds checks behind it
        proc = subprocess.run([str(asan_build / "edgevlm-run"), *args, *extra], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode not in (0,) and proc.returncode > 0, proc.stderr  # an error exit, not a signal
        assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr
        assert weights.name in proc.stderr or "sha256" in proc.stderr, proc.stderr


def test_every_ctest_under_qemu_aarch64(native_build):
    """Cross-compile the runtime and its ctests for aarch64 (NEON dotprod kernels) and run them all
    under qemu-user."""
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64-static") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"aarch64 cross toolchain not installed: {', '.join(missing)} "
                    "(Debian: g++-aarch64-linux-gnu, qemu-user-static)")
    build = native_build.parent / (native_build.name + "-aarch64-all")
    cmake_build(build, "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'runtimes' / 'cmake' / 'aarch64-linux-gnu.cmake'}")
    out = ctest(build, "-V")
    assert "100% tests passed" in out and "neon" in out
