"""One request's generation: the session's blocking stream on a worker thread, records handed to the event loop.

The worker iterates :meth:`~edgevlm.sdk.Session.stream_prompt` and stops at the next token once
``cancel`` is set (client gone, timeout, a stop string seen); closing the stream cancels the
runtime's generation where it stands. The session goes back to the pool when the worker has
finished, never earlier. :class:`Reply` assembles the text, cutting it at the request's stop strings.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from ..errors import InputError
from ..generate import GenerationStats, Response
from ..prompt import Prompt
from ..sampling import SamplingParams
from ..sdk import Session
from .api_errors import bad_request, internal, timeout
from .pool import SessionPool

log = logging.getLogger("edgevlm.serve")


class Generation:
    def __init__(self, pool: SessionPool, session: Session, prompt: Prompt, params: SamplingParams, arrived: float,
                 deadline: float):
        self.pool = pool
        self.session = session
        self.prompt = prompt
        self.params = params
        self.arrived = arrived  # time.monotonic() of the request's arrival
        self.deadline = deadline  # ... and when it times out
        self.cancel = threading.Event()
        self.cancel_reason = ""
        self.reused_tokens = 0
        self.accounted = False  # its counts are in the metrics
        self._queue: asyncio.Queue = asyncio.Queue()
        self.finished: asyncio.Future | None = None

    def start(self, executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.run_in_executor(executor, self._work, loop)
        self.finished.add_done_callback(lambda _: self.pool.release(self.session))

    def stop(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.cancel_reason = reason
            self.cancel.set()

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        def put(kind: str, item) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, (kind, item))

        records = None
        try:
            records = self.session.stream_prompt(self.prompt, self.params)
            self.reused_tokens = self.session.reused_tokens
            for r in records:
                put("token", r)
                if self.cancel.is_set():
                    break
        except InputError as e:
            put("error", bad_request(str(e), "messages", "invalid_prompt"))
        except BaseException as e:  # a bug: logged with its traceback, the client gets one line
            log.exception("generation failed")
            put("error", internal(f"{type(e).__name__}: {e}"))
        finally:
            if records is not None:
                records.close()
            put("end", None)

    async def next(self, timeout_s: float) -> tuple[str, Response | None]:
        """The next ("token", record) or ("end", None); raises the worker's ApiError, or 408 past the deadline."""
        left = self.deadline - time.monotonic()
        try:
            kind, item = await asyncio.wait_for(self._queue.get(), max(left, 0.0))
        except asyncio.TimeoutError:
            self.stop("timeout")
            raise timeout(timeout_s) from None
        if kind == "error":
            raise item
        return kind, item


@dataclass
class Reply:
    """The reply's text so far, held back where it may be the start of a stop string."""

    stops: list[str]
    text: str = ""  # emitted
    tokens: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    finish_reason: str | None = None  # OpenAI's: "stop" | "length"
    cut: bool = False  # a stop string ended it
    _held: str = ""

    def push(self, record: Response) -> str:
        """The text that ``record`` adds to the reply (none once a stop string was seen)."""
        if self.cut:
            return ""
        self.tokens.append(record.token)
        self.stats = record.stats
        if record.finish_reason is not None:
            self.finish_reason = "stop" if record.finish_reason == "stop" else "length"
        pending = self._held + record.text
        hits = [(pending.find(s), s) for s in self.stops if s in pending]
        if hits:
            self.cut, self.finish_reason, self._held = True, "stop", ""
            emit = pending[:min(hits)[0]]
        else:
            keep = max((k for s in self.stops for k in range(len(s) - 1, 0, -1) if pending.endswith(s[:k])), default=0)
            if record.finish_reason is not None:
                keep = 0
            emit, self._held = pending[:len(pending) - keep], pending[len(pending) - keep:]
        self.text += emit
        return emit

