"""The server's counters, gauges and histograms, written in Prometheus' text exposition format (0.0.4)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence

TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Histogram:
    """Observations counted into cumulative buckets (upper bounds), with their sum and count."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, n in zip([*map(_num, self.bounds), "+Inf"], self.counts):
            total += n
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        return out + [f"{name}_sum {_num(self.sum)}", f"{name}_count {self.count}"]


def _num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Metrics:
    """What /metrics reports. Updated on the event loop's thread only."""

    def __init__(self, model: str, gauges: Callable[[], dict[str, float]]):
        self.model = model
        self.gauges = gauges  # sessions, busy sessions, queue depth, ... read when scraped
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status) -> count
        self.counters: Counter[str] = Counter()
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.decode_tps = Histogram(TPS_BUCKETS)

    def request(self, route: str, status: int) -> None:
        self.requests[(route, status)] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def text(self) -> str:
        lines = ["# HELP edgevlm_requests_total HTTP requests answered, by route and status code.",
                 "# TYPE edgevlm_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'edgevlm_requests_total{{route="{route}",code="{status}"}} {n}')
        for name, (kind, help_) in COUNTERS.items():
            lines += [f"# HELP edgevlm_{name} {help_}", f"# TYPE edgevlm_{name} {kind}",
                      f"edgevlm_{name} {self.counters.get(name, 0)}"]
        for name, value in self.gauges().items():
            lines += [f"# HELP edgevlm_{name} {GAUGES.get(name, name)}", f"# TYPE edgevlm_{name} gauge",
                      f"edgevlm_{name} {_num(value)}"]
        lines += ["# HELP edgevlm_ttft_seconds Time from a request's arrival to its first token (queue included).",
                  "# TYPE edgevlm_ttft_seconds histogram", *self.ttft.lines("edgevlm_ttft_seconds"),
                  "# HELP edgevlm_decode_tokens_per_second Decode speed of each generation (tokens after the first).",
                  "# TYPE edgevlm_decode_tokens_per_second histogram",
                  *self.decode_tps.lines("edgevlm_decode_tokens_per_second")]
        return "\n".join(lines) + "\n"


COUNTERS = {
    "prompt_tokens_total": ("counter", "Prompt tokens of answered requests (cached ones included)."),
    "prompt_tokens_cached_total": ("counter", "Prompt tokens found in a session's KV cache and not prefilled again."),
    "prompt_tokens_prefilled_total": ("counter", "Prompt tokens prefilled."),
    "completion_tokens_total": ("counter", "Tokens generated."),
    "generations_cancelled_total": ("counter", "Generations stopped early: client gone, or timed out."),
    "rejected_queue_full_total": ("counter", "Requests refused with 429 because the queue was full."),
    "rejected_queue_timeout_total": ("counter", "Requests refused with 503 after waiting too long for a session."),
}
GAUGES = {
    "sessions": "Sessions over the one loaded model.",
    "sessions_busy": "Sessions generating now.",
    "queue_depth": "Requests waiting for a session now.",
    "queue_depth_max": "The most requests that waited for a session at once since the start.",
    "queue_limit": "Requests that may wait for a session (more get 429).",
    "resident_memory_bytes": "The server process's resident memory.",
}
