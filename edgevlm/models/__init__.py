"""The model zoo: export-friendly PyTorch re-authorings, one package per family.

``load(path)`` reads a local Hugging Face checkpoint directory; ``model_type`` in its config.json
picks the family package, through one small alias table for families that share code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsupportedModelError
from ..processing.processor import Processor
from .base import Model, skip_weight_init
from .checkpoint import load_weights, read_config

# model_type -> family package
MODEL_TYPES = {
    "llama": "llama",
    "smolvlm": "smolvlm",
    "idefics3": "smolvlm",
    "llava": "llava",
    "mobilevlm": "mobilevlm",
}


@dataclass
class LoadedModel:
    """A checkpoint ready to run: the model, its processor and where they came from."""

    family: str
    path: Path
    config: Any  # the family's config dataclass
    model: Model
    processor: Processor
    hf_config: dict


def family_of(hf_config: dict, where: Path | str = "config.json") -> str:
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UnsupportedModelError(
            f"{where}: unsupported model_type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    return MODEL_TYPES[model_type]


def family_module(family: str):
    return importlib.import_module(f"{__name__}.{family}")


def _is_quantized(hf_config: dict) -> bool:
    q = hf_config.get("quantization_config")
    if q is None:
        return False
    if not isinstance(q, dict) or q.get("quant_method") != "edgevlm":
        method = q.get("quant_method") if isinstance(q, dict) else q
        raise UnsupportedModelError(f"checkpoint quantized with {method!r}: edgevlm reads float checkpoints "
                                    "and its own quantized directories (edgevlm quantize)")
    return True


def _read(path: str | Path):
    """A checkpoint's resolved path, config.json, family, family module and parsed model config."""
    from ..zoo import resolve

    path = resolve(path)
    hf_config = read_config(path)
    family = family_of(hf_config, path / "config.json")
    module = family_module(family)
    try:
        config = module.MODEL.config_from_hf(hf_config)
    except (TypeError, ValueError) as e:
        if isinstance(e, UnsupportedModelError):
            raise UnsupportedModelError(f"{path / 'config.json'}: {e}") from e
        raise UnsupportedModelError(f"{path / 'config.json'}: invalid {family} config ({e})") from e
    return path, hf_config, family, module, config


def load_processor(path: str | Path) -> tuple[str, Processor]:
    """The family and processor (tokenizer, chat template, image preprocessing) of a checkpoint,
    without building the model or reading its weights."""
    path, _, family, module, config = _read(path)
    return family, module.PROCESSOR.from_dir(path, config)


def load(path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a local Hugging Face checkpoint directory (or an embedded zoo model by name)."""
    path, hf_config, family, module, config = _read(path)
    with skip_weight_init():
        model = module.MODEL(config)
    weights, origin = load_weights(path)
    if _is_quantized(hf_config):  # an edgevlm-quantized directory: tensors under our own names
        from edgevlm.quant.storage import load_quantized_state, prepare_quantized

        prepare_quantized(model, hf_config, path / "config.json")
        load_quantized_state(model, weights, origin, path)
    else:
        model.load_checkpoint(weights, origin, path)
    model = model.to(dtype).eval()
    processor = module.PROCESSOR.from_dir(path, config)
    return LoadedModel(family, path, config, model, processor, hf_config)


__all__ = ["LoadedModel", "Model", "MODEL_TYPES", "load", "load_processor", "family_of"]
