"""The ONNX target: MatMulNBits on our integers, the QDQ variant, and end-to-end bundles verified in onnxruntime.

Every bundle export runs torch.onnx's dynamo exporter three or four times (tens of seconds on a busy
2-core machine), so the default run covers single layers, the tiny Llama (both variants) and the tiny
LLaVA; SmolVLM, the shapes VLM, the float and 8da4w recipes and the SmolLM2-135M-sized decoder run
with ``-m slow``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from edgevlm.export.backend import check_prompt, reference_run  # noqa: E402
from edgevlm.export.core import N_TOKENS, export_bundle, verification_prompts  # noqa: E402
from edgevlm.export.onnx_quant import (  # noqa: E402
    NBitsLinear,
    UnsupportedLayer,
    nbits_linears,
    to_qdq,
    translation_table,
)
from edgevlm.export.targets import onnx as target  # noqa: E402
from edgevlm.quant.modules import QuantLinear  # noqa: E402
from edgevlm.quant.qtensor import quantize_weight  # noqa: E402
from edgevlm.quant.recipe import Scheme, preset  # noqa: E402

CHUNK, CONTEXT = 16, 128


# --- one layer ------------------------------------------------------------------------------------
class _Wrap(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def _ort(proto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # as OnnxEngine does
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _layer_proto(layer: QuantLinear, k: int):
    with nbits_linears(wrap := _Wrap(layer)):
        prog = torch.onnx.export(wrap.eval(), (torch.zeros(1, 3, k),), dynamo=True, opset_version=target.OPSET,
                                 custom_translation_table=translation_table(), verbose=False)
    proto = prog.model_proto
    proto.ir_version = min(proto.ir_version, target.IR_VERSION)
    return proto


@pytest.mark.parametrize("scheme,k", [("int4:g32", 96), ("int4:g64:asym:fp16", 160), ("int8", 100)])
def test_one_quantized_linear_matches_the_reference_in_both_variants(scheme, k):
    torch.manual_seed(0)
    w = torch.randn(48, k)
    layer = QuantLinear(quantize_weight(w, Scheme.parse(scheme)), bias=torch.randn(48))
    x = torch.randn(1, 3, k)
    ref = layer(x).detach().numpy()
    nb = NBitsLinear(layer, "layer")
    assert torch.allclose(nb(x), layer(x), atol=1e-5)  # the custom op's eager form
    proto = _layer_proto(layer, k)
    assert [n.op_type for n in proto.graph.node if n.domain == "com.microsoft"] == ["MatMulNBits"]
    got = _ort(proto, x.numpy())
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)
    qdq = to_qdq(proto)
    onnx.checker.check_model(qdq, full_check=True)
    dq = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 1 and not any(n.domain == "com.microsoft" for n in qdq.graph.node)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq[0].attribute}
    if scheme.startswith("int4"):
        assert attrs["block_size"] == Scheme.parse(scheme).group_size and attrs["axis"] == 0
        init = {t.name: t for t in qdq.graph.initializer}[dq[0].input[0]]
        assert init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    else:
        assert attrs == {"axis": 1}
    np.testing.assert_allclose(_ort(qdq, x.numpy()), ref, atol=1e-4, rtol=1e-5)


def test_static_activation_layers_are_refused_by_name():
    layer = QuantLinear(quantize_weight(torch.randn(8, 32), Scheme.parse("int8:a=static")), act_scale=torch.tensor(0.1))
    with pytest.raises(UnsupportedLayer, match="model.layers.3.q_proj"):
        NBitsLinear(layer, "model.layers.3.q_proj")


# --- whole bundles ----------------------------------------------------------------------------------
def _export(src, out: Path, recipe, context: int = CONTEXT):
    t = time.perf_counter()
    manifest = export_bundle(src, out, ["native", "onnx"], recipe=recipe, chunk_size=CHUNK, max_context=context,
                             log=lambda m: None)
    return manifest, time.perf_counter() - t


def _report(manifest) -> dict:
    rep = {r["target"]: r for r in manifest["export_report"]}["onnx"]
    assert rep["status"] == "ok", rep["message"] + "\n" + rep["checks"].get("traceback", "")
    return rep


def _check_bundle(out: Path, manifest, vision: bool, quantized: bool = True, min_agreement: float = 1.0):
    rep = _report(manifest)
    ver = rep["verification"]
    assert ver["first16_identical"], ver
    assert ver["agreement"] >= min_agreement, ver
    files = manifest["targets"]["onnx"]["files"]
    methods = {"token_embedding", "prefill", "decode"} | ({"vision_encoder"} if vision else set())
    assert methods <= set(files) and {f"qdq/{m}" for m in methods} <= set(files)
    for rel in files.values():
        if rel.endswith(".onnx"):
            onnx.checker.check_model(str(out / rel), full_check=True)
    decode = onnx.load(str(out / files["decode"]), load_external_data=False)
    nbits = [n for n in decode.graph.node if n.op_type == "MatMulNBits"]
    assert bool(nbits) == quantized
    assert all(n.domain == "com.microsoft" for n in nbits)
    qdq = onnx.load(str(out / files["qdq/decode"]), load_external_data=False)
    assert not [n for n in qdq.graph.node if n.domain == "com.microsoft"]
    blockwise = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"
                 and any(a.name == "block_size" for a in n.attribute)]
    assert bool(blockwise) == quantized
    # prefill and decode hold the same weights: each tensor stored once in the shared data file
    ranges = {}
    for m in methods:
        proto = onnx.load(str(out / files[m]), load_external_data=False)
        ranges[m] = {(int(d.get("offset", 0)), int(d["length"])) for d in
                     ({e.key: e.value for e in t.external_data} for t in proto.graph.initializer
                      if t.data_location == onnx.TensorProto.EXTERNAL)}
    assert ranges["decode"] == ranges["prefill"]
    unique = set().union(*ranges.values())
    size = (out / files["weights"]).stat().st_size
    assert size <= sum(n for _, n in unique) + 64 * len(unique)  # nothing but 64-byte alignment beyond the tensors
    return rep


def _verify_variant(out: Path, manifest, variant: str) -> tuple[float, float, bool]:
    """Teacher-forced check of an ONNX variant against the PyTorch reference on the verification prompts."""
    from edgevlm.engine import TorchEngine
    from edgevlm.models import load
    from edgevlm.models.cache import remove_kv_cache

    reference = load(out / "weights")
    ref_engine = TorchEngine(reference.model, int(manifest["max_context"]), CHUNK)
    engine = target.open_engine(out, manifest, variant=variant)
    checks = []
    for text, images in verification_prompts(reference):
        inputs = reference.processor(text, images)
        toks, logits = reference_run(ref_engine, inputs, N_TOKENS)
        checks.append(check_prompt(engine, text, inputs, toks, logits))
    remove_kv_cache(reference.model)
    first16 = all(c.first_mismatch is None or c.first_mismatch >= 16 for c in checks)
    return float(np.mean([c.agreement for c in checks])), max(c.max_abs_logit_error for c in checks), first16


@pytest.fixture(scope="module")
def llama_bundle(llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_llama") / "llama.evlm"
    return out, *_export(llama_dir, out, preset("w4g32"))


def test_llama_w4g32_matches_the_reference_and_the_qdq_variant_too(llama_bundle):
    out, manifest, seconds = llama_bundle
    rep = _check_bundle(out, manifest, vision=False)
    assert rep["verification"]["max_abs_logit_error"] < 1e-3
    assert rep["checks"]["matmul_nbits_nodes"] > 0 and rep["checks"]["qdq_dequantize_nodes"] > 0
    agreement, err, first16 = _verify_variant(out, manifest, "qdq")
    assert first16 and agreement == 1.0 and err < 1e-3, (agreement, err)


def test_engine_reports_a_missing_graph(llama_bundle, tmp_path):
    out, manifest, _ = llama_bundle
    engine = target.OnnxEngine(tmp_path, manifest)
    with pytest.raises(FileNotFoundError, match="prefill.onnx"):
        engine.run("prefill")
    with pytest.raises(ValueError, match="variant"):
        target.open_engine(out, manifest, variant="fp16")


@pytest.mark.slow
def test_float_model_exports_without_quantized_nodes(llama_dir, tmp_path):
    out = tmp_path / "float.evlm"
    manifest, _ = _export(llama_dir, out, None)
    rep = _check_bundle(out, manifest, vision=False, quantized=False)
    assert rep["verification"]["max_abs_logit_error"] < 1e-3


@pytest.mark.slow
def test_8da4w_within_kernel_tolerance(llama_dir, tmp_path):
    """onnxruntime quantizes activations per block of 32 symmetric (accuracy_level=4); the reference per token
    asymmetric: tokens must still agree (first 16 identical, >= 95% over 64)."""
    out = tmp_path / "8da4w.evlm"
    manifest, _ = _export(llama_dir, out, preset("8da4w"))
    _check_bundle(out, manifest, vision=False, min_agreement=0.95)
    decode = onnx.load(str(out / "onnx" / "decode.onnx"), load_external_data=False)
    levels = {a.i for n in decode.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}


@pytest.mark.parametrize("name", ["llava", pytest.param("smolvlm", marks=pytest.mark.slow)])
def test_tiny_vlms_export_and_match(name, request, tmp_path):
    src = request.getfixturevalue(f"{name}_dir")
    out = tmp_path / f"{name}.evlm"
    manifest, _ = _export(src, out, preset("w4g32"), context=320 if name == "smolvlm" else CONTEXT)  # 214-token prompt
    rep = _check_bundle(out, manifest, vision=True)
    assert rep["verification"]["max_abs_logit_error"] < 1e-3
    assert any(p["images"] for p in rep["verification"]["prompts"])
    ops = rep["checks"]["ops"]["vision_encoder"]
    assert ops.get("com.microsoft::MatMulNBits", 0) > 0  # int8 vision tower and projector


@pytest.mark.slow
def test_shapes_vlm_exports_and_matches(tmp_path):
    out = tmp_path / "shapes.evlm"
    manifest, _ = _export("shapes-vlm", out, preset("w4g32"))
    _check_bundle(out, manifest, vision=True)
    agreement, err, first16 = _verify_variant(out, manifest, "qdq")
    assert first16 and agreement >= 0.95, (agreement, err)


@pytest.mark.slow
def test_smollm2_135m_sized_decoder_exports(tmp_path):
    """SmolLM2-135M's shape with random weights: export time and verification (run with -m slow)."""
    from tiny_models import make_llama

    src = make_llama(tmp_path / "smollm2", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192)
    out = tmp_path / "smollm2.evlm"
    manifest, seconds = _export(src, out, preset("w4g32"))
    rep = _check_bundle(out, manifest, vision=False)
    print(f"SmolLM2-135M-sized: onnx export {rep['export_seconds']} s (bundle {seconds:.0f} s), "
          f"{rep['size_bytes'] / 2**20:.1f} MiB, verification {rep['verification']['agreement']:.3f} "
          f"max abs logit error {rep['verification']['max_abs_logit_error']:.2e}")
