"""SentencePiece BPE -> tokenizers conversion, checked against the ``sentencepiece`` package itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from edgevlm.errors import CheckpointError
from edgevlm.processing.spm import (
    ModelType,
    PieceType,
    SpmPiece,
    read_sentencepiece_model,
    spm_bpe_tokenizer,
    tokenizer_from_sentencepiece_file,
)

spm = pytest.importorskip("sentencepiece")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXT_FILES = ["tinystories_sample.txt", "tinystories_valid_excerpt.txt"]
SPECIAL = ("<s>", "</s>", "<unk>")  # typed into text, these become special tokens (as in HF Llama)
HYPOTHESIS = settings(max_examples=250, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])

# Trainer options per flavour: "llama" is how Llama / llama2.c tokenizers are trained; "nfkc" uses
# SentencePiece's defaults (nmt_nfkc charsmap, whitespace clean-up); "nobf" has no byte fallback.
FLAVOURS = {
    "llama": dict(byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
                  split_digits=True, allow_whitespace_only_pieces=True),
    "nfkc": dict(byte_fallback=True),
    "nobf": dict(byte_fallback=False, normalization_rule_name="identity"),
}


def _text(name: str) -> str:
    path = DATA / "text" / name
    if not path.is_file():
        pytest.skip(f"shared test data missing: {path}")
    return path.read_text(encoding="utf-8")


def _stories(name: str) -> list[str]:
    return [s.strip() for s in _text(name).split("<|endoftext|>") if s.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Small BPE models trained by sentencepiece on the TinyStories excerpt (well under a second)."""
    lines = _text("tinystories_valid_excerpt.txt").splitlines()
    out = tmp_path_factory.mktemp("spm")
    paths = {}
    for name, options in [*FLAVOURS.items(), ("unigram", dict(byte_fallback=True))]:
        prefix = out / name
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=400,
            model_type="unigram" if name == "unigram" else "bpe", minloglevel=2, **options)
        paths[name] = prefix.with_suffix(".model")
    return paths


def _pair(trained: dict[str, Path], flavour: str):
    """(sentencepiece processor, converted tokenizer) for one trained flavour."""
    path = trained[flavour]
    return spm.SentencePieceProcessor(model_file=str(path)), tokenizer_from_sentencepiece_file(path)


def _assert_same(sp, tok: Tokenizer, text: str) -> None:
    want = sp.encode(text)
    got = tok.encode(text, add_special_tokens=False).ids
    assert got == want, text[:80]
    if 0 not in want:  # sentencepiece decodes <unk> as " ⁇ ", HF Llama as "<unk>"
        assert tok.decode(got) == sp.decode(want), text[:80]


def test_reader_matches_sentencepiece(trained):
    sp = spm.SentencePieceProcessor(model_file=str(trained["llama"]))
    model = read_sentencepiece_model(trained["llama"])
    assert model.model_type == ModelType.BPE and model.byte_fallback
    assert (model.add_dummy_prefix, model.remove_extra_whitespaces, model.normalizer_name) == (True, False, "identity")
    assert len(model.pieces) == sp.get_piece_size() == 400
    for i, p in enumerate(model.pieces):
        assert p.piece == sp.id_to_piece(i)
        assert p.score == pytest.approx(sp.get_score(i))
        assert (p.type == PieceType.CONTROL) == sp.is_control(i)
        assert (p.type == PieceType.UNKNOWN) == sp.is_unknown(i)
        assert (p.type == PieceType.BYTE) == sp.is_byte(i)
    nfkc = read_sentencepiece_model(trained["nfkc"])
    assert nfkc.normalizer_name == "nmt_nfkc" and nfkc.precompiled_charsmap and nfkc.remove_extra_whitespaces


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_text_files_match_sentencepiece(trained, flavour):
    sp, tok = _pair(trained, flavour)
    for name in TEXT_FILES:
        text = _text(name)
        _assert_same(sp, tok, text)
        for story in _stories(name):
            _assert_same(sp, tok, story)


EDGE_CASES = ["", " ", "   ", " leading", "trailing  ", "a  b", "\n x", "x\n", "\t", "tab\there", "“quoted”",
              "日本語 😀", "ﬁ Ａｂ ①", "\u00a0x\u3000y", "a\r\nb", "▁x", "0123456789"]


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_edge_cases_match_sentencepiece(trained, flavour):
    sp, tok = _pair(trained, flavour)
    for text in EDGE_CASES:
        _assert_same(sp, tok, text)


@pytest.mark.parametrize("flavour", ["llama", "nobf"])
def test_random_unicode_matches_sentencepiece(trained, flavour):
    sp, tok = _pair(trained, flavour)

    @HYPOTHESIS
    @given(st.text(max_size=40))
    def check(text: str) -> None:
        assume(not any(s in text for s in SPECIAL))
        _assert_same(sp, tok, text)

    check()


