"""The SDK: ``edgevlm.load(path, backend=...)`` -> a :class:`Session` that generates, streams and chats.

``edgevlm.open_model(path, backend=...)`` -> a :class:`Model` whose ``session()`` makes any number
of sessions (``load`` is ``open_model(...).session()``). On ``native`` they share one copy of the
weights, each with its own KV cache; the other backends hold the cache inside the loaded graph or
module, so each of their sessions loads its own engine.

One session API over every backend:

- ``native``: the C++ runtime (``edgevlm._native``) on a bundle's native weights;
- ``onnxruntime``, ``executorch``, ``tvm``: a bundle's exported graphs, driven from Python by the
  engines of :mod:`edgevlm.export.backend` (the same ones the exporter verifies with);
- ``torch``: the PyTorch reference on a model directory, a zoo name or a bundle's weights.

Prompts go through the model's chat template as turns. A session keeps its KV cache across
:meth:`Session.chat` calls: a later turn appends the template's pieces for one more user turn
(``Processor.chat_format``, the same pieces the C++ runtime concatenates) after the reply, so
nothing before it is recomputed. :meth:`Session.generate` and :meth:`Session.stream` start fresh.
:meth:`Session.stream_prompt` takes a whole conversation as one :class:`~edgevlm.prompt.Prompt`
(``model.prompt(turns)``, what a server receives on every request) and keeps the longest prefix of
it that the session's cache already holds. Greedy decoding gives the same tokens on every backend
(the export verification checks it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue

import numpy as np

from . import contract as C
from .errors import InputError
from .generate import GenerationStats, Response, Result, generate_step
from .processing.image import ImageLike, load_image
from .processing.processor import ModelInputs
from .processing.tokenizer import StreamDecoder
from .prompt import Key, Prompt, Turn, build_prompt, images_after, reusable_prefix
from .sampling import SamplingParams

BACKENDS = ("native", "onnxruntime", "executorch", "tvm", "torch")
_TARGET_OF = {"onnxruntime": C.TARGET_ONNX, "executorch": C.TARGET_EXECUTORCH, "tvm": C.TARGET_TVM,
              "native": C.TARGET_NATIVE}

# How many tokens the native backend's generation thread may run ahead of a stream's reader.
STREAM_AHEAD = 16


@dataclass
class _Conversation:
    position: int = 0  # rows in the KV cache
    turns: int = 0
    pending: int | None = None  # the reply's last token when it was not a stop token (not yet cached)
    history: list[int] = field(default_factory=list)


def _sampling(params: SamplingParams | None, overrides: dict) -> SamplingParams:
    if params is not None and overrides:
        raise InputError("give either params=SamplingParams(...) or sampling keywords, not both")
    return params or SamplingParams(**overrides)


class Session:
    """A loaded model on one backend; see the module docstring."""

    backend: str
    _keys: list[Key]  # keys (edgevlm.prompt) of the rows in the cache, then the last token; [] when unknown
    reused_tokens: int = 0  # rows of the last stream_prompt's prompt that the cache already held

    @property
    def position(self) -> int:
        """Rows in the KV cache."""
        raise NotImplementedError

    def reusable(self, prompt: Prompt) -> int:
        """How many rows of ``prompt`` this session's cache holds and stream_prompt would keep."""
        return reusable_prefix(self._keys[:self.position], prompt)

    def stream_prompt(self, prompt: Prompt, params: SamplingParams | None = None, **sampling) -> Iterator[Response]:
        """The reply to a whole conversation (``model.prompt(turns)``), one record per token.

        The rows of ``prompt`` the cache already holds (:meth:`reusable`; ``reused_tokens`` after
        the call) are kept, the rest prefilled; the stats count only those.
        """
        params = _sampling(params, sampling)
        if len(prompt) == 0:
            raise InputError("the prompt is empty")
        keep = self.reusable(prompt)
        self.reused_tokens = keep
        return self._prompt_turn(prompt, keep, params)

    def _prompt_turn(self, prompt: Prompt, keep: int, params: SamplingParams) -> Iterator[Response]:
        raise NotImplementedError

    def generate(self, prompt: str, images: Sequence[ImageLike] = (), params: SamplingParams | None = None,
                 **sampling) -> Result:
        """A fresh one-turn answer: text, tokens and stats."""
        return collect(self.stream(prompt, images, params, **sampling))

    def stream(self, prompt: str, images: Sequence[ImageLike] = (), params: SamplingParams | None = None,
               **sampling) -> Iterator[Response]:
        """A fresh one-turn answer, one record per token (text piece, token, stats)."""
        self.reset()
        return self._turn(prompt, images, _sampling(params, sampling))

    def chat(self, prompt: str, images: Sequence[ImageLike] = (), params: SamplingParams | None = None,
             **sampling) -> Result:
        """The next turn of the conversation, reusing the KV cache of the turns before it."""
        return collect(self._turn(prompt, images, _sampling(params, sampling)))

    def chat_stream(self, prompt: str, images: Sequence[ImageLike] = (), params: SamplingParams | None = None,
                    **sampling) -> Iterator[Response]:
        return self._turn(prompt, images, _sampling(params, sampling))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with the tokenizer's special tokens (BOS), no chat template."""
        raise NotImplementedError

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced log-probabilities ``[len(ids) - 1]``: ``out[i] = log p(ids[i + 1] | ids[..i])``.

        One pass of static prefill chunks from an empty cache (the session is reset), not a decode
        step per token; the graph backends need a bundle exported with ``--score``."""
        raise NotImplementedError

    @property
    def max_context(self) -> int:
        """Positions of the KV cache: the longest text :meth:`score` takes."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def _turn(self, prompt: str, images: Sequence[ImageLike], params: SamplingParams) -> Iterator[Response]:
        raise NotImplementedError


