"""Shared output helpers: rich tables for people, JSON for machines.

Everything edgevlm prints goes through :func:`out` / :func:`err` (or the two consoles, which use
them), never straight to ``sys.stdout``: while a command runs, :mod:`.library_log` points the process's
stdout and stderr at a log file for other libraries' output and hands these helpers the terminal.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

_streams: list[TextIO | None] = [None, None]  # the user's stdout and stderr while a log captures the process's


def use_streams(stdout: TextIO | None, stderr: TextIO | None) -> None:
    """Where edgevlm's own output goes (``None``: the process's current stdout / stderr)."""
    _streams[0], _streams[1] = stdout, stderr
    console.file = stdout  # rich: None means sys.stdout / sys.stderr at the time of writing
    err_console.file = stderr


def out() -> TextIO:
    """The user's stdout."""
    return _streams[0] or sys.stdout


def err() -> TextIO:
    """The user's stderr."""
    return _streams[1] or sys.stderr


def make_console(**kwargs) -> Console:
    """A console with its own settings (a width, say) that writes to the user's stdout."""
    return Console(file=out(), **kwargs)


def print_json(data: Any) -> None:
    out().write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    out().flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        numeric = i > 0 and all(_numeric(r[i]) for r in rows)
        t.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*(str(v) for v in r))
    return t


def _numeric(value: Any) -> bool:
    text = str(value).replace(",", "").replace("%", "").strip()
    try:
        float(text)
        return True
    except ValueError:
        return False
