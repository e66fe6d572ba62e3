"""The Starlette application of ``edgevlm serve``: routes, the API key, limits, streaming.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``), ``GET /health``
(no key needed), ``GET /metrics``. A request body is read up to the size limit, checked and its
images decoded on a worker thread (never on the event loop), its prompt measured against the
context, and only then queued for a session. A streamed answer starts once the first token
exists, so every error that a request can cause comes back as a 4xx JSON body; what happens
later (a timeout) arrives as an error event in the stream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..errors import InputError
from ..sampling import SamplingParams
from ..sdk import Model
from .api_errors import (
    ApiError,
    bad_request,
    internal,
    invalid_api_key,
    method_not_allowed,
    model_not_found,
    not_found,
    timeout,
    too_large,
)
from .chat_request import ChatRequest, check_fits, parse_chat_request
from .config import ServeConfig
from .generation import Generation, Reply
from .metrics import Metrics
from .pool import SessionPool

log = logging.getLogger("edgevlm.serve")
CHAT_ROUTE = "/v1/chat/completions"


def _rss_bytes() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 0.0


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class Server:
    """The state behind the routes: the model, its session pool, the metrics."""

    def __init__(self, model: Model, config: ServeConfig):
        self.model = model
        self.config = config
        self.pool = SessionPool(model, config.sessions, config.queue, config.queue_timeout_s)
        self.metrics = Metrics(config.model_name, self._gauges)
        self.workers = ThreadPoolExecutor(max_workers=config.sessions, thread_name_prefix="edgevlm-generate")
        self.created = int(time.time())
        self.fingerprint = f"edgevlm-{__version__}-{model.backend}"

    def _gauges(self) -> dict[str, float]:
        return {"sessions": len(self.pool.sessions), "sessions_busy": self.pool.busy,
                "queue_depth": self.pool.waiting, "queue_depth_max": self.pool.max_waiting,
                "queue_limit": self.pool.queue_limit, "resident_memory_bytes": _rss_bytes()}

    def model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_name, "object": "model", "created": self.created, "owned_by": "edgevlm",
                "backend": self.model.backend, "max_context": self.model.max_context}

    # --- routes -------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.config.model_name, "backend": self.model.backend,
                             "sessions": len(self.pool.sessions), "busy": self.pool.busy,
                             "queued": self.pool.waiting})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model_info(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.config.model_name:
            raise model_not_found(name, self.config.model_name)
        return JSONResponse(self.model_card())

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def chat(self, request: Request) -> Response:
        arrived = time.monotonic()
        deadline = arrived + self.config.request_timeout_s
        body = await self._read_body(request)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad_request(f"the request body is not valid JSON: {e}", None, "invalid_json") from None
        loop = asyncio.get_running_loop()
        req, prompt = await loop.run_in_executor(None, self._prepare, data)
        max_tokens = check_fits(len(prompt), req.max_tokens, self.model.max_context)
        params = SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_k=req.top_k,
                                top_p=req.top_p, repetition_penalty=req.repetition_penalty, seed=req.seed,
                                ignore_eos=req.ignore_eos)
        try:
            session = await asyncio.wait_for(self.pool.acquire(prompt), max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise timeout(self.config.request_timeout_s) from None
        except ApiError as e:
            self.metrics.count("rejected_queue_full_total" if e.status == 429 else "rejected_queue_timeout_total")
            raise
        gen = Generation(self.pool, session, prompt, params, arrived, deadline)
        gen.start(self.workers)
        watcher = asyncio.create_task(self._watch_disconnect(request, gen))
        reply = Reply(req.stop)
        try:
            first = await self._next_text(gen, reply)
        except BaseException:
            watcher.cancel()
            if gen.cancel_reason == "timeout":
                self._finish(gen, reply)
            gen.stop("error")
            raise
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.config.model_name, "system_fingerprint": self.fingerprint}
        if req.stream:
            return StreamingResponse(self._events(gen, reply, req, first, meta, watcher),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while reply.finish_reason is None and not gen.cancel.is_set():
                await self._next_text(gen, reply)
        finally:
            watcher.cancel()
            if reply.finish_reason is None:  # cut short: timed out, client gone, or this task cancelled
                gen.stop("client disconnected")
            self._finish(gen, reply)
        return JSONResponse({**meta, "choices": [{
            "index": 0, "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason or "length", "logprobs": None}], "usage": self._usage(gen, reply)})

    # --- the pieces -----------------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        """The body, up to the limit. Past it: 413, after reading (and dropping) up to as much again, so
        that a client which sends its whole body before reading the answer gets to read the 413."""
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length", "")
        chunks, size = [], 0
        if length.isdigit() and int(length) > 2 * limit:
            raise too_large("the request body", limit)
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > 2 * limit:
                break
        if size > limit:
            raise too_large("the request body", limit)
        return b"".join(chunks)

    def _prepare(self, data: Any) -> tuple[ChatRequest, Any]:
        """On a worker thread: the request checked, its images decoded, its prompt built."""
        req = parse_chat_request(data, self.config)
        try:
            return req, self.pool.prompt(req.turns)
        except InputError as e:
            raise bad_request(str(e), "messages", "invalid_prompt") from None

    async def _next_text(self, gen: Generation, reply: Reply) -> str:
        """The reply's next piece of text ("" when it is held back or the generation ended)."""
        kind, record = await gen.next(self.config.request_timeout_s)
        if kind == "end":
            if reply.finish_reason is None and not reply.cut:
                reply.finish_reason = "length"  # stopped by cancel
            return ""
        if not reply.tokens:
            self.metrics.ttft.observe(time.monotonic() - gen.arrived)
        text = reply.push(record)
        if reply.cut:
            gen.stop("stop string")
        return text

    async def _watch_disconnect(self, request: Request, gen: Generation) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gen.stop("client disconnected")
                return

    async def _events(self, gen: Generation, reply: Reply, req: ChatRequest, first: str, meta: dict,
                      watcher: asyncio.Task):
        """Server-sent events in OpenAI's chunk format, then a usage chunk, then [DONE]."""
        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return "data: " + json.dumps({**meta, "object": "chat.completion.chunk", "choices": [choice], **extra},
                                         ensure_ascii=False) + "\n\n"

        try:
            yield chunk({"role": "assistant", "content": first})
            while reply.finish_reason is None and not gen.cancel.is_set():
                text = await self._next_text(gen, reply)
                if text:
                    yield chunk({"content": text})
            self._finish(gen, reply)
            yield chunk({}, reply.finish_reason or "length")
            if req.include_usage:
                yield "data: " + json.dumps({**meta, "object": "chat.completion.chunk", "choices": [],
                                             "usage": self._usage(gen, reply)}) + "\n\n"
            yield "data: [DONE]\n\n"
        except ApiError as e:  # after the stream started: an error event, as OpenAI's stream sends one
            yield "data: " + json.dumps(e.body()) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            if not gen.accounted:  # the client left mid-stream (the body iterator was closed)
                gen.stop("client disconnected")
                self._finish(gen, reply)

    def _finish(self, gen: Generation, reply: Reply) -> None:
        """Counts of a finished generation, and its ids remembered for the conversation's next turn."""
        if gen.accounted:
            return
        gen.accounted = True
        stats = reply.stats
        m = self.metrics
        m.count("prompt_tokens_total", len(gen.prompt))
        m.count("prompt_tokens_cached_total", gen.reused_tokens)
        m.count("prompt_tokens_prefilled_total", len(gen.prompt) - gen.reused_tokens)
        m.count("completion_tokens_total", len(reply.tokens))
        if stats.decode_tps > 0:
            m.decode_tps.observe(stats.decode_tps)
        if gen.cancel_reason and gen.cancel_reason != "stop string":
            m.count("generations_cancelled_total")
        elif not reply.cut and reply.tokens:
            ids = reply.tokens[:-1] if reply.tokens[-1] in self.model.eos_ids and not gen.params.ignore_eos \
                else reply.tokens
            self.pool.remember_reply(reply.text, ids)

    def _usage(self, gen: Generation, reply: Reply) -> dict[str, Any]:
        n_prompt, n_out = len(gen.prompt), len(reply.tokens)
        return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out,
                "prompt_tokens_details": {"cached_tokens": gen.reused_tokens}}


