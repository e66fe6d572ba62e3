"""The TVM target: graphs adapted for TVM's importer compute what the reference computes, and
bundles built with TVM reproduce the reference in the Relax VM.

Compiling a whole model with TVM (host and aarch64) takes minutes on a busy 2-core machine (the
tiny Llama bundle: 511 s at a load of ~17), so the default run covers the graph adaptations (pure
PyTorch) and one quantized linear with the importer fixes through TVM; every bundle (tiny Llama,
LLaVA, SmolVLM, the shapes VLM, other recipes, the SmolLM2-135M-sized decoder) runs with ``-m slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

tvm = pytest.importorskip("tvm")

from edgevlm import contract as C  # noqa: E402
from edgevlm.export.core import export_bundle  # noqa: E402
from edgevlm.export.graphs import _SlotCache  # noqa: E402
from edgevlm.export.targets import tvm as target  # noqa: E402
from edgevlm.export.tvm_graphs import PackedLinear, _GatherSlotCache, packed_copy  # noqa: E402
from edgevlm.quant.modules import QuantLinear  # noqa: E402
from edgevlm.quant.qtensor import quantize_weight  # noqa: E402
from edgevlm.quant.recipe import Scheme, preset  # noqa: E402

CHUNK, CONTEXT = 16, 128


def _run_tvm(module: torch.nn.Module, *args: torch.Tensor) -> list[np.ndarray]:
    """torch.export -> Relax (with the target's converters) -> llvm -> VM; params bound as constants."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    ep = torch.export.export(module.eval(), args, strict=False)
    mod = from_exported_program(ep, custom_convert_map=target._converters())
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a.numpy()) for a in args])
    outs = list(out) if not hasattr(out, "numpy") else [out]
    return [o.numpy() for o in outs]


# --- graph adaptations (PyTorch only) -------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["int4:g32", "int4:g64:asym:fp16", "int8", "int4:g32:a=token"])
def test_packed_linear_is_bit_identical_to_the_reference(scheme):
    torch.manual_seed(0)
    layer = QuantLinear(quantize_weight(torch.randn(40, 100), Scheme.parse(scheme)), bias=torch.randn(40))
    packed = PackedLinear(layer.qweight, layer.bias.data)
    x = torch.randn(2, 5, 100)
    assert torch.equal(packed(x), layer(x))
    assert torch.equal(packed.weight, layer.weight)


def test_packed_copy_keeps_the_reference_and_stores_int4_as_parameters(llama_dir):
    from edgevlm.models import load
    from edgevlm.quant.apply import quantize_model

    loaded = load(llama_dir)
    quantize_model(loaded.model, preset("w4g32"))
    ref = loaded.model.eval()
    copy = packed_copy(ref)
    assert copy is not ref and not any(isinstance(m, PackedLinear) for m in ref.modules())
    params = dict(copy.named_parameters())
    assert params["language_model.layers.0.mlp.up_proj.qdata"].dtype == torch.uint8
    assert not any(b is not None for _, b in copy.named_buffers() if b.dtype == torch.uint8)
    head = copy.language_model.lm_head  # tied: reads the embedding's integers, one parameter object
    assert head.qdata is copy.language_model.embed_tokens.qdata
    embeds, pos = torch.randn(1, 4, ref.language_model.config.hidden_size), torch.arange(4)
    with torch.no_grad():
        assert torch.equal(copy.language_model(embeds, pos), ref.language_model(embeds, pos))


def test_gather_cache_write_equals_index_copy():
    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 12, 4), torch.randn(1, 2, 12, 4)
    new_k, new_v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    pos = torch.tensor([9, 10, 5])  # a padded chunk: padding positions first, in any order
    a, b = _SlotCache(k, v), _GatherSlotCache(k, v)
    for want, got in zip(a.update(pos, new_k, new_v), b.update(pos, new_k, new_v)):
        assert torch.equal(want, got)


def test_elf_machine_reads_the_header(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(8))
    assert target.elf_machine(p) == target.EM_AARCH64
    p.write_bytes(b"not an elf")
    with pytest.raises(ValueError, match="not an ELF"):
        target.elf_machine(p)


