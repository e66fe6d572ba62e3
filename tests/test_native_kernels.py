"""The C++ CPU kernels (runtimes/engines/cpu): their ctest, parity with the PyTorch reference
QuantLinear (quant/modules.py) through ``driver_kernels``, and the aarch64 build under qemu.

Activation quantization must match the reference bit for bit (codes and scales); layer outputs
match within float-combination tolerance (the kernels fuse multiply-adds and sum groups in their
own fixed order; the integer group dots themselves are exact, which test_kernels checks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from edgevlm.quant.modules import QuantLinear, quantize_blocks, quantize_per_token
from edgevlm.quant.qtensor import padded, quantize_weight
from edgevlm.quant.recipe import Scheme

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_ctest(native_build):
    proc = subprocess.run(["ctest", "--test-dir", str(native_build), "-R", "^test_kernels$", "--output-on-failure"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 tests passed" in proc.stdout or "100% tests passed" in proc.stdout


def _run_layer(driver: Path, tmp: Path, layer: QuantLinear, x: torch.Tensor, kernels: str) -> dict:
    s = layer.scheme
    k_pad = layer.qdata.shape[1] * (2 if s.weight == "int4" else 1)
    group = s.group_for(layer.in_features) if s.weight == "int4" else k_pad
    meta = {"weight": s.weight, "O": layer.out_features, "K": k_pad, "K_in": layer.in_features, "M": x.shape[0],
            "group": group, "asym": int(not s.symmetric), "fp16": int(s.scale_dtype == "float16"),
            "act": s.activations, "bias": int(layer.bias is not None)}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "meta.txt").write_text("".join(f"{k} {v}\n" for k, v in meta.items()))
    layer.qdata.numpy().tofile(tmp / "qdata.bin")
    layer.scales.numpy().tofile(tmp / "scales.bin")
    if layer.zeros is not None:
        layer.zeros.numpy().tofile(tmp / "zeros.bin")
    if layer.bias is not None:
        layer.bias.detach().float().numpy().tofile(tmp / "bias.bin")
    x.float().numpy().tofile(tmp / "x.bin")
    proc = subprocess.run([str(driver), str(tmp)], capture_output=True, text=True,
                          env={**os.environ, "EDGEVLM_KERNELS": kernels})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    out = {"info": info, "y": np.fromfile(tmp / "y.bin", dtype=np.float32).reshape(x.shape[0], layer.out_features)}
    if s.activations != "none":
        out["codes"] = np.fromfile(tmp / "act_codes.bin", dtype=np.int16).reshape(x.shape[0], info["act_K"])
        out["scales"] = np.fromfile(tmp / "act_scales.bin", dtype=np.float32)
    return out


CASES = [
    # weight, group, symmetric, scale dtype, activations, O, K, M
    ("int4", 32, True, "float32", "token", 37, 96, 5),
    ("int4", 32, True, "float32", "group32", 37, 96, 5),
    ("int4", 32, True, "float32", "none", 37, 96, 5),
    ("int4", 64, False, "float16", "token", 20, 150, 17),
    ("int4", 128, True, "float16", "group32", 33, 300, 3),
    ("int4", 256, False, "float32", "none", 16, 250, 2),
    ("int8", 0, True, "float32", "token", 29, 70, 9),
    ("int8", 0, True, "float16", "none", 29, 70, 9),
]


@pytest.mark.parametrize("kernels", ["scalar", "auto"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}g{c[1]}{'s' if c[2] else 'a'}-{c[3]}-{c[4]}")
def test_layer_matches_quantlinear(native_build, tmp_path, case, kernels):
    weight, group, sym, sdt, act, o, k, m = case
    torch.manual_seed(hash(case) % 1000)
    scheme = Scheme(weight=weight, group_size=group, symmetric=sym, scale_dtype=sdt, activations=act)
    w = torch.randn(o, k) * 0.05
    layer = QuantLinear(quantize_weight(w, scheme), bias=torch.randn(o) * 0.1).eval()
    x = torch.randn(m, k) * 2.0
    x[0, :7] = 0.0
    if m > 1:
        x[1] = torch.linspace(-3, 5, k)
    with torch.no_grad():
        ref = layer(x).numpy()
    out = _run_layer(native_build / "driver_kernels", tmp_path, layer, x, kernels)
    if act == "token":
        codes, scales = quantize_per_token(x)
        np.testing.assert_array_equal(out["codes"][:, :k], codes.numpy().astype(np.int16))
        assert (out["codes"][:, k:] == 0).all()
        np.testing.assert_array_equal(out["scales"], scales.numpy())
    elif act == "group32":
        g = scheme.group_for(k)
        codes, scales = quantize_blocks(F.pad(x, (0, padded(k, g) - k)))
        np.testing.assert_array_equal(out["codes"], codes.numpy().astype(np.int16))
        np.testing.assert_array_equal(out["scales"], scales.numpy().reshape(-1))
    scale = float(np.abs(ref).max())
    tol = 2e-6 if act != "none" else 2e-5  # relative to the layer's largest output
    np.testing.assert_allclose(out["y"], ref, rtol=0, atol=tol * scale)


@pytest.mark.slow
def test_aarch64_build_under_qemu(native_build):
    """Cross-compile test_kernels for aarch64 (NEON dotprod kernels) and run it under qemu-user."""
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64-static") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"aarch64 cross toolchain not installed: {', '.join(missing)} (Debian: g++-aarch64-linux-gnu, qemu-user-static)")
    build = native_build.parent / (native_build.name + "-aarch64")
    subprocess.run(["cmake", "-S", str(ROOT / "runtimes"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DEDGEVLM_BUILD_PYTHON=OFF",
                    f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'runtimes' / 'cmake' / 'aarch64-linux-gnu.cmake'}"],
                   check=True, capture_output=True, text=True)
    proc = subprocess.run(["cmake", "--build", str(build), "--target", "test_kernels", "-j", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    proc = subprocess.run(["ctest", "--test-dir", str(build), "-R", "^test_kernels$", "--output-on-failure", "-V"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "neon" in proc.stdout and "all checks passed" in proc.stdout
