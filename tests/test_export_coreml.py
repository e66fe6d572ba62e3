"""The CoreML target: our integers as int4/int8 constexpr ops, the stateful multifunction decoder, and
end-to-end bundles whose converted torch graphs reproduce the reference (CoreML cannot run here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
pytest.importorskip("torchao")

from edgevlm.export.coreml_graphs import CoreMLUnsupported, DequantLinear, coreml_model  # noqa: E402
from edgevlm.export.core import N_TOKENS, export_bundle  # noqa: E402
from edgevlm.export.targets import coreml as target  # noqa: E402
from edgevlm.quant.modules import QuantLinear  # noqa: E402
from edgevlm.quant.qtensor import quantize_weight  # noqa: E402
from edgevlm.quant.recipe import Scheme, preset  # noqa: E402

CHUNK, CONTEXT = 16, 128


class _Wrap(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


# --- one layer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme,k", [("int4:g32", 96), ("int4:g64:asym:fp16", 128), ("int4:g32", 80), ("int8", 100)])
def test_one_layer_keeps_our_integers_in_the_mlpackage(tmp_path, scheme, k):
    torch.manual_seed(0)
    layer = QuantLinear(quantize_weight(torch.randn(48, k), Scheme.parse(scheme)), bias=torch.randn(48))
    dq = DequantLinear(layer.qweight, layer.bias, "layer")
    x = torch.randn(1, 3, k)
    assert torch.allclose(dq(x), layer(x), atol=1e-5)  # what coremltools receives computes what we compute
    path = tmp_path / "one.mlpackage"
    target._convert(_Wrap(dq), (x,), "y").save(str(path))
    summary, keys = target.inspect_package(path)
    fn = summary["functions"]["main"]
    assert fn["inputs"] == [{"name": "x", "shape": [1, 3, k], "dtype": "FLOAT32"}]
    assert fn["outputs"] == [{"name": "y", "shape": [1, 3, 48], "dtype": "FLOAT32"}]
    s = Scheme.parse(scheme)
    dtype = "INT4" if s.weight == "int4" else "INT8"
    assert list(fn["quantized_weights"]) == [dtype]
    block = s.group_size if s.weight == "int4" else k
    assert fn["quantized_weights"][dtype]["block_sizes"] == [[1, block]]
    assert fn["float_weight_elements"] <= 48  # only the bias stays float
    check = target._weights_check(target._our_weights(dq), keys["main"])
    assert check["bit_identical"] and check["layers"] == 1


def test_our_int4_codes_use_the_full_signed_range():
    """Symmetric int4 codes span [-8, 7]; CoreML's int4 holds them as they are (no [-7, 7] restriction)."""
    torch.manual_seed(1)
    layer = QuantLinear(quantize_weight(torch.randn(64, 64), Scheme.parse("int4:g32")))
    dq = DequantLinear(layer.qweight, None, "layer")
    assert int(dq.data.min()) == -8 and int(dq.data.max()) == 7
    assert torch.equal(dq.dequantized(), layer.weight)


def test_activation_quantized_layers_are_refused_by_name(llama_dir):
    from edgevlm.models import load
    from edgevlm.quant.apply import quantize_model

    loaded = load(llama_dir)
    quantize_model(loaded.model, preset("8da4w"))
    with pytest.raises(CoreMLUnsupported, match=r"language_model\.\S+: activation quantization a=token"):
        coreml_model(loaded.model)


# --- whole bundles ----------------------------------------------------------------------------------
def _export(src, out: Path, context: int = CONTEXT, recipe=None):
    return export_bundle(src, out, ["native", "coreml"], recipe=recipe or preset("w4g32"), chunk_size=CHUNK,
                         max_context=context, log=lambda m: None)


