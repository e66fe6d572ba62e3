"""Contract 1: the Python contract module and the C++ header name the same keys with the same values."""

from __future__ import annotations

import re
from pathlib import Path

from edgevlm import _native, contract

HEADER = Path(__file__).resolve().parents[1] / "runtimes" / "include" / "edgevlm" / "contract.h"


def normalized(d: dict) -> dict:
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in d.items()}


def test_python_module_and_cpp_header_agree():
    assert normalized(contract.as_dict()) == normalized(_native.contract())


def test_the_compiled_module_is_built_from_this_header():
    """Every X(NAME, ...) entry of the header reached the binding (guards a stale build)."""
    names = set(re.findall(r"X\((\w+),", HEADER.read_text())) - {"NAME"}  # "NAME" is the comment's placeholder
    assert names == set(_native.contract())


def test_method_names():
    assert contract.METHODS == ("vision_encoder", "token_embedding", "prefill", "decode")
