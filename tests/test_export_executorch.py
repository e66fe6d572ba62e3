"""The ExecuTorch target: one .pte lowered to XNNPACK, verified against the quantized reference.

Measured tolerances (teacher-forced over 64 tokens on the 3 verification prompts) are asserted
here: identical first 16 tokens (a disagreement is allowed only at a near-tie, where the reference's
margin is below twice the measured logit error) and >= 95% agreement everywhere; the 8da4w recipe, whose
reference computes XNNPACK's arithmetic, stays within a small logit error (bf16 group scales).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from edgevlm import contract as C  # noqa: E402
from edgevlm.export.core import export_bundle  # noqa: E402
from edgevlm.quant.recipe import preset  # noqa: E402

CHUNK, CONTEXT = 16, 128


def _export(model, out: Path, recipe: str = "w4g32", **kw) -> dict:
    manifest = export_bundle(model, out, ["native", "executorch"], recipe=preset(recipe),
                             chunk_size=kw.pop("chunk_size", CHUNK), max_context=kw.pop("max_context", CONTEXT),
                             log=lambda s: None, **kw)
    report = {r["target"]: r for r in manifest["export_report"]}["executorch"]
    assert report["status"] == "ok", report["message"] + "\n" + report["checks"].get("traceback", "")
    return manifest


def _check_verification(manifest: dict, max_err: float | None = None) -> dict:
    v = manifest[C.KEY_TARGETS][C.TARGET_EXECUTORCH]["verification"]
    # identical first 16 tokens, except a near-tie: where the reference's own margin between its token
    # and the engine's is below twice the measured logit error, XNNPACK's float order may flip it
    assert v["first16_identical"] or v["first16_max_tie_margin"] < 2 * v["max_abs_logit_error"], v
    assert v["agreement"] >= 0.95, v
    assert all(p["agreement"] >= 0.95 for p in v["prompts"]), v
    if max_err is not None:
        assert v["max_abs_logit_error"] < max_err, v
    return v


def _check_program(bundle: Path, manifest: dict, vision: bool) -> None:
    from edgevlm.export.targets.executorch import ExecuTorchEngine, open_engine

    entry = manifest[C.KEY_TARGETS][C.TARGET_EXECUTORCH]
    expected = {C.METHOD_TOKEN_EMBEDDING, C.METHOD_PREFILL, C.METHOD_DECODE, "token_embeddings"}
    if vision:
        expected |= {C.METHOD_VISION_ENCODER, "image_encoder"}
    assert set(entry["files"]) == expected
    assert len(set(entry["files"].values())) == 1  # one .pte
    engine = open_engine(bundle, manifest)
    assert isinstance(engine, ExecuTorchEngine)
    assert expected <= engine.method_names
    assert (C.METHOD_VISION_ENCODER in engine.method_names) == vision
    # metadata as constant methods
    assert engine.constant(C.ET_META_MAX_CONTEXT_LEN) == manifest[C.KEY_MAX_CONTEXT]
    assert engine.constant(C.ET_META_CHUNK_SIZE) == manifest[C.KEY_CHUNK_SIZE]
    assert engine.constant(C.ET_META_MAX_SEQ_LEN) == manifest[C.KEY_CHUNK_SIZE]
    assert engine.constant(C.ET_META_VOCAB_SIZE) == manifest[C.KEY_TEXT_CONFIG]["vocab_size"]
    assert engine.constant(C.ET_META_USE_KV_CACHE) is True
    special = manifest[C.KEY_SPECIAL_TOKENS]
    if special.get(C.TOKEN_BOS) is not None:
        assert engine.constant(C.ET_META_BOS_ID) == special[C.TOKEN_BOS]
    eos = special.get(C.TOKEN_EOS)
    if eos:
        assert list(np.atleast_1d(engine.constant(C.ET_META_EOS_IDS))) == list(np.atleast_1d(eos))
    # XNNPACK took the decoder: few delegates, every linear inside them
    checks = entry["checks"]
    for method in (C.METHOD_PREFILL, C.METHOD_DECODE) + ((C.METHOD_VISION_ENCODER,) if vision else ()):
        d = checks["delegation"][method]
        assert d["xnnpack_delegates"] >= 1, d
        assert not any(op.startswith(("aten.linear", "aten.addmm", "torchao.")) for op in d["other_ops"]), d
    assert checks["quantized_modules"]["linear_int4"] > 0
    # the program embeds the XNNPACK backend id
    assert b"XnnpackBackend" in (bundle / entry["files"][C.METHOD_PREFILL]).read_bytes()


def test_lowering_shortcuts_keep_the_program_identical():
    """The lowering shortcuts (passes that would rebuild the same graph skip their re-trace; no per-node
    check of preserved ops that all pass it) emit the same bytes, on a graph where some passes do change
    things (a conv: channels-last reshapes; a concatenation of six: split in two; a max over a dim: its
    getitem removed) and most do not."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edgevlm.export.executorch_modules import ETLinear
    from edgevlm.export.targets import executorch as target
    from edgevlm.export.targets.executorch import _lowering_shortcuts
    from edgevlm.quant.qtensor import quantize_weight
    from edgevlm.quant.recipe import Scheme

    torch.manual_seed(0)

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 4, stride=4)
            self.fc = ETLinear(quantize_weight(torch.randn(16, 32), Scheme.parse("int4:g32")), None, "fc")

        def forward(self, x):
            h = self.conv(x).flatten(2).transpose(1, 2)  # [1, 4, 16]
            y = torch.softmax(self.fc(torch.cat([h, h], -1)), -1)
            return torch.cat([y, h, y, h, y, h], -1).max(-1).values

    from torchao.utils import unwrap_tensor_subclass

    toy = unwrap_tensor_subclass(Toy().eval())
    args = (torch.randn(1, 3, 8, 8),)

    def lower(partitioner) -> bytes:
        ep = torch.export.export(toy, args, strict=False)
        return to_edge_transform_and_lower(ep, partitioner=[partitioner]).to_executorch().buffer

    plain = lower(XnnpackPartitioner())
    with _lowering_shortcuts():
        shortcut = lower(target.partitioner())
    assert shortcut == plain
    from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
    from executorch.exir.pass_base import ExportPass
    from executorch.exir.passes.sym_to_tensor_pass import SymToTensorPass

    assert "requires" not in XNNPACKPass.__dict__ and "call" not in SymToTensorPass.__dict__  # restored
    assert "call" not in ExportPass.__dict__