# --- through TVM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["int4:g32", "int4:g32:a=token"])
def test_int4_linear_and_last_row_select_through_tvm(scheme):
    """The int4 unpacking (bitwise ops), per-token activation quantization (amin/amax) and ``x[:, -1]``
    compile and match PyTorch."""
    torch.manual_seed(0)
    layer = QuantLinear(quantize_weight(torch.randn(24, 64), Scheme.parse(scheme)))

    class LastRow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = PackedLinear(layer.qweight)

        def forward(self, x):
            return self.layer(x[:, -1])

    x = torch.randn(1, 5, 64)
    got = _run_tvm(LastRow(), x)[0]
    np.testing.assert_allclose(got, layer(x[:, -1]).detach().numpy(), atol=1e-5, rtol=1e-5)


# --- bundles --------------------------------------------------------------------------------------
def _check_bundle(out: Path, manifest: dict, vision: bool) -> dict:
    entry = manifest[C.KEY_TARGETS][C.TARGET_TVM]
    ver = entry["verification"]
    assert ver["first16_identical"], ver
    assert ver["agreement"] >= 0.95, ver
    assert ver["max_abs_logit_error"] < 1e-2, ver
    files = entry["files"]
    assert (C.METHOD_VISION_ENCODER in files) == vision
    assert target.elf_machine(out / files[C.METHOD_DECODE]) == 62  # x86-64 host library
    assert target.elf_machine(out / files["aarch64"]) == target.EM_AARCH64
    assert entry["checks"]["int4_packed_tensors"] > 0
    from safetensors.numpy import load_file

    params = load_file(str(out / files["params"]))
    assert any(a.dtype == np.uint8 for a in params.values())  # int4 stays packed
    engine = target.open_engine(out, manifest)  # the host library loads and runs
    hidden = manifest[C.KEY_TEXT_CONFIG]["hidden_size"]
    logits = engine.run(C.METHOD_DECODE, np.ones((1, 1, hidden), np.float32), np.zeros(1, np.int64), engine.k, engine.v)[0]
    assert logits.shape == (1, manifest[C.KEY_TEXT_CONFIG]["vocab_size"]) and np.isfinite(logits).all()
    return entry


def _export(model, out: Path, recipe: str = "w4g32", chunk: int = CHUNK, context: int = CONTEXT) -> dict:
    return export_bundle(model, out, [C.TARGET_NATIVE, C.TARGET_TVM], recipe=preset(recipe), chunk_size=chunk,
                         max_context=context, log=lambda s: None)


@pytest.mark.slow
def test_tiny_llama_bundle_reproduces_the_reference(llama_dir, tmp_path):
    out = tmp_path / "llama.evlm"
    manifest = _export(llama_dir, out)
    entry = _check_bundle(out, manifest, vision=False)
    assert entry["files"][C.METHOD_PREFILL] == entry["files"][C.METHOD_DECODE]  # one library, every method


@pytest.mark.slow
def test_tiny_llava_bundle_reproduces_the_reference(llava_dir, tmp_path):
    out = tmp_path / "llava.evlm"
    _check_bundle(out, _export(llava_dir, out), vision=True)


@pytest.mark.slow
def test_tiny_smolvlm_bundle_reproduces_the_reference(smolvlm_dir, tmp_path):
    out = tmp_path / "smolvlm.evlm"
    _check_bundle(out, _export(smolvlm_dir, out, context=320), vision=True)  # 214-token image prompt + 64


@pytest.mark.slow
def test_shapes_vlm_bundle_reproduces_the_reference(tmp_path):
    out = tmp_path / "shapes.evlm"
    _check_bundle(out, _export("shapes-vlm", out, chunk=32, context=256), vision=True)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["8da4w", "w4g128"])
def test_other_recipes_reproduce_the_reference(llama_untied_dir, tmp_path, recipe):
    out = tmp_path / f"{recipe}.evlm"
    _check_bundle(out, _export(llama_untied_dir, out, recipe=recipe), vision=False)


@pytest.mark.slow
def test_smollm2_135m_sized_decoder_exports(tmp_path):
    """SmolLM2-135M's shape with random weights: export time and verification (run with -m slow)."""
    from tiny_models import make_llama

    src = make_llama(tmp_path / "smollm2", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192)
    out = tmp_path / "smollm2.evlm"
    entry = _check_bundle(out, _export(src, out, chunk=32, context=256), vision=False)
    print(f"SmolLM2-135M-sized: tvm export {entry['export_seconds']} s ({entry['checks']['seconds']}), "
          f"{entry['size_bytes'] / 2**20:.1f} MiB, agreement {entry['verification']['agreement']:.3f}, "
          f"max abs logit error {entry['verification']['max_abs_logit_error']:.2e}")
