"""Helpers shared by the config dataclasses of every family.

Each family's config is a dataclass with ``from_hf(dict)``: it reads the keys it knows from a
Hugging Face ``config.json`` (or a nested sub-config), ignores the rest, and derives values in
``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from ..errors import UnsupportedModelError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], **overrides: Any) -> T:
    """Build dataclass ``cls`` from the keys of ``data`` it declares, ignoring unknown keys."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in data.items() if k in names and v is not None}
    kwargs.update(overrides)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain JSON-ready dict (nested dataclasses included)."""
    return dataclasses.asdict(config)


def require(value: Any, what: str, allowed: tuple) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise an error listing them."""
    if value not in allowed:
        raise UnsupportedModelError(f"unsupported {what} {value!r}; supported: {', '.join(map(str, allowed))}")
    return value
