"""edgevlm's re-authored models vs transformers on tiny random checkpoints: logits and greedy tokens."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from edgevlm.generate import generate
from edgevlm.models import load
from edgevlm.sampling import SamplingParams

TOL = 1e-4
GREEDY = SamplingParams(max_new_tokens=32, ignore_eos=True)


def hf_greedy(model, inputs: dict, n: int = 32) -> list[int]:
    out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def check_text_parity(model_dir, prompt="Once upon a time, a little dog"):
    ours = load(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = ours.processor.chat_prompt(prompt)
    assert text == tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")
    assert ours.processor(text).input_ids == ids["input_ids"][0].tolist()
    with torch.no_grad():
        diff = (hf(**ids).logits - ours.model(ids["input_ids"])).abs().max().item()
    assert diff <= TOL
    assert generate(ours, prompt, params=GREEDY).tokens == hf_greedy(hf, ids)


def test_llama_tied(llama_dir):
    check_text_parity(llama_dir)


def test_llama_untied(llama_untied_dir):
    check_text_parity(llama_untied_dir)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
        {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 64},
    ],
    ids=lambda r: r["rope_type"],
)
def test_llama_rope_scaling(tmp_path, rope):
    d = tiny_models.make_llama(tmp_path, rope_scaling=rope)
    check_text_parity(d, "The cat sat on the mat and looked at the big red ball. " * 4)


def check_vlm_parity(model_dir, image, n_tokens=32):
    ours = load(model_dir)
    hf = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    proc = AutoProcessor.from_pretrained(model_dir)
    question = "What is in this image?"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = ours.processor.chat_prompt(question, 1)
    assert text == proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=text, images=[str(image)], return_tensors="pt")
    mine = ours.processor(text, [image])
    assert mine.input_ids == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        theirs = hf(**inputs).logits
        logits = ours.model(torch.tensor([mine.input_ids]), torch.from_numpy(mine.pixel_values))
    assert (theirs - logits).abs().max().item() <= TOL
    assert generate(ours, question, [image], SamplingParams(max_new_tokens=n_tokens, ignore_eos=True)).tokens == hf_greedy(hf, inputs, n_tokens)
    # text-only through the same VLM
    text_only = ours.processor.chat_prompt("Tell me a story.", 0)
    ids = proc(text=text_only, return_tensors="pt")
    with torch.no_grad():
        assert (hf(**ids).logits - ours.model(ids["input_ids"])).abs().max().item() <= TOL


@pytest.mark.parametrize("image_index", [0, 4])  # cat 1280x720 (3x2 grid at 192), parrot 512x929 (portrait)
def test_smolvlm_idefics3(smolvlm_dir, images, image_index):
    check_vlm_parity(smolvlm_dir, images[image_index])


def test_smolvlm_model_type_tied(tmp_path, images):
    d = tiny_models.make_smolvlm(tmp_path, tie=True, model_type="smolvlm", seed=3)
    check_vlm_parity(d, images[1], n_tokens=16)


def test_llava_clip(llava_dir, images):
    check_vlm_parity(llava_dir, images[2])


def test_llava_siglip_full_features(tmp_path, images):
    d = tiny_models.make_llava(tmp_path, vision="siglip", strategy="full", layer=-1)
    check_vlm_parity(d, images[3], n_tokens=16)