def create_app(model: Model, config: ServeConfig) -> Starlette:
    """The ASGI application serving ``model`` (see the module docstring)."""
    server = Server(model, config)

    def route(path: str, handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as e:
                response = error_response(e)
            except Exception as e:  # a bug: the traceback goes to the log, one line to the client
                log.exception("request to %s failed", path)
                response = error_response(internal(f"{type(e).__name__}: {e}"))
            server.metrics.request(path, response.status_code)
            return response

        return Route(path, endpoint, methods=[method])

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            e = method_not_allowed(request.method, request.url.path)
        elif exc.status_code == 404:
            e = not_found(request.url.path)
        else:
            e = ApiError(exc.status_code, str(exc.detail), "invalid_request_error")
        server.metrics.request("other", e.status)
        return error_response(e)

    app = Starlette(
        routes=[route("/health", server.health, "GET"), route("/v1/models", server.models, "GET"),
                route("/v1/models/{name:path}", server.model_info, "GET"), route(CHAT_ROUTE, server.chat, "POST"),
                route("/metrics", server.metrics_text, "GET")],
        exception_handlers={HTTPException: http_error},
    )
    app.state.server = server
    return app if config.api_key is None else ApiKeyGate(app, config.api_key)


class ApiKeyGate:
    """ASGI middleware: every route but /health needs 'Authorization: Bearer KEY'."""

    def __init__(self, app: Starlette, key: str):
        self.app = app
        self.state = app.state
        self._expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                self.state.server.metrics.request("unauthorized", 401)
                await error_response(invalid_api_key())(scope, receive, send)
                return
        await self.app(scope, receive, send)
