"""The ``edgevlm`` command line, as a user runs it: subprocesses, exit codes, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgevlm.evaluate import perplexity
from edgevlm.models import load


def edgevlm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgevlm", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgevlm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def stories(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("stories") / "stories260K"
    r = edgevlm("import-llama2c", data_dir / "llama2c/stories260K.bin", data_dir / "llama2c/tok512.bin", "-o", out, "--json")
    assert set(json.loads(r.stdout)["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    return out


def test_stories260k_writes_lily_from_bos(stories):
    r = json.loads(edgevlm("run", stories, "--max-new-tokens", "40", "--json").stdout)
    assert r["text"].startswith("Once upon a time, there was a little girl named Lily")
    assert r["stats"]["prompt_tokens"] == 1  # BOS alone


def test_stories260k_loss_on_tinystories(stories, data_dir):
    result = perplexity(load(stories), data_dir / "text/tinystories_sample.txt")
    assert result.loss == pytest.approx(1.27, abs=0.01)
    valid = perplexity(load(stories), data_dir / "text/tinystories_valid_excerpt.txt")
    assert valid.tokens == 29_367 and valid.loss == pytest.approx(1.223, abs=0.002)


def test_embedded_model_equals_fresh_import(stories):
    """The copy shipped in the package is the llama2.c import, byte for byte."""
    from edgevlm.zoo import path

    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (path("stories260k") / name).read_bytes() == (stories / name).read_bytes(), name


def test_run_embedded_model_by_name():
    r = edgevlm("run", "stories260k", "--prompt", "Once upon a time", "--max-new-tokens", "8")
    assert r.stdout.startswith("Once upon a time") and len(r.stdout.split()) > 5
    assert "tok/s" in r.stderr


def test_info_json(smolvlm_dir):
    info = json.loads(edgevlm("info", smolvlm_dir, "--json").stdout)
    assert info["family"] == "smolvlm" and info["model_type"] == "idefics3"
    params = info["parameters"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    assert params["vision_encoder"] > 0 and params["projector"] > 0
    tokens = info["image_tokens"]
    assert tokens["tokens_per_tile"] == 16
    assert all(r["prompt_tokens"] >= r["tiles"] * 16 for r in tokens["per_image"])
    assert info["chat_template"]["example"].startswith("<|im_start|>User:<image>")


def test_info_table(llava_dir):
    out = edgevlm("info", llava_dir).stdout
    for word in ("Parameters", "vision_encoder", "Image tokens", "Chat template"):
        assert word in out


def test_run_with_image_json(smolvlm_dir, images):
    r = json.loads(edgevlm("run", smolvlm_dir, "--prompt", "What is this?", "--image", images[0],
                           "--max-new-tokens", "5", "--temperature", "0.8", "--seed", "3", "--json").stdout)
    assert len(r["tokens"]) <= 5 and r["stats"]["image_tiles"] == 7
    again = json.loads(edgevlm("run", smolvlm_dir, "--prompt", "What is this?", "--image", images[0],
                               "--max-new-tokens", "5", "--temperature", "0.8", "--seed", "3", "--json").stdout)
    assert again["tokens"] == r["tokens"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "/nonexistent/model"], "no such model directory"),
        (["run", "stories260k", "--image", "/nonexistent.png"], "text-only"),
        (["run", "stories260k", "--temperature", "-1"], "temperature"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    r = edgevlm(*args, check=False)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_bad_image_file(smolvlm_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = edgevlm("run", smolvlm_dir, "--prompt", "hi", "--image", bad, check=False)
    assert r.returncode == 2 and "bad.png" in r.stderr and "not a readable image" in r.stderr
