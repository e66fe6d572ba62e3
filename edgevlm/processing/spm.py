"""SentencePiece BPE tokenizers as Hugging Face ``tokenizers`` objects, without ``sentencepiece``.

Two parts:

* :func:`read_sentencepiece_model` reads a SentencePiece ``tokenizer.model`` (a ``ModelProto``
  protobuf) with a small hand-written wire-format reader: the pieces (string, score, type) and the
  trainer / normalizer flags that change how text is encoded.
* :func:`spm_bpe_tokenizer` builds a ``tokenizers.Tokenizer`` that encodes like SentencePiece BPE:
  text is normalized (optional precompiled charsmap, optional whitespace clean-up), a dummy "▁"
  is prepended to non-empty text, spaces become "▁" (U+2581), the text is split into characters
  and the adjacent pair whose concatenation is the highest-scoring piece is merged repeatedly;
  characters outside the vocabulary fall back to ``<0xXX>`` byte pieces. This is expressed as a
  ``models.BPE`` whose merge list holds every split of every piece into two pieces, ranked by the
  merged piece's score (best first).

Known differences from SentencePiece itself (shared with Hugging Face's own converted Llama
tokenizers): control-token strings such as ``<s>`` typed in the text are recognised as those
special tokens; ``<unk>`` decodes as ``<unk>`` (not " ⁇ ") unless special tokens are skipped;
UNUSED pieces are never produced; when two *different* pieces have exactly equal scores the lower
id wins instead of the leftmost position (SentencePiece-trained BPE models have distinct scores);
with a precompiled charsmap (e.g. nmt_nfkc), ``tokenizers``' Precompiled normalizer works per
grapheme cluster and can differ on some multi-code-point clusters (a combining mark after a remapped
character, Hangul jamo, half-width kana + sound mark). transformers 5's ``LlamaTokenizer`` (what
AutoTokenizer picks for ``LlamaTokenizerFast``) rebuilds the pipeline with a Metaspace pre-tokenizer
and so adds no dummy prefix to text that already starts with a space or "▁"; this file's
``tokenizer.json`` follows SentencePiece there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Iterator, Sequence

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    processors,
)

from ..errors import CheckpointError

SPACE = "\u2581"  # "▁", SentencePiece's visible whitespace


class PieceType(IntEnum):
    """``ModelProto.SentencePiece.Type``."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class ModelType(IntEnum):
    """``TrainerSpec.ModelType``."""

    UNIGRAM = 1
    BPE = 2
    WORD = 3
    CHAR = 4


@dataclass(frozen=True)
class SpmPiece:
    piece: str
    score: float = 0.0
    type: PieceType = PieceType.NORMAL


@dataclass
class SpmModel:
    """What a ``tokenizer.model`` holds that matters for encoding (proto2 defaults when absent)."""

    pieces: list[SpmPiece]
    model_type: ModelType = ModelType.UNIGRAM
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    normalizer_name: str = ""
    precompiled_charsmap: bytes = field(default=b"", repr=False)
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True

    def piece_at(self, index: int) -> str | None:
        """The piece string at ``index``, or None for a disabled (-1) or out-of-range id."""
        return self.pieces[index].piece if 0 <= index < len(self.pieces) else None


# --- protobuf wire format -------------------------------------------------------------------
class _ProtoError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _ProtoError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ProtoError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value): int for varint/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _ProtoError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise _ProtoError(f"truncated fixed{size * 8} field {number}")
            value = int.from_bytes(buf[pos:pos + size], "little")
            pos += size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _ProtoError(f"field {number} declares {size} bytes but only {len(buf) - pos} remain")
            value = bytes(buf[pos:pos + size])
            pos += size
        else:  # 3/4 (groups) are not used by SentencePiece; 6/7 do not exist
            raise _ProtoError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _expect(wire: int, want: int, what: str) -> None:
    if wire != want:
        raise _ProtoError(f"{what} has wire type {wire}, expected {want}")


