"""edgevlm.quant: storage, recipes, exact integer arithmetic, algorithms vs RTN, quantized checkpoints."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from edgevlm.quant.apply import quantize_model, skipped_layers
from edgevlm.quant.awq import awq_linear
from edgevlm.quant.calib import CalibSample, load_calibration
from edgevlm.quant.gptq import HessianAccumulator, gptq_quantize
from edgevlm.quant.modules import QuantLinear
from edgevlm.quant.qtensor import QWeight, pack_int4, quantize_weight, unpack_int4
from edgevlm.quant.recipe import PRESETS, QuantRecipe, Rule, Scheme, preset

from edgevlm.cli import main as cli
from edgevlm.errors import CheckpointError, InputError
from edgevlm.evaluate import perplexity, vqa_accuracy
from edgevlm.models import load
from edgevlm.models.cache import Int8KVCache

TEXT = "text/tinystories_sample.txt"


def correlated_inputs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Rows with correlated channels of very different magnitudes and a few outlier channels."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    scales = torch.exp(torch.randn(k, generator=g))
    x = (torch.randn(n, k, generator=g) @ mix) * scales
    x[:, :3] *= 20
    return x


# --- storage ------------------------------------------------------------------------------------
def test_int4_pack_round_trip_is_exact_and_low_nibble_first():
    u = torch.randint(0, 16, (37, 64), dtype=torch.uint8)
    packed = pack_int4(u)
    assert packed.shape == (37, 32) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), u)
    assert int(pack_int4(torch.tensor([3, 12], dtype=torch.uint8))[0]) == 3 | (12 << 4)
    every = torch.arange(16, dtype=torch.uint8).repeat(2)
    assert torch.equal(unpack_int4(pack_int4(every)), every)
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([16, 0]))


@pytest.mark.parametrize("text", ["int4:g32", "int4:g64:asym", "int4:g128:fp16", "int8", "int8:a=static:outliers=4"])
def test_quantize_dequantize_stays_within_half_a_step(text):
    scheme = Scheme.parse(text)
    w = torch.randn(48, 200)  # 200 inputs: padded to a whole number of groups
    qw = quantize_weight(w, scheme)
    deq = qw.dequantize()
    assert deq.shape == w.shape
    step = qw.scales.float().repeat_interleave(qw.group, dim=1)[:, :200]
    assert ((w - deq).abs() <= step * 0.5 + 1e-6).float().mean() > 0.99  # only the clamped extreme may exceed
    assert ((w - deq).abs() <= step + 1e-6).all()


def test_narrow_layers_use_a_smaller_group_instead_of_padding():
    assert Scheme(group_size=128).group_for(64) == 64
    assert Scheme(group_size=128).group_for(172) == 128
    assert Scheme(group_size=32).group_for(16) == 32
    assert Scheme(weight="int8", group_size=0).group_for(300) == 300


# --- recipes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_recipe_json_round_trip(name):
    recipe = preset(name).replace(algorithm="gptq", kv_cache="int8").with_rule(
        Rule(Scheme.parse("int4:g64:asym:fp16"), role="decoder", pattern=r"layers\.0\."))
    again = QuantRecipe.from_json(recipe.to_json())
    assert again == recipe
    for r in again.rules:
        assert Scheme.parse(str(r.scheme)) == r.scheme


def test_recipe_predicate_first_match_wins_and_unmatched_stays_float():
    recipe = preset("w4g32").with_rule(Rule(Scheme.parse("float"), pattern=r"layers\.0\.mlp\.down_proj$"))
    assert str(recipe.scheme_for("language_model.layers.0.mlp.down_proj", "decoder")) == "float"
    assert str(recipe.scheme_for("language_model.layers.1.mlp.down_proj", "decoder")) == "int4:g32"
    assert str(recipe.scheme_for("vision_model.encoder.layers.0.mlp.fc1", "vision_encoder")) == "int8"
    assert not QuantRecipe("empty", ()).scheme_for("x", "decoder").quantized


def test_bad_recipes_name_the_problem():
    with pytest.raises(InputError, match="presets: w4g32"):
        preset("w3g7")
    with pytest.raises(InputError, match="group size"):
        Scheme.parse("int4:g48")
    with pytest.raises(InputError, match="unknown option"):
        Scheme.parse("int4:g32:fast")
    with pytest.raises(InputError, match="role"):
        Rule(Scheme(), role="encoder")
    with pytest.raises(InputError, match="outlier"):
        Scheme.parse("int4:g32:outliers=4")
    with pytest.raises(InputError, match="not valid JSON"):
        QuantRecipe.from_json("{")


# --- exact integer arithmetic -------------------------------------------------------------------------
def _int_reference(x: torch.Tensor, qw: QWeight, mode: str) -> torch.Tensor:
    """The same layer computed with int64 dot products and float64 scales (what a kernel does)."""
    codes = qw.codes().to(torch.int64)  # [O, K_pad]
    k, kp, g = qw.shape[1], qw.k_pad, qw.group
    xs = torch.nn.functional.pad(x.double(), (0, kp - k))
    out = torch.zeros(x.shape[0], qw.shape[0], dtype=torch.float64)
    if mode == "token":
        for n in range(x.shape[0]):
            row = x[n:n + 1].float()
            lo, hi = min(float(row.min()), 0.0), max(float(row.max()), 0.0)
            s = torch.tensor((hi - lo) / 255, dtype=torch.float32)
            zp = float(torch.clamp(-128 - torch.round(torch.tensor(lo, dtype=torch.float32) / s), -128, 127))
            q = (torch.round(row / s) + zp).clamp(-128, 127).to(torch.int64) - int(zp)
            q = torch.nn.functional.pad(q, (0, kp - k))[0]
            for gi in range(kp // g):
                dot = codes[:, gi * g:(gi + 1) * g] @ q[gi * g:(gi + 1) * g]  # int64, exact
                out[n] += dot.double() * qw.scales[:, gi].double()
            out[n] *= float(s)
    else:  # group32
        for n in range(x.shape[0]):
            for b in range(kp // 32):
                blk = xs[n, b * 32:(b + 1) * 32].float()
                s = blk.abs().max() / 127
                q = torch.round(blk / s).clamp(-127, 127).to(torch.int64) if s > 0 else torch.zeros(32, dtype=torch.int64)
                dot = codes[:, b * 32:(b + 1) * 32] @ q
                out[n] += dot.double() * float(s) * qw.scales[:, (b * 32) // g].double()
    return out


@pytest.mark.parametrize("mode,scheme", [("token", "int4:g32:a=token"), ("token", "int4:g64:asym:a=token"),
                                         ("group32", "int4:g32:a=group32"), ("group32", "int4:g128:a=group32")])
def test_dynamic_int8_activations_match_integer_reference(mode, scheme):
    torch.manual_seed(0)
    w, x = torch.randn(24, 160), torch.randn(5, 160) * 3
    qw = quantize_weight(w, Scheme.parse(scheme))
    layer = QuantLinear(qw)
    got = layer(x).double()
    ref = _int_reference(x, qw, mode)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-4), (got - ref).abs().max()
    # and the integer dot products themselves are exact in the grouped float matmul
    a = torch.randint(-255, 256, (5, 160)).float()
    dots = layer._grouped_dots(a)
    codes = qw.codes().to(torch.int64).view(24, -1, qw.group)
    ai = torch.nn.functional.pad(a, (0, qw.k_pad - 160)).to(torch.int64).view(5, -1, qw.group)
    assert torch.equal(dots.to(torch.int64), torch.einsum("ngk,ogk->gno", ai, codes))


def test_static_activations_with_outlier_channels_lower_the_error():
    x = correlated_inputs(512, 96)
    w = torch.randn(64, 96) / 10
    ref = x @ w.t()
    errors = {}
    for n_out in (0, 4):
        amax = x.abs().amax(0)
        idx = torch.topk(amax, n_out).indices if n_out else torch.zeros(0, dtype=torch.long)
        inl = amax.clone()
        inl[idx] = 0
        wq = quantize_weight(w.index_fill(1, idx, 0.0), Scheme.parse("int8:a=static"))
        layer = QuantLinear(wq, None, inl.max() / 127, idx, w[:, idx].clone())
        errors[n_out] = float((layer(x) - ref).norm() / ref.norm())
    assert errors[4] < errors[0] / 3, errors


# --- algorithms against RTN -------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["int4:g32", "int4:g128", "int4:g64:asym"])
def test_gptq_and_awq_beat_rtn_on_correlated_inputs(scheme):
    sch = Scheme.parse(scheme)
    x = correlated_inputs(2048, 256, seed=1)
    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(2)) / 16
    ref = x @ w.t()

    def err(y):
        return float((y - ref).pow(2).mean())

    rtn = err(x @ quantize_weight(w, sch).dequantize().t())
    h = HessianAccumulator(256)
    h.add(x[:1024])
    h.add(x[1024:])
    gptq = err(x @ gptq_quantize(w, h.h, sch).dequantize().t())
    s, deq = awq_linear(x, w, sch)
    awq = err((x / s) @ deq.t())
    assert gptq <= rtn and awq <= rtn, (rtn, gptq, awq)
    assert gptq < 0.8 * rtn  # GPTQ's error feedback helps a lot on correlated inputs


def test_hessian_accumulator_is_the_mean_outer_product():
    x = torch.randn(100, 8)
    h = HessianAccumulator(8)
    for chunk in x.split(30):
        h.add(chunk)
    assert torch.allclose(h.h, (x.double().t() @ x.double()) / 100)


# --- whole models -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stories_calib(data_dir):
    return load_calibration(load("stories260k").processor, [data_dir / TEXT])


@pytest.mark.parametrize("algo", ["rtn", "gptq", "awq"])
def test_quantized_checkpoint_round_trip_is_bit_identical(tmp_path, stories_calib, algo):
    loaded = load("stories260k")
    recipe = preset("w4g32").replace(algorithm=algo, kv_cache="int8").with_rule(
        Rule(Scheme.parse("int4:g64:asym:fp16:a=token"), role="decoder", pattern=r"layers\.1\."))
    quantize_model(loaded.model, recipe, stories_calib)
    from edgevlm.quant.storage import save_quantized

    out = save_quantized(loaded.model, loaded.path, tmp_path / "q", loaded.hf_config)
    again = load(out)
    assert again.model.quant_recipe == recipe and again.model.kv_cache_quant == "int8"
    a, b = loaded.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    ids = torch.tensor([loaded.processor.tokenizer.encode("Once upon a time there was a cat")])
    assert torch.equal(loaded.model(ids), again.model(ids))
    # the weights file alone records the scheme of every quantized tensor (contract 4)
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    meta = json.loads(header["__metadata__"]["edgevlm.quantization"])
    assert meta["recipe"]["algorithm"] == algo
    assert meta["layers"]["language_model.layers.1.mlp.up_proj"]["scheme"] == "int4:g64:asym:fp16:a=token"
    assert meta["layers"]["language_model.layers.0.mlp.down_proj"]["group_size"] == 32


def test_quantized_stories260k_stays_close_and_gptq_awq_beat_rtn(data_dir, stories_calib):
    text = data_dir / TEXT.replace("sample", "valid_excerpt")
    fp = perplexity(load("stories260k"), text, max_tokens=256).perplexity
    ppl = {}
    for algo in ("rtn", "gptq", "awq"):
        loaded = load("stories260k")
        quantize_model(loaded.model, preset("w4g32").replace(algorithm=algo), stories_calib)
        ppl[algo] = perplexity(loaded, text, max_tokens=256).perplexity
    assert fp < ppl["gptq"] < ppl["rtn"] and ppl["awq"] < ppl["rtn"], (fp, ppl)
    assert ppl["gptq"] < fp * 1.15


def test_int8_kv_cache_is_close_to_float(data_dir):
    torch.manual_seed(0)
    cache = Int8KVCache(2, 16, 8)
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    ks, vs = cache.update(torch.arange(3, 8), k, v)
    assert torch.allclose(ks[:, :, 3:8], k, atol=k.abs().max() / 127)
    assert ks[:, :, :3].abs().max() == 0
    loaded = load("stories260k")
    text = data_dir / TEXT
    fp = perplexity(loaded, text).loss
    loaded.model.kv_cache_quant = "int8"
    q = perplexity(loaded, text).loss
    assert fp != q and abs(q - fp) < 0.01 * fp


def test_shapes_vlm_int4_keeps_its_accuracy():
    loaded = load("shapes-vlm")
    calib = load_calibration(loaded.processor, ["shapes"], max_samples=16)
    report = quantize_model(loaded.model, preset("w4g32").replace(algorithm="gptq"), calib)
    assert report.quant_bytes < report.float_bytes / 3
    roles = {layer.role for layer in report.layers}
    assert roles == {"vision_encoder", "projector", "decoder", "token_embedding"}
    assert vqa_accuracy(loaded.model, loaded.processor, n=50).accuracy >= 0.94
    # the layers no scheme applies to are listed (the patch convolution, the position embedding)
    skipped = {d["path"]: d["type"] for d in report.skipped}
    assert "Conv2d" in skipped.values() and not skipped.keys() & {layer.path for layer in report.layers}
    for d in report.skipped:
        assert d["type"] != "Linear" and d["reason"] == f"no quantized form for {d['type']}; kept float", d


def test_shapes_vlm_int4_vision_tower_keeps_its_accuracy():
    loaded = load("shapes-vlm")
    report = quantize_model(loaded.model, preset("w4g32-vision4"), None)
    assert {layer.scheme for layer in report.layers if layer.role == "vision_encoder"} == {"int4:g32"}
    assert vqa_accuracy(loaded.model, loaded.processor, n=50).accuracy >= 0.94


def test_calibration_that_is_empty_or_of_the_wrong_modality_is_a_clear_error(tmp_path, data_dir):
    text_only = load("stories260k").processor
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.txt: no text"):
        load_calibration(text_only, [empty])
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(InputError, match="no images or .txt files"):
        load_calibration(text_only, [nothing])
    with pytest.raises(InputError, match="text-only"):
        load_calibration(text_only, [data_dir / "images"])
    with pytest.raises(InputError, match="text-only"):
        load_calibration(text_only, ["shapes"])


def test_static_activations_need_calibration_and_images_need_image_data(stories_calib):
    with pytest.raises(InputError, match="calibration"):
        quantize_model(load("stories260k").model, preset("w8a8-npu"), None)
    with pytest.raises(InputError, match="never reached"):
        quantize_model(load("shapes-vlm").model, preset("w4g32").replace(algorithm="gptq"),
                       [CalibSample(s.input_ids.clamp(max=400)) for s in stories_calib[:2]])


# --- CLI ---------------------------------------------------------------------------------------------
def test_cli_quantize_then_eval_and_run(tmp_path, data_dir, capsys):
    out = tmp_path / "q"
    assert cli(["quantize", "stories260k", "-o", str(out), "--algo", "awq", "--calib", str(data_dir / TEXT), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quant_bytes"] < report["float_bytes"] / 4
    assert all(layer["output_error"] is not None for layer in report["layers"] if layer["role"] == "decoder")
    assert (out / "quant_report.json").is_file() and (out / "tokenizer.json").is_file()
    assert cli(["eval", str(out), "--ppl", str(data_dir / TEXT), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] < 5
    assert cli(["run", str(out), "--prompt", "Once upon a time", "--max-new-tokens", "8", "--json"]) == 0
    capsys.readouterr()
    assert cli(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["quantization"]["algorithm"] == "awq" and info["parameters"]["total"] == 260_032


@pytest.mark.parametrize("argv,message", [
    (["--recipe", "w5"], "unknown recipe"),
    (["--algo", "gptq"], "needs calibration data"),
    (["--set", "vision=int4"], "role"),
    (["--calib", "/nonexistent.txt", "--algo", "gptq"], "not found"),
])
def test_cli_quantize_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    assert cli(["quantize", "stories260k", "-o", str(tmp_path / "q"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_corrupt_quantization_config_is_a_clear_error(tmp_path, stories_calib):
    from edgevlm.quant.storage import save_quantized

    loaded = load("stories260k")
    quantize_model(loaded.model, preset("w4g32"), None)
    out = save_quantized(loaded.model, loaded.path, tmp_path / "q", loaded.hf_config)
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"]["layers"]["language_model.layers.0.mlp.up_proj"]["shape"] = [3, 3]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="up_proj"):
        load(out)
    cfg["quantization_config"] = {"quant_method": "bitsandbytes"}
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="bitsandbytes"):
        load(out)


def test_calibration_from_an_image_folder_and_act_order_gptq(data_dir):
    loaded = load("shapes-vlm")
    calib = load_calibration(loaded.processor, [data_dir / "images"], max_samples=3)
    assert len(calib) == 3 and all(s.pixel_values is not None and s.pixel_values.ndim == 4 for s in calib)
    recipe = preset("w4g32-vision4").replace(algorithm="gptq", gptq_act_order=True)
    report = quantize_model(loaded.model, recipe, calib)
    vision = [r for r in report.layers if r.role == "vision_encoder"]
    assert vision and all(r.scheme == "int4:g32" and r.algorithm == "gptq" for r in vision)
    assert all(r.output_error < 0.3 for r in report.layers if r.output_error is not None)


def test_skipped_layers_names_why_each_one_is_kept_float():
    """A conv has no quantized form; a Linear outside every role is listed for that; a role's Linear is not listed."""
    model = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(3, 4, 2), "extra": torch.nn.Linear(4, 4),
                                 "mlp": torch.nn.Linear(4, 4), "norm": torch.nn.LayerNorm(4)})
    found = {d["path"]: d for d in skipped_layers(model, {"mlp": "language"})}
    assert set(found) == {"conv", "extra"}
    assert found["conv"]["reason"] == "no quantized form for Conv2d; kept float" and found["conv"]["parameters"] == 48
    assert found["extra"]["type"] == "Linear" and "no role for the recipe" in found["extra"]["reason"]
    assert found["extra"]["reason"].endswith("kept float")
