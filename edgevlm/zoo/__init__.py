"""Models that ship inside the package, found by name wherever a model directory is accepted."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

_HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the embedded models."""
    return sorted(p.name for p in _HERE.iterdir() if (p / "config.json").is_file())


def path(name: str) -> Path:
    """Directory of an embedded model."""
    d = _HERE / name
    if not (d / "config.json").is_file():
        raise CheckpointError(f"no embedded model named {name!r}; embedded: {', '.join(available()) or 'none'}")
    return d


def resolve(name_or_path: str | Path) -> Path:
    """A model directory: the path itself when it exists, else an embedded model of that name."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if isinstance(name_or_path, str) and "/" not in name_or_path and (_HERE / name_or_path / "config.json").is_file():
        return _HERE / name_or_path
    if p.suffix or "/" in str(name_or_path):
        raise CheckpointError(f"{p}: no such model directory")
    raise CheckpointError(f"{p}: no such model directory, and no embedded model of that name "
                          f"(embedded: {', '.join(available()) or 'none'})")
