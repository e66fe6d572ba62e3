"""Next-token sampling: greedy, temperature, top-k, top-p, repetition penalty, seeded.

The processing order is that of transformers' ``generate``: repetition penalty, temperature,
top-k, top-p, then a draw from the softmax. Temperature 0 means greedy (argmax, first index on ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off; applied to every token of prompt and output
    seed: int | None = None
    stop_token_ids: list[int] | None = None  # None = the tokenizer's EOS ids
    ignore_eos: bool = False  # keep going past stop tokens (benchmarks)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise InputError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Sampler:
    params: SamplingParams
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        if self.params.seed is not None:
            self.generator.manual_seed(self.params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor | np.ndarray, history: Sequence[int]) -> int:
        """One token id from logits ``[V]`` given the ids seen so far (prompt and output)."""
        p = self.params
        logits = torch.as_tensor(np.asarray(logits, dtype=np.float32) if isinstance(logits, np.ndarray) else logits)
        logits = logits.detach().float().reshape(-1).clone()
        if p.repetition_penalty != 1.0 and len(history):
            seen = torch.tensor(sorted(set(history)), dtype=torch.long)
            seen = seen[(seen >= 0) & (seen < logits.numel())]
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if p.greedy:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            # drop a token once the mass before it already reaches top_p; always keep the first
            drop = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p.top_p
            drop[0] = False
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
