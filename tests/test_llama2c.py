"""llama2.c import: file parsing, tokenizer parity with llama2.c's encode(), and transformers checks."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from edgevlm.errors import CheckpointError
from edgevlm.llama2c import (
    Llama2cConfig,
    import_llama2c,
    read_llama2c_checkpoint,
    read_llama2c_tokenizer,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL_BIN = DATA / "llama2c" / "stories260K.bin"
TOKENIZER_BIN = DATA / "llama2c" / "tok512.bin"
TEXT_FILES = ["tinystories_sample.txt", "tinystories_valid_excerpt.txt"]
SPECIAL = ("<s>", "</s>", "<unk>")  # typed into text, these become special tokens (as in HF Llama)

pytestmark = pytest.mark.skipif(not MODEL_BIN.is_file(), reason=f"shared test data missing: {MODEL_BIN}")


def _stories(name: str) -> list[str]:
    text = (DATA / "text" / name).read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


# --- reference implementations ----------------------------------------------------------------
def llama2c_encode(text: str, vocab: list[str], scores: list[float]) -> list[int]:
    """llama2.c's encode() (run.c): dummy " " prefix, code points or bytes + 3, best-score merges."""
    lookup = {piece: i for i, piece in enumerate(vocab)}
    tokens = [lookup[" "]] if text else []
    for ch in text:
        tokens += [lookup[ch]] if ch in lookup else [b + 3 for b in ch.encode("utf-8")]

    def pair(i: int) -> tuple[float, int]:
        j = lookup.get(vocab[tokens[i]] + vocab[tokens[i + 1]], -1)
        return (scores[j], j) if j >= 0 else (-math.inf, -1)

    pairs = [pair(i) for i in range(len(tokens) - 1)]  # kept in step with tokens
    while pairs:
        best = max(p[0] for p in pairs)
        if best == -math.inf:
            break
        i = next(k for k, p in enumerate(pairs) if p[0] == best)  # leftmost of the best
        tokens[i:i + 2] = [pairs[i][1]]
        del pairs[i]
        for k in (i - 1, i):
            if 0 <= k < len(pairs):
                pairs[k] = pair(k)
    return tokens