def _int32(value: int) -> int:
    """A varint-encoded int32/enum (negative values are sign-extended to 64 bits)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _ProtoError(f"{what} is not valid UTF-8") from e


def _parse_piece(buf: bytes, index: int) -> SpmPiece:
    piece, score, kind = None, 0.0, PieceType.NORMAL
    for number, wire, value in _fields(buf):
        if number == 1:
            _expect(wire, 2, f"piece {index}.piece")
            piece = _text(value, f"piece {index}")
        elif number == 2:
            _expect(wire, 5, f"piece {index}.score")
            score = struct.unpack("<f", value.to_bytes(4, "little"))[0]
        elif number == 3:
            _expect(wire, 0, f"piece {index}.type")
            try:
                kind = PieceType(_int32(value))
            except ValueError:
                raise _ProtoError(f"piece {index} has unknown type {_int32(value)}") from None
    if piece is None:
        raise _ProtoError(f"piece {index} has no string")
    return SpmPiece(piece, score, kind)


_TRAINER_FIELDS = {3: "model_type", 24: "treat_whitespace_as_suffix", 35: "byte_fallback",
                   40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
_NORMALIZER_FLAGS = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}


def _parse_model(buf: bytes) -> SpmModel:
    model = SpmModel(pieces=[])
    seen_trainer = seen_normalizer = False
    for number, wire, value in _fields(buf):
        if number == 1:
            _expect(wire, 2, "ModelProto.pieces")
            model.pieces.append(_parse_piece(value, len(model.pieces)))
        elif number == 2:
            _expect(wire, 2, "ModelProto.trainer_spec")
            seen_trainer = True
            for n, w, v in _fields(value):
                if n in _TRAINER_FIELDS:
                    _expect(w, 0, f"TrainerSpec.{_TRAINER_FIELDS[n]}")
                    name = _TRAINER_FIELDS[n]
                    if name == "model_type":
                        try:
                            model.model_type = ModelType(_int32(v))
                        except ValueError:
                            raise _ProtoError(f"unknown model_type {_int32(v)}") from None
                    elif name.endswith("_id"):
                        setattr(model, name, _int32(v))
                    else:
                        setattr(model, name, bool(v))
        elif number == 3:
            _expect(wire, 2, "ModelProto.normalizer_spec")
            seen_normalizer = True
            for n, w, v in _fields(value):
                if n == 1:
                    _expect(w, 2, "NormalizerSpec.name")
                    model.normalizer_name = _text(v, "NormalizerSpec.name")
                elif n == 2:
                    _expect(w, 2, "NormalizerSpec.precompiled_charsmap")
                    model.precompiled_charsmap = v
                elif n in _NORMALIZER_FLAGS:
                    _expect(w, 0, f"NormalizerSpec.{_NORMALIZER_FLAGS[n]}")
                    setattr(model, _NORMALIZER_FLAGS[n], bool(v))
    if not model.pieces:
        raise _ProtoError("no pieces")
    if not (seen_trainer and seen_normalizer):
        raise _ProtoError("trainer_spec or normalizer_spec missing (truncated file?)")
    return model


def read_sentencepiece_model(path: str | Path) -> SpmModel:
    """Read a SentencePiece ``tokenizer.model``; CheckpointError naming the file if it is corrupt."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read SentencePiece model ({e})") from e
    try:
        return _parse_model(buf)
    except _ProtoError as e:
        raise CheckpointError(f"{path}: not a valid SentencePiece model: {e}") from None


