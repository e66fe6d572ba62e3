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

Lowering time (the slow part of this target; ExecuTorch's passes are single-threaded Python that
re-trace the whole graph with fake tensors, once per pass and method):

- with two cores, ``decode`` is lowered in a worker process (``python -m
  edgevlm.export.targets.executorch``, reading the bundle's quantized weights) while this process
  lowers the other methods; the two programs are joined into one ``.pte``
  (:mod:`edgevlm.export.executorch_merge`; every method computes exactly what a one-process program
  computes). ``EDGEVLM_EXPORT_JOBS=1`` keeps it in one process;
- passes whose re-trace would rebuild the same graph skip it (:func:`_lowering_shortcuts`; the
  program is byte-identical);
- the graphs use core ATen forms, so ExecuTorch's second whole-graph decomposition has nothing to do
  and is skipped (:mod:`edgevlm.export.executorch_modules`).

Loading needs ``executorch.kernels.quantized`` imported (quantized embedding kernels); :func:`open_engine`
does that.
"""

from __future__ import annotations

import json
import os
import sys
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


def _graphs(model, methods: list[str]) -> dict:
    """The modules exported for ``methods`` (``prefill`` and ``decode`` share one)."""
    from ..executorch_modules import ETStepGraph
    from ..graphs import TokenEmbeddingGraph, VisionEncoderGraph

    step = ETStepGraph(model)
    build = {C.METHOD_VISION_ENCODER: lambda: VisionEncoderGraph(model),
             C.METHOD_TOKEN_EMBEDDING: lambda: TokenEmbeddingGraph(model),
             C.METHOD_PREFILL: lambda: step, C.METHOD_DECODE: lambda: step, C.METHOD_SCORE: lambda: step}
    return {m: build[m]() for m in methods}


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


def _fingerprint(graph) -> tuple:
    return tuple(node.format_node() for node in graph.nodes)


def _has_symbolic_values(gm) -> bool:
    """Whether any value of the graph is symbolic (a SymInt/SymFloat/SymBool or a tensor of symbolic shape)."""
    import torch

    sym = (torch.SymInt, torch.SymFloat, torch.SymBool)
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        for v in val if isinstance(val, (list, tuple)) else (val,):
            if isinstance(v, sym) or (isinstance(v, torch.Tensor) and not all(isinstance(d, int) for d in v.shape)):
                return True
    return False


def _targets_any(gm, pred) -> bool:
    return any(node.op == "call_function" and pred(node.target) for node in gm.graph.nodes)


def _operator_pass_triggers() -> dict:
    """ExecuTorch passes that re-trace the whole graph to rewrite a few kinds of operator, each with the test of
    whether the graph holds one of them (if not, the re-trace would rebuild the same graph)."""
    import torch
    from executorch.exir.passes.dim_order_ops_registry import MemoryFormatOpsMap
    from executorch.exir.passes.memory_format_ops_pass import DimOrderOpsRevertPass
    from executorch.exir.passes.normalize_transpose_pass import NormalizeTransposePass
    from executorch.exir.passes.replace_broken_ops_with_function_ops_pass import ReplaceBrokenOpsWithFunctionalOpsPass
    from executorch.exir.passes.sym_to_tensor_pass import SymToTensorPass

    return {
        NormalizeTransposePass: lambda gm: _targets_any(gm, lambda t: t == torch.ops.aten.t.default),
        ReplaceBrokenOpsWithFunctionalOpsPass: lambda gm: _targets_any(gm, lambda t: getattr(t, "is_view", False)),
        SymToTensorPass: _has_symbolic_values,
        DimOrderOpsRevertPass: lambda gm: _targets_any(gm, lambda t: t in MemoryFormatOpsMap),
    }


@contextmanager
def _lowering_shortcuts():
    """Skip the whole-graph re-traces of ExecuTorch's lowering passes that would rebuild the same graph.

    Most passes end by re-tracing the whole graph with fake tensors (``ExportPass.call``), *whether or
    not they changed anything*, and most change nothing in a decoder (batch norm, PReLU, upsampling,
    conv1d, SDPA patterns, transposes of rank 2, symbolic sizes, ...). That re-tracing was most of the
    lowering time of a 30-layer decoder. Inside this context:

    - a pass that edits the graph itself and then re-traces it (XNNPACK's passes, which all do; the
      concatenate decomposition, linear conversion and getitem removal XNNPACK also runs) returns the
      graph as is when it is structurally unchanged (the same nodes, targets and arguments as when
      the pass started); a pass that changed something re-traces as before;
    - a pass that rewrites chosen operators during its re-trace (:func:`_operator_pass_triggers`)
      is skipped when the graph holds none of them.

    The lowered program is byte-identical (tests/test_export_executorch.py checks it)."""
    from executorch.backends.transforms.remove_getitem_op import RemoveGetItemPass
    from executorch.backends.xnnpack._passes.convert_to_linear import ConvertToLinearPass
    from executorch.backends.xnnpack._passes.decompose_cat import DecomposeConcatenate
    from executorch.backends.xnnpack._passes.xnnpack_pass import XNNPACKPass
    from executorch.exir.pass_base import ExportPass
    from torch.fx.passes.infra.pass_base import PassResult

    retrace = ExportPass.call

    def requires(self, graph_module):
        self._evlm_fingerprint = _fingerprint(graph_module.graph)

    def call(self, graph_module):  # ExportPass.call, what every pass's re-trace goes through
        before = self.__dict__.get("_evlm_fingerprint")
        if before is not None and _fingerprint(graph_module.graph) == before:
            return PassResult(graph_module, False)
        return retrace(self, graph_module)

    def triggered(cls, test):
        run = cls.call

        def call_if_needed(self, graph_module):
            return run(self, graph_module) if test(graph_module) else PassResult(graph_module, False)

        return call_if_needed

    patches = [(ExportPass, "call", call)]
    patches += [(cls, "requires", requires) for cls in (XNNPACKPass, DecomposeConcatenate, ConvertToLinearPass,
                                                        RemoveGetItemPass)]
    patches += [(cls, "call", triggered(cls, test)) for cls, test in _operator_pass_triggers().items()]
    saved = [(cls, name, cls.__dict__.get(name)) for cls, name, _ in patches]
    for cls, name, value in patches:
        setattr(cls, name, value)
    try:
        yield
    finally:
        for cls, name, value in reversed(saved):
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


def _with_aliases(edge, meta: dict):
    """The lowered programs again under the runner's names (lowered once; the emitted methods share the
    delegate's weights through the named data store)."""
    from executorch.exir import EdgeProgramManager

    programs = {m: edge.exported_program(m) for m in edge.methods}
    programs.update({alias: programs[m] for m, alias in RUNNER_ALIASES.items() if m in programs})
    return EdgeProgramManager(programs, constant_methods=meta, compile_config=edge.compile_config)


def _lower(model, methods: list[str], chunk_size: int, max_context: int, image_size, meta: dict | None,
           aliases: bool) -> tuple[bytes, dict, dict]:
    """``torch.export`` the ExecuTorch model's ``methods``, lower them to XNNPACK and serialize one program.

    Returns the ``.pte`` bytes, the delegation counts per method and the time of each stage."""
    import torch
    from executorch.exir import to_edge_transform_and_lower

    from ..graphs import example_inputs

    times = {}
    t = time.perf_counter()
    graphs = _graphs(model, methods)
    programs = {}
    with torch.no_grad():
        for method, graph in graphs.items():
            args = example_inputs(model, method, chunk_size, max_context, _square(image_size))
            programs[method] = torch.export.export(graph.eval(), args, strict=False)
    times["torch_export_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    with _lowering_shortcuts():
        edge = to_edge_transform_and_lower(programs, partitioner=[partitioner()], constant_methods=meta)
    if aliases:
        edge = _with_aliases(edge, meta)
    delegation = {}
    for method in edge.methods:
        delegates, ops = _count_ops(edge.exported_program(method))
        delegation[method] = {"xnnpack_delegates": delegates, "other_ops": dict(sorted(ops.items()))}
    times["lower_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    buffer = edge.to_executorch().buffer
    times["serialize_s"] = round(time.perf_counter() - t, 2)
    return buffer, delegation, times


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _parallel(ctx: ExportContext) -> bool:
    """Lower ``decode`` in a second process while this one lowers the rest: with two cores or more,
    and when the quantized weights the reference was read from are in the bundle (the worker reads
    them). ``EDGEVLM_EXPORT_JOBS=1`` keeps everything in this process."""
    jobs = os.environ.get("EDGEVLM_EXPORT_JOBS", "").strip()
    if jobs and not jobs.isdigit():
        raise ValueError(f"EDGEVLM_EXPORT_JOBS must be a number of processes, got {jobs!r}")
    wanted = int(jobs) if jobs else _cpus()
    return wanted >= 2 and (Path(ctx.bundle) / C.WEIGHTS_DIR / "config.json").is_file()


class _Worker:
    """``python -m edgevlm.export.targets.executorch``: lowers some methods of the bundle's quantized
    weights into a program of their own, in a process of its own."""

    def __init__(self, ctx: ExportContext, methods: list[str], scratch: Path):
        import subprocess
        import sys

        self.methods = methods
        self.program, self.report, self.log = scratch / "part.pte", scratch / "part.json", scratch / "worker.log"
        args = [sys.executable, "-m", "edgevlm.export.targets.executorch",
                "--weights", str(Path(ctx.bundle) / C.WEIGHTS_DIR), "--methods", ",".join(methods),
                "--chunk", str(ctx.chunk_size), "--max-context", str(ctx.max_context),
                "--out", str(self.program), "--report", str(self.report)]
        if ctx.image_size is not None:
            args += ["--image-size", str(ctx.image_size)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def result(self) -> tuple[bytes, dict, dict]:
        rc = self.process.wait()
        if rc != 0 or not self.program.is_file():
            tail = self.log.read_text(errors="replace").strip().splitlines()[-12:]
            raise RuntimeError(f"executorch: lowering {', '.join(self.methods)} in a worker process failed "
                               f"(exit {rc}):\n" + "\n".join(tail))
        sys.stderr.write(self.log.read_text(errors="replace"))  # the worker's libraries: into the command's log
        report = json.loads(self.report.read_text())
        return self.program.read_bytes(), report["delegation"], report["times"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def export(ctx: ExportContext, out: Path) -> TargetResult:
    """Export the reference's graphs to ``out/model.pte`` (XNNPACK, 8da4w) with metadata constant methods.

    With two cores, ``decode`` is lowered in a worker process while this process lowers the other
    methods (lowering is single-threaded); the two programs are then joined into one
    (:mod:`edgevlm.export.executorch_merge`)."""
    import shutil
    import tempfile

    from ..executorch_merge import merge_programs
    from ..executorch_modules import executorch_model

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    meta = constant_methods(ctx.manifest)
    methods = list(ctx.methods)
    scratch = Path(tempfile.mkdtemp(prefix=".lowering-", dir=out))
    worker = None
    try:
        if _parallel(ctx):
            offload = [m for m in (C.METHOD_DECODE, C.METHOD_SCORE) if m in methods]
            worker = _Worker(ctx, offload, scratch)
            methods = [m for m in methods if m not in offload]
        model, counts = executorch_model(ctx.reference.model)
        buffer, delegation, times = _lower(model, methods, ctx.chunk_size, ctx.max_context, ctx.image_size, meta,
                                           aliases=True)
        del model
        if worker is not None:
            t = time.perf_counter()
            part, part_delegation, part_times = worker.result()
            times["worker_wait_s"] = round(time.perf_counter() - t, 2)
            times["worker"] = part_times
            delegation.update(part_delegation)
            t = time.perf_counter()
            buffer = merge_programs([buffer, part])
            times["merge_s"] = round(time.perf_counter() - t, 2)
    finally:
        if worker is not None:
            worker.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    path = out / PROGRAM_FILE
    path.write_bytes(buffer)
    times["total_s"] = round(time.perf_counter() - t0, 2)

    for method in (C.METHOD_PREFILL, C.METHOD_DECODE):
        if not delegation[method]["xnnpack_delegates"]:
            raise RuntimeError(f"executorch: nothing of {method} was delegated to XNNPACK")
    rel = f"{out.name}/{PROGRAM_FILE}"
    names = sorted(delegation)
    checks = {"methods": names, "constant_methods": meta, "quantized_modules": counts,
              "delegation": delegation, "times": times, "processes": 2 if worker is not None else 1,
              "pte_bytes": path.stat().st_size}
    note = ("XNNPACK: int4 linears 8da4w (qd8 x qb4w, bf16 group scales), int8 linears 8da8w (qd8 x qc8w), "
            "int8 embedding via quantized_decomposed::embedding_byte")
    return TargetResult({m: rel for m in names}, checks=checks, note=note)


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


def _worker_main(argv: list[str] | None = None) -> int:
    """The worker of :class:`_Worker`: lower ``--methods`` of the quantized weights ``--weights``."""
    import argparse

    from edgevlm.models import load

    from ..executorch_modules import executorch_model

    parser = argparse.ArgumentParser(prog="python -m edgevlm.export.targets.executorch")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--methods", required=True)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--max-context", type=int, required=True)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    model, _ = executorch_model(load(args.weights).model)
    buffer, delegation, times = _lower(model, args.methods.split(","), args.chunk, args.max_context, args.image_size,
                                       None, aliases=False)
    args.out.write_bytes(buffer)
    args.report.write_text(json.dumps({"delegation": delegation, "times": times}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main())
