"""Peer runtimes on the same weights: llama.cpp (``llama-cpp-python``) and onnxruntime-genai.

:func:`run_peers` is what ``edgevlm bench --compare`` and ``benchmarks/runtime_vs_peers.py`` call.
For each peer it

1. converts the model with the peer's own toolchain: a GGUF written by :mod:`edgevlm.bench.gguf`
   (Q4_0 linears, Q8_0 embedding/head) for llama.cpp; onnxruntime-genai's model builder
   (``-p int4 -e cpu``: int4 blocks of 32, int8 activations) for onnxruntime-genai;
2. measures it in a subprocess of its own (``python -m edgevlm.bench.peers``, so peak RSS is the
   peer's alone) on exactly N prompt token ids per requested length: load time, then per length a
   warm-up and ``repeat`` runs of prefill (N ids in, logits of the last one out), the first greedy
   token (TTFT), and ``gen`` greedy tokens at depth N with EOS ignored (decode tok/s over the
   ``gen - 1`` steps after the first token, as edgevlm's own stats count them);
3. returns one :class:`~edgevlm.bench.schema.ResultRow` dict per (peer, length), medians with min
   and max; a peer that is not installed or fails gives one row whose ``skipped`` says why.

The prompt ids are the ones ``edgevlm-bench`` feeds the native runtime: ordinary (non-special)
vocabulary entries in the same xorshift order (:func:`synthetic_prompt`).

Weights: a float model directory is converted as it is. A bundle holds quantized weights only
(``weights/``), so for a bundle pass the float directory it was exported from as ``hf_dir``; without
one the bundle's weights are dequantized into a float checkpoint first (so every runtime then
re-quantizes the very values edgevlm runs, at the cost of a second rounding).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from .schema import ResultRow, Summary, skipped_row
from .worker import peak_rss_mb, rss_mb

PEERS = ("llama.cpp", "onnxruntime-genai")
# peer -> (module to import, pip package)
PACKAGES = {"llama.cpp": (("llama_cpp", "llama-cpp-python"), ("gguf", "gguf")),
            "onnxruntime-genai": (("onnxruntime_genai", "onnxruntime-genai"), ("onnx_ir", "onnx-ir"))}
LLAMA_CPP_BATCH = 512  # llama.cpp's default physical batch (n_ubatch): prefill runs in chunks of this many tokens
MEASURE_TIMEOUT_S = 3600

Progress = Callable[[str], None]


def missing_package(peer: str) -> str | None:
    """Why ``peer`` cannot run here (a package to install), or None."""
    for module, pip_name in PACKAGES[peer]:
        if importlib.util.find_spec(module) is None:
            return f"{pip_name} is not installed (pip install {pip_name})"
    return None


def synthetic_prompt(model_dir: Path, n: int) -> list[int]:
    """``n`` ordinary token ids in a fixed pseudo-random order (the order ``edgevlm-bench`` uses)."""
    from edgevlm.processing.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    vocab, special = tok.vocab_size, tok.special_ids()
    ids: list[int] = []
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    while len(ids) < n:
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        i = x % vocab
        if i not in special:
            ids.append(i)
    return ids


# --- the weights each peer converts ---------------------------------------------------------------
def _is_bundle(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def _is_float_dir(path: Path) -> bool:
    cfg = path / "config.json"
    return cfg.is_file() and "quantization_config" not in json.loads(cfg.read_text(encoding="utf-8"))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")


def save_float_checkpoint(model_dir: Path, out: Path) -> Path:
    """A transformers-loadable float Llama checkpoint of ``model_dir`` (dequantized if quantized)."""
    import shutil

    from safetensors.numpy import save_file

    from .gguf import read_decoder

    weights = read_decoder(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {("lm_head." if k.startswith("lm_head.") else "model.") + k: v for k, v in weights.tensors.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf = weights.config.to_hf()
    hf["architectures"] = ["LlamaForCausalLM"]
    hf["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (weights.model_dir / name).is_file():
            shutil.copy(weights.model_dir / name, out / name)
    return out


def float_model_dir(model: Path, hf_dir: Path | None, workdir: Path, progress: Progress) -> Path:
    """The float checkpoint the peers convert: ``hf_dir``, ``model`` itself, or a dequantized copy."""
    if hf_dir is not None:
        return Path(hf_dir)
    source = model / "weights" if _is_bundle(model) else model
    if _is_float_dir(source):
        return source
    out = workdir / "float-checkpoint"
    if not (out / "model.safetensors").is_file():
        progress(f"peers: dequantizing {source} into a float checkpoint (no float weights given)")
        save_float_checkpoint(source, out)
    return out


# --- conversions ----------------------------------------------------------------------------------
def _stamp(src: Path) -> str:
    """Identity of a checkpoint's files (names, sizes, mtimes) so a cached conversion is reused only for it."""
    parts = []
    for p in sorted(src.iterdir()):
        if p.is_file():
            st = p.stat()
            parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def _cached(out: Path, src: Path) -> bool:
    stamp = out.with_name(out.name + ".source")
    return out.exists() and stamp.is_file() and stamp.read_text() == _stamp(src)


