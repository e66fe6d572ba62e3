"""The benchmark's result schema: one :class:`ResultRow` per (backend, prompt length, chunk size).

Every runtime measured by ``edgevlm bench`` -- the bundle's own backends (native, onnxruntime,
executorch, tvm), a phone over adb, and the peer runtimes of ``--compare`` (``llama.cpp``,
``onnxruntime-genai``, written by :mod:`edgevlm.bench.peers`) -- reports rows of this shape, so
the table, ``results.json``, ``results.csv`` and the plots treat them alike.

A row as a dict (``ResultRow.to_dict()``; ``ResultRow.from_dict`` reads one back)::

    {
      "backend": "native",            # native | onnxruntime | executorch | tvm | llama.cpp | onnxruntime-genai
      "skipped": null,                # a reason (str) when the backend could not run; numbers are then 0
      "runtime": "edgevlm-native 0.1.0",  # the runtime and its version
      "device": "host",               # "host" or "adb:SERIAL"
      "threads": 2,
      "requested_prompt_tokens": 128, # what --prompt-tokens asked for
      "prompt_tokens": 128,           # what the runtime saw (template and image tokens included)
      "decode_depth": 128,            # KV rows cached when decoding starts (= prompt_tokens)
      "gen_tokens": 64,               # tokens generated per run (EOS ignored); decode_tps covers gen_tokens - 1 steps
      "chunk_size": 64,               # prefill chunk in tokens (0: unknown / not chunked)
      "chunk_source": "bundle",       # "bundle" (exported), "load" (set at load time: the native sweep), "runtime"
      "image": false,                 # an image was part of the prompt
      "image_tiles": 0,
      "load_ms": 35.2,                # opening the model (one load per process)
      "preprocess_ms":    {"median": .., "min": .., "max": .., "n": 5},  # image decode/resize + template + tokenize
      "vision_encode_ms": {...},      # vision tower + projector (0 without an image)
      "prefill_ms":       {...},      # all prompt chunks
      "prefill_tps":      {...},      # prompt_tokens / prefill seconds, per run
      "prefill_chunk_ms": {...},      # one chunk, over every chunk of every run
      "ttft_ms":          {...},      # preprocess + vision encode + prefill (+ sampling the first token)
      "decode_tps":       {...},      # (gen_tokens - 1) / decode seconds, at decode_depth
      "peak_rss_mb": 310.5,           # peak resident memory of the process that ran this backend alone
      "baseline_rss_mb": 95.0,        # resident memory of that process before the model was loaded (0: unknown)
      "model_bytes": 2345678,         # bytes of this backend's files (in the bundle, or the peer's model file)
      "decode_bytes_per_token": 1234567,  # decoder weights as stored for this backend + KV cache read at decode_depth
      "decode_bandwidth_gbs": 3.1,    # decode_bytes_per_token x median decode_tps / 1e9
      "bandwidth_fraction": 0.21      # decode_bandwidth_gbs / the machine's measured memory bandwidth (0: unknown)
    }

Summaries (:class:`Summary`) are the median, min and max over the ``--repeat`` runs that follow a
warm-up; ``n`` is how many values went into them. All times are milliseconds, sizes bytes or MiB
as named. A skipped row keeps ``backend``, ``requested_prompt_tokens`` and ``skipped`` and leaves
every number zero.

The whole ``results.json`` document (:data:`SCHEMA_VERSION`)::

    {
      "schema_version": 1,
      "tool": "edgevlm bench",
      "edgevlm_version": "0.1.0",
      "created": "2025-01-01T12:00:00+00:00",
      "bundle": "/path/shapes.evlm", "bundle_name": "shapes",
      "model": {"family": "...", "chunk_size": 32, "max_context": 256, "targets": [...], "quant_recipe": "..."},
      "settings": {"backends": [...], "prompt_tokens": [...], "gen": 64, "threads": 2, "repeat": 5,
                   "warmup": 1, "image": "path or null", "chunk_sizes": [...], "device": "host"},
      "machine": {"platform": "...", "cpu": "...", "cores": 2, "memory_bandwidth_gbs": 12.3,
                  "bandwidth_probe": {...}},
      "compare": {"requested": false, "available": false, "reason": "..."},
      "sizes": {"native": {"model_bytes": .., "decoder_bytes": .., "decoder_bytes_method": "...", "files": [...]}},
      "results": [ResultRow, ...],        # one per (backend, prompt length), skipped backends included
      "chunk_sweep": [ResultRow, ...],    # native at other chunk sizes (chunk_source "load"), prefill only
      "compare_results": [ResultRow, ...] # --compare only
    }

``--compare`` calls ``edgevlm.bench.peers.run_peers(model: Path, prompt_tokens: list[int], gen: int,
threads: int, repeat: int, progress) -> list[dict]``: one dict per (peer, prompt length), each a
``ResultRow.to_dict()`` (``backend`` = ``"llama.cpp"`` or ``"onnxruntime-genai"``; a missing peer
gives one row with ``skipped`` set to the reason). ``progress(message: str)`` may be called with a
short status line at each step; ``edgevlm bench`` shows it on stderr. The caller fills the
bandwidth fields (:meth:`ResultRow.with_bandwidth`) when ``decode_bytes_per_token`` is set.

``results.csv`` holds the same rows flattened (:func:`flatten`): ``prefill_ms_median``,
``prefill_ms_min``, ``prefill_ms_max``, ... one column per summary field.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields

SCHEMA_VERSION = 1

BACKENDS = ("native", "onnxruntime", "executorch", "tvm")  # the bundle's own backends
PEERS = ("llama.cpp", "onnxruntime-genai")  # --compare


@dataclass
class Summary:
    """Median, min and max of repeated measurements."""

    median: float = 0.0
    min: float = 0.0
    max: float = 0.0
    n: int = 0

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        v = sorted(float(x) for x in values)
        if not v:
            return cls()
        return cls(round(statistics.median(v), 4), round(v[0], 4), round(v[-1], 4), len(v))

    @classmethod
    def from_dict(cls, d: dict | float | None) -> Summary:
        if d is None:
            return cls()
        if isinstance(d, (int, float)):
            return cls(float(d), float(d), float(d), 1)
        return cls(float(d.get("median", 0.0)), float(d.get("min", 0.0)), float(d.get("max", 0.0)), int(d.get("n", 0)))


SUMMARY_FIELDS = ("preprocess_ms", "vision_encode_ms", "prefill_ms", "prefill_tps", "prefill_chunk_ms", "ttft_ms",
                  "decode_tps")


@dataclass
class ResultRow:
    """One measured (or skipped) configuration; the module docstring documents each field."""

    backend: str
    requested_prompt_tokens: int = 0
    skipped: str | None = None
    runtime: str = ""
    device: str = "host"
    threads: int = 0
    prompt_tokens: int = 0
    decode_depth: int = 0
    gen_tokens: int = 0
    chunk_size: int = 0
    chunk_source: str = ""
    image: bool = False
    image_tiles: int = 0
    load_ms: float = 0.0
    preprocess_ms: Summary = field(default_factory=Summary)
    vision_encode_ms: Summary = field(default_factory=Summary)
    prefill_ms: Summary = field(default_factory=Summary)
    prefill_tps: Summary = field(default_factory=Summary)
    prefill_chunk_ms: Summary = field(default_factory=Summary)
    ttft_ms: Summary = field(default_factory=Summary)
    decode_tps: Summary = field(default_factory=Summary)
    peak_rss_mb: float = 0.0
    baseline_rss_mb: float = 0.0
    model_bytes: int = 0
    decode_bytes_per_token: int = 0
    decode_bandwidth_gbs: float = 0.0
    bandwidth_fraction: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ResultRow:
        """A row from its dict; unknown keys are ignored, summaries may be dicts or plain numbers."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for name in SUMMARY_FIELDS:
            if name in kwargs and not isinstance(kwargs[name], Summary):
                kwargs[name] = Summary.from_dict(kwargs[name])
        return cls(**kwargs)

    def with_bandwidth(self, machine_gbs: float) -> ResultRow:
        """Fill ``decode_bandwidth_gbs`` and ``bandwidth_fraction`` from the bytes per token and tok/s."""
        self.decode_bandwidth_gbs = round(self.decode_bytes_per_token * self.decode_tps.median / 1e9, 6)
        self.bandwidth_fraction = round(self.decode_bandwidth_gbs / machine_gbs, 6) if machine_gbs > 0 else 0.0
        return self


def skipped_row(backend: str, reason: str, requested_prompt_tokens: int = 0, device: str = "host",
                threads: int = 0) -> ResultRow:
    return ResultRow(backend=backend, requested_prompt_tokens=requested_prompt_tokens, skipped=reason, device=device,
                     threads=threads)


def flatten(row: ResultRow | dict) -> dict:
    """One CSV record: summaries become ``NAME_median``, ``NAME_min``, ``NAME_max`` (``n`` is dropped)."""
    d = row.to_dict() if isinstance(row, ResultRow) else ResultRow.from_dict(row).to_dict()
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for stat in ("median", "min", "max"):
                out[f"{k}_{stat}"] = v[stat]
        else:
            out[k] = "" if v is None else v
    return out


def csv_columns() -> list[str]:
    return list(flatten(ResultRow(backend="")).keys())


__all__ = ["BACKENDS", "PEERS", "SCHEMA_VERSION", "SUMMARY_FIELDS", "ResultRow", "Summary", "csv_columns", "flatten",
           "skipped_row"]
