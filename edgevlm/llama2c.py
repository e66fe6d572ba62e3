"""Import Karpathy's llama2.c checkpoints (``model.bin`` + ``tokenizer.bin``) as Hugging Face Llama.

``model.bin`` (the "legacy" llama2.c export): 7 little-endian int32 header fields ``dim,
hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len`` (a negative vocab_size means the
classifier is stored separately), then float32 tensors, row-major, each stacked over layers where
it is per layer; Linear weights are ``[out_features, in_features]`` as in torch::

    token_embedding [vocab, dim]        rms_att [L, dim]
    wq [L, n_heads*hs, dim]             wk, wv [L, n_kv_heads*hs, dim]     wo [L, dim, n_heads*hs]
    rms_ffn [L, dim]                    w1, w3 [L, hidden, dim]            w2 [L, dim, hidden]
    rms_final [dim]                     freq_cis_real, freq_cis_imag [seq_len, hs/2]  (skipped)
    wcls [vocab, dim]                   (only when vocab_size < 0)

``tokenizer.bin``: int32 max_token_length, then per token float32 score, int32 byte length and
the UTF-8 bytes. Its pieces use " " where SentencePiece uses "▁", and BOS/EOS are spelled
"\\n<s>\\n" / "\\n</s>\\n".

llama2.c rotates interleaved pairs (x0, x1), (x2, x3), ... of each head while Hugging Face
Llama rotates (x_j, x_{j+hs/2}) ("rotate_half"), so the rows of wq / wk are permuted per head.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .processing.spm import PieceType, SpmPiece, spm_bpe_tokenizer

HEADER = struct.Struct("<7i")
VERSIONED_MAGIC = 0x616B3432  # "ak42": llama2.c's newer (version >= 1) export formats
_LIMITS = {"dim": 1 << 16, "hidden_dim": 1 << 18, "n_layers": 1 << 10, "n_heads": 1 << 10,
           "n_kv_heads": 1 << 10, "vocab_size": 1 << 22, "seq_len": 1 << 22}
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass(frozen=True)
class Llama2cConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int  # always positive here; see shared_classifier
    seq_len: int
    shared_classifier: bool  # True when the header's vocab_size was positive

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the stored tensors, in file order."""
        L, d, h, hs, v = self.n_layers, self.dim, self.hidden_dim, self.head_size, self.vocab_size
        q, kv = self.n_heads * hs, self.n_kv_heads * hs
        shapes = {
            "token_embedding": (v, d), "rms_att": (L, d),
            "wq": (L, q, d), "wk": (L, kv, d), "wv": (L, kv, d), "wo": (L, d, q),
            "rms_ffn": (L, d), "w1": (L, h, d), "w2": (L, d, h), "w3": (L, h, d),
            "rms_final": (d,), "freq_cis_real": (self.seq_len, hs // 2), "freq_cis_imag": (self.seq_len, hs // 2),
        }
        if not self.shared_classifier:
            shapes["wcls"] = (v, d)
        return shapes


@dataclass
class Llama2cCheckpoint:
    config: Llama2cConfig
    tensors: dict[str, np.ndarray]  # llama2.c names -> float32 arrays (see tensor_shapes)


@dataclass
class Llama2cTokenizer:
    max_token_length: int
    pieces: list[bytes]
    scores: list[float]


def _check_header(path: Path, values: tuple[int, ...]) -> Llama2cConfig:
    names = list(_LIMITS)
    fields = dict(zip(names, values))
    for name, value in fields.items():
        if name == "vocab_size":
            value = abs(value)
        if value <= 0:
            raise CheckpointError(f"{path}: header field {name} = {fields[name]} must be positive"
                                  " (not a llama2.c model.bin?)")
        if value > _LIMITS[name]:
            raise CheckpointError(f"{path}: header field {name} = {fields[name]} is implausibly large"
                                  " (not a llama2.c model.bin?)")
    dim, n_heads, n_kv = fields["dim"], fields["n_heads"], fields["n_kv_heads"]
    if dim % n_heads or (dim // n_heads) % 2:
        raise CheckpointError(f"{path}: dim {dim} is not n_heads {n_heads} times an even head size")
    if n_heads % n_kv:
        raise CheckpointError(f"{path}: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv}")
    return Llama2cConfig(**{**fields, "vocab_size": abs(fields["vocab_size"])},
                         shared_classifier=fields["vocab_size"] > 0)


def read_llama2c_checkpoint(path: str | Path) -> Llama2cCheckpoint:
    """Read a legacy llama2.c ``model.bin``; CheckpointError (a ValueError) names the file and fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read llama2.c checkpoint ({e})") from e
    if len(data) < HEADER.size:
        raise CheckpointError(f"{path}: {len(data)} bytes is too short for the {HEADER.size}-byte llama2.c header")
    if struct.unpack_from("<I", data)[0] == VERSIONED_MAGIC:
        raise CheckpointError(f"{path}: llama2.c versioned export (magic 'ak42') is not supported;"
                              " export with the legacy format (version 0)")
    config = _check_header(path, HEADER.unpack_from(data))
    shapes = config.tensor_shapes()
    expected = HEADER.size + 4 * sum(int(np.prod(s)) for s in shapes.values())
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than expected"
        raise CheckpointError(f"{path}: file is {what}: {len(data)} bytes, but the header {config} implies "
                              f"{expected} bytes")
    tensors: dict[str, np.ndarray] = {}
    offset = HEADER.size
    for name, shape in shapes.items():
        count = int(np.prod(shape))
        tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape)
        offset += 4 * count
    return Llama2cCheckpoint(config, tensors)


def read_llama2c_tokenizer(path: str | Path, vocab_size: int | None = None) -> Llama2cTokenizer:
    """Read a llama2.c ``tokenizer.bin`` (all tokens to the end of file, or exactly ``vocab_size``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read llama2.c tokenizer ({e})") from e
    if len(data) < 4:
        raise CheckpointError(f"{path}: {len(data)} bytes is too short for a llama2.c tokenizer header")
    (max_len,) = struct.unpack_from("<i", data)
    if not 0 < max_len <= 1 << 16:
        raise CheckpointError(f"{path}: max_token_length = {max_len} is not plausible (not a llama2.c tokenizer?)")
    pieces: list[bytes] = []
    scores: list[float] = []
    offset = 4
    while offset < len(data) and (vocab_size is None or len(pieces) < vocab_size):
        i = len(pieces)
        if offset + 8 > len(data):
            raise CheckpointError(f"{path}: truncated in the header of token {i} (offset {offset})")
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 <= length <= 1 << 16:
            raise CheckpointError(f"{path}: token {i} has implausible byte length {length}")
        if offset + length > len(data):
            raise CheckpointError(f"{path}: truncated in the bytes of token {i} "
                                  f"(needs {length}, {len(data) - offset} left)")
        if not np.isfinite(score):
            raise CheckpointError(f"{path}: token {i} has non-finite score {score}")
        pieces.append(data[offset:offset + length])
        scores.append(score)
        offset += length
    if vocab_size is not None and len(pieces) != vocab_size:
        raise CheckpointError(f"{path}: has {len(pieces)} tokens, the model needs {vocab_size} (truncated?)")
    if offset != len(data):
        expected = f" (the model's vocab_size is {vocab_size})" if vocab_size is not None else ""
        raise CheckpointError(f"{path}: {len(data) - offset} unexpected bytes after token {len(pieces) - 1}{expected}")
    if not pieces:
        raise CheckpointError(f"{path}: no tokens")
    return Llama2cTokenizer(max_len, pieces, scores)


def llama2c_spm_pieces(tok: Llama2cTokenizer) -> list[SpmPiece]:
    """SentencePiece pieces for a llama2.c tokenizer: " " -> "▁", BOS/EOS/unk/byte pieces typed."""
    out: list[SpmPiece] = []
    for i, (raw, score) in enumerate(zip(tok.pieces, tok.scores)):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"token {i} ({raw!r}) is not valid UTF-8") from None
        if text == "<unk>":
            out.append(SpmPiece(text, score, PieceType.UNKNOWN))
        elif text in ("\n<s>\n", "\n</s>\n"):
            out.append(SpmPiece(text.strip(), score, PieceType.CONTROL))
        elif _BYTE_PIECE.fullmatch(text):
            out.append(SpmPiece(text, score, PieceType.BYTE))
        else:
            out.append(SpmPiece(text.replace(" ", "\u2581"), score, PieceType.NORMAL))
    return out


def _rotate_half_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """[n_heads*hs, dim] rows per head from interleaved (0,1),(2,3).. to halves (0..hs/2-1 | hs/2..)."""
    out, dim = w.shape
    hs = out // n_heads
    # row h*hs + 2*j + p  ->  row h*hs + p*hs/2 + j
    return w.reshape(n_heads, hs // 2, 2, dim).transpose(0, 2, 1, 3).reshape(out, dim)


def llama2c_to_hf_state_dict(ckpt: Llama2cCheckpoint) -> dict[str, np.ndarray]:
    """Hugging Face ``LlamaForCausalLM`` tensors (float32, contiguous) from a llama2.c checkpoint."""
    c, t = ckpt.config, ckpt.tensors
    sd = {"model.embed_tokens.weight": t["token_embedding"]}
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = t["rms_att"][i]
        sd[p + "self_attn.q_proj.weight"] = _rotate_half_rows(t["wq"][i], c.n_heads)
        sd[p + "self_attn.k_proj.weight"] = _rotate_half_rows(t["wk"][i], c.n_kv_heads)
        sd[p + "self_attn.v_proj.weight"] = t["wv"][i]
        sd[p + "self_attn.o_proj.weight"] = t["wo"][i]
        sd[p + "post_attention_layernorm.weight"] = t["rms_ffn"][i]
        sd[p + "mlp.gate_proj.weight"] = t["w1"][i]
        sd[p + "mlp.down_proj.weight"] = t["w2"][i]
        sd[p + "mlp.up_proj.weight"] = t["w3"][i]
    sd["model.norm.weight"] = t["rms_final"]
    if not c.shared_classifier:
        sd["lm_head.weight"] = t["wcls"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def hf_llama_config(c: Llama2cConfig) -> dict:
    """``config.json`` for the converted model (llama2.c's fixed eps 1e-5 and RoPE theta 10000)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_size,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.seq_len,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": c.shared_classifier,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def import_llama2c(model_bin: str | Path, tokenizer_bin: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face Llama checkpoint directory from llama2.c files; returns ``out_dir``."""
    from safetensors.numpy import save_file

    ckpt = read_llama2c_checkpoint(model_bin)
    c = ckpt.config
    tok = read_llama2c_tokenizer(tokenizer_bin, c.vocab_size)
    try:
        pieces = llama2c_spm_pieces(tok)
        names = {p.piece: i for i, p in enumerate(pieces)}
        if names.get("<unk>") != 0 or names.get("<s>") != 1 or names.get("</s>") != 2:
            raise ValueError("expected <unk>, <s>, </s> at ids 0, 1, 2 (the llama2.c / Llama layout)")
        tokenizer = spm_bpe_tokenizer(pieces, add_bos=True, add_eos=False)
    except ValueError as e:
        raise CheckpointError(f"{tokenizer_bin}: {e}") from None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(llama2c_to_hf_state_dict(ckpt), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", hf_llama_config(c))
    _write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    tokenizer.save(str(out / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    _write_json(out / "special_tokens_map.json", special)
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, s in enumerate(["<unk>", "<s>", "</s>"])}
    _write_json(out / "tokenizer_config.json", {
        **special,
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": c.seq_len,
        "pad_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
    })
    return out


__all__ = [
    "Llama2cCheckpoint", "Llama2cConfig", "Llama2cTokenizer", "hf_llama_config", "import_llama2c",
    "llama2c_spm_pieces", "llama2c_to_hf_state_dict", "read_llama2c_checkpoint", "read_llama2c_tokenizer",
]
