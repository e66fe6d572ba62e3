"""The peer runtimes of the benchmark: the GGUF writer, llama.cpp parity, skipped peers, measured rows."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from edgevlm.bench import peers
from edgevlm.bench.gguf import interleave_rotary_rows, read_decoder, write_gguf
from edgevlm.bench.schema import ResultRow
from edgevlm.generate import generate
from edgevlm.models import load
from edgevlm.sampling import SamplingParams

STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine."


def _rotate_half(x, pos, base=10000.0):
    d = x.shape[-1]
    inv = 1.0 / base ** (np.arange(0, d, 2) / d)
    ang = np.concatenate([pos * inv, pos * inv])
    half = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * np.cos(ang) + half * np.sin(ang)


def _rotate_pairs(x, pos, base=10000.0):
    d = x.shape[-1]
    inv = 1.0 / base ** (np.arange(0, d, 2) / d)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    out = x.copy()
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


def test_interleaved_rows_give_the_same_attention_scores():
    rng = np.random.default_rng(0)
    heads, d, hidden = 3, 8, 12
    wq, wk = rng.normal(size=(heads * d, hidden)), rng.normal(size=(heads * d, hidden))
    x1, x2 = rng.normal(size=hidden), rng.normal(size=hidden)
    pq, pk = interleave_rotary_rows(wq, heads), interleave_rotary_rows(wk, heads)
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        hf = _rotate_half(wq[rows] @ x1, 5) @ _rotate_half(wk[rows] @ x2, 2)
        gg = _rotate_pairs(pq[rows] @ x1, 5) @ _rotate_pairs(pk[rows] @ x2, 2)
        assert gg == pytest.approx(hf, rel=1e-9)


def test_gguf_holds_the_model(llama_dir, tmp_path):
    gguf = pytest.importorskip("gguf")
    weights = read_decoder(llama_dir)
    cfg = weights.config
    f32 = gguf.GGUFReader(str(write_gguf(llama_dir, tmp_path / "m.gguf", "f32", weights=weights)))
    fields = {k: f.contents() for k, f in f32.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == cfg.num_hidden_layers
    assert fields["llama.attention.head_count_kv"] == cfg.num_key_value_heads
    assert fields["llama.rope.freq_base"] == pytest.approx(cfg.rope.rope_theta)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size
    tensors = {t.name: t for t in f32.tensors}
    assert "output.weight" not in tensors  # tied head: llama.cpp reads token_embd
    q = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size)
    expected = interleave_rotary_rows(weights.tensors["layers.1.self_attn.q_proj.weight"], cfg.num_attention_heads)
    np.testing.assert_array_equal(q, expected)
    q4 = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(write_gguf(llama_dir, tmp_path / "q.gguf",
                                                                              weights=weights))).tensors}
    assert q4["blk.0.ffn_down.weight"] == "Q4_0" and q4["token_embd.weight"] == "Q8_0"
    assert q4["blk.0.attn_norm.weight"] == "F32"


def test_sentencepiece_style_vocab(tmp_path):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(write_gguf("stories260k", tmp_path / "s.gguf", "f32")))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is True
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert types[tokens.index("<0x41>")] == 6  # byte token
    assert types[0] == 2 and types[1] == 3  # <unk> unknown, <s> control
    assert fields["tokenizer.ggml.bos_token_id"] == 1 and fields["tokenizer.ggml.add_bos_token"] is True


def test_untied_head_is_written(llama_untied_dir, tmp_path):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(write_gguf(llama_untied_dir, tmp_path / "u.gguf", "q4_0")))
    assert {t.name: t.tensor_type.name for t in reader.tensors}["output.weight"] == "Q8_0"


def test_dequantized_checkpoint_carries_the_quantized_values(llama_dir, tmp_path):
    from edgevlm.cli import main as cli

    assert cli(["quantize", str(llama_dir), "-o", str(tmp_path / "q"), "--recipe", "8da4w"]) == 0
    out = peers.save_float_checkpoint(tmp_path / "q", tmp_path / "f")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    quantized, dequantized = load(tmp_path / "q").model.language_model, load(out).model.language_model
    for name in ("layers.0.self_attn.q_proj", "layers.1.mlp.down_proj", "embed_tokens"):
        torch.testing.assert_close(dequantized.get_submodule(name).weight, quantized.get_submodule(name).weight)


def test_missing_peer_is_a_skipped_row(llama_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("llama_cpp", "onnxruntime_genai") else real(name, *a))
    rows = peers.run_peers(llama_dir, [8], 4, 2, 1)
    assert [r["backend"] for r in rows] == ["llama.cpp", "onnxruntime-genai"]
    assert rows[0]["skipped"] == "llama-cpp-python is not installed (pip install llama-cpp-python)"
    assert rows[1]["skipped"] == "onnxruntime-genai is not installed (pip install onnxruntime-genai)"
    assert all(ResultRow.from_dict(r).prefill_tps.median == 0 for r in rows)


def test_synthetic_prompt_avoids_special_tokens(llama_dir):
    ids = peers.synthetic_prompt(llama_dir, 200)
    assert len(ids) == 200 and not {0, 1, 2} & set(ids) and len(set(ids)) > 100
    assert ids == peers.synthetic_prompt(llama_dir, 200)


@pytest.mark.parametrize("model", ["llama_dir", "llama_untied_dir", "stories260k"])
def test_llama_cpp_greedy_tokens_match_the_reference(model, request, tmp_path):
    pytest.importorskip("llama_cpp")
    path = request.getfixturevalue(model) if model.endswith("_dir") else model
    loaded = load(path)
    ids = loaded.processor(STORY, []).input_ids
    ref = generate(loaded, STORY, params=SamplingParams(max_new_tokens=24, ignore_eos=True), chat=False).tokens
    runner = peers.LlamaCppRunner(write_gguf(path, tmp_path / "m.gguf", "f32"), threads=2, n_ctx=256)
    assert runner.run(ids, 24)[3] == ref
    assert runner.run(ids, 24)[3] == ref  # a second run starts from an empty cache
    # llama.cpp's tokenizer reads the vocabulary the same way
    assert runner.llm.tokenize(STORY.encode(), add_bos=ids[:1] == [loaded.processor.tokenizer.bos_id]) == list(ids)


def test_run_peers_rows(llama_dir, tmp_path):
    """Both peers measured on the tiny model (about 20 s here, most of it onnxruntime-genai's builder)."""
    rows = peers.run_peers(llama_dir, [16, 40], 6, 2, 2, workdir=tmp_path)
    ran = [r for r in rows if not r["skipped"]]
    assert {r["backend"] for r in ran} == {p for p in peers.PEERS if not peers.missing_package(p)}
    for r in ran:
        row = ResultRow.from_dict(r)
        assert row.prompt_tokens == row.decode_depth == row.requested_prompt_tokens
        assert row.prefill_tps.median > 0 and row.decode_tps.median > 0 and row.prefill_ms.n == 2
        assert row.ttft_ms.median >= row.prefill_ms.min and row.peak_rss_mb > row.baseline_rss_mb > 0
        assert row.model_bytes > 0 and row.decode_bytes_per_token > 0
    again = peers.run_peers(llama_dir, [16], 2, 2, 1, workdir=tmp_path)  # conversions are reused
    assert all(not r["skipped"] for r in again if not peers.missing_package(r["backend"]))
