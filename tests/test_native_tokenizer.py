"""The C++ tokenizer (runtimes/core/tokenizer*) against HF ``tokenizers``: the same ids and the
same decoded text, on the shared text data and on random Unicode strings, for byte-level BPE
(the shapes VLM's tokenizer, SmolLM2-style trained ones) and SentencePiece-style BPE with byte
fallback (stories260K, Llama-style trained ones). One driver process per tokenizer serves every
string (runtimes/tests/driver_tokenizer.cpp, JSON lines on stdin/stdout).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from edgevlm.processing.train_tokenizer import SMOLVLM_SPECIAL_TOKENS, train_bytelevel_bpe

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "edgevlm" / "zoo"
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA_SPECIAL = ["<unk>", "<s>", "</s>"]


class Driver:
    """One driver_tokenizer process; ``ask`` sends a batch of requests and returns the replies."""

    def __init__(self, exe: Path, tokenizer_json: Path):
        self.proc = subprocess.Popen([str(exe), str(tokenizer_json)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self.info = json.loads(self.proc.stdout.readline())

    def ask(self, requests: list[dict]) -> list[dict]:
        payload = "".join(json.dumps(r) + "\n" for r in requests)

        def write() -> None:  # in a thread, so a full stdout pipe cannot deadlock the two processes
            self.proc.stdin.write(payload)
            self.proc.stdin.flush()

        writer = threading.Thread(target=write)
        writer.start()
        replies = [json.loads(self.proc.stdout.readline()) for _ in requests]
        writer.join()
        return replies

    def encode(self, texts: list[str], add_special: bool = False) -> list[list[int]]:
        return [r["ids"] for r in self.ask([{"op": "encode", "text": t, "add_special": add_special} for t in texts])]

    def decode(self, batches: list[list[int]], skip_special: bool = False) -> list[str]:
        return [r["text"] for r in self.ask([{"op": "decode", "ids": ids, "skip_special": skip_special} for ids in batches])]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((ROOT.parent / "shared" / "data" / "text").glob("*.txt"))]


def _with_byte_pieces(tok: Tokenizer, path: Path) -> Path:
    """Saves ``tok`` with <0x00>..<0xFF> in its model vocab right after the special tokens (as Llama's)."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    order = sorted(vocab, key=vocab.get)
    head = [t for t in order if t in LLAMA_SPECIAL]
    rest = [t for t in order if t not in LLAMA_SPECIAL]
    new = head + [f"<0x{b:02X}>" for b in range(256)] + rest
    data["model"]["vocab"] = {t: i for i, t in enumerate(new)}
    for a in data["added_tokens"]:
        a["id"] = data["model"]["vocab"][a["content"]]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _llama_like(texts: list[str], path: Path, metaspace: bool) -> Path:
    """SentencePiece-style BPE with byte fallback: Metaspace pre-tokenizer, or Llama's normalizers."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=LLAMA_SPECIAL, limit_alphabet=60, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return _with_byte_pieces(tok, path)


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tokenizers")
    texts = _texts()
    lines = [line for t in texts for line in t.splitlines()]
    files = {"shapes-vlm": ZOO / "shapes-vlm" / "tokenizer.json", "stories260k": ZOO / "stories260k" / "tokenizer.json"}

    smol = train_bytelevel_bpe(lines, 600, SMOLVLM_SPECIAL_TOKENS)  # SmolLM2's ByteLevel split regex
    smol.save(str(d / "smollm2.json"))
    files["smollm2"] = d / "smollm2.json"

    split = train_bytelevel_bpe(lines, 600, SMOLVLM_SPECIAL_TOKENS)  # the regex as an explicit Split step
    split.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    split.save(str(d / "split.json"))
    files["split-bytelevel"] = d / "split.json"

    digits = train_bytelevel_bpe(lines, 600, ["<|endoftext|>"])
    digits.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=True)])
    digits.save(str(d / "digits.json"))
    files["digits-bytelevel"] = d / "digits.json"

    files["llama"] = _llama_like(lines, d / "llama.json", metaspace=False)
    files["llama-metaspace"] = _llama_like(lines, d / "llama_metaspace.json", metaspace=True)
    return files


@pytest.fixture(scope="module")
def drivers(native_build, tokenizer_files):
    ds = {name: Driver(native_build / "driver_tokenizer", path) for name, path in tokenizer_files.items()}
    yield ds
    for d in ds.values():
        d.close()


@pytest.fixture(scope="module")
def references(tokenizer_files) -> dict[str, Tokenizer]:
    return {name: Tokenizer.from_file(str(path)) for name, path in tokenizer_files.items()}


NAMES = ["shapes-vlm", "stories260k", "smollm2", "split-bytelevel", "digits-bytelevel", "llama", "llama-metaspace"]


def _check(driver: Driver, ref: Tokenizer, texts: list[str]) -> None:
    for add_special in (False, True):
        got = driver.encode(texts, add_special)
        for text, ids in zip(texts, got):
            assert ids == ref.encode(text, add_special_tokens=add_special).ids, (text, add_special)
    got_ids = [ref.encode(t, add_special_tokens=True).ids for t in texts]
    for skip in (False, True):
        for ids, text in zip(got_ids, driver.decode(got_ids, skip)):
            assert text == ref.decode(ids, skip_special_tokens=skip), (ids, skip)


@pytest.mark.parametrize("name", NAMES)
def test_shared_text_files(name, drivers, references):
    texts = _texts()
    _check(drivers[name], references[name], texts + [line for t in texts for line in t.splitlines()])
    assert drivers[name].info["vocab_size"] == references[name].get_vocab_size(with_added_tokens=True)


SPECIAL_BITS = ["<|im_start|>", "<|im_end|>", "<image>", "<fake_token_around_image>", "<row_1_col_1>",
                "<global-img>", "<end_of_utterance>", "<s>", "</s>", "<unk>", "<0x41>", " ", "  ", "\n", "'s",
                "'ll", " 12", "\u2581", "\u2581\u2581", "Once upon", "\u00e9", "e\u0301", "\U0001F600", "\u65e5\u672c"]
ANY_CHAR = st.characters(blacklist_categories=("Cs",))
FRAGMENT = st.one_of(st.text(ANY_CHAR, max_size=10), st.sampled_from(SPECIAL_BITS),
                     st.text(st.sampled_from(" \t\n\r\u00a0\u3000\u2581abc1'"), max_size=6))
RANDOM_TEXT = st.lists(FRAGMENT, max_size=8).map("".join)


@pytest.mark.parametrize("name", NAMES)
# 15 batches of 40 strings per tokenizer (about 4,200 strings in all): small batches keep each
# example within hypothesis' data budget, so generating them stays fast.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts=st.lists(RANDOM_TEXT, min_size=40, max_size=40))
def test_random_unicode(name, drivers, references, texts):
    _check(drivers[name], references[name], texts)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(data=st.data())
def test_decode_random_ids(name, drivers, references, data):
    ref = references[name]
    n = ref.get_vocab_size(with_added_tokens=True)
    batches = data.draw(st.lists(st.lists(st.integers(0, n - 1), max_size=12), min_size=200, max_size=200))
    for skip in (False, True):
        for ids, text in zip(batches, drivers[name].decode(batches, skip)):
            assert text == ref.decode(ids, skip_special_tokens=skip), (ids, skip)


@pytest.mark.parametrize("name", ["shapes-vlm", "stories260k"])
def test_vocab_lookups(name, drivers, references):
    ref, drv = references[name], drivers[name]
    ids = list(range(ref.get_vocab_size(with_added_tokens=True) + 2))
    replies = drv.ask([{"op": "id_to_token", "id": i} for i in ids])
    assert [r["token"] for r in replies] == [ref.id_to_token(i) for i in ids]
    tokens = [ref.id_to_token(i) for i in ids[:-2]] + ["no-such-token"]
    replies = drv.ask([{"op": "token_to_id", "token": t} for t in tokens])
    assert [r["id"] for r in replies] == [ref.token_to_id(t) for t in tokens]


def test_speed_whole_files(drivers):
    """Encoding all shared text files takes well under a second (here: under 0.25 s per pass)."""
    texts = _texts()
    for name in ("shapes-vlm", "stories260k"):
        replies = drivers[name].ask([{"op": "encode", "text": t, "repeat": 5} for t in texts])
        assert sum(r["seconds"] for r in replies) / 5 < 0.25


def _error_of(native_build, path: Path) -> dict:
    return Driver(native_build / "driver_tokenizer", path).info


@pytest.mark.parametrize("edit, code, words", [
    (lambda d: d["model"].update(type="Unigram"), 4, "Unigram"),
    (lambda d: d.update(normalizer={"type": "NFKC"}), 4, "NFKC"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), 4, "Whitespace"),
    (lambda d: d.update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}), 4, "WordPiece"),
    (lambda d: d["model"]["merges"].append(["no-such", "token"]), 3, "no-such"),
    (lambda d: d["model"].pop("vocab"), 3, "vocab"),
    (lambda d: d["added_tokens"][0].pop("content"), 3, "added_tokens[0]"),
    (lambda d: d["model"]["vocab"].update({"x": "seven"}), 3, "\"x\""),
])
def test_bad_files(native_build, tmp_path, edit, code, words):
    data = json.loads((ZOO / "stories260k" / "tokenizer.json").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    info = _error_of(native_build, path)
    assert info.get("code") == code and words in info["error"], info


def test_truncated_and_missing_files(native_build, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text((ZOO / "stories260k" / "tokenizer.json").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    info = _error_of(native_build, path)
    assert info["code"] == 3 and str(path) in info["error"]
    info = _error_of(native_build, tmp_path / "missing.json")
    assert info["code"] == 2 and "missing.json" in info["error"]