# HF's Precompiled normalizer works per grapheme cluster and differs from sentencepiece on some
# multi-code-point clusters (combining marks after a remapped character, Hangul jamo, half-width
# kana + sound mark), so the charsmap flavour is fuzzed with single-code-point clusters.
_NFKC_CHARS = st.characters(max_codepoint=0x10FF, exclude_categories=("Cs", "Mn", "Mc", "Me")) | st.sampled_from(
    list("ＡｂＣ１①ﬁﬂ…™²½ｶ　\u00a0\u2003"))


def test_random_text_matches_sentencepiece_nfkc(trained):
    sp, tok = _pair(trained, "nfkc")

    @HYPOTHESIS
    @given(st.text(_NFKC_CHARS, max_size=40))
    def check(text: str) -> None:
        assume(not any(s in text for s in SPECIAL))
        _assert_same(sp, tok, text)

    check()


def test_special_tokens_and_serialization(trained, tmp_path):
    tok = tokenizer_from_sentencepiece_file(trained["llama"])
    assert tok.encode("Once upon").ids[0] == 1  # BOS from the TemplateProcessing post-processor
    assert tok.encode("Once upon", add_special_tokens=False).ids[0] != 1
    specials = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    assert specials == {"<unk>", "<s>", "</s>"}
    assert tok.decode(tok.encode("Hi there").ids, skip_special_tokens=True) == "Hi there"
    tok.save(str(tmp_path / "tokenizer.json"))
    again = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = _stories("tinystories_sample.txt")[0]
    assert again.encode(text).ids == tok.encode(text).ids
    eos = tokenizer_from_sentencepiece_file(trained["llama"], add_bos=False, add_eos=True)
    assert eos.encode("x").ids[-1] == 2 and eos.encode("x").ids[0] != 1


def _toy_pieces(scores: dict[str, float]) -> list[SpmPiece]:
    pieces = [SpmPiece("<unk>", 0, PieceType.UNKNOWN), SpmPiece("<s>", 0, PieceType.CONTROL),
              SpmPiece("</s>", 0, PieceType.CONTROL)]
    pieces += [SpmPiece(f"<0x{b:02X}>", 0, PieceType.BYTE) for b in range(256)]
    return pieces + [SpmPiece(p, s) for p, s in scores.items()]


def test_merges_follow_scores_and_byte_fallback():
    pieces = _toy_pieces({"▁": -10, "a": -11, "b": -12, "c": -13, "ab": -2, "bc": -1, "aa": -3, "▁a": -5})
    tok = spm_bpe_tokenizer(pieces, add_dummy_prefix=False)
    tokens = lambda s: tok.encode(s, add_special_tokens=False).tokens  # noqa: E731
    assert tokens("abc") == ["a", "bc"]  # "bc" outscores "ab"
    assert tokens("aaa") == ["aa", "a"]  # equal scores: leftmost pair first
    assert tokens("aé") == ["a", "<0xC3>", "<0xA9>"]
    assert tok.decode(tok.encode("aé b").ids) == "aé b"
    prefixed = spm_bpe_tokenizer(pieces)
    assert prefixed.encode("ab a", add_special_tokens=False).tokens == ["▁", "ab", "▁a"]
    with pytest.raises(ValueError, match="twice"):
        spm_bpe_tokenizer(pieces + [SpmPiece("ab", -7)])


def test_unigram_model_is_rejected(trained):
    assert read_sentencepiece_model(trained["unigram"]).model_type == ModelType.UNIGRAM
    with pytest.raises(CheckpointError, match=r"unigram\.model.*UNIGRAM.*only BPE"):
        tokenizer_from_sentencepiece_file(trained["unigram"])


def test_corrupt_model_files_raise(trained, tmp_path):
    data = trained["llama"].read_bytes()
    cuts = sorted({0, 1, 2, 7, 100, len(data) // 2, len(data) - 30, len(data) - 1, *range(3, len(data), 97)})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.model"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"cut{cut}.model") as err:
            tokenizer_from_sentencepiece_file(path)
        assert isinstance(err.value, ValueError)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="garbage.model"):
        read_sentencepiece_model(garbage)
    json_file = tmp_path / "tokenizer.json.model"
    json_file.write_text('{"model": {"type": "BPE"}}')
    with pytest.raises(CheckpointError, match="tokenizer.json.model"):
        read_sentencepiece_model(json_file)
    with pytest.raises(CheckpointError, match="missing.model"):
        read_sentencepiece_model(tmp_path / "missing.model")


def test_model_directory_with_only_tokenizer_model(trained, tmp_path):
    """A checkpoint that ships tokenizer.model (no tokenizer.json) tokenizes as sentencepiece does, BOS first."""
    import shutil

    from edgevlm.processing.tokenizer import Tokenizer as EdgeTokenizer

    shutil.copy(trained["llama"], tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}')
    tok = EdgeTokenizer.from_dir(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(trained["llama"]))
    for story in _stories("tinystories_sample.txt"):
        assert tok.encode(story) == [sp.bos_id(), *sp.encode(story)]
    assert tok.eos_ids == [sp.eos_id()]
