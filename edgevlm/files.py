"""Small file helpers shared by the model and processing packages."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError


def read_json(path: Path) -> dict | None:
    """A JSON file's object, None if the file does not exist; CheckpointError naming it if malformed."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value
