"""The ExecuTorch target: one ``.pte`` with every method, lowered to XNNPACK with 8da4w linears.

``executorch/model.pte`` holds the methods of contract 2 — ``vision_encoder`` (vision models),
``token_embedding``, ``prefill`` (chunk of C rows) and ``decode`` (one row) — with the KV cache as an
explicit input and output (``[L, Hkv, S, D]`` each, as in :mod:`edgevlm.export.graphs`). The same
methods also go under the names ExecuTorch's multimodal runner reads (``image_encoder``,
``token_embeddings``; ``extension/llm/runner/constants.h``): the lowered graphs are the same, and
the XNNPACK weights live in the program's named data store, keyed by content, so ``prefill``,
``decode`` and the aliases share one copy of every weight. The runner's ``decoder`` is not aliased:
it keeps the KV cache inside the program (mutable buffers) and takes ``(embeds, input_pos)``, a
different signature from our explicit-cache ``prefill``/``decode``; a stateful variant sharing the
same weights is possible but not exported yet. Constant methods carry the metadata the
way ExecuTorch's LLM exports do (``get_max_seq_len`` = the chunk size, i.e. the most tokens one
prefill call takes; ``get_max_context_len``, ``get_bos_id``, ``get_eos_ids``, ``get_vocab_size``,
``use_kv_cache``, ``get_chunk_size``).

Quantization (:mod:`edgevlm.export.executorch_modules`): the stored integers and scales become
torchao ``IntxUnpackedToInt8Tensor`` weights with int8 dynamic per-token activations, which the
XNNPACK partitioner lowers to its ``qd8`` fully-connected kernels: int4 group-wise decoder linears
(8da4w) and int8 per-channel linears elsewhere (vision tower, projector, LM head: 8da8w). The token
embedding runs ExecuTorch's quantized ``embedding_byte`` kernel on the int8 rows. Norms,
attention, RoPE and the cache update are plain ATen ops (XNNPACK takes what it supports, the
portable kernels the rest).

Kernel-level tolerance (measured by ``export_bundle``'s verification, see tests/test_export_executorch.py):

- ``8da4w`` recipe: the reference computes exactly this arithmetic. The remaining differences are
  XNNPACK storing int4 group scales in bfloat16 (our float32 scales rounded to 8 significant bits)
  and float summation order.
- weight-only recipes (``w4g32``, ...): XNNPACK additionally quantizes every quantized linear's
  input to int8 per token, which the float-activation reference does not.

Loading needs ``executorch.kernels.quantized`` imported (quantized embedding kernels); :func:`open_engine`
does that.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgevlm import contract as C

from ..backend import GraphEngine
from ..base import ExportContext, TargetResult

RUNS_HERE = True
TOOLCHAIN = ("executorch", "torchao")

PROGRAM_FILE = "model.pte"
# contract-2 method -> the name ExecuTorch's multimodal runner uses for it
RUNNER_ALIASES = {C.METHOD_VISION_ENCODER: "image_encoder", C.METHOD_TOKEN_EMBEDDING: "token_embeddings"}
DELEGATE = "executorch_call_delegate"


def constant_methods(manifest: dict) -> dict:
    """Metadata as constant methods, named as ExecuTorch's LLM runners read them."""
    text = manifest[C.KEY_TEXT_CONFIG]
    special = manifest.get(C.KEY_SPECIAL_TOKENS) or {}
    meta = {
        C.ET_META_MAX_SEQ_LEN: int(manifest[C.KEY_CHUNK_SIZE]),
        C.ET_META_MAX_CONTEXT_LEN: int(manifest[C.KEY_MAX_CONTEXT]),
        C.ET_META_VOCAB_SIZE: int(text["vocab_size"]),
        C.ET_META_USE_KV_CACHE: True,
        C.ET_META_CHUNK_SIZE: int(manifest[C.KEY_CHUNK_SIZE]),
    }
    bos = special.get(C.TOKEN_BOS)
    if bos is not None:
        meta[C.ET_META_BOS_ID] = int(bos)
    eos = special.get(C.TOKEN_EOS)
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if eos:
        meta[C.ET_META_EOS_IDS] = [int(e) for e in eos]
    return meta


