"""Builds the C++ runtime's test executables once per pytest session (``cmake -S runtimes``).

The build folder is ``build/pytest-native`` unless ``EDGEVLM_NATIVE_BUILD_DIR`` names another
(each developer working in parallel uses its own); ``EDGEVLM_NATIVE_CMAKE_ARGS`` adds CMake options
(``-DEDGEVLM_SANITIZE=ON`` runs the driver tests under ASan and UBSan, tests/test_native_ctest.py). Tests that need a driver take the
``native_build`` fixture from conftest and call ``native_build / "driver_x"``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_native(build_dir: Path | None = None, extra_args: tuple[str, ...] = ()) -> Path:
    build = Path(build_dir or os.environ.get("EDGEVLM_NATIVE_BUILD_DIR") or ROOT / "build" / "pytest-native")
    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is not installed (pip install cmake)")
    jobs = str(max(1, os.cpu_count() or 1))
    extra_args = (*extra_args, *shlex.split(os.environ.get("EDGEVLM_NATIVE_CMAKE_ARGS", "")))
    subprocess.run(["cmake", "-S", str(ROOT / "runtimes"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DEDGEVLM_BUILD_PYTHON=OFF", *extra_args], check=True, capture_output=True, text=True)
    proc = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"C++ build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return build
