"""Tiny random checkpoints written with transformers' own classes and ``save_pretrained``, so the
tests load them back exactly as a user's model directory would be loaded.

Tokenizers are byte-level BPE trained on real TinyStories text; chat templates are the real
families' templates.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.smolvlm.processing_smolvlm import (
    DEFAULT_CHAT_TEMPLATE as SMOLVLM_TEMPLATE,
)

from edgevlm.processing.train_tokenizer import (
    SMOLVLM_SPECIAL_TOKENS,
    train_bytelevel_bpe,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXT = DATA / "text" / "tinystories_valid_excerpt.txt"
IMAGES = sorted(p for p in (DATA / "images").iterdir() if p.suffix in (".jpg", ".bmp"))

# SmolLM2's ChatML template
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf's LLaVA-1.5 template
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for line in message['content'] | selectattr('type', 'equalto', 'text') %}{{ line['text'] }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}{{ ' ' }}{% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def stories() -> list[str]:
    return [s.strip() for s in TEXT.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]


def _tokenizer(d: Path, vocab: int, special: list[str], **tokens: str) -> PreTrainedTokenizerFast:
    train_bytelevel_bpe(stories(), vocab, special).save(str(d / "tokenizer.json"))
    return PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), **tokens)


def tiny_text_config(vocab: int, **overrides) -> dict:
    cfg = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=1024, rope_theta=100000.0)
    cfg.update(overrides)
    return cfg


def make_llama(d: Path, tie: bool = True, seed: int = 0, **text_overrides) -> Path:
    """SmolLM2-style text model: ChatML template, tied head by default."""
    d.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(d, 384, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                     bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(d)
    cfg = tiny_text_config(384, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, **text_overrides)
    cfg.pop("model_type")
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**cfg)).eval().save_pretrained(d)
    return d


def make_smolvlm(d: Path, tie: bool = False, longest_edge: int = 192, tile: int = 64, seed: int = 0,
                 model_type: str = "idefics3") -> Path:
    """Idefics3 / SmolVLM: SigLIP tiles of ``tile`` px, 16 image tokens per tile, image splitting on.

    ``model_type`` "smolvlm" saves transformers' SmolVLM classes (same weights layout, the processor
    stays Idefics3's: SmolVLM's own needs torchvision for its video half).
    """
    d.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(d, 420, list(SMOLVLM_SPECIAL_TOKENS), bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                     pad_token="<|im_end|>", unk_token="<|endoftext|>")
    images = Idefics3ImageProcessor(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile})
    Idefics3Processor(images, tok, image_seq_len=(tile // 8) ** 2 // 4, chat_template=SMOLVLM_TEMPLATE).save_pretrained(d)
    config_cls, model_cls = (Idefics3Config, Idefics3ForConditionalGeneration) if model_type == "idefics3" else (
        SmolVLMConfig, SmolVLMForConditionalGeneration)
    cfg = config_cls(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=tile, patch_size=8),
        text_config=tiny_text_config(420),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model_cls(cfg).eval().save_pretrained(d)
    return d


def make_llava(d: Path, vision: str = "clip", strategy: str = "default", layer: int = -2, seed: int = 0) -> Path:
    """LLaVA-1.5 style: 56 px CLIP (or SigLIP) tower, patch 14, 2-layer MLP projector."""
    d.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(d, 380, ["<unk>", "<s>", "</s>", "<image>"], bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    images = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14)
    vision_cfg = dict(model_type=f"{vision}_vision_model", **common)
    LlavaProcessor(images, tok, patch_size=14, vision_feature_select_strategy=strategy, chat_template=LLAVA_TEMPLATE,
                   num_additional_image_tokens=1 if vision == "clip" else 0).save_pretrained(d)
    cfg = LlavaConfig(vision_config=vision_cfg, text_config=tiny_text_config(380),
                      image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy=strategy, vision_feature_layer=layer)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(cfg).eval().save_pretrained(d)
    return d


MOBILEVLM_GOLDEN = Path(__file__).resolve().parent / "data" / "mobilevlm_projectors_golden.safetensors"


def make_mobilevlm(d: Path, projector: str = "ldpnetv2", seed: int = 0) -> Path:
    """A MobileVLM checkpoint in the original layout (MobileLlamaForCausalLM keys, CLIP under
    ``model.vision_tower.vision_tower.vision_model.``, projector under ``model.mm_projector.``).

    The projector weights are those of the golden file made with the original MobileVLM code; the
    CLIP tower (48 px, patch 2: the 24 x 24 grid of CLIP-336) and the decoder are random.
    """
    import json

    from safetensors.torch import load_file, save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    d.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(d, 380, ["<unk>", "<s>", "</s>"], bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(d)
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    tok_cfg["add_bos_token"] = True
    (d / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(d)

    torch.manual_seed(seed)
    text = tiny_text_config(380, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    text.pop("model_type")
    llm = LlamaForCausalLM(LlamaConfig(**text))
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=48, patch_size=2)
    clip = CLIPVisionModel(CLIPVisionConfig(**vision))
    tensors = {k: v for k, v in llm.state_dict().items()}
    tensors.update({f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()})
    golden = load_file(MOBILEVLM_GOLDEN)
    tensors.update({f"model.mm_projector.{k[len(projector) + 1:]}": v for k, v in golden.items()
                    if k.startswith(projector + ".") and not k.endswith(".output")})
    save_file({k: v.contiguous() for k, v in tensors.items()}, d / "model.safetensors")
    config = dict(text, model_type="mobilevlm", architectures=["MobileLlamaForCausalLM"], mm_hidden_size=32,
                  mm_projector_type=projector, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                  mm_vision_tower="tiny-clip-48", vision_tower_type="clip", image_aspect_ratio="pad",
                  mm_use_im_start_end=False, mm_use_im_patch_token=False, vision_config=vision)
    (d / "config.json").write_text(json.dumps(config, indent=2))
    return d


def one_line_error(proc, *words: str) -> str:
    """A CLI run that failed the way bad input must: exit code 2, one line on stderr naming ``words``."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def make_vlm_bundle(root: Path) -> Path:
    """A tiny SmolVLM exported (w4g32, chunk 16, context 512) to the native and onnx targets."""
    from edgevlm.export.core import export_bundle
    from edgevlm.quant.recipe import preset

    out = root / "tiny.evlm"
    export_bundle(make_smolvlm(root / "smolvlm"), out, ["native", "onnx"], preset("w4g32"), chunk_size=16,
                  max_context=512, log=lambda m: None)
    return out
