"""Sessions over one loaded model, and a conversation's prompt kept in the KV cache.

The binding (``edgevlm._native``): sessions of one Model share its weights (memory grows by the KV
cache, not by the model), run on two threads at once without mixing up, ``truncate`` rolls a
session back to a prefix of its history and the prefill that continues from there equals a fresh
one, ``Model.turn_ids`` gives exactly the ids ``add_turn`` prefills, and the history holds exactly
the ids in the cache. The SDK (``edgevlm.open_model``): ``stream_prompt`` keeps the prefix that a
session's cache holds, image rows only for the same pictures, on the native and torch backends.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import edgevlm
from edgevlm.errors import InputError
from edgevlm.export.core import export_bundle
from edgevlm.prompt import Turn
from edgevlm.sdk import collect
from edgevlm.zoo import shapes_data

_native = pytest.importorskip("edgevlm._native", reason="the C++ runtime is built by pip install -e .")
pytestmark = pytest.mark.skipif(not hasattr(_native.Session, "truncate"), reason="edgevlm._native predates truncate; rebuild")


@pytest.fixture(scope="module")
def shapes_bundle(shapes_native_bundle) -> Path:
    return shapes_native_bundle


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory) -> Path:
    """A float text model whose weights (16.8 MB) dwarf its KV cache (0.5 MB at 256 positions)."""
    import tiny_models

    root = tmp_path_factory.mktemp("wide")
    d = tiny_models.make_llama(root / "llama", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=2)
    export_bundle(d, root / "wide.evlm", ["native"], None, chunk_size=16, max_context=256, log=lambda m: None)
    return root / "wide.evlm"


def _pictures(n: int, seed: int = 200) -> list[np.ndarray]:
    return [shapes_data.render(shapes_data.make_scene(seed + i)) for i in range(n)]


def _size(im: np.ndarray) -> tuple[int, int]:
    return im.shape[1], im.shape[0]


def test_turn_ids_are_what_add_turn_prefills(shapes_bundle):
    model = _native.Model.load(str(shapes_bundle))
    pic = _pictures(1)[0]
    s = _native.Session(model)
    s.add_turn("What color is the circle?", [pic])
    first = model.turn_ids("What color is the circle?", [_size(pic)], True)
    assert s.history == first and s.position == len(first)
    reply = s.generate(max_new_tokens=12)
    assert reply[-1] in model.eos_ids  # the shapes model ends its answers
    assert s.history == first + reply and s.position == len(first) + len(reply) - 1
    s.add_turn("How many shapes are there?", [])
    second = model.turn_ids("How many shapes are there?", [], False)
    # the stop token that ended the reply is not fed: the next turn's text starts by closing the reply
    assert second[0] == reply[-1]
    assert s.history == first + reply[:-1] + second and s.position == len(s.history)


def test_truncate_then_continue_equals_a_fresh_prefill(shapes_bundle):
    model = _native.Model.load(str(shapes_bundle))
    pic = _pictures(1, 7)[0]
    ids = model.turn_ids("Describe the image.", [_size(pic)], True)
    fresh = _native.Session(model)
    fresh.add_tokens(ids, [pic])
    want_logits, want = fresh.logits.copy(), fresh.generate(max_new_tokens=16)

    s = _native.Session(model)
    s.add_turn("Is there a red square?", [pic])  # a different question about the same picture
    s.generate(max_new_tokens=8)
    common = next(i for i, (a, b) in enumerate(zip(s.history, ids)) if a != b)
    assert common > 16  # BOS, template and the whole image are shared
    s.truncate(common)
    assert s.position == common and s.history == ids[:common]
    s.add_tokens(ids[common:])
    assert s.stats["prompt_tokens"] == len(ids) - common
    assert np.abs(s.logits - want_logits).max() <= 1e-3
    assert s.generate(max_new_tokens=16) == want

    s.truncate(0)
    s.add_tokens(ids, [pic])
    assert s.generate(max_new_tokens=16) == want


def test_truncate_and_add_tokens_refuse_bad_input(shapes_bundle):
    model = _native.Model.load(str(shapes_bundle))
    s = _native.Session(model)
    s.add_turn("How many shapes are there?", [])
    with pytest.raises(_native.NativeError, match="truncate: 999 tokens asked, the KV cache holds") as e:
        s.truncate(999)
    assert e.value.code == "invalid_argument"
    with pytest.raises(_native.NativeError, match="truncate"):
        s.truncate(-1)
    pic = _pictures(1)[0]
    ids = model.turn_ids("What is it?", [_size(pic)], True)
    with pytest.raises(_native.NativeError, match="image token rows but the 2 images give"):
        _native.Session(model).add_tokens(ids, [pic, pic])
    with pytest.raises(_native.NativeError, match="outside the vocabulary"):
        _native.Session(model).add_tokens([1, 10**6])


_GROWTH = """
import sys
from pathlib import Path
from edgevlm import _native

