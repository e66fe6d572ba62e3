"""Quality measurements: perplexity on real text.

Text files hold documents separated by lines reading ``<|endoftext|>`` (TinyStories' layout; a file
without separators is one document). Each document is stripped, tokenized with the model's
tokenizer (BOS in front when the tokenizer adds one) and cut to the model's context; the loss is
the mean next-token cross-entropy over every predicted token of every document.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import InputError
from .models import LoadedModel

DOCUMENT_SEPARATOR = "<|endoftext|>"


@dataclass
class PerplexityResult:
    loss: float  # nats per predicted token
    perplexity: float
    tokens: int  # predicted tokens
    documents: int
    max_tokens: int  # per document, BOS included

    def to_dict(self) -> dict:
        return asdict(self)


def read_documents(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: text file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from e
    docs = [d.strip() for d in text.split(DOCUMENT_SEPARATOR)]
    docs = [d for d in docs if d]
    if not docs:
        raise InputError(f"{path}: no text")
    return docs


@torch.inference_mode()
def perplexity(loaded: LoadedModel, path: Path, max_tokens: int | None = None) -> PerplexityResult:
    """Mean next-token loss of ``loaded`` on the documents of a text file (eager, fp32 logits)."""
    model = loaded.model
    max_tokens = max_tokens or model.language_model.config.max_position_embeddings
    total, count, docs = 0.0, 0, 0
    for doc in read_documents(path):
        ids = loaded.processor.tokenizer.encode(doc)[:max_tokens]
        if len(ids) < 2:
            continue
        ids_t = torch.tensor([ids])
        logits = model(ids_t)[0, :-1].float()
        total += F.cross_entropy(logits, ids_t[0, 1:], reduction="sum").item()
        count += len(ids) - 1
        docs += 1
    if count == 0:
        raise InputError(f"{path}: no document has two or more tokens")
    loss = total / count
    return PerplexityResult(loss, math.exp(loss), count, docs, max_tokens)