def llama2c_forward(t: dict[str, np.ndarray], c: Llama2cConfig, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] computed the way run.c does (interleaved RoPE), in float64."""
    f = {k: v.astype(np.float64) for k, v in t.items()}
    hs, n, pos = c.head_size, len(ids), np.arange(len(ids))
    group = c.n_heads // c.n_kv_heads

    def rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w

    def rope(x: np.ndarray) -> np.ndarray:  # x [n, heads*hs]; rotate pairs (2j, 2j+1) of each head
        x = x.reshape(n, -1, hs // 2, 2)
        angle = pos[:, None] * 10000.0 ** (-np.arange(0, hs, 2) / hs)[None, :]  # [n, hs/2]
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        out = np.stack([x[..., 0] * cos - x[..., 1] * sin, x[..., 0] * sin + x[..., 1] * cos], -1)
        return out.reshape(n, -1, hs)

    x = f["token_embedding"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(c.n_layers):
        xb = rmsnorm(x, f["rms_att"][layer])
        q, k = rope(xb @ f["wq"][layer].T), rope(xb @ f["wk"][layer].T)  # [n, heads, hs]
        v = (xb @ f["wv"][layer].T).reshape(n, -1, hs)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hs) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", att, v).reshape(n, -1) @ f["wo"][layer].T
        xb = rmsnorm(x, f["rms_ffn"][layer])
        gate = xb @ f["w1"][layer].T
        x = x + (gate / (1 + np.exp(-gate)) * (xb @ f["w3"][layer].T)) @ f["w2"][layer].T
    x = rmsnorm(x, f["rms_final"])
    return x @ f.get("wcls", f["token_embedding"]).T


def write_synthetic(tmp: Path, *, n_kv_heads: int = 2, shared: bool = False) -> tuple[Path, Path]:
    """A random llama2.c model (GQA, optionally untied) and a matching 264-token tokenizer."""
    extra = [" ", "a", "b", " a", "ab"]
    vocab = 259 + len(extra)
    c = Llama2cConfig(16, 40, 2, 4, n_kv_heads, vocab, 32, shared)
    rng = np.random.default_rng(0)
    blobs = []
    for name, shape in c.tensor_shapes().items():
        if name.startswith("freq_cis"):
            angle = np.arange(c.seq_len)[:, None] * 10000.0 ** (-np.arange(0, c.head_size, 2) / c.head_size)
            blobs.append((np.cos(angle) if name.endswith("real") else np.sin(angle)).astype("<f4"))
        else:
            scale = 1.0 if name.startswith("rms") else 0.3
            blobs.append((rng.standard_normal(shape) * scale + (1.0 if name.startswith("rms") else 0)).astype("<f4"))
    model = tmp / "synthetic.bin"
    header = struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         vocab if shared else -vocab, c.seq_len)
    model.write_bytes(header + b"".join(b.tobytes() for b in blobs))
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    pieces += [p.encode() for p in extra]
    scores = [0.0] * 259 + [-float(i) for i in range(len(extra))]
    body = b"".join(struct.pack("<fi", s, len(p)) + p for s, p in zip(scores, pieces))
    tokenizer = tmp / "synthetic_tok.bin"
    tokenizer.write_bytes(struct.pack("<i", 7) + body)
    return model, tokenizer


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return import_llama2c(MODEL_BIN, TOKENIZER_BIN, tmp_path_factory.mktemp("stories260K"))


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(hf_dir) -> Tokenizer:
    return Tokenizer.from_file(str(hf_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def llama2c_vocab() -> tuple[list[str], list[float]]:
    tok = read_llama2c_tokenizer(TOKENIZER_BIN)
    return [p.decode("utf-8") for p in tok.pieces], tok.scores


# --- reading ------------------------------------------------------------------------------------
def test_read_checkpoint():
    ckpt = read_llama2c_checkpoint(MODEL_BIN)
    c = ckpt.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len) == (
        64, 172, 5, 8, 4, 512, 512)
    assert c.shared_classifier and "wcls" not in ckpt.tensors
    assert ckpt.tensors["wk"].shape == (5, 32, 64) and ckpt.tensors["w2"].shape == (5, 64, 172)
    # the rotary tables come last: if every offset is right they are cos/sin of pos * 10000^(-2j/hs)
    angle = np.arange(512)[:, None] * 10000.0 ** (-np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(ckpt.tensors["freq_cis_real"], np.cos(angle), atol=1e-5)
    np.testing.assert_allclose(ckpt.tensors["freq_cis_imag"], np.sin(angle), atol=1e-5)


def test_read_tokenizer():
    tok = read_llama2c_tokenizer(TOKENIZER_BIN, 512)
    assert tok.max_token_length == 7 and len(tok.pieces) == 512
    assert tok.pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"] and tok.pieces[3] == b"<0x00>"
    assert tok.pieces[259] == b" t" and tok.scores[260] == -1.0


def test_import_writes_hf_layout(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"]) == (64, 172, 4)
    assert config["tie_word_embeddings"] is True and config["max_position_embeddings"] == 512
    tensors = load_file(str(hf_dir / "model.safetensors"))
    assert "lm_head.weight" not in tensors and len(tensors) == 2 + 9 * 5
    assert tensors["model.layers.4.self_attn.k_proj.weight"].shape == (32, 64)
    tok_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is True and tok_config["model_max_length"] == 512
    for name in ("special_tokens_map.json", "generation_config.json", "tokenizer.json"):
        assert (hf_dir / name).is_file()


# --- tokenizer parity -----------------------------------------------------------------------------
def test_tokenizer_matches_llama2c_encode_on_text_files(hf_tokenizer, llama2c_vocab):
    vocab, scores = llama2c_vocab
    texts = [(DATA / "text" / "tinystories_sample.txt").read_text(encoding="utf-8")]
    texts += [s for name in TEXT_FILES for s in _stories(name)]
    for text in texts:
        ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == llama2c_encode(text, vocab, scores), text[:80]
        assert hf_tokenizer.decode(ids) == text


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(max_size=60))
def test_tokenizer_matches_llama2c_encode_on_random_text(hf_tokenizer, llama2c_vocab, text):
    assume(not any(s in text for s in SPECIAL))
    # HF's Llama normalizer turns spaces into U+2581 before BPE, so a literal U+2581 in the input
    # is read as a space there, while llama2c's encoder sees its three UTF-8 bytes: a known,
    # inherent difference of the two formats, not a bug of the import.
    assume("\u2581" not in text)
    ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == llama2c_encode(text, *llama2c_vocab)
    assert hf_tokenizer.decode(ids) == text


def test_autotokenizer_agrees(hf_dir, hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for story in _stories("tinystories_sample.txt") + _stories("tinystories_valid_excerpt.txt")[:20]:
        assert auto(story).input_ids == hf_tokenizer.encode(story).ids
        assert auto(story).input_ids[0] == 1


# --- transformers model ---------------------------------------------------------------------------
def test_greedy_generation(hf_model, hf_tokenizer):
    import torch

    out = hf_model.generate(torch.tensor([[1]]), max_new_tokens=30, do_sample=False)
    text = hf_tokenizer.decode(out[0].tolist(), skip_special_tokens=True)
    assert text.startswith("Once upon a time, there was a little girl named Lily"), text


def _mean_loss(model, tokenizer: Tokenizer, name: str) -> tuple[float, int]:
    """Per-token cross-entropy over stories (BOS + tokens, cut at 512), averaged over all targets."""
    import torch

    total, count = 0.0, 0
    for story in _stories(name):
        ids = torch.tensor([tokenizer.encode(story).ids[:512]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return total / count, count


def test_loss_on_tinystories_sample(hf_model, hf_tokenizer):
    loss, count = _mean_loss(hf_model, hf_tokenizer, "tinystories_sample.txt")
    assert loss == pytest.approx(1.27, abs=0.01) and count == 1804


def test_loss_on_validation_excerpt(hf_model, hf_tokenizer):
    loss, count = _mean_loss(hf_model, hf_tokenizer, "tinystories_valid_excerpt.txt")
    assert count == 29367
    assert loss == pytest.approx(1.223, abs=0.002)


def test_logits_match_llama2c_forward(hf_model, hf_tokenizer):
    import torch

    ckpt = read_llama2c_checkpoint(MODEL_BIN)
    ids = hf_tokenizer.encode(_stories("tinystories_sample.txt")[0]).ids[:48]
    with torch.no_grad():
        got = hf_model(torch.tensor([ids])).logits[0].double().numpy()
    np.testing.assert_allclose(got, llama2c_forward(ckpt.tensors, ckpt.config, ids), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("shared", [False, True])
def test_synthetic_untied_gqa_model(tmp_path, shared):
    transformers = pytest.importorskip("transformers")
    import torch

    model_bin, tok_bin = write_synthetic(tmp_path, shared=shared)
    out = import_llama2c(model_bin, tok_bin, tmp_path / "hf")
    tensors = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in tensors) != shared
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is shared
    model = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ckpt = read_llama2c_checkpoint(model_bin)
    ids = [1, 259, 263, 260, 262, 5, 100, 261, 263, 7, 3, 2]
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits[0].double().numpy()
    np.testing.assert_allclose(got, llama2c_forward(ckpt.tensors, ckpt.config, ids), atol=1e-4, rtol=1e-4)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.encode("ab a", add_special_tokens=False).tokens == ["▁a", "b", "▁a"]


# --- errors ---------------------------------------------------------------------------------------
def _expect_error(path: Path, pattern: str, reader=read_llama2c_checkpoint) -> None:
    with pytest.raises(CheckpointError, match=pattern) as err:
        reader(path)
    assert isinstance(err.value, ValueError) and path.name in str(err.value)


def test_truncated_or_padded_model_raises(tmp_path):
    data = MODEL_BIN.read_bytes()
    for cut in (0, 10, 27, 28, 1000, len(data) // 2, len(data) - 4):
        path = tmp_path / f"model_cut{cut}.bin"
        path.write_bytes(data[:cut])
        _expect_error(path, "too short" if cut < 28 else "truncated")
    path = tmp_path / "model_padded.bin"
    path.write_bytes(data + b"\0" * 4)
    _expect_error(path, "longer than expected")


@pytest.mark.parametrize("index,value,pattern", [
    (0, 0, "dim = 0 must be positive"), (2, -3, "n_layers = -3 must be positive"),
    (5, 0, "vocab_size = 0"), (6, -1, "seq_len"), (0, 1 << 30, "implausibly large"),
    (3, 7, "n_heads 7"), (4, 3, "not a multiple of n_kv_heads 3"),
])
def test_bad_header_raises(tmp_path, index, value, pattern):
    data = bytearray(MODEL_BIN.read_bytes())
    struct.pack_into("<i", data, 4 * index, value)
    path = tmp_path / "bad_header.bin"
    path.write_bytes(bytes(data))
    _expect_error(path, pattern)


def test_versioned_export_and_missing_file_raise(tmp_path):
    path = tmp_path / "v1.bin"
    path.write_bytes(struct.pack("<Ii", 0x616B3432, 1) + bytes(256))
    _expect_error(path, "versioned export")
    _expect_error(tmp_path / "absent.bin", "cannot read")


def test_truncated_tokenizer_raises(tmp_path):
    data = TOKENIZER_BIN.read_bytes()
    for cut in (0, 2, 6, 13, 100, len(data) - 1):
        path = tmp_path / f"tok_cut{cut}.bin"
        path.write_bytes(data[:cut])
        _expect_error(path, "too short|truncated|needs 512", lambda p: read_llama2c_tokenizer(p, 512))
    path = tmp_path / "tok_short.bin"
    path.write_bytes(data[:4])
    _expect_error(path, "0 tokens, the model needs 512", lambda p: read_llama2c_tokenizer(p, 512))
    bad = bytearray(data)
    struct.pack_into("<i", bad, 0, -5)
    path.write_bytes(bytes(bad))
    _expect_error(path, "max_token_length = -5", read_llama2c_tokenizer)
    bad = bytearray(data)
    struct.pack_into("<i", bad, 8, -2)  # byte length of token 0
    path.write_bytes(bytes(bad))
    _expect_error(path, "token 0 has implausible byte length -2", read_llama2c_tokenizer)


def test_import_rejects_mismatched_tokenizer(tmp_path):
    model_bin, _ = write_synthetic(tmp_path)
    with pytest.raises(CheckpointError, match="tok512.bin.*264"):
        import_llama2c(model_bin, TOKENIZER_BIN, tmp_path / "out")
