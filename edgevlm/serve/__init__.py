"""``edgevlm serve``: an OpenAI-compatible HTTP server over one loaded model (docs/SERVE.md).

- :mod:`.config`: the server's settings and limits;
- :mod:`.api_errors`: OpenAI's error JSON and the status code of each error;
- :mod:`.images`: ``image_url`` parts (``data:`` URLs, local files when allowed) to RGB arrays, within limits;
- :mod:`.chat_request`: a ``/v1/chat/completions`` body checked and turned into a conversation;
- :mod:`.pool`: N sessions over one model, a bounded queue, the session whose cache fits best;
- :mod:`.metrics`: counters and histograms in Prometheus' text format;
- :mod:`.app`: the Starlette application (routes, streaming, cancellation, timeouts).

Starlette and uvicorn come with the ``serve`` extra (``pip install 'edgevlm[serve]'``).
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