# --- tokenizers pipeline --------------------------------------------------------------------
def _bpe_merges(pieces: Sequence[SpmPiece], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every (left, right) split of every mergeable piece, best merged-piece score first."""
    mergeable = {PieceType.NORMAL, PieceType.USER_DEFINED}
    parts = {p.piece for p in pieces if p.type in mergeable}
    ranked: list[tuple[float, int, int, str, str]] = []
    for pid, p in enumerate(pieces):
        if p.type not in mergeable or len(p.piece) < 2:
            continue
        for cut in range(1, len(p.piece)):
            left, right = p.piece[:cut], p.piece[cut:]
            if left in parts and right in parts:
                ranked.append((-p.score, pid, vocab[left], left, right))
    ranked.sort(key=lambda r: r[:3])
    return [(left, right) for *_, left, right in ranked]


def spm_bpe_tokenizer(
    pieces: Sequence[SpmPiece],
    *,
    add_dummy_prefix: bool = True,
    byte_fallback: bool = True,
    remove_extra_whitespaces: bool = False,
    escape_whitespaces: bool = True,
    precompiled_charsmap: bytes = b"",
    bos_token: str | None = "<s>",
    eos_token: str | None = "</s>",
    add_bos: bool = True,
    add_eos: bool = False,
) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` that encodes and decodes like SentencePiece BPE over ``pieces``.

    Token ids are the positions in ``pieces``. UNKNOWN and CONTROL pieces are registered as special
    tokens. Like Hugging Face's Llama ``tokenizer.json``, a TemplateProcessing post-processor adds
    ``bos_token`` (``add_bos``) / ``eos_token`` (``add_eos``) when ``add_special_tokens=True``;
    SentencePiece itself adds nothing, so compare with ``add_special_tokens=False``.
    """
    vocab: dict[str, int] = {}
    for i, p in enumerate(pieces):
        if p.piece in vocab:
            raise ValueError(f"piece {p.piece!r} appears twice (ids {vocab[p.piece]} and {i})")
        vocab[p.piece] = i
    unk = next((p.piece for p in pieces if p.type == PieceType.UNKNOWN), None)
    model = models.BPE(vocab=vocab, merges=_bpe_merges(pieces, vocab), unk_token=unk,
                       byte_fallback=byte_fallback, fuse_unk=True)
    tok = Tokenizer(model)

    space = SPACE if escape_whitespaces else " "
    steps: list[normalizers.Normalizer] = []
    if precompiled_charsmap:
        steps.append(normalizers.Precompiled(precompiled_charsmap))
    if remove_extra_whitespaces:  # SentencePiece trims and collapses U+0020 only
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A | \z"), "")]
    if add_dummy_prefix:  # Prepend skips empty text, as SentencePiece does
        steps.append(normalizers.Prepend(space))
    if escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPACE))
    tok.normalizer = normalizers.Sequence(steps) if steps else None

    # decode: "▁" -> " ", <0xXX> runs -> UTF-8 text, join, drop the dummy prefix's space
    chain: list[decoders.Decoder] = [decoders.Replace(SPACE, " ")] if escape_whitespaces else []
    chain += [decoders.ByteFallback(), decoders.Fuse()]
    if remove_extra_whitespaces:  # sentencepiece then drops every leading "▁" of the output
        chain.append(decoders.Strip(content=" ", left=1 << 16, right=0))
    elif add_dummy_prefix:
        chain.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(chain)

    special = [p.piece for p in pieces if p.type in (PieceType.UNKNOWN, PieceType.CONTROL)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    user = [p.piece for p in pieces if p.type == PieceType.USER_DEFINED]
    if user:
        tok.add_tokens([AddedToken(s, special=False, normalized=True) for s in user])

    bos = bos_token if add_bos and bos_token in vocab else None
    eos = eos_token if add_eos and eos_token in vocab else None
    if bos or eos:
        head = f"{bos}:0 " if bos else ""
        tail = f" {eos}:0" if eos else ""
        tail1 = f" {eos}:1" if eos else ""
        single = f"{head}$A:0{tail}"
        pair = f"{single} {f'{bos}:1 ' if bos else ''}$B:1{tail1}"
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    return tok


def tokenizer_from_sentencepiece(model: SpmModel, *, add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
    """Convert a parsed BPE :class:`SpmModel`; raises ValueError for other model types."""
    if model.model_type != ModelType.BPE:
        raise ValueError(f"SentencePiece model_type {model.model_type.name} is not supported (only BPE)")
    if model.treat_whitespace_as_suffix:
        raise ValueError("SentencePiece treat_whitespace_as_suffix=true is not supported")
    return spm_bpe_tokenizer(
        model.pieces,
        add_dummy_prefix=model.add_dummy_prefix,
        byte_fallback=model.byte_fallback,
        remove_extra_whitespaces=model.remove_extra_whitespaces,
        escape_whitespaces=model.escape_whitespaces,
        precompiled_charsmap=model.precompiled_charsmap,
        bos_token=model.piece_at(model.bos_id),
        eos_token=model.piece_at(model.eos_id),
        add_bos=add_bos,
        add_eos=add_eos,
    )


def tokenizer_from_sentencepiece_file(path: str | Path, *, add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
    """Read a SentencePiece BPE ``tokenizer.model`` and convert it; CheckpointError names the file."""
    model = read_sentencepiece_model(path)
    try:
        return tokenizer_from_sentencepiece(model, add_bos=add_bos, add_eos=add_eos)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
