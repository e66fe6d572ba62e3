"""Train a small byte-level BPE tokenizer (GPT-2 / SmolLM2 style) with the ``tokenizers`` library.

Used for the embedded models and for test checkpoints; the result is an ordinary
``tokenizer.json`` that Hugging Face and the C++ runtime read like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# SmolVLM's image tokens: tile markers up to a 6 x 6 split.
SMOLVLM_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>",
    "<fake_token_around_image>", "<image>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)


def train_bytelevel_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = ()) -> Tokenizer:
    """A byte-level BPE tokenizer trained on ``texts``; special tokens take the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