def collect(records: Iterator[Response]) -> Result:
    """A stream's records as one result: the joined text, the tokens and the last stats."""
    pieces, tokens, stats = [], [], GenerationStats()
    for r in records:
        pieces.append(r.text)
        tokens.append(r.token)
        stats = r.stats
    return Result("".join(pieces), tokens, stats)


class PythonSession(Session):
    """Sessions whose compute is an :class:`edgevlm.engine.Engine` driven from Python."""

    def __init__(self, backend: str, engine, processor, chat: bool = True, can_score: bool = True):
        self.backend = backend
        self.can_score = can_score  # False: a graph target exported without the optional score method
        self.engine = engine
        self.processor = processor
        self.use_template = chat and processor.chat_template is not None
        self.format = processor.chat_format() if self.use_template else None
        self.conv = _Conversation()
        self._keys = []

    @property
    def position(self) -> int:
        return self.conv.position

    def reset(self) -> None:
        self.engine.reset()
        self.conv = _Conversation()
        self._keys = []

    def tokenize(self, text: str) -> list[int]:
        return self.processor.tokenizer.encode(text)

    @property
    def max_context(self) -> int:
        return self.engine.max_context

    def score(self, ids: Sequence[int]) -> np.ndarray:
        from .engine import run_score

        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) < 2:
            raise InputError("score: give at least two token ids")
        vocab = getattr(self.engine, "vocab_size", None)
        if vocab is not None and (ids.min() < 0 or ids.max() >= vocab):
            raise InputError(f"score: token ids must be in 0..{vocab - 1}")
        if not self.can_score:
            raise InputError(f"the {self.backend} backend cannot score this bundle: it was exported without the "
                             "`score` method (re-export with `edgevlm export ... --score`)")
        self.reset()
        try:
            return run_score(self.engine, self.engine.embed(ids), ids)
        finally:
            self.reset()

    def _text(self, prompt: str, n_images: int) -> str:
        proc = self.processor
        if not self.use_template:
            return proc.image_token * n_images + prompt
        if self.conv.turns == 0:
            return proc.chat_prompt(prompt, n_images)
        fmt = self.format
        if fmt is None:
            raise InputError("this model's chat template cannot continue a conversation; call reset() first")
        if n_images > fmt["max_images"]:
            raise InputError(f"{n_images} images in one turn; at most {fmt['max_images']} are supported")
        return fmt["next"][str(n_images)] + prompt + fmt["tail"]

    def _turn(self, prompt: str, images: Sequence[ImageLike], params: SamplingParams) -> Iterator[Response]:
        stats = GenerationStats(backend=self.backend)
        t0 = time.perf_counter()
        pictures = [load_image(im) for im in images]
        inputs = self.processor(self._text(prompt, len(pictures)), pictures)
        ids = list(inputs.input_ids)
        bos = self.processor.tokenizer.bos_id
        if self.conv.turns > 0 and ids[:1] == [bos] and bos is not None:
            ids = ids[1:]  # the BOS of the conversation is already in the cache
        if self.conv.pending is not None:
            ids.insert(0, self.conv.pending)
        inputs = ModelInputs(ids, inputs.pixel_values, inputs.tiles_per_image)
        stats.preprocess_ms = (time.perf_counter() - t0) * 1e3
        self._keys = []
        return self._run(inputs, params, stats)

    def _prompt_turn(self, prompt: Prompt, keep: int, params: SamplingParams) -> Iterator[Response]:
        stats = GenerationStats(backend=self.backend)
        t0 = time.perf_counter()
        tiles = [self.processor.preprocess_image(load_image(im)) for im in images_after(prompt, keep)]
        pixels = np.concatenate([t.pixel_values for t in tiles]) if tiles else None
        inputs = ModelInputs(prompt.ids[keep:], pixels, [t.pixel_values.shape[0] for t in tiles])
        stats.preprocess_ms = (time.perf_counter() - t0) * 1e3
        self.conv = _Conversation(position=keep, turns=1 if keep else 0, history=list(prompt.ids[:keep]))
        self._keys = list(prompt.keys[:keep])
        for r in self._run(inputs, params, stats):
            if len(self._keys) == keep:
                self._keys = list(prompt.keys)
            self._keys.append(r.token)
            yield r

    def _run(self, inputs: ModelInputs, params: SamplingParams, stats: GenerationStats) -> Iterator[Response]:
        """Prefill ``inputs`` after the cached rows and generate (the conversation's state follows)."""
        ids = inputs.input_ids
        tokenizer = self.processor.tokenizer
        stop_ids = params.stop_token_ids if params.stop_token_ids is not None else tokenizer.eos_ids
        decoder = StreamDecoder(tokenizer)
        start = self.conv.position
        if start + len(ids) > self.engine.max_context:
            raise InputError(f"prompt of {len(ids)} tokens does not fit the context of {self.engine.max_context} "
                             f"tokens ({start} already used)")
        self.conv.turns += 1
        self.conv.position += len(ids)
        self.conv.pending = None
        self.conv.history += ids
        last: Response | None = None
        for token in generate_step(self.engine, inputs, params, stop_ids, stats, start):
            if last is not None:
                yield last
                self.conv.position += 1  # the previous token went into the cache
            self.conv.history.append(token)
            piece = "" if token in stop_ids and not params.ignore_eos else decoder.push(token)
            last = Response(piece, token, stats)
        if last is not None:
            last.text += decoder.flush()
            last.finish_reason = stats.finish_reason
            if stats.finish_reason != "stop":
                self.conv.pending = last.token
            yield last


