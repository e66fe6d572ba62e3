"""Reference generation, in three layers.

1. :func:`generate_step` runs an :class:`~edgevlm.engine.Engine` on prepared inputs: image
   encoding, chunked prefill, then one sampled token per decode step.
2. :func:`stream` takes a loaded model, a prompt and images, renders the chat template and yields
   one :class:`Response` record per token (text piece, token id, timings).
3. :func:`generate` collects a stream into a :class:`Result`.

The same stats (one JSON schema, :class:`GenerationStats`) come out of every backend.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .engine import (
    Engine,
    PrefillTimings,
    TorchEngine,
    merge_image_features,
    run_prefill,
)
from .errors import InputError
from .models import LoadedModel
from .processing.image import ImageLike
from .processing.processor import ModelInputs
from .processing.tokenizer import StreamDecoder, Tokenizer
from .sampling import Sampler, SamplingParams

STATS_SCHEMA_VERSION = 1


@dataclass
class GenerationStats:
    """Timings of one generation. Times in milliseconds; TTFT = preprocess + vision + prefill."""

    schema_version: int = STATS_SCHEMA_VERSION
    backend: str = "torch"
    prompt_tokens: int = 0
    image_tiles: int = 0
    preprocess_ms: float = 0.0
    vision_encode_ms: float = 0.0
    prefill_ms: float = 0.0
    prefill_chunks_ms: list[float] = field(default_factory=list)
    chunk_size: int = 0
    ttft_ms: float = 0.0
    generated_tokens: int = 0
    decode_ms: float = 0.0  # from the first token to the last
    peak_rss_mb: float = 0.0
    finish_reason: str = ""  # "stop" | "length" | "context"

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / (self.prefill_ms / 1e3) if self.prefill_ms > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        steps = self.generated_tokens - 1
        return steps / (self.decode_ms / 1e3) if steps > 0 and self.decode_ms > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prefill_tps"] = round(self.prefill_tps, 3)
        d["decode_tps"] = round(self.decode_tps, 3)
        return d


@dataclass
class Response:
    """One generated token."""

    text: str  # the text this token completes (may be empty mid-character)
    token: int
    stats: GenerationStats
    finish_reason: str | None = None  # set on the last record


@dataclass
class Result:
    text: str
    tokens: list[int]
    stats: GenerationStats


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def generate_step(
    engine: Engine,
    inputs: ModelInputs,
    params: SamplingParams,
    stop_ids: Sequence[int],
    stats: GenerationStats,
    start_pos: int = 0,
) -> Iterator[int]:
    """Yield generated token ids; ``stats`` is filled in as it goes (its finish_reason at the end)."""
    ids = np.asarray(inputs.input_ids, dtype=np.int64)
    if len(ids) == 0:
        raise InputError("empty prompt: give some text (or a model with a BOS token)")
    if start_pos + len(ids) > engine.max_context:
        raise InputError(
            f"prompt of {len(ids)} tokens is longer than the context of {engine.max_context - start_pos} tokens left"
        )
    t0 = time.perf_counter()
    features = None
    if inputs.pixel_values is not None:
        features = engine.encode_images(inputs.pixel_values)
        stats.image_tiles = int(inputs.pixel_values.shape[0])
    t1 = time.perf_counter()
    embeds = merge_image_features(engine.embed(ids), ids, getattr(engine, "image_token_id", None), features)
    timings = PrefillTimings()
    logits = run_prefill(engine, embeds, start_pos, timings)
    t2 = time.perf_counter()
    stats.vision_encode_ms = (t1 - t0) * 1e3
    stats.prefill_ms = (t2 - t1) * 1e3
    stats.prefill_chunks_ms = [round(t, 3) for t in timings.chunks_ms]
    stats.prompt_tokens = len(ids)
    stats.chunk_size = engine.chunk_size
    stats.ttft_ms = stats.preprocess_ms + stats.vision_encode_ms + stats.prefill_ms

    sampler = Sampler(params)
    history = list(ids)
    pos = start_pos + len(ids)
    stats.finish_reason = "length"
    t_first = None
    for i in range(params.max_new_tokens):
        token = sampler(logits, history)
        history.append(token)
        stats.generated_tokens = i + 1
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        stats.decode_ms = (now - t_first) * 1e3
        stats.peak_rss_mb = _peak_rss_mb()
        stop = token in stop_ids and not params.ignore_eos
        if stop:
            stats.finish_reason = "stop"
        elif i + 1 < params.max_new_tokens and pos >= engine.max_context:
            stats.finish_reason = "context"
            stop = True
        yield token
        if stop or i + 1 == params.max_new_tokens:
            return
        logits = engine.decode(engine.embed(np.asarray([token], dtype=np.int64)), np.asarray([pos], dtype=np.int64))
        pos += 1


def stream_inputs(
    engine: Engine, tokenizer: Tokenizer, inputs: ModelInputs, params: SamplingParams, stats: GenerationStats,
    start_pos: int = 0,
) -> Iterator[Response]:
    """Records of :func:`generate_step` with text pieces; special tokens are not printed."""
    stop_ids = params.stop_token_ids if params.stop_token_ids is not None else tokenizer.eos_ids
    decoder = StreamDecoder(tokenizer)
    last: Response | None = None
    for token in generate_step(engine, inputs, params, stop_ids, stats, start_pos):
        if last is not None:
            yield last
        piece = "" if token in stop_ids and not params.ignore_eos else decoder.push(token)
        last = Response(piece, token, stats)
    if last is not None:
        last.text += decoder.flush()
        last.finish_reason = stats.finish_reason
        yield last


def context_for(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int, chunk_size: int) -> int:
    """A static cache size that fits the prompt and the output, within the model's position limit."""
    limit = loaded.model.language_model.config.max_position_embeddings
    if prompt_tokens > limit:
        raise InputError(f"prompt of {prompt_tokens} tokens is longer than the model's context of {limit} tokens")
    need = prompt_tokens + max_new_tokens
    return max(min(limit, -(-need // chunk_size) * chunk_size), min(chunk_size, limit))


def stream(
    loaded: LoadedModel,
    prompt: str,
    images: Sequence[ImageLike] = (),
    params: SamplingParams | None = None,
    *,
    chat: bool = True,
    chunk_size: int = 64,
    max_context: int | None = None,
) -> Iterator[Response]:
    """Generate from a text prompt and images with the PyTorch reference, one record per token.

    With ``chat`` the prompt goes through the model's chat template as one user turn with the
    images in front; without it, ``prompt`` is used as-is and must hold one image placeholder
    (``<image>``) per image.
    """
    params = params or SamplingParams()
    stats = GenerationStats(backend="torch")
    t0 = time.perf_counter()
    proc = loaded.processor
    text = proc.chat_prompt(prompt, len(images)) if chat else prompt
    inputs = proc(text, images)
    stats.preprocess_ms = (time.perf_counter() - t0) * 1e3
    if max_context is None:
        max_context = context_for(loaded, len(inputs.input_ids), params.max_new_tokens, chunk_size)
    engine = TorchEngine(loaded.model, max_context, min(chunk_size, max_context))
    yield from stream_inputs(engine, proc.tokenizer, inputs, params, stats)


def generate(
    loaded: LoadedModel,
    prompt: str,
    images: Sequence[ImageLike] = (),
    params: SamplingParams | None = None,
    *,
    chat: bool = True,
    chunk_size: int = 64,
    max_context: int | None = None,
) -> Result:
    """The whole output of :func:`stream` at once."""
    pieces, tokens = [], []
    stats = GenerationStats()
    for r in stream(loaded, prompt, images, params, chat=chat, chunk_size=chunk_size, max_context=max_context):
        pieces.append(r.text)
        tokens.append(r.token)
        stats = r.stats
    return Result("".join(pieces), tokens, stats)