def _check_bundle(out: Path, manifest, vision: bool) -> dict:
    rep = {r["target"]: r for r in manifest["export_report"]}["coreml"]
    assert rep["status"] == "ok", rep["message"] + "\n" + rep["checks"].get("traceback", "")
    checks = manifest["targets"]["coreml"]["checks"]
    files = manifest["targets"]["coreml"]["files"]
    methods = {"token_embedding", "prefill", "decode"} | ({"vision_encoder"} if vision else set())
    assert set(files) == methods
    assert files["prefill"] == files["decode"] == files["token_embedding"] == "coreml/decoder.mlpackage"
    # the torch graph handed to coremltools reproduces the reference greedy tokens
    ver = checks["torch_graph_verification"]
    assert ver["first16_identical"] and ver["agreement"] >= 0.95, ver
    assert len(ver["prompts"]) == 3 and all(len(p["reference_tokens"]) == N_TOKENS for p in ver["prompts"])
    assert ver["max_abs_logit_error"] < 5e-2  # float16 KV cache (shapes-vlm: 9.6e-3; tiny random models ~1e-4)
    # spec, read again from the saved package
    summary, _ = target.inspect_package(out / files["decode"])
    fns = summary["functions"]
    assert set(fns) == {"prefill", "decode", "token_embedding"} and summary["default_function"] == "decode"
    text = manifest["text_config"]
    layers, kv, hd = text["num_hidden_layers"], text["num_key_value_heads"], text["head_dim"]
    for name, rows in (("prefill", CHUNK), ("decode", 1)):
        f = fns[name]
        assert [i["name"] for i in f["inputs"]] == ["embeds", "input_pos"]
        assert f["inputs"][0]["shape"] == [1, rows, text["hidden_size"]]
        assert f["outputs"] == [{"name": "logits", "shape": [1, text["vocab_size"]], "dtype": "FLOAT32"}]
        assert len(f["states"]) == 2 * layers
        assert all(s["shape"] == [int(manifest["max_context"]), kv, hd] and s["dtype"] == "FLOAT16" for s in f["states"])
        assert f["quantized_weights"]["INT4"]["block_sizes"] == [[1, 32]]
        assert f["quantized_weights"]["INT4"]["ops"] == 7 * layers  # q k v o gate up down
    assert fns["token_embedding"]["states"] == []
    assert checks["weights"]["bit_identical"] and checks["weights"]["int4_block_sizes"] == [32]
    assert checks["weights"]["int4_layers"] == 7 * layers
    # weights are stored once for the three functions (a tied head and the embedding too): no larger
    # than the native int4 weights but for 64-byte alignment
    size = (out / files["decode"] / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size
    native = (out / "weights" / "model.safetensors").stat().st_size
    assert size < 1.1 * native + 64 * 8 * layers, (size, native)
    if vision:
        vsum = checks["vision_encoder"]["functions"]["main"]
        assert vsum["inputs"][0]["name"] == "pixel_values" and vsum["outputs"][0]["name"] == "image_features"
        assert (out / files["vision_encoder"] / "Manifest.json").is_file()
    return checks


@pytest.mark.slow
def test_llama_bundle(llama_dir, tmp_path):
    out = tmp_path / "llama.evlm"
    _check_bundle(out, _export(llama_dir, out), vision=False)


@pytest.mark.slow
def test_smolvlm_bundle(smolvlm_dir, tmp_path):
    out = tmp_path / "smolvlm.evlm"
    _check_bundle(out, _export(smolvlm_dir, out, 320), vision=True)  # image splitting: a 214-token prompt


@pytest.mark.slow
def test_llava_bundle(llava_dir, tmp_path):
    out = tmp_path / "llava.evlm"
    _check_bundle(out, _export(llava_dir, out, 256), vision=True)


@pytest.mark.slow
def test_shapes_vlm_bundle(tmp_path):
    out = tmp_path / "shapes.evlm"
    _check_bundle(out, _export("shapes-vlm", out, 256), vision=True)


@pytest.mark.slow
def test_smollm2_135m_sized_decoder_exports(tmp_path):
    """SmolLM2-135M's shape with random weights: export time, sizes and verification (run with -m slow)."""
    from tiny_models import make_llama

    src = make_llama(tmp_path / "smollm2", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192)
    out = tmp_path / "smollm2.evlm"
    manifest = export_bundle(src, out, ["native", "coreml"], recipe=preset("w4g32"), chunk_size=64, max_context=512,
                             log=lambda m: None)
    rep = {r["target"]: r for r in manifest["export_report"]}["coreml"]
    assert rep["status"] == "ok", rep["message"]
    ver = rep["checks"]["torch_graph_verification"]
    assert ver["first16_identical"] and ver["agreement"] >= 0.95, ver
    assert rep["checks"]["weights"]["bit_identical"] and rep["checks"]["weights"]["int4_layers"] == 7 * 30
    print(f"SmolLM2-135M-sized: coreml export {rep['export_seconds']} s, {rep['size_bytes'] / 2**20:.1f} MiB, "
          f"agreement {ver['agreement']:.3f}, max abs logit error {ver['max_abs_logit_error']:.2e}")


def test_int8_kv_cache_recipe_is_refused_and_other_targets_continue(llama_dir, tmp_path):
    from dataclasses import replace

    recipe = replace(preset("w4g32"), kv_cache="int8")
    m = export_bundle(llama_dir, tmp_path / "b.evlm", ["coreml", "native"], recipe=recipe, chunk_size=CHUNK,
                      max_context=CONTEXT, log=lambda m: None)
    rep = {r["target"]: r for r in m["export_report"]}
    assert rep["coreml"]["status"] == "failed" and "int8 KV cache" in rep["coreml"]["message"]
    assert rep["native"]["status"] == "ok"
    assert np.isfinite(rep["native"]["export_seconds"])