class NativeSession(Session):
    """The C++ runtime through ``edgevlm._native``: one KV cache over a :class:`NativeModel`'s weights."""

    backend = "native"

    def __init__(self, parent: NativeModel):
        self.parent = parent
        self._native = parent._native
        self.model = parent.native
        self.session = self._native.Session(self.model)
        self.use_template = parent.chat
        self._keys = []

    @property
    def position(self) -> int:
        return self.session.position

    def reset(self) -> None:
        self.session.reset()
        self._keys = []

    def tokenize(self, text: str) -> list[int]:
        return list(self.model.tokenize(text, True))

    @property
    def max_context(self) -> int:
        return self.model.max_context

    def score(self, ids: Sequence[int]) -> np.ndarray:
        try:
            return np.asarray(self.session.score([int(i) for i in ids]), dtype=np.float64)
        except self._native.NativeError as e:
            raise InputError(str(e)) from None

    def _turn(self, prompt: str, images: Sequence[ImageLike], params: SamplingParams) -> Iterator[Response]:
        if params.stop_token_ids is not None:
            raise InputError("the native backend stops on the bundle's EOS ids; stop_token_ids is not supported")
        t0 = time.perf_counter()
        pictures = [np.ascontiguousarray(load_image(im), dtype=np.uint8) for im in images]
        decode_ms = (time.perf_counter() - t0) * 1e3
        self._keys = []
        try:
            self.session.add_turn(prompt, pictures, self.use_template)
        except self._native.NativeError as e:
            raise InputError(str(e)) from None
        yield from self._generate(params, decode_ms)

    def _prompt_turn(self, prompt: Prompt, keep: int, params: SamplingParams) -> Iterator[Response]:
        if params.stop_token_ids is not None:
            raise InputError("the native backend stops on the bundle's EOS ids; stop_token_ids is not supported")
        pictures = [np.ascontiguousarray(im, dtype=np.uint8) for im in images_after(prompt, keep)]
        try:
            self.session.truncate(keep)
            self._keys = list(prompt.keys[:keep])
            self.session.add_tokens(prompt.ids[keep:], pictures)
        except self._native.NativeError as e:
            raise InputError(str(e)) from None
        self._keys = list(prompt.keys)
        for r in self._generate(params, 0.0):
            self._keys.append(r.token)
            yield r

    def _generate(self, params: SamplingParams, image_decode_ms: float) -> Iterator[Response]:
        """Records of a generation from the last prefill."""
        # generate runs in a thread (the binding releases the GIL), so records stream as they come. It
        # runs at most STREAM_AHEAD tokens ahead of the reader; closing the iterator early makes the
        # token callback answer False, which cancels the generation where it stands.
        queue: Queue = Queue(maxsize=STREAM_AHEAD)
        closed = threading.Event()
        seed = params.seed if params.seed is not None else int(time.time_ns() & 0xFFFFFFFF)
        stats = GenerationStats(backend="native")
        failure: list[BaseException] = []

        def hand_over(item) -> bool:
            while not closed.is_set():
                try:
                    queue.put(item, timeout=0.05)
                    return True
                except Full:
                    continue
            return False

        def work() -> None:
            try:
                self.session.generate(params.max_new_tokens, params.temperature, params.top_k, params.top_p,
                                      params.repetition_penalty, seed, params.ignore_eos,
                                      lambda t, piece: hand_over((t, piece)))
            except BaseException as e:  # handed to the consumer below
                failure.append(e)
            finally:
                hand_over(None)

        thread = threading.Thread(target=work, name="edgevlm-native-generate", daemon=True)
        thread.start()
        pending = None
        try:
            while (item := queue.get()) is not None:
                if pending is not None:
                    yield Response(pending[1], pending[0], stats)
                pending = item
            thread.join()
            if failure:
                raise InputError(str(failure[0])) if isinstance(failure[0], self._native.NativeError) else failure[0]
            self._fill_stats(stats, image_decode_ms)
            if pending is not None:
                yield Response(pending[1], pending[0], stats, stats.finish_reason)
        finally:
            closed.set()
            if thread.is_alive():
                self.session.cancel()
                thread.join()

    def _fill_stats(self, stats: GenerationStats, image_decode_ms: float) -> None:
        """The runtime's stats JSON (the same schema) into ``stats``, plus the image file decoding."""
        d = dict(self.session.stats)
        for k in GenerationStats.__dataclass_fields__:
            if k in d:
                setattr(stats, k, d[k])
        stats.preprocess_ms += image_decode_ms
        stats.ttft_ms += image_decode_ms


