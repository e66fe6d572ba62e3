"""N sessions over one loaded model, handed to requests one at a time, with a bounded queue.

A request takes the free session whose KV cache holds the longest prefix of its prompt (a
conversation's next turn finds the session that answered its last one); ties go to the session
idle longest, so recent conversations keep their caches. With no session free it waits in a
FIFO queue of at most ``queue`` requests (more: 429) for at most ``queue_timeout_s`` (then 503).
A session is never used by two requests at once. Sessions are handed out on the event loop's
thread; prompts are built on worker threads.

The pool also remembers the token ids of recent replies by their text, so that when a client
sends a reply back as an assistant message, the prompt holds the ids that were generated (and
that are in the cache) even where tokenizing the text again would split it differently.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence

from ..prompt import Prompt, Turn
from ..sdk import Model, Session
from .api_errors import queue_full, queue_timeout

REMEMBERED_REPLIES = 1024


class SessionPool:
    def __init__(self, model: Model, sessions: int, queue: int, queue_timeout_s: float):
        self.model = model
        self.sessions = [model.session() for _ in range(sessions)]
        self.queue_limit = queue
        self.queue_timeout_s = queue_timeout_s
        self._free: list[Session] = list(self.sessions)
        self._last_used = {id(s): 0 for s in self.sessions}
        self._clock = itertools.count(1)
        self._waiters: deque[asyncio.Future] = deque()
        self._replies: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._replies_lock = threading.Lock()  # prompts are built on worker threads
        self.max_waiting = 0  # the queue's high-water mark

    @property
    def busy(self) -> int:
        return len(self.sessions) - len(self._free)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # --- prompts ------------------------------------------------------------------------------
    def remember_reply(self, text: str, ids: Sequence[int]) -> None:
        """``ids`` were generated for the reply ``text`` (its stop token left out)."""
        with self._replies_lock:
            self._replies[text] = tuple(ids)
            self._replies.move_to_end(text)
            while len(self._replies) > REMEMBERED_REPLIES:
                self._replies.popitem(last=False)

    def prompt(self, turns: Sequence[Turn]) -> Prompt:
        """The conversation's prompt, assistant messages as the ids generated for them when remembered."""
        with self._replies_lock:
            known = [Turn(t.role, t.text, t.images, self._replies.get(t.text)) if t.role == "assistant" else t
                     for t in turns]
        return self.model.prompt(known)

    # --- sessions -----------------------------------------------------------------------------
    async def acquire(self, prompt: Prompt) -> Session:
        """A session for ``prompt``; ApiError 429 when the queue is full, 503 after waiting too long."""
        if self._free:
            session = max(self._free, key=lambda s: (s.reusable(prompt), -self._last_used[id(s)]))
            self._free.remove(session)
            return session
        if len(self._waiters) >= self.queue_limit:
            raise queue_full(self.busy, len(self._waiters))
        waiter: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.max_waiting = max(self.max_waiting, len(self._waiters))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as the wait ended: pass it on
            else:
                waiter.cancel()
            if isinstance(e, asyncio.TimeoutError):
                raise queue_timeout(self.queue_timeout_s) from None
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, session: Session) -> None:
        """Give ``session`` back: to the longest-waiting request, else to the free list."""
        self._last_used[id(session)] = next(self._clock)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return
        self._free.append(session)
