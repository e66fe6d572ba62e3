"""Chat templates: the checkpoint's Jinja template rendered as transformers renders it.

Lookup order in a model directory: ``chat_template.jinja``, ``chat_template.json``, the
``chat_template`` of ``tokenizer_config.json``; a family's default template otherwise. A model
without any template (a base LM such as stories260K) takes the prompt as plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InputError
from ..files import read_json

Message = dict[str, Any]


def _raise(message: str) -> None:
    raise InputError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@dataclass
class ChatTemplate:
    source: str  # Jinja source
    origin: str  # where it came from: a file name or "<family> default"

    def render(self, messages: list[Message], add_generation_prompt: bool = True, **special_tokens: Any) -> str:
        """The prompt text for ``messages`` (HF message format)."""
        try:
            template = _environment().from_string(self.source)
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens)
        except jinja2.TemplateError as e:
            raise InputError(f"chat template from {self.origin} failed: {e}") from e


def find_chat_template(model_dir: Path, tokenizer_template: Any = None) -> ChatTemplate | None:
    """The checkpoint's own chat template, None if it has none."""
    model_dir = Path(model_dir)
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return ChatTemplate(jinja_file.read_text(encoding="utf-8"), jinja_file.name)
    stored = read_json(model_dir / "chat_template.json")
    if stored and isinstance(stored.get("chat_template"), str):
        return ChatTemplate(stored["chat_template"], "chat_template.json")
    if isinstance(tokenizer_template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in tokenizer_template if isinstance(t, dict)}
        tokenizer_template = named.get("default")
    if isinstance(tokenizer_template, str):
        return ChatTemplate(tokenizer_template, "tokenizer_config.json")
    return None


def user_message(text: str, n_images: int = 0, structured: bool = True) -> Message:
    """One user turn: images first, then the text (the layout VLM templates expect)."""
    if not structured:
        return {"role": "user", "content": text}
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}