def _graphs(model, ctx: ExportContext) -> dict:
    from ..executorch_modules import ETStepGraph
    from ..graphs import TokenEmbeddingGraph, VisionEncoderGraph

    step = ETStepGraph(model)
    graphs = {C.METHOD_TOKEN_EMBEDDING: TokenEmbeddingGraph(model), C.METHOD_PREFILL: step, C.METHOD_DECODE: step}
    if C.METHOD_VISION_ENCODER in ctx.methods:
        graphs = {C.METHOD_VISION_ENCODER: VisionEncoderGraph(model), **graphs}
    return graphs


def _square(size):
    """The encoder's input side: the manifest may hold it as ``[h, w]`` (CLIP crop size)."""
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"executorch: the vision encoder is exported for square tiles, got {size}")
        return int(size[0])
    return size


def _count_ops(ep) -> tuple[int, Counter]:
    """Delegate calls and the remaining (non-delegated) operators of one lowered method."""
    delegates, ops = 0, Counter()
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if DELEGATE in name:
            delegates += 1
        elif name != "getitem":
            ops[name] += 1
    return delegates, ops


def partitioner():
    """XNNPACK's partitioner, telling ExecuTorch that the ops it keeps from decomposition need no
    per-node check when every one of them already passes that check.

    ``to_edge_transform_and_lower`` decomposes a program three times for a partitioner with a
    per-node check (preserve, mark the nodes that pass, decompose the rest) and once when there
    is none. In our graphs every preserved node (quantized linears, torchao's quantization ops)
    passes XNNPACK's check, so the answer is the same and two whole-graph decompositions are
    saved; a graph with a node that fails the check keeps the checked path.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Partitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, check = super().ops_to_not_decompose(ep)
            if check is None:
                return ops, None
            targets = set(ops)
            kept = [n for n in ep.graph.nodes if n.op == "call_function" and n.target in targets]
            return (ops, None) if all(check(n) for n in kept) else (ops, check)

    return Partitioner()


@contextmanager
def _xnnpack_skips_unchanged_retraces():
    """XNNPACK's preprocessing runs 17 passes over every delegated graph, and each of its own passes
    ends by re-tracing the whole graph with fake tensors (``ExportPass.call``) *whether or not it
    changed anything*; most change nothing in a decoder (batch norm, PReLU, upsampling, conv1d,
    SDPA patterns, ...). That re-tracing was over half the lowering time of a 30-layer decoder.
    Inside this context, an XNNPACK pass whose graph is structurally unchanged (the same nodes,
    targets and arguments as when the pass started) returns it as is instead of re-tracing it; a
    pass that changed something re-traces as before. The lowered program is byte-identical
    (tests/test_export_executorch.py checks it)."""
    from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
    from executorch.exir.pass_base import ExportPass
    from torch.fx.passes.infra.pass_base import PassResult

    def fingerprint(graph) -> tuple:
        return tuple(node.format_node() for node in graph.nodes)

    def requires(self, graph_module):
        self._evlm_fingerprint = fingerprint(graph_module.graph)

    def call(self, graph_module):  # what XNNPACK passes reach through super().call(...)
        before = getattr(self, "_evlm_fingerprint", None)
        if before is not None and fingerprint(graph_module.graph) == before:
            return PassResult(graph_module, False)
        return ExportPass.call(self, graph_module)

    saved = {name: XNNPACKPass.__dict__.get(name) for name in ("requires", "call")}
    XNNPACKPass.requires, XNNPACKPass.call = requires, call
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(XNNPACKPass, name)
            else:
                setattr(XNNPACKPass, name, value)


def _with_aliases(edge, meta: dict):
    """The lowered programs again under the runner's names (lowered once; the emitted methods share the
    delegate's weights through the named data store)."""
    from executorch.exir import EdgeProgramManager

    programs = {m: edge.exported_program(m) for m in edge.methods}
    programs.update({alias: programs[m] for m, alias in RUNNER_ALIASES.items() if m in programs})
    return EdgeProgramManager(programs, constant_methods=meta, compile_config=edge.compile_config)


