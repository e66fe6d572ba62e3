"""The Python-driven backends (onnxruntime, ExecuTorch, TVM) and the check that each matches the reference.

:class:`GraphEngine` implements :class:`edgevlm.engine.Engine` once on top of the four static
graphs of contract 2; a target only supplies ``run(method, *arrays) -> arrays``. It keeps the KV
cache tensors between calls, embeds ids in static chunks of C (zero-padded), and leaves the chunk
plan and sampling to :mod:`edgevlm.engine` and :mod:`edgevlm.generate`, shared by every backend.

:func:`verify` compares an engine with the PyTorch reference on prompts, teacher-forced: both
prefill the same prompt, then both decode the reference's greedy tokens; at every step the
engine's argmax must be the reference token (agreement) and the logits are compared (max abs
error). All of the first 16 agreeing is the same as free-running greedy decoding giving the
reference's first 16 tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgevlm import contract as C
from edgevlm.engine import Engine, merge_image_features, run_prefill
from edgevlm.processing.processor import ModelInputs


class GraphEngine:
    """An :class:`~edgevlm.engine.Engine` over static graphs with an explicit KV cache."""

    def __init__(self, manifest: dict):
        text = manifest[C.KEY_TEXT_CONFIG]
        self.chunk_size = int(manifest[C.KEY_CHUNK_SIZE])
        self.max_context = int(manifest[C.KEY_MAX_CONTEXT])
        pre = manifest.get(C.KEY_IMAGE_PREPROCESSING) or {}
        self.tokens_per_tile = int(pre.get(C.IMAGE_TOKENS_PER_TILE, 0))
        self.image_token_id = manifest[C.KEY_SPECIAL_TOKENS].get(C.TOKEN_IMAGE)
        self.vocab_size = int(text["vocab_size"])
        self.has_vision = bool(pre)
        self.cache_shape = (int(text["num_hidden_layers"]), int(text["num_key_value_heads"]), self.max_context,
                            int(text["head_dim"]))
        self.reset()

    def run(self, method: str, *arrays: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def reset(self) -> None:
        self.k = np.zeros(self.cache_shape, np.float32)
        self.v = np.zeros(self.cache_shape, np.float32)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = np.where((ids >= 0) & (ids < self.vocab_size), ids, 0)  # image slots get features later
        c = self.chunk_size
        out = []
        for i in range(0, len(ids), c):
            part = ids[i:i + c]
            padded = np.zeros((1, c), np.int64)
            padded[0, :len(part)] = part
            out.append(self.run(C.METHOD_TOKEN_EMBEDDING, padded)[0][:, :len(part)])
        return np.concatenate(out, axis=1).astype(np.float32)

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        tiles = [self.run(C.METHOD_VISION_ENCODER, pixel_values[i:i + 1].astype(np.float32))[0] for i in range(len(pixel_values))]
        return np.concatenate(tiles).astype(np.float32)

    def _step(self, method: str, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        logits, self.k, self.v = self.run(method, embeds.astype(np.float32), positions.astype(np.int64), self.k, self.v)
        return logits[0].astype(np.float32)

    def prefill(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self._step(C.METHOD_PREFILL, embeds, positions)

    def decode(self, embeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self._step(C.METHOD_DECODE, embeds, positions)

    def score(self, embeds: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        logprobs, self.k, self.v = self.run(C.METHOD_SCORE, embeds.astype(np.float32), positions.astype(np.int64),
                                            self.k, self.v, targets.astype(np.int64))
        return logprobs.astype(np.float32)


@dataclass
class PromptCheck:
    prompt: str
    images: int
    reference_tokens: list[int]
    agreement: float  # teacher-forced argmax agreement over the generated tokens
    first_mismatch: int | None  # index of the first disagreeing token, None if none
    max_abs_logit_error: float
    seconds: float
    # [step, margin] of every disagreeing step: how far the reference's own logit of the engine's
    # choice is below its logit of the reference token (a near-tie when tiny)
    mismatches: list = field(default_factory=list)


@dataclass
class Verification:
    prompts: list[PromptCheck] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return float(np.mean([p.agreement for p in self.prompts])) if self.prompts else 0.0

    @property
    def first16_identical(self) -> bool:
        return all(p.first_mismatch is None or p.first_mismatch >= 16 for p in self.prompts)

    @property
    def max_abs_logit_error(self) -> float:
        return max((p.max_abs_logit_error for p in self.prompts), default=0.0)

    @property
    def first16_max_tie_margin(self) -> float:
        """The largest reference margin among disagreements in the first 16 tokens (0 if none): a
        disagreement whose margin is below twice a target's kernel tolerance is a near-tie that
        tolerance can flip, not a different model."""
        return max((m for p in self.prompts for step, m in p.mismatches if step < 16), default=0.0)

    def to_dict(self) -> dict:
        return {"agreement": self.agreement, "first16_identical": self.first16_identical,
                "first16_max_tie_margin": self.first16_max_tie_margin,
                "max_abs_logit_error": self.max_abs_logit_error, "prompts": [asdict(p) for p in self.prompts]}


def _prompt_logits(engine: Engine, inputs: ModelInputs) -> np.ndarray:
    ids = np.asarray(inputs.input_ids, dtype=np.int64)
    features = engine.encode_images(inputs.pixel_values) if inputs.pixel_values is not None else None
    embeds = merge_image_features(engine.embed(ids), ids, getattr(engine, "image_token_id", None), features)
    return run_prefill(engine, embeds, 0)


def reference_run(engine: Engine, inputs: ModelInputs, n_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens of the reference and its logits at every step (no stop tokens)."""
    engine.reset()
    logits = _prompt_logits(engine, inputs)
    tokens, all_logits = [], [logits]
    pos = len(inputs.input_ids)
    for i in range(n_tokens):
        tok = int(np.argmax(logits))
        tokens.append(tok)
        if i + 1 == n_tokens or pos >= engine.max_context:
            break
        logits = engine.decode(engine.embed(np.asarray([tok])), np.asarray([pos]))
        all_logits.append(logits)
        pos += 1
    return tokens, all_logits


def check_prompt(engine: Engine, label: str, inputs: ModelInputs, ref_tokens: list[int], ref_logits: list[np.ndarray]) -> PromptCheck:
    t0 = time.perf_counter()
    engine.reset()
    logits = _prompt_logits(engine, inputs)
    pos = len(inputs.input_ids)
    agree, first, err, mismatches = 0, None, 0.0, []
    for i, tok in enumerate(ref_tokens):
        err = max(err, float(np.abs(logits - ref_logits[i]).max()))
        got = int(np.argmax(logits))
        if got == tok:
            agree += 1
        else:
            first = i if first is None else first
            mismatches.append([i, float(ref_logits[i][tok] - ref_logits[i][got])])
        if i + 1 == len(ref_tokens):
            break
        logits = engine.decode(engine.embed(np.asarray([tok])), np.asarray([pos]))
        pos += 1
    return PromptCheck(label, 0 if inputs.pixel_values is None else 1, ref_tokens, agree / len(ref_tokens), first, err,
                       round(time.perf_counter() - t0, 3), mismatches)