SCALAR_TYPE_LONG = 4  # what ExecuTorch's tensor metadata reports for int64 (c10::ScalarType::Long)


def _run_every_method(program_path: Path) -> dict:
    """Every method of a .pte on fixed inputs (positions and ids in range, activations random but seeded)."""
    import torch
    from executorch.runtime import Runtime

    from edgevlm.export.targets.executorch import _import_kernels

    _import_kernels()
    program = Runtime.get().load_program(program_path)
    gen = torch.Generator().manual_seed(0)
    outputs = {}
    for name in sorted(program.method_names):
        method = program.load_method(name)
        meta = method.metadata
        inputs = []
        for i in range(meta.num_inputs()):
            tm = meta.input_tensor_meta(i)
            shape = tuple(tm.sizes())
            if tm.dtype() == SCALAR_TYPE_LONG:
                inputs.append(torch.arange(int(np.prod(shape)), dtype=torch.long).reshape(shape) % 50)
            else:
                inputs.append(torch.randn(shape, generator=gen))
        outputs[name] = [o.clone() if isinstance(o, torch.Tensor) else o for o in method.execute(inputs)]
    return outputs


def test_llama_8da4w_in_one_or_two_processes(llama_dir, tmp_path, monkeypatch):
    """The 8da4w recipe computes XNNPACK's arithmetic in PyTorch: near-identical logits. With decode lowered
    in a worker process and joined to the rest, every method computes exactly what the program lowered
    in one process computes, and the file holds one copy of the shared weights."""
    import torch

    programs = {}
    for jobs in (1, 2):
        monkeypatch.setenv("EDGEVLM_EXPORT_JOBS", str(jobs))
        out = tmp_path / f"jobs{jobs}.evlm"
        manifest = _export(llama_dir, out, "8da4w")
        entry = manifest[C.KEY_TARGETS][C.TARGET_EXECUTORCH]
        assert entry["checks"]["processes"] == jobs
        programs[jobs] = out / entry["files"][C.METHOD_PREFILL]
        assert ("worker" in entry["checks"]["times"]) == (jobs == 2)
        _check_program(out, manifest, vision=False)
        assert _check_verification(manifest, max_err=0.05)["agreement"] == 1.0
    one, two = _run_every_method(programs[1]), _run_every_method(programs[2])
    assert one.keys() == two.keys()
    for name in one:
        for a, b in zip(one[name], two[name]):
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
    size1, size2 = programs[1].stat().st_size, programs[2].stat().st_size
    assert abs(size1 - size2) < 4096, (size1, size2)  # shared weights stored once in both
    # a method may come from one program only
    from edgevlm.export.executorch_merge import merge_programs

    data = programs[1].read_bytes()
    with pytest.raises(ValueError, match="already in an earlier program"):
        merge_programs([data, data])
    with pytest.raises(ValueError, match="no programs"):
        merge_programs([])


