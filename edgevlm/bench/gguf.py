"""Write a GGUF file (llama.cpp's model format) of a Llama-family text model, for the peer benchmark.

What goes in, following the GGUF specification (ggml's ``docs/gguf.md``) and the ``gguf`` package's
key and tensor names:

- **metadata** of the ``llama`` architecture: context length, widths, heads, RMSNorm epsilon, the
  RoPE base (linear scaling as a type and factor; Llama 3 scaling as the ``rope_freqs`` tensor of
  per-frequency divisors), the file type and the quantization version;
- **the tokenizer**: ``gpt2`` (byte-level BPE: tokens and merges, as SmolLM2 and the test models
  have) or ``llama`` (SentencePiece-style BPE with byte fallback: tokens with scores, byte tokens,
  a space prefix, as Llama 2 and stories260K have), padded with unused tokens up to the model's
  vocabulary size; BOS, EOS, UNK ids and the chat template;
- **tensors** under GGUF names (``token_embd``, ``blk.N.attn_q``, ..., ``output_norm``, ``output``
  unless the head is tied to the embedding), norms in float32, the rest as asked: ``f32``, ``f16``
  or ``q4_0`` (4-bit blocks of 32 with one fp16 scale; the embedding/head in ``q8_0``, the closest
  GGUF type to the int8 per-channel head of edgevlm's 8da4w recipe).

Rotary layout: Hugging Face Llama checkpoints rotate dimension ``i`` of a head with ``i + d/2``
("rotate half"), while llama.cpp's ``llama`` architecture rotates adjacent pairs ``(2i, 2i + 1)``.
The same attention comes out if the rows of ``W_q`` and ``W_k`` (and their biases) are reordered
within each head so that row ``s * d/2 + i`` moves to ``2i + s``: :func:`interleave_rotary_rows`.
Scores ``q . k`` are unchanged because both sides move alike; ``v`` and the output are untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevlm.errors import InputError, UnsupportedModelError

WEIGHT_TYPES = ("f32", "f16", "q4_0")
QK4_0 = 32  # values per Q4_0 / Q8_0 block

# HF module path inside a decoder layer -> GGUF tensor name inside block N
LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass
class DecoderWeights:
    """A Llama decoder's config and its float tensors under HF module paths (``layers.0.mlp.up_proj``)."""

    config: object  # edgevlm.models.llama.config.LlamaConfig
    tensors: dict[str, np.ndarray]  # "<module path>.weight" / ".bias" -> float32 array
    model_dir: Path


def read_decoder(model_dir: Path | str) -> DecoderWeights:
    """Float weights of a Llama-family text model directory (or embedded model name); an
    edgevlm-quantized directory is dequantized."""
    import torch

    from edgevlm.models import load

    loaded = load(model_dir)
    if loaded.family != "llama":
        raise UnsupportedModelError(f"{model_dir}: GGUF export covers Llama-family text models, not {loaded.family!r}")
    lm = loaded.model.language_model
    cfg = lm.config
    tensors: dict[str, np.ndarray] = {}

    def put(path: str, module) -> None:
        with torch.no_grad():
            tensors[f"{path}.weight"] = module.weight.detach().float().numpy().copy()
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                tensors[f"{path}.bias"] = bias.detach().float().numpy().copy()

    put("embed_tokens", lm.embed_tokens)
    for i, layer in enumerate(lm.layers):
        for path in LAYER_TENSORS:
            put(f"layers.{i}.{path}", layer.get_submodule(path))
    put("norm", lm.norm)
    if not cfg.tie_word_embeddings:
        put("lm_head", lm.lm_head)
    return DecoderWeights(cfg, tensors, Path(loaded.path))


def interleave_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows ``[n_heads * d, ...]`` from the rotate-half layout to adjacent pairs (see the module doc)."""
    d = w.shape[0] // n_heads
    if d * n_heads != w.shape[0] or d % 2:
        raise UnsupportedModelError(f"cannot split {w.shape[0]} rows into {n_heads} heads of even size")
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, d // 2, *rest).swapaxes(1, 2).reshape(w.shape)


# --- tokenizer ----------------------------------------------------------------------------------
# GGUF token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    model: str  # "gpt2" | "llama"
    pre: str | None  # pre-tokenizer name (gpt2 models)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    add_space_prefix: bool
    bos: int | None
    eos: int | None
    unk: int | None
    add_bos: bool
    chat_template: str | None


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _pre_tokenizer_name(spec: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer: GPT-2's regex, or SmolLM's (digits apart)."""
    if not spec:
        return "default"
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    return "default"


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """The tokenizer of ``model_dir`` (``tokenizer.json``) as GGUF tokenizer metadata."""
    from edgevlm.processing.tokenizer import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise UnsupportedModelError(f"{model_dir}: GGUF export needs tokenizer.json")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedModelError(f"{path}: a {model.get('type')} tokenizer; GGUF export covers BPE tokenizers")
    tok = Tokenizer.from_dir(model_dir)
    n_tok = tok.vocab_size
    if n_tok > vocab_size:
        raise UnsupportedModelError(f"{path}: {n_tok} tokens but the model embeds only {vocab_size}")
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    spm = bool(model.get("byte_fallback"))
    merges = _merge_pairs(model.get("merges", []))
    rank = {a + b: r for r, (a, b) in enumerate(merges)}
    tokens, types, scores = [], [], []
    for i in range(vocab_size):
        text = tok.id_to_token(i) if i < n_tok else None
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            scores.append(-1e9)
            continue
        if i in added:
            kind = CONTROL if added[i].get("special") else USER_DEFINED
        elif spm and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            kind = BYTE
        else:
            kind = NORMAL
        tokens.append(text)
        types.append(kind)
        # SentencePiece-style merging prefers the highest score: earlier merges score higher
        scores.append(-float(rank[text]) if text in rank and kind == NORMAL else -1e6)
    unk = tok.token_to_id(tok.unk_token) if tok.unk_token else None
    if unk is not None and 0 <= unk < vocab_size and types[unk] == CONTROL and spm:
        types[unk] = UNKNOWN
    normalizer = json.dumps(spec.get("normalizer"))
    probe = tok.encode("a")
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return Vocab(
        model="llama" if spm else "gpt2",
        pre=None if spm else _pre_tokenizer_name(spec.get("pre_tokenizer")),
        tokens=tokens, types=types, scores=scores if spm else None,
        merges=None if spm else [f"{a} {b}" for a, b in merges],
        add_space_prefix=spm and '"Prepend"' in normalizer,
        bos=tok.bos_id, eos=(tok.eos_ids or [None])[0], unk=unk,
        add_bos=bool(probe) and tok.bos_id is not None and probe[0] == tok.bos_id,
        chat_template=template,
    )