def export(ctx: ExportContext, out: Path) -> TargetResult:
    """Export the reference's graphs to ``out/model.pte`` (XNNPACK, 8da4w) with metadata constant methods."""
    import torch
    from executorch.exir import to_edge_transform_and_lower

    from ..executorch_modules import executorch_model
    from ..graphs import example_inputs

    out.mkdir(parents=True, exist_ok=True)
    times = {}
    t = time.perf_counter()
    model, counts = executorch_model(ctx.reference.model)
    graphs = _graphs(model, ctx)
    programs = {}
    with torch.no_grad():
        for method, graph in graphs.items():
            args = example_inputs(model, method, ctx.chunk_size, ctx.max_context, _square(ctx.image_size))
            programs[method] = torch.export.export(graph.eval(), args, strict=False)
    times["torch_export_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    meta = constant_methods(ctx.manifest)
    with _xnnpack_skips_unchanged_retraces():
        edge = to_edge_transform_and_lower(programs, partitioner=[partitioner()], constant_methods=meta)
    edge = _with_aliases(edge, meta)
    delegation = {}
    for method in edge.methods:
        delegates, ops = _count_ops(edge.exported_program(method))
        delegation[method] = {"xnnpack_delegates": delegates, "other_ops": dict(sorted(ops.items()))}
    times["lower_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    et = edge.to_executorch()
    path = out / PROGRAM_FILE
    path.write_bytes(et.buffer)
    times["serialize_s"] = round(time.perf_counter() - t, 2)

    for method in (C.METHOD_PREFILL, C.METHOD_DECODE):
        if not delegation[method]["xnnpack_delegates"]:
            raise RuntimeError(f"executorch: nothing of {method} was delegated to XNNPACK")
    rel = f"{out.name}/{PROGRAM_FILE}"
    checks = {"methods": sorted(edge.methods), "constant_methods": meta, "quantized_modules": counts,
              "delegation": delegation, "times": times, "pte_bytes": path.stat().st_size}
    note = ("XNNPACK: int4 linears 8da4w (qd8 x qb4w, bf16 group scales), int8 linears 8da8w (qd8 x qc8w), "
            "int8 embedding via quantized_decomposed::embedding_byte")
    return TargetResult({m: rel for m in sorted(edge.methods)}, checks=checks, note=note)


def _import_kernels() -> None:
    """Kernels a program may use beyond the portable ones (loading fails with 0x14 without them)."""
    import executorch.kernels.quantized  # noqa: F401


class ExecuTorchEngine(GraphEngine):
    """Runs the ``.pte``'s methods through ``executorch.runtime`` (the SDK's Python backend)."""

    def __init__(self, program_path: Path, manifest: dict):
        from executorch.runtime import Runtime

        _import_kernels()
        self.program = Runtime.get().load_program(Path(program_path))
        self.method_names = set(self.program.method_names)
        self._methods: dict = {}
        super().__init__(manifest)

    def constant(self, name: str):
        """The value of a metadata constant method (None if the program has none of that name)."""
        if name not in self.method_names:
            return None
        values = self.run(name)
        return values[0] if len(values) == 1 else values

    def run(self, method: str, *arrays: np.ndarray) -> list[np.ndarray]:
        import torch

        if method not in self._methods:
            if method not in self.method_names:
                raise KeyError(f"the ExecuTorch program has no method {method!r} (has: {', '.join(sorted(self.method_names))})")
            self._methods[method] = self.program.load_method(method)
        outputs = self._methods[method].execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        # copies: an output may live in the method's planned memory, reused by its next call
        return [o.detach().clone().numpy() if isinstance(o, torch.Tensor) else o for o in outputs]


def open_engine(bundle: Path, manifest: dict) -> ExecuTorchEngine:
    """The engine over a bundle's ExecuTorch program."""
    files = manifest[C.KEY_TARGETS].get(C.TARGET_EXECUTORCH, {}).get("files") or {}
    rel = files.get(C.METHOD_PREFILL, f"{C.TARGET_EXECUTORCH}/{PROGRAM_FILE}")
    return ExecuTorchEngine(Path(bundle) / rel, manifest)
