"""MobileVLM: there is no transformers class, so each part is checked against its reference.

- projectors vs outputs of the original MobileVLM code (golden file, tests/data/README.md)
- vision features vs transformers' CLIPVisionModel hidden_states[-2] without the class token
- the decoder and the image splice vs transformers' LlamaForCausalLM fed the spliced embeddings
- prompt ids vs the original ``tokenizer_image_token`` rule
"""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch
from safetensors.torch import load_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from edgevlm.generate import generate
from edgevlm.models import load
from edgevlm.models.mobilevlm.config import IMAGE_TOKEN_INDEX
from edgevlm.models.mobilevlm.projector import PROJECTORS
from edgevlm.sampling import SamplingParams


@pytest.mark.parametrize("kind", ["ldpnet", "ldpnetv2"])
def test_projector_matches_original_code(kind):
    golden = load_file(tiny_models.MOBILEVLM_GOLDEN)
    proj = PROJECTORS[kind](32, 64).eval()
    proj.load_state_dict({k[len(kind) + 1:]: v for k, v in golden.items() if k.startswith(kind + ".") and not k.endswith(".output")})
    with torch.no_grad():
        out = proj(golden["input"])
    assert out.shape == (2, 144, 64)
    assert (out - golden[f"{kind}.output"]).abs().max().item() <= 1e-5


def reference_parts(d):
    """transformers' CLIP and Llama built from the checkpoint's tensors (original key names)."""
    cfg = json.loads((d / "config.json").read_text())
    tensors = load_file(d / "model.safetensors")
    clip = CLIPVisionModel(CLIPVisionConfig(**cfg["vision_config"])).eval()
    prefix = "model.vision_tower.vision_tower.vision_model."
    clip.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    llm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if not k.startswith("mm_") and k != "vision_config"})).eval()
    llm.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(("model.vision_tower", "model.mm_projector"))})
    return clip, llm


def original_prompt_ids(tokenizer, prompt: str, n_image_tokens: int) -> list[int]:
    """MobileVLM's tokenizer_image_token, restated: pieces tokenized alone, one BOS kept, -200 at images."""
    pieces = [tokenizer.encode(p) for p in prompt.split("<image>")]
    ids = [pieces[0][0]] if pieces[0][:1] == [tokenizer.bos_id] else []
    offset = len(ids)
    for i, piece in enumerate(pieces):
        if i:
            ids += [IMAGE_TOKEN_INDEX]
        ids += piece[offset:]
    return [t for i in ids for t in ([i] * n_image_tokens if i == IMAGE_TOKEN_INDEX else [i])]


@pytest.mark.parametrize("kind", ["ldpnet", "ldpnetv2"])
def test_mobilevlm_against_reference_parts(tmp_path, images, kind):
    d = tiny_models.make_mobilevlm(tmp_path, kind)
    ours = load(d)
    assert ours.family == "mobilevlm" and ours.model.tokens_per_tile == 144
    clip, llm = reference_parts(d)

    text = ours.processor.chat_prompt("What is shown here?", 1)
    assert text.startswith("A chat between a curious user") and text.endswith(" USER: <image>\nWhat is shown here? ASSISTANT:")
    inputs = ours.processor(text, [images[4]])
    assert inputs.input_ids == original_prompt_ids(ours.processor.tokenizer, text, 144)

    pixels = torch.from_numpy(inputs.pixel_values)
    assert pixels.shape == (1, 3, 48, 48)
    with torch.no_grad():
        hidden = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        features = ours.model.encode_images(pixels)
        assert (features - ours.model.mm_projector(hidden)).abs().max().item() <= 1e-5

        ids = torch.tensor(inputs.input_ids)
        slots = ids == IMAGE_TOKEN_INDEX
        embeds = llm.model.embed_tokens(ids.clamp(min=0))
        embeds[slots] = features.reshape(-1, features.shape[-1])
        ref = llm(inputs_embeds=embeds[None]).logits
        logits = ours.model(ids[None], pixels)
    assert (ref - logits).abs().max().item() <= 1e-4

    # text-only prompts are plain Llama
    plain = ours.processor(ours.processor.chat_prompt("Tell me a story.", 0)).input_ids
    with torch.no_grad():
        assert (llm(torch.tensor([plain])).logits - ours.model(torch.tensor([plain]))).abs().max().item() <= 1e-4

    # greedy generation through the chunked static-cache path equals eager argmax decoding of the reference
    r = generate(ours, "What is shown here?", [images[4]], SamplingParams(max_new_tokens=8, ignore_eos=True), chunk_size=32)
    seq, expected = embeds[None], []
    with torch.no_grad():
        for _ in range(8):
            nxt = int(llm(inputs_embeds=seq).logits[0, -1].argmax())
            expected.append(nxt)
            seq = torch.cat([seq, llm.model.embed_tokens(torch.tensor([[nxt]]))], dim=1)
    assert r.tokens == expected


def test_unknown_tower_name_is_a_clear_error(tmp_path):
    d = tiny_models.make_mobilevlm(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["vision_config"]
    (d / "config.json").write_text(json.dumps(cfg))
    from edgevlm.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="mm_vision_tower 'tiny-clip-48'.*openai/clip-vit-large-patch14-336"):
        load(d)


@pytest.mark.parametrize("fixture", ["mobilevlm_dir", "mobilevlm_v1_dir"])
def test_native_runtime_answers_as_the_reference(fixture, request, images, tmp_path):
    """The C++ runtime runs MobileVLM (CLIP tower, LDPv2 / LDP projector) end to end through the
    SDK: its own tokenizer (BOS from tokenizer_config.json), image preprocessing and prompt splice
    give the PyTorch reference's greedy tokens."""
    import edgevlm
    from edgevlm.export.core import export_bundle
    from edgevlm.quant.recipe import preset

    bundle = tmp_path / "m.evlm"
    export_bundle(request.getfixturevalue(fixture), bundle, ["native"], preset("w4g32"), chunk_size=16,
                  max_context=512, log=lambda s: None)
    for image in images[:3]:
        answers = [edgevlm.load(bundle, backend=b).generate("What is in the picture?", images=[image], max_new_tokens=12)
                   for b in ("torch", "native")]
        assert answers[0].tokens == answers[1].tokens, image
        assert answers[0].stats.prompt_tokens == answers[1].stats.prompt_tokens
