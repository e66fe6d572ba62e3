"""``edgevlm serve BUNDLE_OR_MODEL``: an OpenAI-compatible HTTP server over one loaded model.

``POST /v1/chat/completions`` (text and images, streaming), ``GET /v1/models``, ``GET /health``,
``GET /metrics``; a pool of ``--sessions`` sessions over the one model, a bounded queue, limits on
every request (docs/SERVE.md). It listens on loopback unless ``--host`` says otherwise. With
``--json`` the startup line is JSON (``{"event": "listening", "url": ...}``). The server's own log
(errors; with ``--log-level info`` or ``--verbose`` each request) goes to stderr; other libraries'
output to the command's log file, as for every command.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import logging
import os
import socket
from pathlib import Path

from .. import contract as C
from ..errors import InputError
from ..sdk import BACKENDS
from . import output
from .output import err_console

HELP = "Serve a model over an OpenAI-compatible HTTP API (chat completions with images, streaming)."
SERVER_PACKAGES = ("starlette", "uvicorn")
MB = 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a bundle (NAME.evlm); with --backend torch also a model directory or zoo name")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="compute backend (default: native for a bundle, torch for a model directory)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: any free one; the startup line names it)")
    p.add_argument("--sessions", type=int, default=1,
                   help="sessions over the one loaded model, each with its own KV cache: requests generating at "
                        "once (more than 1 needs the native backend)")
    p.add_argument("--queue", type=int, default=16, help="requests that may wait for a session; more get 429")
    p.add_argument("--queue-timeout", type=float, default=30.0, metavar="S",
                   help="seconds a request may wait for a session before it gets 503")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="wall-time limit of one request")
    p.add_argument("--api-key", default=os.environ.get("EDGEVLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: $EDGEVLM_API_KEY)")
    p.add_argument("--allow-local-files", action="store_true",
                   help="let image_url name an absolute file path on this machine (default: data: URLs only)")
    p.add_argument("--model-name", default=None, help="the model id clients name (default: the bundle's name)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body")
    p.add_argument("--max-image-mb", type=float, default=16.0, help="largest image file (encoded) in a request")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image, width x height")
    p.add_argument("--max-images", type=int, default=8, help="most images in one request")
    p.add_argument("--threads", type=int, default=None, help="compute threads (native, torch)")
    p.add_argument("--max-context", type=int, default=None, help="KV cache length per session (native: at most the bundle's)")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="warning",
                   help="server log level (info and debug also log each request; --verbose means info)")


def _model_name(path: str) -> str:
    name = Path(path).name or str(path)
    return name[: -len(".evlm")] if name.endswith(".evlm") else name


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        return sock
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _steady_heap() -> None:
    """Allocations of 64 KiB and more get their own mappings, returned to the system when freed.

    glibc raises this threshold as large blocks are freed, after which a server's per-request
    buffers (decoded images, tiles, features) are carved from the heap and fragment it: a busy
    server's memory then creeps up by tens of MB before it levels off. A fixed threshold keeps it
    flat (docs/SERVE.md). Other C libraries: nothing to do.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(args: argparse.Namespace) -> int:
    missing = [m for m in SERVER_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"the server needs {', '.join(missing)}: pip install 'edgevlm[serve]'")
    is_bundle = (Path(args.model) / C.MANIFEST_FILE).is_file()
    backend = args.backend or ("native" if is_bundle else "torch")
    if args.model.rstrip("/").endswith(".evlm") and not Path(args.model).exists():
        raise InputError(f"{args.model}: no such bundle")
    if backend != "torch" and not is_bundle:
        if not Path(args.model).exists():
            raise InputError(f"{args.model}: no such bundle")
        raise InputError(f"{args.model}: the {backend} backend runs bundles (edgevlm export); this is not one")
    if args.sessions > 1 and backend != "native":
        raise InputError(f"--sessions {args.sessions} needs the native backend: the {backend} backend keeps its KV "
                         f"cache inside the loaded model, so each session would load the model again")
    for flag, value, lo in (("--sessions", args.sessions, 1), ("--queue", args.queue, 0), ("--max-images", args.max_images, 0)):
        if value < lo:
            raise InputError(f"{flag} must be >= {lo}, got {value}")
    for flag, value in (("--timeout", args.timeout), ("--queue-timeout", args.queue_timeout),
                        ("--max-body-mb", args.max_body_mb), ("--max-image-mb", args.max_image_mb)):
        if not value > 0:
            raise InputError(f"{flag} must be > 0, got {value}")

    from ..sdk import open_model
    from ..serve import ServeConfig
    from ..serve.app import create_app

    config = ServeConfig(
        model_name=args.model_name or _model_name(args.model), sessions=args.sessions, queue=args.queue,
        queue_timeout_s=args.queue_timeout, request_timeout_s=args.timeout, api_key=args.api_key or None,
        allow_local_files=args.allow_local_files, max_body_bytes=int(args.max_body_mb * MB),
        max_image_bytes=int(args.max_image_mb * MB), max_image_pixels=args.max_image_pixels,
        max_images=args.max_images)
    sock = _listen(args.host, args.port)
    _steady_heap()
    with err_console.status(f"loading {args.model} ({backend}, {args.sessions} sessions)"):
        model = open_model(args.model, backend, threads=args.threads, max_context=args.max_context)
        app = create_app(model, config)
    return _run(app, sock, args, config, model)


def _server_logging(level: str) -> None:
    """The server's log (uvicorn's and edgevlm.serve's records) on the user's stderr, one line each."""
    handler = logging.StreamHandler(output.err())
    handler.setFormatter(logging.Formatter("edgevlm serve: %(levelname)s: %(message)s"))
    access = logging.StreamHandler(output.err())
    access.setFormatter(logging.Formatter("edgevlm serve: %(message)s"))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "edgevlm.serve"):
        logger = logging.getLogger(name)
        logger.handlers = [access if name == "uvicorn.access" else handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _run(app, sock: socket.socket, args: argparse.Namespace, config, model) -> int:
    import uvicorn

    level = "info" if args.verbose and args.log_level == "warning" else args.log_level
    _server_logging(level)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    if args.json:
        output.out().write(json.dumps({"event": "listening", "url": url, "model": config.model_name,
                                       "backend": model.backend, "sessions": config.sessions,
                                       "max_context": model.max_context, "api_key": config.api_key is not None}) + "\n")
        output.out().flush()
    else:
        err_console.print(f"serving [bold]{config.model_name}[/] ({model.backend}, {config.sessions} session"
                          f"{'s' if config.sessions > 1 else ''}, context {model.max_context}) at {url}/v1 "
                          f"- Ctrl-C stops", highlight=False)
    if not _is_loopback(host) and not config.api_key:
        err_console.print(f"[yellow]warning: listening on {host} without --api-key: anyone who reaches this "
                          f"machine can use the model[/]", highlight=False)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level=level, access_log=level in ("info", "debug"),
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0