def native_tool(name: str) -> Path | None:
    """Where a program of the C++ runtime (``edgevlm-run``, ``edgevlm-bench``) was installed, or None."""
    import shutil

    import edgevlm

    for folder in edgevlm.__path__:
        exe = Path(folder) / "bin" / name
        if exe.is_file():
            return exe
    found = shutil.which(name)
    return Path(found) if found else None


def _bundle_manifest(path: Path, verify: bool = True) -> dict:
    from .export.bundle import open_bundle

    return open_bundle(path, verify=verify).manifest


class Model:
    """A loaded model that sessions share: ``edgevlm.open_model(path, backend=...)``, then ``session()``.

    It also builds prompts the way its sessions prefill them (:meth:`prompt`, :meth:`turn_ids`).
    """

    backend: str
    chat: bool
    shares_weights: bool  # True: every session uses this one copy of the weights (native)
    max_context: int
    image_token_id: int | None
    eos_ids: list[int]

    def session(self) -> Session:
        """A new session (an empty KV cache of its own)."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` as it is, without special tokens or template."""
        raise NotImplementedError

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens left out."""
        raise NotImplementedError

    def turn_ids(self, text: str, image_sizes: Sequence[tuple[int, int]] = (), first: bool = True) -> list[int]:
        """Prompt ids of one user turn (template pieces, image rows for images of (width, height), BOS when first)."""
        raise NotImplementedError

    def prompt(self, turns: Sequence[Turn]) -> Prompt:
        """A whole conversation as one prompt (see :mod:`edgevlm.prompt`)."""
        return build_prompt(self, turns)


class NativeModel(Model):
    """A bundle's native weights loaded once by the C++ runtime; each session adds a KV cache."""

    backend = "native"
    shares_weights = True

    def __init__(self, bundle: Path, threads: int = 0, chat: bool = True, verify: bool = True, chunk_size: int = 0,
                 max_context: int = 0):
        from . import _native

        self._native = _native
        self.native = _native.Model.load(str(bundle), threads=threads, verify=verify, chunk_size=chunk_size,
                                         max_context=max_context)
        self.chat = chat
        self.max_context = self.native.max_context
        self.image_token_id = self.native.image_token_id
        self.eos_ids = list(self.native.eos_ids)

    def session(self) -> NativeSession:
        return NativeSession(self)

    def tokenize(self, text: str) -> list[int]:
        return self.native.tokenize(text, False)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.native.detokenize(list(ids), True)

    def turn_ids(self, text: str, image_sizes: Sequence[tuple[int, int]] = (), first: bool = True) -> list[int]:
        try:
            return self.native.turn_ids(text, [tuple(s) for s in image_sizes], first, self.chat)
        except self._native.NativeError as e:
            raise InputError(str(e)) from None


