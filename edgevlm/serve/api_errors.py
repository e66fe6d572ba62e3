"""Errors a request gets, as OpenAI sends them: ``{"error": {"message", "type", "param", "code"}}``.

Each has its HTTP status; docs/SERVE.md lists them. Bad requests are 4xx; a bug is a 500 whose
body says so in one line (the traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error response: status, message, OpenAI error type, the parameter at fault, a code."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def invalid_api_key() -> ApiError:
    return ApiError(401, "invalid or missing API key: send it as 'Authorization: Bearer KEY'", "authentication_error",
                    "invalid_api_key")


def model_not_found(name: str, served: str) -> ApiError:
    return ApiError(404, f"the model {name!r} does not exist; this server serves {served!r}", "invalid_request_error",
                    "model_not_found", "model")


def not_found(path: str) -> ApiError:
    return ApiError(404, f"no route {path}; see GET /v1/models, POST /v1/chat/completions, GET /health, GET /metrics",
                    "invalid_request_error", "not_found")


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, f"{method} is not allowed on {path}", "invalid_request_error", "method_not_allowed")


def timeout(seconds: float) -> ApiError:
    return ApiError(408, f"the request took longer than the server's limit of {seconds:g} s", "timeout_error", "timeout")


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} is larger than the server's limit of {limit} bytes", "invalid_request_error",
                    "request_too_large")


def queue_full(running: int, waiting: int) -> ApiError:
    return ApiError(429, f"the server is busy: {running} requests generating and {waiting} waiting (the queue's "
                         f"limit); retry later", "rate_limit_error", "queue_full", headers={"Retry-After": "1"})


def queue_timeout(seconds: float) -> ApiError:
    return ApiError(503, f"no session became free within {seconds:g} s; retry later", "server_error", "queue_timeout",
                    headers={"Retry-After": "1"})


def internal(message: str) -> ApiError:
    return ApiError(500, f"internal error: {message} (a bug: the server's log has the details)", "server_error",
                    "internal_error")
