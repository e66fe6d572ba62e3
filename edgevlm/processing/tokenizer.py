"""Text tokenization from a checkpoint's ``tokenizer.json`` (or SentencePiece ``tokenizer.model``).

The ``tokenizers`` library does the work, so ids equal Hugging Face's. Special-token handling
follows transformers: when ``tokenizer_config.json`` sets ``add_bos_token`` / ``add_eos_token``
(or tokenizer.json has no post-processor) those flags decide what ``encode`` adds; otherwise the
post-processor of tokenizer.json does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from ..errors import CheckpointError
from ..files import read_json

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"


def _token_content(value: object) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


@dataclass
class Tokenizer:
    backend: HFTokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    chat_template: str | dict | list | None = None  # as stored in tokenizer_config.json
    extra_eos: list[str] = field(default_factory=list)

    @classmethod
    def from_dir(cls, model_dir: Path) -> "Tokenizer":
        """Load ``tokenizer.json`` (preferred) or ``tokenizer.model`` with ``tokenizer_config.json``."""
        model_dir = Path(model_dir)
        config = read_json(model_dir / TOKENIZER_CONFIG) or {}
        special = read_json(model_dir / SPECIAL_TOKENS_MAP) or {}
        path = model_dir / TOKENIZER_JSON
        if path.is_file():
            try:
                backend = HFTokenizer.from_file(str(path))
            except Exception as e:  # the Rust library raises plain Exceptions
                raise CheckpointError(f"{path}: cannot be read as a tokenizers file ({e})") from e
        elif (model_dir / SENTENCEPIECE_MODEL).is_file():
            from .spm import tokenizer_from_sentencepiece_file

            backend = tokenizer_from_sentencepiece_file(model_dir / SENTENCEPIECE_MODEL)
        else:
            raise CheckpointError(f"{model_dir}: no tokenizer ({TOKENIZER_JSON} or {SENTENCEPIECE_MODEL})")

        def pick(name: str) -> str | None:
            return _token_content(config.get(name)) or _token_content(special.get(name))

        tok = cls(backend, pick("bos_token"), pick("eos_token"), pick("pad_token"), pick("unk_token"), config.get("chat_template"))
        explicit = "add_bos_token" in config or "add_eos_token" in config
        if explicit or backend.post_processor is None:
            tok._set_post_processor(bool(config.get("add_bos_token", False)), bool(config.get("add_eos_token", False)))
        return tok

    def _set_post_processor(self, add_bos: bool, add_eos: bool) -> None:
        add_bos = add_bos and self.bos_id is not None
        add_eos = add_eos and self.eos_token is not None and self.token_to_id(self.eos_token) is not None
        single = ("$A:0" if not add_bos else f"{self.bos_token}:0 $A:0") + (f" {self.eos_token}:0" if add_eos else "")
        pair = f"{single}{f' {self.bos_token}:1' if add_bos else ''} $B:1{f' {self.eos_token}:1' if add_eos else ''}"
        special = ([(self.bos_token, self.bos_id)] if add_bos else []) + (
            [(self.eos_token, self.token_to_id(self.eos_token))] if add_eos else []
        )
        self.backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)

    # --- ids ------------------------------------------------------------------------------
    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token)

    @property
    def eos_ids(self) -> list[int]:
        """Ids that end generation: the EOS token and any extra stop tokens."""
        ids = [self.token_to_id(t) for t in [self.eos_token, *self.extra_eos]]
        return list(dict.fromkeys(i for i in ids if i is not None))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # --- text <-> ids ---------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def special_ids(self) -> set[int]:
        return {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}


class StreamDecoder:
    """Turns a growing list of token ids into text pieces, never splitting a UTF-8 character.

    Decodes a window of recent ids and emits the new suffix once it no longer ends in an
    incomplete character (U+FFFD), so multi-byte characters split over byte-fallback tokens come
    out whole.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the decoding window
        self.read_offset = 0  # ids up to here have been emitted

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (may be empty)."""
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], self.skip)
        full = self.tokenizer.decode(self.ids[self.prefix_offset:], self.skip)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            piece = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return piece
        return ""

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character decodes as U+FFFD)."""
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], self.skip)
        full = self.tokenizer.decode(self.ids[self.prefix_offset:], self.skip)
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):]
