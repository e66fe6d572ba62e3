"""Quality measurements: perplexity on real text, and task accuracy of the shapes VLM.

Perplexity: text files hold documents separated by lines reading ``<|endoftext|>`` (TinyStories' layout; a file
without separators is one document). Each document is stripped, tokenized with the model's
tokenizer (BOS in front when the tokenizer adds one) and cut to the model's context; the loss is
the mean next-token cross-entropy over every predicted token of every document.

VQA: held-out questions of the procedural shapes dataset (:mod:`edgevlm.zoo.shapes_data`), asked
one per chat turn through the chat template and answered greedily with the reference generator
(chunked prefill, static KV cache); a prediction counts when it equals the answer after
:func:`~edgevlm.zoo.shapes_data.normalize_answer`.

Both also run on what a bundle ships, through any SDK backend (:func:`session_perplexity`,
:func:`session_vqa_accuracy`): the same documents, questions and protocol, scored by the backend's
own teacher-forced ``score`` call and answered by its own generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .engine import TorchEngine
from .errors import InputError
from .generate import GenerationStats, generate_step
from .models import LoadedModel
from .models.base import Model
from .models.cache import remove_kv_cache, use_static_kv_cache
from .processing.processor import Processor
from .sampling import SamplingParams

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


def perplexity_of(tokenize: Callable[[str], Sequence[int]], score: Callable[[Sequence[int]], np.ndarray], path: Path,
                  max_tokens: int) -> PerplexityResult:
    """Mean next-token loss over the documents of a text file, given a tokenizer and a scorer
    (``score(ids)[i] = log p(ids[i + 1] | ids[..i])``); each document is cut to ``max_tokens``."""
    total, count, docs = 0.0, 0, 0
    for doc in read_documents(path):
        ids = list(tokenize(doc))[:max_tokens]
        if len(ids) < 2:
            continue
        total -= float(np.sum(np.asarray(score(ids), dtype=np.float64)))
        count += len(ids) - 1
        docs += 1
    if count == 0:
        raise InputError(f"{path}: no document has two or more tokens")
    loss = total / count
    return PerplexityResult(loss, math.exp(loss), count, docs, max_tokens)


@torch.inference_mode()
def perplexity(loaded: LoadedModel, path: Path, max_tokens: int | None = None) -> PerplexityResult:
    """Perplexity of ``loaded`` (eager, fp32 logits of the whole document at once)."""
    model = loaded.model

    def score(ids: Sequence[int]) -> np.ndarray:
        ids_t = torch.tensor([list(ids)])
        logits = all_logits(model, ids_t)[0, :-1].float()
        return -F.cross_entropy(logits, ids_t[0, 1:], reduction="none").double().numpy()

    max_tokens = max_tokens or model.language_model.config.max_position_embeddings
    return perplexity_of(loaded.processor.tokenizer.encode, score, path, max_tokens)


def session_perplexity(session, path: Path, max_tokens: int | None = None) -> PerplexityResult:
    """Perplexity on any SDK backend (:meth:`edgevlm.sdk.Session.score`): what a bundle computes."""
    limit = session.max_context
    if max_tokens is not None and max_tokens > limit:
        raise InputError(f"--max-tokens {max_tokens} exceeds the context of {limit} tokens")
    return perplexity_of(session.tokenize, session.score, path, max_tokens or limit)


def all_logits(model: Model, ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[1, T, V]`` of every position; through a static KV cache when the model quantizes its cache."""
    if getattr(model, "kv_cache_quant", "float") == "float":
        return model(ids, pixel_values)
    features = model.encode_images(pixel_values) if pixel_values is not None else None
    use_static_kv_cache(model, ids.shape[1])
    try:
        return model.language_model(model.embed(ids, features), torch.arange(ids.shape[1]))
    finally:
        remove_kv_cache(model)


@dataclass
class VQAResult:
    n: int
    accuracy: float
    by_type: dict[str, float]
    counts: dict[str, int]
    mistakes: list[dict] = field(default_factory=list)  # the first few wrong answers

    def to_dict(self) -> dict:
        return asdict(self)


def tally_vqa(answer: Callable[[str, np.ndarray], str], n: int = 500, start: int = 0,
              on_item: Callable[[], None] | None = None) -> VQAResult:
    """Exact-match accuracy of ``answer(question, picture)`` on ``n`` held-out shapes questions."""
    from .zoo import shapes_data

    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    right: dict[str, int] = {t: 0 for t in shapes_data.QUESTION_TYPES}
    seen: dict[str, int] = {t: 0 for t in shapes_data.QUESTION_TYPES}
    mistakes = []
    for scene, qa in shapes_data.heldout(n, start):
        prediction = answer(qa.question, shapes_data.render(scene))
        ok = shapes_data.normalize_answer(prediction) == shapes_data.normalize_answer(qa.answer)
        seen[qa.kind] += 1
        right[qa.kind] += ok
        if not ok and len(mistakes) < 20:
            mistakes.append({"seed": scene.seed, "question": qa.question, "answer": qa.answer, "prediction": prediction.strip()})
        if on_item is not None:
            on_item()
    total = sum(seen.values())
    by_type = {t: right[t] / seen[t] for t in seen if seen[t]}
    return VQAResult(total, sum(right.values()) / total, by_type, {t: c for t, c in seen.items() if c}, mistakes)


@torch.inference_mode()
def vqa_accuracy(model: Model, processor: Processor, n: int = 500, start: int = 0, chunk_size: int = 64,
                 max_new_tokens: int = 48, on_item: Callable[[], None] | None = None) -> VQAResult:
    """Exact-match accuracy, overall and per question type, on ``n`` held-out shapes questions."""
    if not processor.supports_images:
        raise InputError("VQA needs a vision-language model; this one is text-only")
    engine = TorchEngine(model, 512, chunk_size)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    stop = processor.tokenizer.eos_ids

    def answer(question: str, picture: np.ndarray) -> str:
        inputs = processor(processor.chat_prompt(question, 1), [picture])
        tokens = [t for t in generate_step(engine, inputs, params, stop, GenerationStats()) if t not in stop]
        return processor.tokenizer.decode(tokens, skip_special_tokens=True)

    try:
        return tally_vqa(answer, n, start, on_item)
    finally:
        remove_kv_cache(model)


def session_vqa_accuracy(session, n: int = 500, start: int = 0, max_new_tokens: int = 48,
                         on_item: Callable[[], None] | None = None) -> VQAResult:
    """VQA accuracy on any SDK backend: each question a fresh one-turn chat with the picture, greedy."""
    return tally_vqa(lambda q, picture: session.generate(q, [picture], max_new_tokens=max_new_tokens).text,
                     n, start, on_item)
