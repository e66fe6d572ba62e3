"""The server's settings: where it listens, how many sessions, and the limits on each request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    model_name: str  # the id /v1/models lists and requests must name
    sessions: int = 1  # sessions over the one loaded model: requests generating at once
    queue: int = 16  # requests that may wait for a session; more get 429
    queue_timeout_s: float = 30.0  # a request waiting longer gets 503
    request_timeout_s: float = 300.0  # wall time of one request, queue included; past it: 408 (or an error event)
    api_key: str | None = None  # required as "Authorization: Bearer KEY" on every route but /health
    allow_local_files: bool = False  # image_url may name a file on the server's machine
    max_body_bytes: int = 32 * 1024 * 1024  # a larger request body gets 413
    max_image_bytes: int = 16 * 1024 * 1024  # one image's encoded (file) size
    max_image_pixels: int = 4096 * 4096  # one image's width x height
    max_images: int = 8  # images in one request

    def __post_init__(self) -> None:
        if self.sessions < 1:
            raise ValueError("sessions must be >= 1")
        if self.queue < 0:
            raise ValueError("queue must be >= 0")
