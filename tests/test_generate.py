"""Reference generation: sampling settings, stop conditions, streaming records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgevlm.generate import generate, stream
from edgevlm.models import load
from edgevlm.processing.tokenizer import StreamDecoder
from edgevlm.sampling import Sampler, SamplingParams


@pytest.fixture(scope="module")
def lm(llama_dir):
    return load(llama_dir)


def test_repetition_penalty_matches_transformers(lm, llama_dir):
    hf = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(llama_dir)
    prompt = "The dog ran to the park"
    ids = tok(lm.processor.chat_prompt(prompt), return_tensors="pt")
    out = hf.generate(**ids, max_new_tokens=24, min_new_tokens=24, do_sample=False, repetition_penalty=1.3)
    ref = out[0, ids["input_ids"].shape[1]:].tolist()
    got = generate(lm, prompt, params=SamplingParams(max_new_tokens=24, repetition_penalty=1.3, ignore_eos=True)).tokens
    assert got == ref


def test_seeded_sampling_is_reproducible_and_seed_dependent(lm):
    p = dict(max_new_tokens=24, temperature=1.5, ignore_eos=True)
    a = generate(lm, "Hello", params=SamplingParams(seed=7, **p)).tokens
    b = generate(lm, "Hello", params=SamplingParams(seed=7, **p)).tokens
    c = generate(lm, "Hello", params=SamplingParams(seed=8, **p)).tokens
    assert a == b and a != c


def test_top_k_one_and_tiny_top_p_are_greedy(lm):
    greedy = generate(lm, "Hello", params=SamplingParams(max_new_tokens=16, ignore_eos=True)).tokens
    for extra in (dict(top_k=1), dict(top_p=1e-6)):
        got = generate(lm, "Hello", params=SamplingParams(max_new_tokens=16, temperature=1.0, seed=0, ignore_eos=True, **extra)).tokens
        assert got == greedy


def test_top_k_restricts_the_draw():
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0])
    sampler = Sampler(SamplingParams(temperature=5.0, top_k=2, seed=0))
    assert {sampler(logits, []) for _ in range(200)} == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.8, seed=0))
    assert {sampler(probs.log(), []) for _ in range(300)} == {0, 1}


def test_temperature_sampling_follows_the_distribution():
    probs = np.array([0.6, 0.3, 0.1])
    sampler = Sampler(SamplingParams(temperature=1.0, seed=1))
    draws = np.bincount([sampler(torch.tensor(np.log(probs)), []) for _ in range(3000)], minlength=3) / 3000
    assert np.abs(draws - probs).max() < 0.04


def test_stop_tokens_and_max_new_tokens(lm):
    free = generate(lm, "Hello", params=SamplingParams(max_new_tokens=12, ignore_eos=True))
    assert len(free.tokens) == 12 and free.stats.finish_reason == "length"
    stop_at = free.tokens[4]
    first = free.tokens.index(stop_at)
    stopped = generate(lm, "Hello", params=SamplingParams(max_new_tokens=12, stop_token_ids=[stop_at]))
    assert stopped.tokens == free.tokens[: first + 1] and stopped.stats.finish_reason == "stop"
    assert generate(lm, "Hello", params=SamplingParams(max_new_tokens=0)).tokens == []


def test_generation_stops_at_the_end_of_the_context(lm):
    n_prompt = len(lm.processor(lm.processor.chat_prompt("Hello")).input_ids)
    r = generate(lm, "Hello", params=SamplingParams(max_new_tokens=50, ignore_eos=True), max_context=n_prompt + 5, chunk_size=4)
    assert len(r.tokens) == 6 and r.stats.finish_reason == "context"


def test_stream_records_and_stats(lm, smolvlm_dir, images):
    vlm = load(smolvlm_dir)
    records = list(stream(vlm, "What is this?", [images[1]], SamplingParams(max_new_tokens=10, ignore_eos=True), chunk_size=16))
    assert len(records) == 10 and records[-1].finish_reason == "length"
    tokens = [r.token for r in records]
    assert "".join(r.text for r in records) == vlm.processor.tokenizer.decode(tokens, skip_special_tokens=True)
    s = records[-1].stats.to_dict()
    assert s["image_tiles"] > 1 and s["prompt_tokens"] > 0 and s["generated_tokens"] == 10
    assert len(s["prefill_chunks_ms"]) == -(-s["prompt_tokens"] // 16)
    assert s["ttft_ms"] == pytest.approx(s["preprocess_ms"] + s["vision_encode_ms"] + s["prefill_ms"])
    assert s["peak_rss_mb"] > 0 and s["decode_tps"] > 0


def test_stream_decoder_keeps_multibyte_characters_whole(lm):
    tok = lm.processor.tokenizer
    text = "Café — naïve 😀 日本"
    ids = tok.encode(text, add_special_tokens=False)
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
