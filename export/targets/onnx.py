"""The ONNX target: the four static graphs as ONNX models, int4/int8 linears as ``MatMulNBits``, plus a QDQ variant.

Bundle layout (``onnx/``)::

    vision_encoder.onnx   pixels [1, 3, S, S] -> features [1, T_img, H]   (vision models only)
    token_embedding.onnx  ids [1, C] int64 -> embeddings [1, C, H]
    prefill.onnx          embeds [1, C, H], input_pos [C] int64, k_cache, v_cache [L, Hkv, S, D]
                          -> logits [1, V] (last row), k_cache_out, v_cache_out
    decode.onnx           the same with C = 1
    score.onnx            (export --score) prefill's inputs + targets [C] int64 -> logprobs [C], k_cache_out, v_cache_out
    weights.data          the initializers of all four, each stored once (prefill and decode share it)
    qdq/*.onnx, qdq/weights.data   the QDQ variant: DequantizeLinear (int4 block-wise, int8 per axis) + MatMul

Graphs come from :mod:`edgevlm.export.graphs` through ``torch.onnx.export(dynamo=True)``; every
quantized linear of the reference becomes one ``com.microsoft::MatMulNBits`` node holding the
reference's own integers and scales (:mod:`edgevlm.export.onnx_quant`). The main variant runs on
onnxruntime's CPU EP (and mobile builds, which ship MatMulNBits); the QDQ variant is the form NPU
execution providers such as QNN take (weights only; activations stay float). The token embedding
is a ``Gather`` of the int8 (or int4) rows and their scales, as the reference computes it.

Verification (:func:`open_engine`) runs the main variant in onnxruntime (CPUExecutionProvider)
through :class:`~edgevlm.export.backend.GraphEngine`; ``open_engine(..., variant="qdq")`` runs the
QDQ variant the same way (with onnxruntime's DQ+MatMul -> MatMulNBits fusion held to float
activations: ``session.qdq_matmulnbits_accuracy_level = 0``; its default of 4 would quantize them). Tolerances: weight-only recipes match the reference to float32 summation
order; with ``8da4w`` onnxruntime quantizes activations per block of 32 symmetric int8
(``accuracy_level=4``) where the reference quantizes per token asymmetric, so logits differ more.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from edgevlm import contract as C

from ..backend import GraphEngine
from ..base import ExportContext, TargetResult
from ..graphs import StepGraph, TokenEmbeddingGraph, VisionEncoderGraph, example_inputs

RUNS_HERE = True
TOOLCHAIN = ("onnx", "onnxruntime", "onnxscript")

OPSET = 21  # int4 DequantizeLinear with block_size in the QDQ variant
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; 10 is what opset 21 needs
DATA_FILE = "weights.data"
QDQ_DIR = "qdq"
EXTERNAL_MIN_BYTES = 1024  # initializers at least this large go to the shared data file
_ALIGN = 64

INPUT_NAMES = {
    C.METHOD_VISION_ENCODER: ["pixel_values"],
    C.METHOD_TOKEN_EMBEDDING: ["input_ids"],
    C.METHOD_PREFILL: ["embeds", "input_pos", "k_cache", "v_cache"],
    C.METHOD_DECODE: ["embeds", "input_pos", "k_cache", "v_cache"],
    C.METHOD_SCORE: ["embeds", "input_pos", "k_cache", "v_cache", "targets"],
}
OUTPUT_NAMES = {
    C.METHOD_VISION_ENCODER: ["image_features"],
    C.METHOD_TOKEN_EMBEDDING: ["embeds"],
    C.METHOD_PREFILL: ["logits", "k_cache_out", "v_cache_out"],
    C.METHOD_DECODE: ["logits", "k_cache_out", "v_cache_out"],
    C.METHOD_SCORE: ["logprobs", "k_cache_out", "v_cache_out"],
}


def _graph(model, method: str) -> torch.nn.Module:
    if method == C.METHOD_VISION_ENCODER:
        return VisionEncoderGraph(model)
    if method == C.METHOD_TOKEN_EMBEDDING:
        return TokenEmbeddingGraph(model)
    return StepGraph(model)


def image_size(ctx: ExportContext) -> int | None:
    """The encoder's tile side S: from the manifest, else from the model's vision config."""
    if ctx.image_size:
        return int(ctx.image_size)
    vision = getattr(getattr(ctx.reference.model, "config", None), "vision", None)
    size = getattr(vision, "image_size", None)
    return int(size) if size else None


def export_graph(graph: torch.nn.Module, args: tuple, method: str):
    """One graph -> an ONNX ``ModelProto`` (static shapes, MatMulNBits for swapped-in quantized linears)."""
    from ..onnx_quant import translation_table

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph.eval(), args, dynamo=True, opset_version=OPSET, optimize=True,
                                    input_names=INPUT_NAMES[method], output_names=OUTPUT_NAMES[method],
                                    custom_translation_table=translation_table(), verbose=False)
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    proto.doc_string = f"edgevlm {method}"
    for node in proto.graph.node:  # the exporter's per-node stack traces are most of a small graph's bytes
        del node.metadata_props[:]
    return proto


def save_models(models: dict, folder: Path) -> dict[str, Path]:
    """Write ``{method: ModelProto}`` to ``folder/{method}.onnx`` with their large initializers in one shared
    external data file, each distinct tensor stored once (prefill and decode hold the same weights)."""
    from onnx import TensorProto, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    offsets: dict[bytes, tuple[int, int]] = {}
    paths = {}
    with open(folder / DATA_FILE, "wb") as data:
        for method, proto in models.items():
            for t in proto.graph.initializer:
                raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
                if len(raw) < EXTERNAL_MIN_BYTES:
                    continue
                key = hashlib.sha256(bytes([t.data_type]) + str(list(t.dims)).encode() + raw).digest()
                if key not in offsets:
                    pos = data.tell()
                    pad = -pos % _ALIGN
                    data.write(b"\0" * pad)
                    offsets[key] = (pos + pad, len(raw))
                    data.write(raw)
                off, length = offsets[key]
                for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                    t.ClearField(field)
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", DATA_FILE), ("offset", str(off)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
            path = folder / f"{method}.onnx"
            path.write_bytes(proto.SerializeToString())
            paths[method] = path
    return paths


def _count_ops(proto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        key = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
        counts[key] = counts.get(key, 0) + 1
    return counts


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def export(ctx: ExportContext, out: Path) -> TargetResult:
    """Export every method of ``ctx`` to ``out`` (``<bundle>/onnx``), both variants, and check them."""
    from ..onnx_quant import nbits_linears, to_qdq

    model = ctx.reference.model
    main, qdq, seconds = {}, {}, {}
    with nbits_linears(model) as n_swapped:
        for method in ctx.methods:
            t = time.perf_counter()
            args = example_inputs(model, method, ctx.chunk_size, ctx.max_context, image_size(ctx))
            main[method] = export_graph(_graph(model, method), args, method)
            seconds[method] = round(time.perf_counter() - t, 1)
    for method, proto in main.items():
        qdq[method] = to_qdq(proto)
    ops_main = {m: _count_ops(p) for m, p in main.items()}
    ops_qdq = {m: _count_ops(p) for m, p in qdq.items()}
    paths = save_models(main, out)
    qdq_paths = save_models(qdq, out / QDQ_DIR)
    for p in [*paths.values(), *qdq_paths.values()]:
        _check(p)
    rel = lambda p: str(p.relative_to(ctx.bundle))  # noqa: E731
    files = {m: rel(p) for m, p in paths.items()}
    files["weights"] = rel(out / DATA_FILE)
    files.update({f"{QDQ_DIR}/{m}": rel(p) for m, p in qdq_paths.items()})
    files[f"{QDQ_DIR}/weights"] = rel(out / QDQ_DIR / DATA_FILE)
    n_nbits = sum(c.get("com.microsoft::MatMulNBits", 0) for c in ops_main.values())
    n_dq = sum(c.get("DequantizeLinear", 0) for c in ops_qdq.values())
    checks = {"onnx_checker": "passed", "opset": OPSET, "quantized_linears_swapped": n_swapped,
              "matmul_nbits_nodes": n_nbits, "qdq_dequantize_nodes": n_dq,
              "ops": {m: {k: v for k, v in c.items() if k in ("com.microsoft::MatMulNBits", "MatMul", "DequantizeLinear", "Gather")}
                      for m, c in ops_main.items()},
              "torch_onnx_export_seconds": seconds,
              "qdq_vs_main_max_abs_logit_diff": _compare_variants(ctx, out)}
    note = (f"{n_nbits} MatMulNBits nodes (onnxruntime CPU/mobile); QDQ variant in {QDQ_DIR}/ with {n_dq} "
            "DequantizeLinear nodes (NPU EPs, weight-only)")
    return TargetResult(files, checks=checks, note=note)


def _compare_variants(ctx: ExportContext, out: Path) -> float:
    """Max abs logit difference of the main and QDQ prefill on one random chunk (a smoke check of the rewrite)."""
    rng = np.random.default_rng(0)
    h = ctx.reference.model.language_model.config.hidden_size
    args = [rng.standard_normal((1, ctx.chunk_size, h)).astype(np.float32) * 0.5,
            np.arange(ctx.chunk_size, dtype=np.int64),
            np.zeros(ctx.cache_shape, np.float32), np.zeros(ctx.cache_shape, np.float32)]
    a = OnnxEngine.session(out / f"{C.METHOD_PREFILL}.onnx").run(None, dict(zip(INPUT_NAMES[C.METHOD_PREFILL], args)))
    b = OnnxEngine.session(out / QDQ_DIR / f"{C.METHOD_PREFILL}.onnx").run(None, dict(zip(INPUT_NAMES[C.METHOD_PREFILL], args)))
    return float(np.abs(a[0] - b[0]).max())


class OnnxEngine(GraphEngine):
    """Runs a bundle's ONNX graphs in onnxruntime (CPUExecutionProvider); sessions open on first use."""

    def __init__(self, folder: Path, manifest: dict, methods: list[str] | None = None):
        self.folder = Path(folder)
        self.methods = methods
        self.sessions: dict = {}
        super().__init__(manifest)

    @staticmethod
    def session(path: Path):
        import onnxruntime as ort

        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("EDGEVLM_ORT_THREADS", min(4, os.cpu_count() or 1)))
        opts.log_severity_level = 3
        # onnxruntime fuses DequantizeLinear(int4) + MatMul of the QDQ variant into MatMulNBits with int8
        # activations (accuracy level 4) by default; the QDQ graph states float activations: keep them
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, method: str, *arrays: np.ndarray) -> list[np.ndarray]:
        if method not in self.sessions:
            self.sessions[method] = self.session(self.folder / f"{method}.onnx")
        sess = self.sessions[method]
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, arrays, strict=True)))


def open_engine(bundle_dir: Path, manifest: dict, variant: str = "main") -> OnnxEngine:
    """An engine over the bundle's ONNX graphs: ``variant`` ``"main"`` (MatMulNBits) or ``"qdq"``."""
    if variant not in ("main", "qdq"):
        raise ValueError(f"unknown ONNX variant {variant!r}; choose 'main' or 'qdq'")
    folder = Path(bundle_dir) / "onnx" / (QDQ_DIR if variant == "qdq" else "")
    return OnnxEngine(folder, manifest)
