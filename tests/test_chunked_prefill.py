"""Contract 3: chunked prefill over a static KV cache equals single-shot prefill, at any chunk size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevlm.engine import TorchEngine, merge_image_features, plan_chunks, run_prefill
from edgevlm.errors import InputError
from edgevlm.generate import GenerationStats, generate_step
from edgevlm.models import load
from edgevlm.models.cache import remove_kv_cache
from edgevlm.sampling import SamplingParams


# --- the plan alone, no model -------------------------------------------------------------
def covered(plan):
    rows = [r for c in plan for r in range(c.begin, c.end)]
    return rows


@pytest.mark.parametrize("n, start, chunk, ctx", [(100, 0, 32, 256), (5, 0, 32, 64), (64, 0, 64, 64), (70, 10, 16, 96),
                                                   (1, 0, 1, 8), (33, 30, 32, 64)])
def test_plan_covers_every_row_once_in_order(n, start, chunk, ctx):
    plan = plan_chunks(n, start, chunk, ctx)
    assert covered(plan) == list(range(n))
    for c in plan:
        assert len(c.positions) == c.size and c.size in (chunk, 1)
        valid = c.positions[c.pad:]
        assert list(valid) == list(range(start + c.begin, start + c.end))
        assert all(p >= start + n for p in c.positions[: c.pad])  # padding only at free positions after the prompt
        assert max(c.positions) < ctx
        assert c.positions[-1] == start + c.end - 1  # the last row is a real token


def test_plan_pads_at_the_front():
    (c,) = plan_chunks(5, 0, 8, 64)
    assert c.pad == 3 and c.positions == (5, 6, 7, 0, 1, 2, 3, 4)


def test_plan_falls_back_to_single_steps_at_the_end_of_the_context():
    plan = plan_chunks(40, 0, 32, 40)
    assert [c.size for c in plan] == [32] + [1] * 8


def test_plan_rejects_prompts_longer_than_the_context():
    with pytest.raises(InputError, match="does not fit the context"):
        plan_chunks(65, 0, 32, 64)


# --- the model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm(smolvlm_dir):
    return load(smolvlm_dir)


def prompt_embeds(vlm, engine, image):
    inputs = vlm.processor(vlm.processor.chat_prompt("Describe this picture in detail, please.", 1), [image])
    ids = np.asarray(inputs.input_ids)
    features = engine.encode_images(inputs.pixel_values)
    return inputs, ids, merge_image_features(engine.embed(ids), ids, vlm.model.image_token_id, features)


@pytest.mark.parametrize("chunk", [1, 7, 32, 128])
def test_chunked_prefill_equals_single_shot(vlm, images, chunk):
    model = vlm.model
    ctx = 512
    single = TorchEngine(model, ctx, chunk_size=ctx)
    inputs, ids, embeds = prompt_embeds(vlm, single, images[0])
    n = len(ids)
    image_rows = np.flatnonzero(ids == model.image_token_id)
    boundaries = range(chunk, n, chunk)
    assert any(image_rows[0] < b <= image_rows[-1] for b in boundaries) or chunk >= n, "an image must straddle a chunk boundary"
    reference = run_prefill(single, embeds, 0)
    # and single-shot through the static cache equals the eager model
    remove_kv_cache(model)
    with torch.no_grad():
        eager = model(torch.tensor([inputs.input_ids]), torch.from_numpy(inputs.pixel_values))[0, -1].numpy()
    assert np.abs(reference - eager).max() <= 1e-5

    engine = TorchEngine(model, ctx, chunk_size=chunk)
    logits = run_prefill(engine, embeds, 0)
    assert np.abs(logits - reference).max() <= 1e-5

    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    tokens = {}
    for name, eng in (("single", TorchEngine(model, ctx, chunk_size=ctx)), ("chunked", TorchEngine(model, ctx, chunk_size=chunk))):
        tokens[name] = list(generate_step(eng, inputs, params, [], GenerationStats()))
    assert tokens["chunked"] == tokens["single"]


def test_prefill_continues_after_earlier_tokens(vlm):
    """A second prompt chunked at a non-aligned start position sees the first one exactly."""
    model = vlm.model
    engine = TorchEngine(model, 128, chunk_size=16)
    ids = np.asarray(vlm.processor.tokenizer.encode("Once upon a time there was a small cat who liked milk and naps."))
    embeds = engine.embed(ids)
    whole = run_prefill(TorchEngine(model, 128, chunk_size=128), embeds, 0)
    first = 11
    run_prefill(engine, embeds[:, :first], 0)
    rest = run_prefill(engine, embeds[:, first:], first)
    assert np.abs(rest - whole).max() <= 1e-5
