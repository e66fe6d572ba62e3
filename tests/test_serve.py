"""``edgevlm serve`` on the shapes bundle, called with the official ``openai`` client over loopback.

The servers run as ``edgevlm serve ... --port 0 --json`` subprocesses. Answers are checked against
the SDK's own greedy answers to the same conversation (and the held-out ground truth of the shapes
dataset); the cache reuse of a conversation's second turn shows in ``usage`` and ``/metrics``; a
load of 64 requests from 16 clients against 4 sessions loses and mixes up nothing, keeps the queue
within its bound and the memory steady; a small server (1 session, a queue of 1) shows the 429 and
503 of a full queue deterministically (a long ``ignore_eos`` generation holds its only session) and
that a client leaving mid-stream frees the session. Every bad request gets its documented 4xx.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgevlm
from edgevlm.prompt import Turn
from edgevlm.sdk import collect
from edgevlm.zoo import shapes_data

openai = pytest.importorskip("openai", reason="the serve tests call the server with the official openai client")
pytest.importorskip("starlette", reason="edgevlm serve needs the serve extra")
pytest.importorskip("uvicorn", reason="edgevlm serve needs the serve extra")
_native = pytest.importorskip("edgevlm._native", reason="the C++ runtime is built by pip install -e .")

KEY = "test-key"
MODEL = "shapes"


class Server:
    """An ``edgevlm serve`` subprocess on a free loopback port."""

    def __init__(self, bundle: Path, *args: str):
        cmd = [sys.executable, "-m", "edgevlm", "serve", str(bundle), "--port", "0", "--json", "--model-name", MODEL,
               "--threads", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.api_key = args[args.index("--api-key") + 1] if "--api-key" in args else None
        line, t0 = "", time.monotonic()
        while not line and time.monotonic() - t0 < 120:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
            if self.proc.poll() is not None:
                break
        if not line:
            self.stop()
            raise AssertionError(f"the server did not start: {self.proc.stderr.read()}")
        self.info = json.loads(line)
        self.url = self.info["url"]

    def client(self, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "unused", **options)

    def request(self, method: str, path: str, body: bytes | None = None, key: str | None = "default",
                headers: dict | None = None) -> tuple[int, dict | str]:
        """(status, parsed JSON or text) of a raw HTTP request."""
        h = {"Content-Type": "application/json", **(headers or {})}
        key = self.api_key if key == "default" else key
        if key:
            h["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get("content-type", "")
        return status, json.loads(raw) if "json" in kind else raw.decode()

    def idle(self, within_s: float = 5.0) -> bool:
        """Whether every session is back in the pool (a session returns just after its answer is sent)."""
        t0 = time.monotonic()
        while self.request("GET", "/health")[1]["busy"]:
            if time.monotonic() - t0 > within_s:
                return False
            time.sleep(0.01)
        return True

    def metrics(self) -> dict[str, float]:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture(scope="module")
def bundle(shapes_native_bundle) -> Path:
    return shapes_native_bundle


@pytest.fixture(scope="module")
def server(bundle):
    s = Server(bundle, "--sessions", "4", "--queue", "8", "--api-key", KEY, "--max-image-mb", "0.25",
               "--max-image-pixels", "1000000", "--max-body-mb", "2")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def small_server(bundle):
    """One session, one place in the queue, a short queue timeout, no API key, local image files allowed."""
    s = Server(bundle, "--sessions", "1", "--queue", "1", "--queue-timeout", "0.1", "--allow-local-files")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sdk_model(bundle):
    return edgevlm.open_model(bundle, threads=1)


def _png(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "PNG")
    return buf.getvalue()


def _data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def _user(text: str, picture: np.ndarray | None = None) -> dict:
    if picture is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(_png(picture))}},
                                        {"type": "text", "text": text}]}


def _sdk_answer(model, turns: list[Turn], max_tokens: int = 64) -> list[int]:
    return collect(model.session().stream_prompt(model.prompt(turns), max_new_tokens=max_tokens)).tokens


def _ask(client, messages: list[dict], **options):
    return client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **options)


# --- answers -------------------------------------------------------------------------------------
def test_text_answer(server, sdk_model):
    r = _ask(server.client(), [_user("How many shapes are there?")], max_tokens=16)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL and choice.message.role == "assistant"
    want = _sdk_answer(sdk_model, [Turn("user", "How many shapes are there?")], 16)
    assert choice.message.content == sdk_model.detokenize(want) and choice.message.content.strip()
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens == len(sdk_model.turn_ids("How many shapes are there?"))
    assert r.usage.completion_tokens == len(want) and r.usage.total_tokens == r.usage.prompt_tokens + len(want)


def test_stream_joins_to_the_answer(server):
    client = server.client()
    picture = shapes_data.render(shapes_data.make_scene(11))
    messages = [_user("Describe the image.", picture)]
    whole = _ask(client, messages, max_tokens=48)
    chunks = list(_ask(client, messages, max_tokens=48, stream=True))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3  # it streamed, piece by piece
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert len({c.id for c in chunks}) == 1


def test_max_tokens_and_stop_strings(server):
    client = server.client()
    messages = [_user("Describe the image.", shapes_data.render(shapes_data.make_scene(12)))]
    full = _ask(client, messages, max_tokens=48).choices[0].message.content
    short = _ask(client, messages, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert full.startswith(short.choices[0].message.content)
    word = full.split()[2]
    for stream in (False, True):
        r = _ask(client, messages, max_tokens=48, stop=[word], stream=stream)
        text = "".join(c.choices[0].delta.content or "" for c in r if c.choices) if stream else r.choices[0].message.content
        assert text == full[:full.index(word)]


def test_image_questions_answered_correctly(server):
    client = server.client()
    right = 0
    for scene, qa in shapes_data.heldout(10, start=100):
        r = _ask(client, [_user(qa.question, shapes_data.render(scene))], max_tokens=40)
        right += shapes_data.normalize_answer(r.choices[0].message.content) == shapes_data.normalize_answer(qa.answer)
    assert right == 10


def test_second_turn_reuses_the_cache(server, sdk_model):
    client = server.client()
    picture = shapes_data.render(shapes_data.make_scene(21))
    messages = [_user("What color is the circle?", picture)]
    first = _ask(client, messages, max_tokens=16)
    before = server.metrics()
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 _user("How many shapes are there?")]
    second = _ask(client, messages, max_tokens=16)
    after = server.metrics()
    # the whole first turn stays in the cache: its prompt and its reply (but the stop token, which the
    # next turn's text repeats)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert second.usage.prompt_tokens > cached
    assert after["edgevlm_prompt_tokens_cached_total"] - before["edgevlm_prompt_tokens_cached_total"] == cached
    assert after["edgevlm_prompt_tokens_prefilled_total"] - before["edgevlm_prompt_tokens_prefilled_total"] == \
        second.usage.prompt_tokens - cached
    turns = [Turn("user", "What color is the circle?", (picture,)), Turn("assistant", first.choices[0].message.content),
             Turn("user", "How many shapes are there?")]
    assert second.choices[0].message.content == sdk_model.detokenize(_sdk_answer(sdk_model, turns, 16))


def test_models_and_health(server):
    client = server.client()
    listed = client.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    status, body = server.request("GET", "/health", key=None)  # no key needed
    assert status == 200 and body["status"] == "ok" and body["sessions"] == 4


# --- bad requests ----------------------------------------------------------------------------------
def _error(status_body: tuple[int, dict], status: int, code: str) -> str:
    got_status, body = status_body
    assert got_status == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def _chat_body(messages, **extra) -> bytes:
    return json.dumps({"model": MODEL, "messages": messages, **extra}).encode()


def test_malformed_json(server):
    assert "not valid JSON" in _error(server.request("POST", "/v1/chat/completions", b'{"model": "shapes", '), 400,
                                      "invalid_json")
    _error(server.request("POST", "/v1/chat/completions", b"[1, 2]"), 400, "invalid_json")
    _error(server.request("POST", "/v1/chat/completions", _chat_body("hi")), 400, "invalid_value")
    _error(server.request("POST", "/v1/chat/completions", _chat_body([_user("hi")], temperature="hot")), 400,
           "invalid_type")


def test_unknown_model(server):
    with pytest.raises(openai.NotFoundError) as e:
        server.client().chat.completions.create(model="gpt-4o", messages=[_user("hi")])
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    assert "'gpt-4o' does not exist" in e.value.message


def test_not_an_image(server):
    bad = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(b"hello, not a picture")}},
                                       {"type": "text", "text": "What is it?"}]}
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model=MODEL, messages=[bad])
    assert e.value.code == "invalid_image" and e.value.param == "messages[0].content[0].image_url"
    bad["content"][0]["image_url"]["url"] = "data:image/png;base64,@@@"
    _error(server.request("POST", "/v1/chat/completions", _chat_body([bad])), 400, "invalid_image")
    bad["content"][0]["image_url"]["url"] = "https://example.com/cat.png"
    _error(server.request("POST", "/v1/chat/completions", _chat_body([bad])), 400, "invalid_image_url")
    bad["content"][0]["image_url"]["url"] = str(Path(__file__))
    _error(server.request("POST", "/v1/chat/completions", _chat_body([bad])), 400, "local_files_disabled")


def test_oversized_images(server):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)  # ~480 KB as PNG > 0.25 MB
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server.client(), [_user("What is it?", noise)])
    assert e.value.code == "image_too_large" and "limit of 262144 bytes" in e.value.message
    wide = np.zeros((100, 20000, 3), np.uint8)  # 2 M pixels, a few KB
    message = _error(server.request("POST", "/v1/chat/completions", _chat_body([_user("What is it?", wide)])), 400,
                     "image_too_large")
    assert "20000x100 pixels" in message
    _error(server.request("POST", "/v1/chat/completions", b" " * (3 * 1024 * 1024)), 413, "request_too_large")


def test_prompt_longer_than_the_context(server):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server.client(), [_user("red blue green " * 400)])
    assert e.value.code == "context_length_exceeded" and "maximum context length is 1024 tokens" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        _ask(server.client(), [_user("How many shapes are there?")], max_tokens=1020)
    assert e.value.code == "context_length_exceeded" and "1020 in the completion" in e.value.message


def test_wrong_api_key(server):
    for key in ("wrong", None):
        for method, path, body in (("POST", "/v1/chat/completions", _chat_body([_user("hi")])),
                                   ("GET", "/v1/models", None), ("GET", "/metrics", None)):
            _error(server.request(method, path, body, key=key), 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong").models.list()


def test_other_bad_requests(server):
    _error(server.request("GET", "/v1/chat/completions"), 405, "method_not_allowed")
    _error(server.request("GET", "/v2/nothing"), 404, "not_found")
    _error(server.request("POST", "/v1/chat/completions", _chat_body([_user("hi")], n=2)), 400, "unsupported_value")
    _error(server.request("POST", "/v1/chat/completions", _chat_body([{"role": "assistant", "content": "hi"}])), 400,
           "invalid_value")
    _error(server.request("POST", "/v1/chat/completions", _chat_body([_user("hi")], tools=[{"type": "function"}])),
           400, "unsupported_parameter")
    _error(server.request("POST", "/v1/chat/completions", _chat_body([_user("hi")], top_p=1.5)), 400, "invalid_value")
    m = server.metrics()
    assert not any(k.startswith("edgevlm_requests_total") and 'code="5' in k for k in m), m


# --- load, queue, disconnects ----------------------------------------------------------------------
def test_load_16_clients_64_requests(server, sdk_model):
    """Every answer is the one the model gives that request alone (none lost, none mixed up) and right
    for 62 of the 64 held-out questions (the model's own two mistakes); a busy server answers 429, and
    the queue never holds more than its 8; a second round leaves the memory where the first left it."""
    cases = list(shapes_data.heldout(64))
    pictures = [shapes_data.render(scene) for scene, _ in cases]
    want = [sdk_model.detokenize(_sdk_answer(sdk_model, [Turn("user", qa.question, (p,))], 40))
            for (_, qa), p in zip(cases, pictures)]

    def round_() -> tuple[list[str | None], int]:
        got: list[str | None] = [None] * len(cases)
        busy = [0]
        start = threading.Barrier(16)

        def client_thread(c: int) -> None:
            client = server.client(max_retries=0, timeout=120)
            start.wait()
            for i in range(c, len(cases), 16):
                while got[i] is None:
                    try:
                        r = _ask(client, [_user(cases[i][1].question, pictures[i])], max_tokens=40)
                        got[i] = r.choices[0].message.content
                    except openai.RateLimitError as e:
                        assert e.code == "queue_full"
                        busy[0] += 1
                        time.sleep(0.02)

        threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got, busy[0]

    before = server.metrics()
    got, rejected = round_()
    assert server.idle()
    first = server.metrics()
    assert got == want
    truth = [shapes_data.normalize_answer(qa.answer) for _, qa in cases]
    assert sum(shapes_data.normalize_answer(g) == t for g, t in zip(got, truth)) >= 62
    assert first["edgevlm_queue_depth_max"] <= 8 and first["edgevlm_queue_depth"] == 0
    assert first["edgevlm_sessions_busy"] == 0
    assert first["edgevlm_rejected_queue_full_total"] - before["edgevlm_rejected_queue_full_total"] == rejected
    ok = 'edgevlm_requests_total{route="/v1/chat/completions",code="200"}'
    assert first[ok] - before.get(ok, 0) == 64
    got, _ = round_()
    assert server.idle()
    second = server.metrics()
    assert got == want
    grown = (second["edgevlm_resident_memory_bytes"] - first["edgevlm_resident_memory_bytes"]) / 2**20
    print(f"load: {rejected} answers of 429 in the first round; memory {grown:+.1f} MB in the second")
    assert grown < 4, f"a second round of 64 requests grew the server by {grown:.1f} MB"


def _hold(server: Server) -> http.client.HTTPConnection:
    """A streamed ignore_eos answer of ~1000 tokens (about half a second of the only session), read
    up to its first chunk; the caller closes the connection."""
    host, port = re.match(r"http://([^:]+):(\d+)", server.url).groups()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = _chat_body([_user("How many shapes are there?")], stream=True, ignore_eos=True, temperature=0,
                      max_tokens=1000)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    return conn


def test_full_queue_gets_429_and_a_long_wait_503(small_server):
    before = small_server.metrics()
    held = _hold(small_server)
    results: list[int] = []
    start = threading.Barrier(3)

    def ask() -> None:
        start.wait()
        results.append(small_server.request("POST", "/v1/chat/completions", _chat_body([_user("hi")], max_tokens=2))[0])

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held.close()
    # one waits in the queue (its only place) until its 0.1 s are up, the others find it full
    assert sorted(results) == [429, 429, 503]
    after = small_server.metrics()
    assert after["edgevlm_queue_depth_max"] == 1
    assert after["edgevlm_rejected_queue_full_total"] - before["edgevlm_rejected_queue_full_total"] == 2
    assert after["edgevlm_rejected_queue_timeout_total"] - before["edgevlm_rejected_queue_timeout_total"] == 1


def test_client_leaving_mid_stream_frees_its_session(small_server):
    before = small_server.metrics()
    held = _hold(small_server)
    held.close()
    assert small_server.idle()
    status, body = small_server.request("POST", "/v1/chat/completions", _chat_body([_user("How many shapes are there?")],
                                                                                     max_tokens=8, temperature=0))
    assert status == 200 and body["choices"][0]["message"]["content"].strip()
    after = small_server.metrics()
    assert after["edgevlm_generations_cancelled_total"] - before["edgevlm_generations_cancelled_total"] == 1
    # the held answer stopped well short of its 1000 tokens
    assert after["edgevlm_completion_tokens_total"] - before["edgevlm_completion_tokens_total"] < 900


@pytest.fixture(scope="module")
def hurried_server(bundle):
    """One session and a request timeout of 0.1 s: a 1000-token answer (about half a second) cannot finish."""
    s = Server(bundle, "--sessions", "1", "--timeout", "0.1")
    yield s
    s.stop()


def test_request_timeout(hurried_server):
    before = hurried_server.metrics()
    long = dict(max_tokens=1000, extra_body={"ignore_eos": True})
    client = hurried_server.client(max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        _ask(client, [_user("How many shapes are there?")], **long)
    assert e.value.status_code == 408 and e.value.code == "timeout"
    assert hurried_server.idle()
    # a stream that has started gets the error as an event (or a 408, should its first token come too late)
    with pytest.raises(openai.APIError) as e:
        for _ in _ask(client, [_user("How many shapes are there?")], stream=True, **long):
            pass
    assert "longer than the server's limit of 0.1 s" in e.value.message
    assert hurried_server.idle()
    after = hurried_server.metrics()
    assert after["edgevlm_generations_cancelled_total"] - before["edgevlm_generations_cancelled_total"] == 2
    assert after["edgevlm_completion_tokens_total"] - before["edgevlm_completion_tokens_total"] < 1800
    assert _ask(client, [_user("How many shapes are there?")], max_tokens=8).choices[0].message.content


def test_bad_startup_input_is_one_line_and_exit_code_2(bundle, tmp_path, capsys):
    import socket

    from edgevlm.cli import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cases = [
        (["serve", str(tmp_path / "missing.evlm")], "missing.evlm: no such bundle"),
        (["serve", str(bundle), "--backend", "torch", "--sessions", "2"], "--sessions 2 needs the native backend"),
        (["serve", str(bundle), "--port", str(taken.getsockname()[1])], "cannot listen on 127.0.0.1:"),
        (["serve", str(bundle), "--queue", "-1"], "--queue must be >= 0"),
        (["serve", str(bundle), "--timeout", "0"], "--timeout must be > 0"),
    ]
    try:
        for argv, message in cases:
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("edgevlm serve: error: ") and message in err and "\n" not in err, err
    finally:
        taken.close()


def test_local_image_files_when_allowed(small_server, tmp_path):
    picture = shapes_data.render(shapes_data.make_scene(31))
    path = tmp_path / "picture.png"
    path.write_bytes(_png(picture))
    client = small_server.client()
    inline = _ask(client, [_user("Describe the image.", picture)], max_tokens=40).choices[0].message.content
    for url in (str(path), path.as_uri()):
        message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": "Describe the image."}]}
        assert _ask(client, [message], max_tokens=40).choices[0].message.content == inline
    message["content"][0]["image_url"]["url"] = "picture.png"
    _error(small_server.request("POST", "/v1/chat/completions", _chat_body([message])), 400, "invalid_image_url")
    message["content"][0]["image_url"]["url"] = str(tmp_path / "absent.png")
    _error(small_server.request("POST", "/v1/chat/completions", _chat_body([message])), 400, "invalid_image_url")
