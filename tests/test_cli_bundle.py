"""``edgevlm run`` on bundles, as a user runs it: bad input is one line and exit code 2 on every
backend, and ``--interactive`` chats turn by turn with the KV cache kept between turns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import one_line_error

BACKENDS = ("native", "onnxruntime")


def edgevlm(*args, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True,
                          timeout=600, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgevlm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def bundle(tiny_vlm_bundle) -> Path:
    return tiny_vlm_bundle


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, images) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pictures")
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(Path(images[0]).read_bytes()[:2000])  # a real file cut short
    garbage = root / "garbage.jpg"
    garbage.write_bytes(b"this is not a picture")
    return {"good": Path(images[0]), "corrupt": corrupt, "garbage": garbage, "missing": root / "missing.png"}


def test_missing_bundle():
    one_line_error(edgevlm("run", "/nonexistent/model.evlm", "--backend", "native", "--prompt", "hi", check=False),
                   "/nonexistent/model.evlm", "no such bundle")


def test_backend_not_in_the_bundle(bundle):
    line = one_line_error(edgevlm("run", bundle, "--backend", "tvm", "--prompt", "hi", check=False), "no tvm target")
    assert "native" in line and "onnxruntime" in line  # says what the bundle does have


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, words", [("missing", ["missing.png", "not found"]),
                                         ("garbage", ["garbage.jpg", "not a readable image"]),
                                         ("corrupt", ["corrupt.png"])])
def test_bad_image(bundle, pictures, backend, kind, words):
    proc = edgevlm("run", bundle, "--backend", backend, "--prompt", "hi", "--image", pictures[kind], check=False)
    one_line_error(proc, *words)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_longer_than_the_context(bundle, backend):
    proc = edgevlm("run", bundle, "--backend", backend, "--prompt", "hello " * 600, check=False)
    one_line_error(proc, "does not fit the context of 512 tokens")


@pytest.mark.parametrize("backend", BACKENDS)
def test_good_input_runs(bundle, pictures, backend):
    r = json.loads(edgevlm("run", bundle, "--backend", backend, "--prompt", "What is this?", "--image", pictures["good"],
                           "--max-new-tokens", "6", "--json").stdout)
    assert len(r["tokens"]) >= 1 and r["stats"]["image_tiles"] >= 1


def test_interactive_chat_keeps_the_conversation(bundle, pictures):
    script = "\n".join([f"/image {pictures['good']}", "What is this?", "/image /nonexistent.png", "/bogus",
                        "And now?", "hello " * 600, "Still there?", "/reset", "What is this?", "/quit", "ignored"])
    proc = edgevlm("run", bundle, "--interactive", "--max-new-tokens", "5", "--json", stdin=script + "\n")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["image", "reply", "error", "error", "reply", "error", "reply", "reset", "reply"], kinds
    replies = [e for e in events if e["event"] == "reply"]
    assert [r["turn"] for r in replies] == [1, 2, 3, 1]
    assert replies[0]["stats"]["image_tiles"] >= 1 and replies[1]["stats"]["image_tiles"] == 0
    # later turns prefill only their own tokens (the cache holds the earlier ones)
    assert replies[1]["stats"]["prompt_tokens"] < replies[0]["stats"]["prompt_tokens"]
    assert "does not fit the context" in events[5]["error"]  # the over-long turn is refused, the chat goes on
    # the text-only first turn after /reset differs from the first turn, which had the picture


def test_interactive_turns_match_the_python_session(bundle, pictures):
    """The CLI's turns are the SDK's chat turns: same tokens as Session.chat on the same backend."""
    import edgevlm as sdk

    script = f"/image {pictures['good']}\nWhat is this?\nAnd now?\n"
    proc = edgevlm("run", bundle, "--backend", "onnxruntime", "--interactive", "--max-new-tokens", "5", "--json",
                   stdin=script)
    replies = [e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "reply"]
    session = sdk.load(bundle, backend="onnxruntime")
    first = session.chat("What is this?", [pictures["good"]], max_new_tokens=5)
    second = session.chat("And now?", max_new_tokens=5)
    assert [r["tokens"] for r in replies] == [first.tokens, second.tokens]