def rss():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

model = _native.Model.load(sys.argv[1], threads=1)
keep = [_native.Session(model)]
keep[0].add_tokens(list(range(3, 40)))
keep[0].logits  # imports numpy before the first measurement
before = rss()
for _ in range(4):
    keep.append(_native.Session(model) if sys.argv[2] == "sessions" else _native.Session(_native.Model.load(sys.argv[1], threads=1)))
    keep[-1].add_tokens(list(range(3, 40)))
grown = rss() - before
assert len({tuple(s.logits[:8]) for s in keep}) == 1
print(grown)
"""


def test_sessions_share_the_weights(wide_bundle):
    import subprocess
    import sys

    def growth(kind: str) -> float:
        out = subprocess.run([sys.executable, "-c", _GROWTH, str(wide_bundle), kind], capture_output=True, text=True,
                             check=True)
        return float(out.stdout)

    # each session adds its KV cache (0.5 MB) and scratch; each model another copy of the 16.8 MB of weights
    sessions, models = growth("sessions"), growth("models")
    assert models > 4 * 12, f"4 more models grew the process by {models:.1f} MB only"
    assert sessions < 6, f"4 more sessions grew the process by {sessions:.1f} MB"


def test_two_sessions_on_two_threads_do_not_mix(shapes_bundle):
    model = _native.Model.load(str(shapes_bundle))
    pics = _pictures(6, 300)
    questions = ["What color is the circle?", "How many shapes are there?", "Describe the image."] * 2
    alone = []
    for q, p in zip(questions, pics):
        s = _native.Session(model)
        s.add_turn(q, [p])
        alone.append(s.generate(max_new_tokens=24))
    got: dict[int, list[int]] = {}

    def run(worker: int) -> None:
        s = _native.Session(model)
        for i in range(worker, len(questions), 2):
            s.reset()
            s.add_turn(questions[i], [pics[i]])
            got[i] = s.generate(max_new_tokens=24)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(questions))] == alone


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_stream_prompt_keeps_the_cached_prefix(shapes_bundle, backend):
    model = edgevlm.open_model(shapes_bundle, backend)
    pics = _pictures(1, 400)
    s = model.session()
    one = model.prompt([Turn("user", "What color is the circle?", (pics[0],))])
    first = collect(s.stream_prompt(one, max_new_tokens=12))
    assert s.reused_tokens == 0 and first.stats.prompt_tokens == len(one)
    two = model.prompt([Turn("user", "What color is the circle?", (pics[0],)), Turn("assistant", first.text),
                        Turn("user", "How many shapes are there?")])
    assert s.reusable(two) == len(one) + len(first.tokens) - 1  # the prompt and the reply, its stop token aside
    second = collect(s.stream_prompt(two, max_new_tokens=12))
    assert second.stats.prompt_tokens == len(two) - s.reused_tokens
    fresh = collect(model.session().stream_prompt(two, max_new_tokens=12))
    assert second.tokens == fresh.tokens and fresh.stats.prompt_tokens == len(two)

    # the same question about another picture of the same size keeps only what precedes the image
    changed = np.ascontiguousarray(pics[0][::-1])  # upside down
    other = model.prompt([Turn("user", "What color is the circle?", (changed,))])
    assert other.ids == one.ids and other.keys != one.keys
    assert s.reusable(other) == other.groups[0].begin > 0
    assert s.reusable(one) == len(one) - 1
    answer = collect(s.stream_prompt(other, max_new_tokens=12))
    assert answer.tokens == collect(model.session().stream_prompt(other, max_new_tokens=12)).tokens


def test_open_model_sessions_and_prompt_errors(shapes_bundle):
    model = edgevlm.open_model(shapes_bundle)
    assert model.shares_weights and model.backend == "native" and model.max_context == 1024
    a, b = model.session(), model.session()
    assert a.generate("How many shapes are there?", _pictures(1)).text.strip()
    assert b.position == 0  # a's turn is in a's cache only
    with pytest.raises(InputError, match="expected a user message"):
        model.prompt([Turn("assistant", "hi")])
    with pytest.raises(InputError, match="the last message must be a user message"):
        model.prompt([Turn("user", "hi"), Turn("assistant", "hello")])
    with pytest.raises(InputError, match="no messages"):
        model.prompt([])
    with pytest.raises(InputError, match="at most 4"):
        model.prompt([Turn("user", "hi", tuple(_pictures(5)))])


def test_c_api_truncate_and_history(shapes_bundle):
    """evlm_session_history / evlm_session_truncate through the C API itself (the binding's library exports it)."""
    import ctypes as ct

    class ModelParams(ct.Structure):
        _fields_ = [("n_threads", ct.c_int32), ("verify_files", ct.c_int32), ("kernels", ct.c_char_p),
                    ("chunk_size", ct.c_int32), ("max_context", ct.c_int32)]

    class SamplingParams(ct.Structure):
        _fields_ = [("max_new_tokens", ct.c_int32), ("temperature", ct.c_float), ("top_k", ct.c_int32),
                    ("top_p", ct.c_float), ("repetition_penalty", ct.c_float), ("seed", ct.c_uint64),
                    ("ignore_eos", ct.c_int32)]

    class Chunk(ct.Structure):
        _fields_ = [("type", ct.c_int), ("text", ct.c_char_p), ("rgb", ct.c_void_p), ("rgb_size", ct.c_size_t),
                    ("width", ct.c_int32), ("height", ct.c_int32)]

    lib = ct.CDLL(_native.__file__)
    lib.evlm_model_params_default.restype = ModelParams
    lib.evlm_sampling_params_default.restype = SamplingParams
    lib.evlm_chunk_text.restype = Chunk
    lib.evlm_chunk_text.argtypes = [ct.c_char_p]
    lib.evlm_session_history.restype = ct.POINTER(ct.c_int32)
    lib.evlm_session_history.argtypes = [ct.c_void_p, ct.POINTER(ct.c_size_t)]
    lib.evlm_session_truncate.argtypes = [ct.c_void_p, ct.c_size_t]
    lib.evlm_session_logits.restype = ct.POINTER(ct.c_float)
    lib.evlm_last_error.restype = ct.c_char_p
    for name in ("evlm_session_add_turn", "evlm_session_add_tokens", "evlm_session_generate", "evlm_session_create",
                 "evlm_session_free", "evlm_model_free", "evlm_session_logits"):
        getattr(lib, name).argtypes = None
    mp = lib.evlm_model_params_default()
    mp.n_threads = 1
    model = ct.c_void_p()
    assert lib.evlm_model_load(str(shapes_bundle).encode(), ct.byref(mp), ct.byref(model)) == 0

    def session() -> ct.c_void_p:
        s = ct.c_void_p()
        assert lib.evlm_session_create(model, ct.byref(s)) == 0
        return s

    def history(s) -> list[int]:
        n = ct.c_size_t()
        ptr = lib.evlm_session_history(s, ct.byref(n))
        return ptr[: n.value]

    def logits(s) -> np.ndarray:
        n = ct.c_size_t()
        ptr = lib.evlm_session_logits(s, ct.byref(n))
        return np.ctypeslib.as_array(ptr, (n.value,)).copy()

    s, fresh = session(), session()
    try:
        chunk = lib.evlm_chunk_text(b"How many shapes are there?")
        assert lib.evlm_session_add_turn(s, ct.byref(chunk), ct.c_size_t(1), 1) == 0
        ids = history(s)
        sp = lib.evlm_sampling_params_default()
        sp.max_new_tokens = 8
        out, n_out = (ct.c_int32 * 8)(), ct.c_size_t()
        assert lib.evlm_session_generate(s, ct.byref(sp), None, None, out, ct.c_size_t(8), ct.byref(n_out)) == 0
        assert history(s) == ids + out[: n_out.value]
        assert lib.evlm_session_truncate(s, 5) == 0 and history(s) == ids[:5]
        rest = (ct.c_int32 * (len(ids) - 5))(*ids[5:])
        assert lib.evlm_session_add_tokens(s, rest, ct.c_size_t(len(ids) - 5)) == 0 and history(s) == ids
        whole = (ct.c_int32 * len(ids))(*ids)
        assert lib.evlm_session_add_tokens(fresh, whole, ct.c_size_t(len(ids))) == 0
        assert np.abs(logits(s) - logits(fresh)).max() <= 1e-3
        assert lib.evlm_session_truncate(s, 10**6) == 1  # EVLM_ERR_INVALID_ARGUMENT
        assert b"truncate: 1000000 tokens asked" in lib.evlm_last_error()
        assert lib.evlm_session_truncate(None, 0) == 1
    finally:
        lib.evlm_session_free(s)
        lib.evlm_session_free(fresh)
        lib.evlm_model_free(model)