def _mark(out: Path, src: Path) -> None:
    out.with_name(out.name + ".source").write_text(_stamp(src))


def convert_llama_cpp(src: Path, workdir: Path, progress: Progress) -> Path:
    """``src`` as a Q4_0 GGUF (written by :mod:`edgevlm.bench.gguf`), reused when already there."""
    from .gguf import write_gguf

    out = workdir / "model-q4_0.gguf"
    if not _cached(out, src):
        progress("peers: writing the Q4_0 GGUF for llama.cpp")
        write_gguf(src, out, "q4_0")
        _mark(out, src)
    return out


def convert_ort_genai(src: Path, workdir: Path, progress: Progress) -> Path:
    """``src`` through onnxruntime-genai's model builder (int4, CPU), reused when already there."""
    out = workdir / "ort-genai-int4"
    if not _cached(out, src):
        progress("peers: building the onnxruntime-genai int4 model (its model builder)")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
               "-p", "int4", "-e", "cpu", "-c", str(workdir / "ort-genai-cache")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not (out / "genai_config.json").is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"onnxruntime-genai model builder failed: {tail[0]}")
        _mark(out, src)
    return out


# --- bytes read per decoded token -----------------------------------------------------------------
def _kv_bytes(src: Path, depth: int, bytes_per_value: int) -> int:
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * depth * bytes_per_value


def _onnx_decode_bytes(model_dir: Path) -> int:
    """Initializer bytes a decode step reads: all but tables read one row at a time (a gather-only
    embedding, the rotary cos/sin caches)."""
    import onnx

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    gathers = ("Gather", "GatherBlockQuantized")
    tables = {n.input[0] for n in graph.node if n.op_type in gathers}
    elsewhere = {i for n in graph.node for i in (n.input[1:] if n.op_type in gathers else n.input)}
    row_read = (tables - elsewhere) | {i.name for i in graph.initializer if i.name in ("cos_cache", "sin_cache")}
    total = 0
    for init in graph.initializer:
        if init.name in row_read:
            continue
        ext = {e.key: e.value for e in init.external_data}
        total += int(ext["length"]) if "length" in ext else len(init.raw_data)
    return total


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# --- the measuring subprocess ---------------------------------------------------------------------
class LlamaCppRunner:
    """A GGUF in llama.cpp (llama-cpp-python's ``Llama``), fed token ids.

    Settings are llama.cpp's own defaults (llama-bench's too) where llama-cpp-python's differ:
    flash attention on (llama.cpp's "auto" turns it on for the CPU), physical batch 512.
    """

    def __init__(self, path: Path, threads: int, n_ctx: int, batch: int = LLAMA_CPP_BATCH):
        import llama_cpp

        self.lib = llama_cpp
        self.version = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"
        self.batch = batch
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=batch, n_ubatch=batch,
                                   n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, flash_attn=True,
                                   verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _next(self) -> int:
        """The greedy pick from the logits of the last position evaluated."""
        import numpy as np

        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return int(np.argmax(logits))

    def run(self, ids: Sequence[int], gen: int) -> tuple[float, float, float, list[int]]:
        """(prefill ms, TTFT ms, decode ms after the first token, greedy tokens) of one generation."""
        llm = self.llm
        llm.reset()  # the next eval drops the KV cache from position 0 on
        t0 = time.perf_counter()
        llm.eval(list(ids))
        t1 = time.perf_counter()
        tokens = [self._next()]
        t_first = time.perf_counter()
        for _ in range(gen - 1):
            llm.eval(tokens[-1:])
            tokens.append(self._next())
        t_end = time.perf_counter()
        return (t1 - t0) * 1e3, (t_first - t0) * 1e3, (t_end - t_first) * 1e3, tokens


