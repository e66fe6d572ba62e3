"""Shared output helpers: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


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
