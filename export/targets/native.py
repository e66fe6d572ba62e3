"""The native target: the quantized weights in the layout the C++ runtime reads.

The bundle's ``weights/`` folder is the quantized model directory written by
:func:`edgevlm.quant.storage.save_quantized` (int4 packed two per byte along K, low nibble first;
scales and zero points beside them; every layer's scheme in ``config.json`` and in the safetensors
metadata; see docs/QUANTIZATION.md). This target records those files; it is checked here by
reading them back through the same loader and comparing every tensor bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgevlm import contract as C
from edgevlm.models import load

from ..base import ExportContext, TargetResult

RUNS_HERE = False  # its engine is the C++ runtime (runtimes/)
TOOLCHAIN = ()


def export(ctx: ExportContext, out: Path) -> TargetResult:
    weights = ctx.bundle / C.WEIGHTS_DIR
    files = {"weights": f"{C.WEIGHTS_DIR}/model.safetensors", "config": f"{C.WEIGHTS_DIR}/config.json"}
    again = load(weights).model.state_dict()
    ours = ctx.reference.model.state_dict()
    identical = ours.keys() == again.keys() and all(torch.equal(ours[k], again[k]) for k in ours)
    checks = {"reload_bit_identical": identical, "tensors": len(again)}
    if not identical:
        raise RuntimeError("native weights do not read back bit-identical")
    return TargetResult(files, checks=checks, note="C++ engine (runtimes/); weights re-read bit-identical")