class PythonModel(Model):
    """A backend driven from Python. Its engines keep the KV cache inside the loaded graph or module,
    so each session after the first loads its own engine (``shares_weights`` is False)."""

    shares_weights = False

    def __init__(self, backend: str, open_engine, processor, chat: bool = True, can_score: bool = True):
        self.backend = backend
        self.chat = chat
        self.can_score = can_score  # False: a graph target exported without the optional score method
        self.processor = processor
        self._open_engine = open_engine
        self._first = open_engine()  # handed to the first session
        self.max_context = self._first.max_context
        self.image_token_id = getattr(self._first, "image_token_id", None)
        self.eos_ids = list(processor.tokenizer.eos_ids)

    def session(self) -> PythonSession:
        engine, self._first = self._first or self._open_engine(), None
        return PythonSession(self.backend, engine, self.processor, self.chat, self.can_score)

    def tokenize(self, text: str) -> list[int]:
        return self.processor.tokenizer.encode(text, add_special_tokens=False)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.processor.tokenizer.decode(list(ids), skip_special_tokens=True)

    def turn_ids(self, text: str, image_sizes: Sequence[tuple[int, int]] = (), first: bool = True) -> list[int]:
        proc = self.processor
        n = len(image_sizes)
        use_template = self.chat and proc.chat_template is not None
        if not use_template:
            rendered = proc.image_token * n + text
        elif first:
            rendered = proc.chat_prompt(text, n)
        else:
            fmt = proc.chat_format()
            if fmt is None:
                raise InputError("this model's chat template cannot continue a conversation")
            if n > fmt["max_images"]:
                raise InputError(f"{n} images in one turn; at most {fmt['max_images']} are supported")
            rendered = fmt["next"][str(n)] + text + fmt["tail"]
        # the layout of image rows depends on the sizes only: blank pictures of those sizes give the ids
        ids = list(proc(rendered, [np.zeros((h, w, 3), np.uint8) for w, h in image_sizes]).input_ids)
        bos = proc.tokenizer.bos_id
        if not first and bos is not None and ids[:1] == [bos]:
            ids = ids[1:]
        return ids