class OrtGenaiRunner:
    """An onnxruntime-genai model folder, fed token ids; greedy search with EOS held off (min_length)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime_genai as og

        self.og = og
        self.version = f"onnxruntime-genai {og.__version__}"
        config = og.Config(str(path))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)

    def run(self, ids: Sequence[int], gen: int) -> tuple[float, float, float, list[int]]:
        og = self.og
        params = og.GeneratorParams(self.model)
        n = len(ids) + gen
        params.set_search_options(max_length=n, min_length=n, do_sample=False)
        g = og.Generator(self.model, params)
        t0 = time.perf_counter()
        g.append_tokens(list(ids))  # runs the prompt: the logits of its last position are ready after it
        t1 = time.perf_counter()
        g.generate_next_token()  # picks the first token from those logits
        tokens = [int(g.get_next_tokens()[0])]
        t_first = time.perf_counter()
        for _ in range(gen - 1):
            g.generate_next_token()  # one decode step, then the pick
            tokens.append(int(g.get_next_tokens()[0]))
        t_end = time.perf_counter()
        return (t1 - t0) * 1e3, (t_first - t0) * 1e3, (t_end - t_first) * 1e3, tokens


def measure(spec: dict) -> list[dict]:
    """Run in the peer's own process: load once, then per prompt length a warm-up and the repeats."""
    peer, threads, gen = spec["peer"], int(spec["threads"]), int(spec["gen"])
    prompts: dict[str, list[int]] = spec["prompts"]
    baseline = rss_mb()
    t0 = time.perf_counter()
    if peer == "llama.cpp":
        runner = LlamaCppRunner(Path(spec["path"]), threads, int(spec["n_ctx"]))
        chunk, source = runner.batch, "runtime"
    else:
        runner = OrtGenaiRunner(Path(spec["path"]), threads)
        chunk, source = 0, "runtime"
    load_ms = (time.perf_counter() - t0) * 1e3
    rows = []
    for n_text, ids in prompts.items():
        n = int(n_text)
        runs = [runner.run(ids, gen) for _ in range(int(spec["warmup"]) + int(spec["repeat"]))][int(spec["warmup"]):]
        prefill = [r[0] for r in runs]
        row = ResultRow(
            backend=peer, requested_prompt_tokens=n, runtime=runner.version, threads=threads, prompt_tokens=len(ids),
            decode_depth=len(ids), gen_tokens=gen, chunk_size=chunk, chunk_source=source, load_ms=round(load_ms, 3),
            preprocess_ms=Summary.of([0.0] * len(runs)), vision_encode_ms=Summary.of([0.0] * len(runs)),
            prefill_ms=Summary.of(prefill), prefill_tps=Summary.of(len(ids) / (p / 1e3) for p in prefill),
            ttft_ms=Summary.of(r[1] for r in runs),
            decode_tps=Summary.of((gen - 1) / (r[2] / 1e3) for r in runs if r[2] > 0),
        )
        rows.append(row.to_dict())
    peak = peak_rss_mb()  # this process's own high-water mark (ru_maxrss would carry the parent's)
    for row in rows:
        row["peak_rss_mb"], row["baseline_rss_mb"] = round(peak, 2), round(baseline, 2)
    return rows


