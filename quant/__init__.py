"""edgevlm.quant: quantization algorithms and recipes (installed as ``edgevlm.quant``)."""