def open_model(path: str | Path, backend: str = "native", threads: int | None = None, chat: bool = True,
               chunk_size: int | None = None, max_context: int | None = None, verify: bool = True) -> Model:
    """Open a bundle (or, for ``backend="torch"``, also a model directory or zoo name) as a :class:`Model`
    whose ``session()`` makes sessions; the options are those of :func:`load`."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    p = Path(path)
    is_bundle = (p / C.MANIFEST_FILE).is_file()
    if backend == "torch":
        return _torch_model(p / C.WEIGHTS_DIR if is_bundle else path, threads, chat, chunk_size, max_context,
                            _bundle_manifest(p) if is_bundle else None)
    if not is_bundle:
        raise InputError(f"{path}: not a bundle ({C.MANIFEST_FILE} missing); the {backend} backend runs bundles "
                         f"written by `edgevlm export` (backend='torch' also takes model directories)")
    manifest = _bundle_manifest(p, verify)
    target = _TARGET_OF[backend]
    if target not in manifest[C.KEY_TARGETS]:
        have = ", ".join(k for k, v in _TARGET_OF.items() if v in manifest[C.KEY_TARGETS]) or "none"
        raise InputError(f"{path}: the bundle has no {target} target, so no {backend} backend (it has: {have})")
    if backend == "native":  # checked above when verify
        return NativeModel(p, threads or 0, chat, verify=False, chunk_size=chunk_size or 0,
                           max_context=max_context or 0)
    from .export.base import target_module
    from .models import load_processor

    module = target_module(target)
    _, processor = load_processor(p / C.WEIGHTS_DIR)
    methods = manifest[C.KEY_TARGETS][target].get("files") or {}
    return PythonModel(backend, lambda: module.open_engine(p, manifest), processor, chat,
                       can_score=C.METHOD_SCORE in methods)


def load(path: str | Path, backend: str = "native", threads: int | None = None, chat: bool = True,
         chunk_size: int | None = None, max_context: int | None = None, verify: bool = True) -> Session:
    """Open a bundle (or, for ``backend="torch"``, also a model directory or zoo name) on a backend.

    ``threads`` sets the compute threads (native, torch; the other runtimes use their defaults).
    ``chat=False`` takes prompts as they are, without the chat template. ``chunk_size`` and
    ``max_context`` override the bundle's for ``native`` (any chunk; a context up to the bundle's)
    and ``torch``; the exported graphs of the other backends have them fixed. ``verify=False`` skips
    the sha256 check of the bundle's files (benchmarks time the load without it).
    """
    return open_model(path, backend, threads, chat, chunk_size, max_context, verify).session()


def _torch_model(path, threads, chat, chunk_size, max_context, manifest) -> Model:
    import torch

    from .engine import TorchEngine
    from .models import load as load_model

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(path)
    limit = loaded.model.language_model.config.max_position_embeddings
    if manifest is not None:
        chunk_size = chunk_size or manifest[C.KEY_CHUNK_SIZE]
        max_context = max_context or manifest[C.KEY_MAX_CONTEXT]
    max_context = min(max_context or 2048, limit)
    chunk = min(chunk_size or 64, max_context)
    first = [loaded]

    def open_engine():  # the model holds its KV cache: a session after the first loads it again
        model = first.pop().model if first else load_model(path).model
        return TorchEngine(model, max_context, chunk)

    return PythonModel("torch", open_engine, loaded.processor, chat)


__all__ = ["BACKENDS", "Model", "NativeModel", "NativeSession", "PythonModel", "PythonSession", "Session", "load",
           "native_tool", "open_model"]
