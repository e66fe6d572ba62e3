"""edgevlm.quant: quantization algorithms and recipes (installed as ``edgevlm.quant``).

``quantize_model(model, recipe, calibration)`` quantizes an edgevlm model in place (RTN, GPTQ or
AWQ per the recipe); ``save_quantized`` writes it as a model directory that ``edgevlm.models.load``
reads back. See ``docs/QUANTIZATION.md``.
"""

from .apply import QuantReport, layer_roles, quantize_model
from .calib import CalibSample, load_calibration
from .recipe import PRESETS, QuantRecipe, Rule, Scheme, preset
from .storage import save_quantized

__all__ = ["PRESETS", "CalibSample", "QuantRecipe", "QuantReport", "Rule", "Scheme", "layer_roles",
           "load_calibration", "preset", "quantize_model", "save_quantized"]