# --- writing ------------------------------------------------------------------------------------
def _tensor_type(name: str, weight_type: str, shape: tuple[int, ...]) -> str:
    """The GGUF type of one tensor: norms and biases float32, embedding/head q8_0 under q4_0."""
    if len(shape) == 1 or weight_type == "f32":
        return "f32"
    if weight_type == "f16":
        return "f16"
    if shape[-1] % QK4_0:
        return "f16"  # rows that are not whole 32-blocks cannot be block-quantized
    return "q8_0" if name in ("token_embd.weight", "output.weight") else "q4_0"


def gguf_tensors(weights: DecoderWeights) -> dict[str, np.ndarray]:
    """Float tensors under GGUF names, q/k rows interleaved for llama.cpp's rotary layout."""
    cfg = weights.config
    out: dict[str, np.ndarray] = {}
    for key, value in weights.tensors.items():
        path, kind = key.rsplit(".", 1)  # kind: weight | bias
        if path == "embed_tokens":
            name = "token_embd"
        elif path == "norm":
            name = "output_norm"
        elif path == "lm_head":
            name = "output"
        else:
            _, i, sub = path.split(".", 2)
            name = f"blk.{i}.{LAYER_TENSORS[sub]}"
            if sub == "self_attn.q_proj":
                value = interleave_rotary_rows(value, cfg.num_attention_heads)
            elif sub == "self_attn.k_proj":
                value = interleave_rotary_rows(value, cfg.num_key_value_heads)
        out[f"{name}.{kind}"] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def write_gguf(model_dir: Path | str, out: Path | str, weight_type: str = "q4_0",
               weights: DecoderWeights | None = None) -> Path:
    """Write ``out`` (a ``.gguf`` file) from a Llama-family model directory; returns ``out``.

    ``weight_type``: ``f32`` (exact), ``f16``, or ``q4_0`` (linears Q4_0, embedding/head Q8_0).
    ``weights`` may pass an already read :func:`read_decoder` result.
    """
    import gguf
    from gguf.quants import quantize

    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"GGUF weight type {weight_type!r} unknown; choose from {', '.join(WEIGHT_TYPES)}")
    weights = weights or read_decoder(model_dir)
    cfg = weights.config
    vocab = read_vocab(weights.model_dir, cfg.vocab_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(weights.model_dir.name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.hidden_act != "silu":
        raise UnsupportedModelError(f"{weights.model_dir}: llama.cpp's llama architecture uses SiLU, not {cfg.hidden_act}")
    tensors = gguf_tensors(weights)
    rope = cfg.rope
    if rope.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope.factor)
    elif rope.rope_type == "llama3":
        from dataclasses import replace

        from edgevlm.models.llama.rope import inverse_frequencies

        plain, _ = inverse_frequencies(replace(rope, rope_type="default"), cfg.head_dim, cfg.max_position_embeddings)
        scaled, _ = inverse_frequencies(rope, cfg.head_dim, cfg.max_position_embeddings)
        tensors["rope_freqs.weight"] = (plain / scaled).numpy().astype(np.float32)  # llama.cpp divides by these
    elif rope.rope_type != "default":
        raise UnsupportedModelError(f"{weights.model_dir}: {rope.rope_type} RoPE scaling is not written to GGUF here")
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[weight_type]
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model(vocab.model)
    if vocab.pre:
        w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        w.add_token_merges(vocab.merges)
    if vocab.model == "llama":
        w.add_add_space_prefix(vocab.add_space_prefix)
    for value, add in ((vocab.bos, w.add_bos_token_id), (vocab.eos, w.add_eos_token_id), (vocab.unk, w.add_unk_token_id)):
        if value is not None:
            add(value)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(False)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)

    qtypes = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    for name, value in tensors.items():
        kind = _tensor_type(name, weight_type, value.shape)
        if kind in qtypes:
            w.add_tensor(name, quantize(value, qtypes[kind]), raw_dtype=qtypes[kind])
        else:
            w.add_tensor(name, value.astype(np.float16 if kind == "f16" else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def gguf_decode_bytes(path: Path | str, tied: bool) -> int:
    """Bytes of the tensors one decode step reads: all but the embedding table (which is read for one
    row), unless the head is tied to it and so read whole."""
    from gguf import GGUFReader

    total = 0
    for t in GGUFReader(str(path)).tensors:
        if t.name == "token_embd.weight" and not tied:
            continue
        total += int(t.n_bytes)
    return total


__all__ = ["WEIGHT_TYPES", "DecoderWeights", "gguf_decode_bytes", "gguf_tensors", "interleave_rotary_rows",
           "read_decoder", "read_vocab", "write_gguf"]
