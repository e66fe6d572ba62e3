"""A ``POST /v1/chat/completions`` body, checked field by field and turned into a conversation.

Messages become :class:`~edgevlm.prompt.Turn` s: ``system`` / ``developer`` texts go before the
first user message's text (the bundles' chat formats have no system role), consecutive messages of
one role are joined, a user message's pictures come before its text (the layout every supported
chat template uses). Sampling fields are OpenAI's; ``top_k``, ``repetition_penalty`` and
``ignore_eos`` are accepted as extensions (``extra_body`` in the ``openai`` client).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..prompt import Turn
from .api_errors import ApiError, bad_request, model_not_found
from .config import ServeConfig
from .images import decode_image

ROLES = ("system", "developer", "user", "assistant")
UNSUPPORTED = {  # field -> the value(s) this server takes
    "tools": "no tools", "tool_choice": "no tools", "functions": "no functions", "function_call": "no functions",
    "audio": "no audio", "prediction": "no predicted outputs",
}


@dataclass
class ChatRequest:
    turns: list[Turn]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = True
    ignore_eos: bool = False


def _number(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"'{key}' must be a number", key, "invalid_type")
    if value < lo or value > hi or (lo_open and value == lo):
        raise bad_request(f"'{key}' must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value}", key,
                          "invalid_value")
    return float(value)


def _integer(body: dict, key: str, lo: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{key}' must be an integer", key, "invalid_type")
    if lo is not None and value < lo:
        raise bad_request(f"'{key}' must be >= {lo}, got {value}", key, "invalid_value")
    return value


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' must be true or false", key, "invalid_type")
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise bad_request("'stop' must be a non-empty string or a list of at most 4 of them", "stop", "invalid_value")
    return stops


def _content(message: dict, i: int, config: ServeConfig) -> tuple[str, list[np.ndarray]]:
    """The text and pictures of messages[i]."""
    content = message.get("content")
    where = f"messages[{i}].content"
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string or a list of content parts", where, "invalid_type")
    texts: list[str] = []
    images: list[np.ndarray] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"'{at}.text' must be a string", f"{at}.text", "invalid_type")
            texts.append(part["text"])
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise bad_request(f"'{at}.image_url.url' must be a string", f"{at}.image_url", "invalid_type")
            if message["role"] != "user":
                raise bad_request(f"messages[{i}]: only user messages may hold images", at, "invalid_value")
            images.append(decode_image(url, config, f"{at}.image_url"))
        else:
            raise bad_request(f"'{at}': content parts are {{'type': 'text'}} or {{'type': 'image_url'}}, got "
                              f"{kind!r}", at, "invalid_value")
    return "\n".join(texts), images


def _turns(messages: Any, config: ServeConfig) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages", "invalid_value")
    system: list[str] = []
    merged: list[tuple[str, list[str], list[np.ndarray]]] = []  # (role, texts, images)
    n_images = 0
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise bad_request(f"messages[{i}]: role must be one of {', '.join(ROLES)} (no tool messages), got "
                              f"{role!r}", f"messages[{i}].role", "invalid_value")
        if m.get("tool_calls"):
            raise bad_request(f"messages[{i}]: tool calls are not supported", f"messages[{i}].tool_calls",
                              "unsupported_value")
        text, images = _content(m, i, config)
        n_images += len(images)
        if n_images > config.max_images:
            raise bad_request(f"more than {config.max_images} images in one request (the server's limit)",
                              f"messages[{i}].content", "too_many_images")
        if role in ("system", "developer"):
            system.append(text)
        elif merged and merged[-1][0] == role:
            merged[-1][1].append(text)
            merged[-1][2].extend(images)
        else:
            merged.append((role, [text], images))
    turns = [Turn(role, "\n\n".join(texts), tuple(images)) for role, texts, images in merged]
    if system and turns and turns[0].role == "user":
        turns[0] = Turn("user", "\n\n".join([*system, turns[0].text]), turns[0].images)
    if not turns or turns[0].role != "user" or turns[-1].role != "user":
        raise bad_request("the messages must start (after any system message) and end with a user message",
                          "messages", "invalid_value")
    return turns


def parse_chat_request(body: Any, config: ServeConfig) -> ChatRequest:
    """The request in ``body`` (parsed JSON); ApiError (400, 404) naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad_request("'model' is required: a string (GET /v1/models lists it)", "model", "missing_model")
    if model != config.model_name:
        raise model_not_found(model, config.model_name)
    for key, takes in UNSUPPORTED.items():
        if body.get(key):
            raise bad_request(f"'{key}' is not supported: this server takes {takes}", key, "unsupported_parameter")
    if _integer(body, "n", 1) not in (None, 1):
        raise bad_request("'n' must be 1: one choice per request", "n", "unsupported_value")
    if _flag(body, "logprobs", False):
        raise bad_request("'logprobs' is not supported", "logprobs", "unsupported_parameter")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, 0.0, -2.0, 2.0) != 0.0:
            raise bad_request(f"'{key}' is not supported (use 'repetition_penalty')", key, "unsupported_value")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise bad_request("'response_format' must be {'type': 'text'}: no JSON modes", "response_format",
                          "unsupported_value")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options", "invalid_type")
    seed = _integer(body, "seed")
    req = ChatRequest(
        turns=_turns(body.get("messages"), config),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0) or 0,
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 10.0, lo_open=True),
        seed=None if seed is None else seed % 2**64,
        stop=_stop(body),
        stream=_flag(body, "stream", False),
        include_usage=_flag(options or {}, "include_usage", True),
        ignore_eos=_flag(body, "ignore_eos", False),
    )
    if req.top_p == 0.0:  # only the most likely token survives: greedy
        req.temperature, req.top_p = 0.0, 1.0
    return req


def check_fits(prompt_tokens: int, max_tokens: int | None, max_context: int) -> int:
    """The max_tokens to generate: the request's, or what the context leaves; 400 when it does not fit."""
    if max_tokens is None:
        if prompt_tokens >= max_context:
            raise ApiError(400, f"this model's maximum context length is {max_context} tokens, but the messages "
                                f"take {prompt_tokens}", "invalid_request_error", "context_length_exceeded", "messages")
        return max_context - prompt_tokens
    if prompt_tokens + max_tokens > max_context:
        raise ApiError(400, f"this model's maximum context length is {max_context} tokens, but {prompt_tokens + max_tokens} "
                            f"were requested ({prompt_tokens} in the messages, {max_tokens} in the completion)",
                       "invalid_request_error", "context_length_exceeded", "messages")
    return max_tokens
