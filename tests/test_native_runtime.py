"""The C++ runtime through its Python binding (``edgevlm._native``), the SDK and its CLIs.

Parity is with the PyTorch quantized reference of the same bundle (``edgevlm.load(bundle,
backend="torch")`` runs the bundle's ``weights/`` with the same chunk plan): identical greedy
tokens on text-only and image+text prompts, multi-turn chat included. Bad input gets an error code
and a message, never a crash.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgevlm
from edgevlm import contract as C
from edgevlm.errors import InputError
from edgevlm.export.core import export_bundle
from edgevlm.quant.recipe import preset
from edgevlm.zoo import shapes_data

_native = pytest.importorskip("edgevlm._native", reason="the C++ runtime is built by pip install -e .")
pytestmark = pytest.mark.skipif(not hasattr(_native, "Session"), reason="edgevlm._native predates the runtime; rebuild")


def _export(model, out: Path, chunk: int = 16, context: int = 256) -> Path:
    export_bundle(model, out, ["native"], preset("w4g32"), chunk_size=chunk, max_context=context, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def shapes_bundle(tmp_path_factory) -> Path:
    return _export("shapes-vlm", tmp_path_factory.mktemp("nat") / "shapes.evlm", chunk=32, context=256)


@pytest.fixture(scope="module")
def stories_bundle(tmp_path_factory) -> Path:
    return _export("stories260k", tmp_path_factory.mktemp("nat") / "stories.evlm", chunk=16, context=256)


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory, llama_dir, smolvlm_dir, llava_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nat")
    return {name: _export(d, root / f"{name}.evlm", chunk=16, context=320)
            for name, d in (("llama", llama_dir), ("smolvlm", smolvlm_dir), ("llava", llava_dir))}


def _pictures(n: int, seed: int = 100) -> list[np.ndarray]:
    return [shapes_data.render(shapes_data.make_scene(seed + i)) for i in range(n)]


def _same_greedy(bundle: Path, prompt: str, images=(), n: int = 24, chat: bool = True):
    ref = edgevlm.load(bundle, backend="torch", chat=chat).generate(prompt, images, max_new_tokens=n)
    got = edgevlm.load(bundle, backend="native", chat=chat).generate(prompt, images, max_new_tokens=n)
    assert got.tokens == ref.tokens, (prompt, got.text, ref.text)
    assert got.text == ref.text
    return got


def test_shapes_vlm_answers_like_the_reference(shapes_bundle):
    questions = ["What color is the circle?", "How many shapes are there?", "Describe the image.",
                 "Is there a red square?", "Where is the triangle?"]
    for q, picture in zip(questions, _pictures(len(questions))):
        r = _same_greedy(shapes_bundle, q, [picture], n=16)
        assert r.stats.backend == "native" and r.stats.image_tiles >= 1 and r.stats.prompt_tokens > 16


def test_stories260k_same_greedy_text(stories_bundle):
    r = _same_greedy(stories_bundle, "Once upon a time", n=48, chat=False)
    assert r.text.startswith(",") or len(r.text) > 20


@pytest.mark.parametrize("name", ["llama", "smolvlm", "llava"])
def test_tiny_random_bundles(tiny_bundles, name):
    bundle = tiny_bundles[name]
    _same_greedy(bundle, "Tell me about the sea.", n=24)
    if name != "llama":
        _same_greedy(bundle, "What is in the picture?", _pictures(1, 7), n=24)


def test_multi_turn_chat_reuses_the_cache(shapes_bundle):
    pic = _pictures(1, 42)
    ref, nat = edgevlm.load(shapes_bundle, backend="torch"), edgevlm.load(shapes_bundle, backend="native")
    for prompt, images in (("What color is the circle?", pic), ("How many shapes are there?", []),
                           ("Describe the image.", [])):
        a, b = ref.chat(prompt, images, max_new_tokens=12), nat.chat(prompt, images, max_new_tokens=12)
        assert a.tokens == b.tokens, prompt
    assert nat.session.position == ref.conv.position > 0
    nat.reset()
    assert nat.session.position == 0


@pytest.mark.parametrize("chunk", [1, 16, 64, 128])
def test_chunk_sizes_agree_with_single_shot(stories_bundle, chunk):
    ids = edgevlm.load(stories_bundle, backend="torch", chat=False).processor.tokenizer.encode(
        "Once upon a time, there was a little dog named Max. Max liked to run in the park with his friends. " * 2)
    single = _native.Session(_native.Model.load(str(stories_bundle), chunk_size=256))
    single.add_tokens(ids)
    want = single.logits.copy()
    want_tokens = single.generate(max_new_tokens=16)
    s = _native.Session(_native.Model.load(str(stories_bundle), chunk_size=chunk))
    s.add_tokens(ids)
    assert np.abs(s.logits - want).max() <= 1e-3
    assert s.generate(max_new_tokens=16) == want_tokens
    assert len(s.stats["prefill_chunks_ms"]) == -(-len(ids) // chunk)


def test_stats_schema_matches_python(stories_bundle):
    from edgevlm.generate import GenerationStats

    s = _native.Session(_native.Model.load(str(stories_bundle)))
    s.add_turn("Once upon a time", [], False)
    toks = s.generate(max_new_tokens=8, ignore_eos=True)
    stats = s.stats
    assert set(GenerationStats().to_dict()) <= set(stats)
    assert stats["generated_tokens"] == len(toks) == 8 and stats["prefill_tps"] > 0 and stats["decode_tps"] > 0
    assert stats["ttft_ms"] == pytest.approx(stats["preprocess_ms"] + stats["vision_encode_ms"] + stats["prefill_ms"], abs=0.01)


def test_sampling_is_seeded(stories_bundle):
    def run(seed):
        s = _native.Session(_native.Model.load(str(stories_bundle)))
        s.add_turn("Once upon a time", [], False)
        return s.generate(max_new_tokens=24, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=seed)

    assert run(1) == run(1) and run(1) != run(2)


def test_callback_cancels(stories_bundle):
    s = _native.Session(_native.Model.load(str(stories_bundle)))
    s.add_turn("Once upon a time", [], False)
    seen = []
    toks = s.generate(max_new_tokens=32, ignore_eos=True, on_token=lambda t, piece: seen.append(t) or len(seen) < 5)
    assert toks == seen and len(toks) == 5 and s.stats["finish_reason"] == "cancelled"


# ---- bad input: an error code and a message, never a crash -----------------------------------------

def _code(fn) -> tuple[str, str]:
    with pytest.raises(_native.NativeError) as e:
        fn()
    return e.value.code, str(e.value)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / bundle.name
    shutil.copytree(bundle, out)
    return out


def test_prompt_longer_than_context(stories_bundle):
    s = _native.Session(_native.Model.load(str(stories_bundle)))
    code, msg = _code(lambda: s.add_tokens([5] * 300))
    assert code == "context_overflow" and "does not fit the context of 256" in msg
    with pytest.raises(InputError, match="does not fit"):
        edgevlm.load(stories_bundle).generate("once " * 400)


def test_image_buffer_of_the_wrong_shape(shapes_bundle, stories_bundle):
    s = _native.Session(_native.Model.load(str(shapes_bundle)))
    code, msg = _code(lambda: s.add_turn("What color?", [np.zeros((10, 10, 4), np.uint8)]))
    assert code == "invalid_argument" and "[height, width, 3]" in msg
    code, msg = _code(lambda: s.add_turn("What color?", [np.zeros((0, 10, 3), np.uint8)]))
    assert code == "invalid_argument"
    t = _native.Session(_native.Model.load(str(stories_bundle)))
    code, msg = _code(lambda: t.add_turn("hi", [np.zeros((8, 8, 3), np.uint8)]))
    assert code == "invalid_argument" and "text-only" in msg


def test_tampered_truncated_and_missing_files(stories_bundle, tmp_path):
    b = _copy(stories_bundle, tmp_path)
    weights = b / C.WEIGHTS_DIR / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    code, msg = _code(lambda: _native.Model.load(str(b)))
    assert code == "corrupt_file" and "model.safetensors" in msg
    # without the sha256 check, the truncation itself is caught by the safetensors reader
    code, msg = _code(lambda: _native.Model.load(str(b), verify=False))
    assert code == "corrupt_file" and "model.safetensors" in msg
    (b / C.TOKENIZER_FILE).unlink()
    code, msg = _code(lambda: _native.Model.load(str(b)))
    assert code in ("io", "corrupt_file") and "tokenizer.json" in msg


def _rewrite_header(path: Path, edit) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def test_out_of_range_offset_and_dtype_mismatch(stories_bundle, tmp_path):
    b = _copy(stories_bundle, tmp_path / "a")
    weights = b / C.WEIGHTS_DIR / "model.safetensors"
    name = "language.norm.weight"

    def far(h):
        key = next(k for k in h if k != "__metadata__" and k.endswith("norm.weight"))
        h[key]["data_offsets"] = [10**9, 10**9 + 4 * int(np.prod(h[key]["shape"]))]
    _rewrite_header(weights, far)
    code, msg = _code(lambda: _native.Model.load(str(b), verify=False))
    assert code == "corrupt_file" and "offset" in msg.lower()

    b2 = _copy(stories_bundle, tmp_path / "b")
    weights2 = b2 / C.WEIGHTS_DIR / "model.safetensors"

    def wrong_dtype(h):
        key = next(k for k in h if k != "__metadata__" and k.endswith("norm.weight"))
        h[key]["dtype"] = "I32"
    _rewrite_header(weights2, wrong_dtype)
    code, msg = _code(lambda: _native.Model.load(str(b2), verify=False))
    assert code in ("corrupt_file", "unsupported") and "norm" in msg, (name, msg)


def test_missing_native_target_and_backend_errors(tmp_path, llama_dir, stories_bundle):
    with pytest.raises(InputError, match="not a bundle"):
        edgevlm.load(llama_dir, backend="native")
    with pytest.raises(InputError, match="no executorch target"):
        edgevlm.load(stories_bundle, backend="executorch")
    with pytest.raises(InputError, match="unknown backend"):
        edgevlm.load(stories_bundle, backend="tflite")


# ---- the CLIs -------------------------------------------------------------------------------------

def test_edgevlm_run_and_bench_binaries(shapes_bundle, tmp_path):
    from edgevlm.sdk import native_tool

    run, bench = native_tool("edgevlm-run"), native_tool("edgevlm-bench")
    if run is None or bench is None:
        pytest.skip("edgevlm-run / edgevlm-bench not installed with the package")
    from PIL import Image

    png = tmp_path / "p.png"
    Image.fromarray(_pictures(1, 5)[0]).save(png)
    r = subprocess.run([run, shapes_bundle, "--prompt", "How many shapes are there?", "--image", png, "--json",
                        "--max-new-tokens", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = edgevlm.load(shapes_bundle, backend="torch").generate("How many shapes are there?", [png], max_new_tokens=8)
    assert out["tokens"] == ref.tokens
    bad = subprocess.run([run, shapes_bundle, "--prompt", "x", "--image", tmp_path / "none.png"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "none.png" in bad.stderr
    b = subprocess.run([bench, shapes_bundle, "--prompt-tokens", "32,64", "--gen", "8", "--repeat", "2", "--image", png],
                       capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr
    report = json.loads(b.stdout)
    assert [x["prompt_tokens"] for x in report["results"]] == [32, 64]
    for x in report["results"]:
        assert x["prefill_tps"]["median"] > 0 and x["decode_tps"]["median"] > 0
        assert x["prefill_tps"]["min"] <= x["prefill_tps"]["median"] <= x["prefill_tps"]["max"]
    assert report["image"]["vision_encode_ms"]["median"] > 0 and report["model_bytes"] > 0


def test_sdk_stream_is_incremental_and_closing_it_cancels(stories_bundle):
    s = edgevlm.load(stories_bundle, chat=False)
    records = s.stream("Once upon a time", max_new_tokens=40, ignore_eos=True)
    first = [next(records) for _ in range(3)]
    records.close()
    assert "".join(r.text for r in first).startswith(", there")
    assert s.session.stats["finish_reason"] == "cancelled"
    again = s.generate("Once upon a time", max_new_tokens=6)  # a fresh turn works after the cancel
    assert again.stats.generated_tokens == 6 and again.stats.finish_reason == "length"