def test_a_failing_worker_names_the_methods_and_shows_its_log(tmp_path):
    from edgevlm.export.base import ExportContext
    from edgevlm.export.targets.executorch import _Worker

    weights = tmp_path / "bundle" / C.WEIGHTS_DIR
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{ not json")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ctx = ExportContext(None, tmp_path / "bundle", 16, 128, {})
    worker = _Worker(ctx, [C.METHOD_DECODE], scratch)
    with pytest.raises(RuntimeError, match=r"lowering decode in a worker process failed \(exit [1-9]") as err:
        worker.result()
    assert "config.json" in str(err.value)


def test_llama_w4g32_weight_only_within_tolerance(llama_dir, tmp_path):
    """Weight-only w4g32: XNNPACK adds int8 per-token activation quantization; greedy tokens still agree."""
    out = tmp_path / "llama.evlm"
    manifest = _export(llama_dir, out, "w4g32")
    _check_verification(manifest)


# The vision-language bundles take about 40 s each to export and verify here; they run with -m slow
# (CI's setup runs `edgevlm demo`, which exports the shapes VLM to ExecuTorch and checks its answers).
@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["smolvlm_dir", "llava_dir"])
def test_tiny_vlms(fixture, request, tmp_path):
    out = tmp_path / "vlm.evlm"
    context = 320 if fixture == "smolvlm_dir" else 256  # SmolVLM's image prompt is 214 tokens, + 64 generated
    manifest = _export(request.getfixturevalue(fixture), out, "w4g32", max_context=context, chunk_size=32)
    _check_verification(manifest)
    _check_program(out, manifest, vision=True)


@pytest.mark.slow
def test_shapes_vlm(tmp_path):
    out = tmp_path / "shapes.evlm"
    manifest = _export("shapes-vlm", out, "w4g32", max_context=256, chunk_size=32)
    _check_verification(manifest)
    _check_program(out, manifest, vision=True)


def test_unsupported_scheme_names_the_module(llama_dir, tmp_path, data_dir):
    from edgevlm.models import load
    from edgevlm.quant.calib import load_calibration

    calib = load_calibration(load(llama_dir).processor, [str(data_dir / "text/tinystories_sample.txt")], 4)
    manifest = export_bundle(llama_dir, tmp_path / "npu.evlm", ["executorch"], recipe=preset("w8a8-static"),
                             calib=calib, chunk_size=CHUNK, max_context=CONTEXT, log=lambda s: None)
    report = manifest["export_report"][0]
    assert report["status"] == "failed"
    assert "static activation" in report["message"] and "layers.0" in report["message"]


@pytest.mark.slow
def test_smollm2_135m_sized_decoder_exports(tmp_path):
    """A SmolLM2-135M-shaped decoder (random weights) exports; the time is printed for the report."""
    import tiny_models

    from edgevlm.export.targets import executorch as target

    d = tiny_models.make_llama(tmp_path / "smollm2", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                               max_position_embeddings=8192)
    t = time.perf_counter()
    manifest = _export(d, tmp_path / "smollm2.evlm", "8da4w", chunk_size=32, max_context=256)
    entry = manifest[C.KEY_TARGETS][C.TARGET_EXECUTORCH]
    print(f"\nSmolLM2-135M-sized: executorch export {entry['export_seconds']} s, {entry['size_bytes'] / 1e6:.1f} MB, "
          f"total {time.perf_counter() - t:.0f} s, {entry['checks']['times']}")
    assert entry["checks"]["processes"] == (2 if target._cpus() >= 2 else 1)
    # Random weights over a 49152-token vocabulary give flat logits: every disagreement must be a
    # near-tie (the reference's own margin below twice the measured logit error), >= 95% agree overall.
    v = entry["verification"]
    assert v["agreement"] >= 0.95, v
    err = v["max_abs_logit_error"]
    assert err < 0.1, v
    assert all(margin < 2 * err for p in v["prompts"] for _, margin in p["mismatches"]), v["prompts"]