def _run_measurement(spec: dict, timeout: float = MEASURE_TIMEOUT_S) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        done = subprocess.run([sys.executable, "-m", "edgevlm.bench.peers", f.name], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])})
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(f"{spec['peer']} measurement failed (exit {done.returncode}): "
                           f"{lines[-1] if lines else 'no output'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the entry point ------------------------------------------------------------------------------
def run_peers(model: Path, prompt_tokens: list[int], gen: int, threads: int, repeat: int,
              progress: Progress | None = None, *, hf_dir: Path | None = None, workdir: Path | None = None,
              peers: Sequence[str] = PEERS, warmup: int = 1) -> list[dict]:
    """Measure each peer on ``model`` (a float Llama model directory or a bundle); see the module doc.

    ``hf_dir``: the float checkpoint a bundle was exported from. ``workdir``: where conversions
    are kept and reused (a temporary folder, removed afterwards, when not given).
    """
    say = progress or (lambda message: None)
    model = Path(model)
    rows: list[dict] = []
    with ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgevlm-peers-")))
        work.mkdir(parents=True, exist_ok=True)
        try:
            src = float_model_dir(model, hf_dir, work, say)
            prompts = {str(n): synthetic_prompt(src, n) for n in prompt_tokens}
        except Exception as e:  # noqa: BLE001 - one row per peer says why, never a crash
            return [skipped_row(p, f"no float checkpoint for the peers: {e}", threads=threads).to_dict() for p in peers]
        for peer in peers:
            if peer not in PEERS:
                rows.append(skipped_row(peer, f"unknown peer (known: {', '.join(PEERS)})", threads=threads).to_dict())
                continue
            reason = missing_package(peer)
            if reason:
                say(f"peers: {peer} skipped: {reason}")
                rows.append(skipped_row(peer, reason, threads=threads).to_dict())
                continue
            try:
                rows += _measure_peer(peer, src, work, prompts, gen, threads, repeat, warmup, say)
            except Exception as e:  # noqa: BLE001
                say(f"peers: {peer} failed: {e}")
                rows.append(skipped_row(peer, f"failed: {e}", threads=threads).to_dict())
    return rows


def _measure_peer(peer: str, src: Path, work: Path, prompts: dict, gen: int, threads: int, repeat: int,
                  warmup: int, say: Progress) -> list[dict]:
    longest = max(len(ids) for ids in prompts.values()) + gen
    if peer == "llama.cpp":
        path = convert_llama_cpp(src, work, say)
        n_ctx = -(-longest // 256) * 256
        tied = json.loads((src / "config.json").read_text()).get("tie_word_embeddings", False)
        from .gguf import gguf_decode_bytes

        weight_bytes, kv_value_bytes = gguf_decode_bytes(path, tied), 2  # KV cache in f16
    else:
        path = convert_ort_genai(src, work, say)
        n_ctx = longest
        weight_bytes, kv_value_bytes = _onnx_decode_bytes(path), 4  # KV cache in float32 on CPU
    say(f"peers: measuring {peer} ({threads} threads, prompts {', '.join(prompts)}, {gen} generated, "
        f"{warmup} warm-up + {repeat} runs)")
    rows = _run_measurement({"peer": peer, "path": str(path), "threads": threads, "gen": gen, "repeat": repeat,
                             "warmup": warmup, "n_ctx": n_ctx, "prompts": prompts})
    for row in rows:
        row["model_bytes"] = _dir_bytes(path)
        row["decode_bytes_per_token"] = weight_bytes + _kv_bytes(src, row["decode_depth"], kv_value_bytes)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m edgevlm.bench.peers SPEC.json``: measure one peer, print its rows as one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgevlm.bench.peers SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    rows = measure(spec)
    sys.stdout.write(json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PEERS", "LlamaCppRunner", "OrtGenaiRunner", "float_model_dir", "missing_package", "run_peers",
           "save_float_checkpoint", "synthetic_prompt"]
