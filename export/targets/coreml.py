"""The CoreML target: ``.mlpackage`` files for iOS 18 / macOS 15, with int4 per-block weights.

Files in the bundle's ``coreml/`` folder:

- ``decoder.mlpackage``: ONE multifunction model (``ct.utils.save_multifunction``; weights shared
  between functions) with three functions:

  - ``prefill``: ``embeds [1, C, H] float32``, ``input_pos [C] int32`` -> ``logits [1, V]``
  - ``decode``: ``embeds [1, 1, H]``, ``input_pos [1] int32`` -> ``logits [1, V]`` (default function)
  - ``token_embedding``: ``ids [1, C] int32`` -> ``embeddings [1, C, H]``. It lives in the decoder
    model, not in a model of its own, so a tied LM head and the embedding share one stored table.

  ``prefill`` and ``decode`` are stateful: the KV cache is ``2 * L`` float16 ``ct.StateType`` s,
  ``k_cache_{i}`` and ``v_cache_{i}`` ``[max_context, kv_heads, head_dim]``, written in place at
  ``input_pos``. The app creates one state (``model.makeState()``), zero-filled, and passes it to
  every prefill and decode call of a conversation; padding rows of a chunk follow the chunk plan of
  :mod:`edgevlm.engine`, as on every backend. Ids and positions are int32 (CoreML has no int64
  inputs); the contract's int64 values fit.
- ``vision_encoder.mlpackage`` (vision models only): ``pixel_values [1, 3, S, S]`` ->
  ``image_features [1, T_img, H]`` for one tile, projector included.

Weights: our stored integers and scales are handed over as ``torchao::dequantize_affine`` and
become ``constexpr_blockwise_shift_scale`` ops with int4 data (codes ``[-8, 7]`` = stored nibble
minus 8, block ``g`` along the input dimension, float32 scales) or int8 data (per channel). No
re-quantization happens: the export reads every such op back from the saved ``weight.bin`` and
checks that its integers and scales are bit-identical to ours (``checks["weights"]``).
coremltools' own ``linear_quantize_weights(int4, per_block)`` is not used: it would re-derive
codes and scales from dequantized floats.

Compute precision is float32 (CPU/GPU on device), so the converted graph computes what the torch
module checked here computes; the only rounding relative to the PyTorch reference is the float16
KV cache, which the torch module reproduces. (float16 compute, for the Neural Engine, is a
one-line change of :data:`COMPUTE_PRECISION` that this machine cannot verify; the cache write is a
``scatter_nd``, which coremltools notes runs off the Neural Engine.)

CoreML models do not run on Linux (``RUNS_HERE = False``). Verified here, into ``checks``: each
package's spec (functions, inputs, outputs, states), that the quantized weights are int4
per-block with our exact integers, and the numerics of the exact torch modules handed to
coremltools, teacher-forced against the reference on the verification prompts
(``checks["torch_graph_verification"]``).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgevlm import contract as C

from ..base import ExportContext, TargetResult
from ..coreml_graphs import (
    CoreMLUnsupported,
    StatefulDecoder,
    TokenEmbedding,
    TorchGraphEngine,
    VisionEncoder,
    _Dequant,
    coreml_model,
)

RUNS_HERE = False  # no CoreML runtime on Linux; the torch modules are verified instead
TOOLCHAIN = ("coremltools", "torchao")  # torchao provides the dequantize_affine op coremltools converts
COMPUTE_PRECISION = "float32"
DECODER_FILE = "decoder.mlpackage"
VISION_FILE = "vision_encoder.mlpackage"
DEFAULT_FUNCTION = C.METHOD_DECODE


def _convert(module: torch.nn.Module, args: tuple, output: str):
    """torch.export -> coremltools, iOS 18; mutated buffers become float16 states."""
    import coremltools as ct

    ep = torch.export.export(module, args).run_decompositions({})
    precision = ct.precision.FLOAT32 if COMPUTE_PRECISION == "float32" else ct.precision.FLOAT16
    return ct.convert(ep, outputs=[ct.TensorType(name=output)], minimum_deployment_target=ct.target.iOS18,
                      compute_precision=precision, skip_model_load=True)


def _save_decoder(decoder: StatefulDecoder, embedding: TokenEmbedding, chunk: int, hidden: int, path: Path) -> dict:
    import coremltools as ct

    seconds = {}
    with tempfile.TemporaryDirectory(prefix="edgevlm-coreml-") as tmp:
        parts = {
            C.METHOD_PREFILL: (decoder, (torch.zeros(1, chunk, hidden), torch.arange(chunk)), "logits"),
            C.METHOD_DECODE: (decoder, (torch.zeros(1, 1, hidden), torch.zeros(1, dtype=torch.long)), "logits"),
            C.METHOD_TOKEN_EMBEDDING: (embedding, (torch.zeros(1, chunk, dtype=torch.long),), "embeddings"),
        }
        desc = ct.utils.MultiFunctionDescriptor()
        for name, (module, args, output) in parts.items():
            t = time.perf_counter()
            decoder.reset()
            _convert(module, args, output).save(f"{tmp}/{name}.mlpackage")
            desc.add_function(f"{tmp}/{name}.mlpackage", src_function_name="main", target_function_name=name)
            seconds[name] = round(time.perf_counter() - t, 2)
        desc.default_function_name = DEFAULT_FUNCTION
        t = time.perf_counter()
        ct.utils.save_multifunction(desc, str(path))
        seconds["save_multifunction"] = round(time.perf_counter() - t, 2)
    return seconds


# ---------------------------------------------------------------------------------------------
# What can be verified of a saved package without a CoreML runtime


def _array_type(t) -> dict:
    from coremltools.proto import FeatureTypes_pb2 as ft

    kind = t.WhichOneof("Type")
    arr = t.stateType.arrayType if kind == "stateType" else t.multiArrayType
    return {"shape": [int(d) for d in arr.shape], "dtype": ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType)}


def _features(items) -> list[dict]:
    return [{"name": f.name, **_array_type(f.type)} for f in items]


def _blob_array(reader, value) -> np.ndarray:
    from coremltools.proto import MIL_pb2

    dtype = MIL_pb2.DataType.Name(value.type.tensorType.dataType)
    read = {"INT4": reader.read_int4_data, "INT8": reader.read_int8_data, "FLOAT32": reader.read_float_data,
            "FLOAT16": reader.read_fp16_data, "UINT8": reader.read_uint8_data}[dtype]
    shape = [int(d.constant.size) for d in value.type.tensorType.dimensions]
    return np.asarray(read(value.blobFileValue.offset)).reshape(shape)


def _op_value(op, name: str):
    args = op.inputs[name].arguments if name in op.inputs else []
    return args[0].value if args and args[0].WhichOneof("binding") == "value" else None


def _weight_key(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(data.astype(np.int8)).tobytes())
    h.update(np.ascontiguousarray(scale.astype(np.float32)).tobytes())
    if offset is not None:
        h.update(np.ascontiguousarray(offset.astype(np.int8)).tobytes())
    return h.hexdigest()


def inspect_package(path: Path) -> tuple[dict, dict[str, set[str]]]:
    """Spec summary of a saved ``.mlpackage``: functions with inputs/outputs/states, and per function
    the weight-decompression ops (dtype, block sizes) with a content key of each integer weight."""
    import coremltools as ct
    from coremltools.libmilstoragepython import _BlobStorageReader
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    desc = spec.description
    funcs = {f.name: f for f in desc.functions} if len(desc.functions) else {"main": desc}
    weights_bin = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader = _BlobStorageReader(str(weights_bin)) if weights_bin.is_file() else None
    summary: dict = {"specification_version": spec.specificationVersion,
                     "default_function": desc.defaultFunctionName or None, "functions": {}}
    keys: dict[str, set[str]] = {}
    for name, f in funcs.items():
        fn = spec.mlProgram.functions[name]
        ops = fn.block_specializations[fn.opset].operations
        dq: dict[str, dict] = {}
        float_elems = 0
        keys[name] = set()
        for op in ops:
            if op.type == "constexpr_blockwise_shift_scale":
                data, scale, offset = (_op_value(op, n) for n in ("data", "scale", "offset"))
                dtype = MIL_pb2.DataType.Name(data.type.tensorType.dataType)
                dshape = [int(d.constant.size) for d in data.type.tensorType.dimensions]
                sshape = [int(d.constant.size) for d in scale.type.tensorType.dimensions]
                entry = dq.setdefault(dtype, {"ops": 0, "block_sizes": set(), "elements": 0})
                entry["ops"] += 1
                entry["elements"] += int(np.prod(dshape))
                entry["block_sizes"].add(tuple(d // s for d, s in zip(dshape, sshape, strict=True)))
                if reader is not None:
                    keys[name].add(_weight_key(_blob_array(reader, data), _blob_array(reader, scale),
                                               None if offset is None else _blob_array(reader, offset)))
            elif op.type == "const":
                val = op.attributes["val"]
                if val.WhichOneof("value") == "blobFileValue" and MIL_pb2.DataType.Name(val.type.tensorType.dataType).startswith("FLOAT"):
                    float_elems += int(np.prod([d.constant.size for d in val.type.tensorType.dimensions]))
        for entry in dq.values():
            entry["block_sizes"] = sorted(list(b) for b in entry["block_sizes"])
        summary["functions"][name] = {"inputs": _features(f.input), "outputs": _features(f.output),
                                      "states": _features(f.state), "opset": fn.opset,
                                      "quantized_weights": dq, "float_weight_elements": float_elems}
    return summary, keys


def _our_weights(*modules: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """Layer name -> (content key, dtype) of every integer weight handed to coremltools."""
    out = {}
    for module in modules:
        for m in module.modules():
            if isinstance(m, _Dequant):
                key = _weight_key(m.data.numpy(), m.scales.numpy(), None if m.zero is None else m.zero.numpy())
                out[m.name] = (key, "INT4" if m.qmin == -8 else "INT8")
    return out


def _weights_check(ours: dict[str, tuple[str, str]], saved: set[str]) -> dict:
    missing = sorted(name for name, (key, _) in ours.items() if key not in saved)
    return {"layers": len(ours), "int4_layers": sum(dt == "INT4" for _, dt in ours.values()),
            "bit_identical": not missing, "missing": missing[:10]}


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise RuntimeError(f"coreml spec check failed: {what}")


def _check_decoder_spec(summary: dict, decoder: StatefulDecoder, chunk: int, hidden: int, vocab: int, cache: tuple) -> None:
    fns = summary["functions"]
    _expect(set(fns) == {C.METHOD_PREFILL, C.METHOD_DECODE, C.METHOD_TOKEN_EMBEDDING}, f"functions {sorted(fns)}")
    _expect(summary["default_function"] == DEFAULT_FUNCTION, f"default function {summary['default_function']}")
    states = [{"name": n, "shape": list(cache), "dtype": "FLOAT16"} for n in decoder.state_names()]
    for name, rows in ((C.METHOD_PREFILL, chunk), (C.METHOD_DECODE, 1)):
        f = fns[name]
        _expect(f["inputs"] == [{"name": "embeds", "shape": [1, rows, hidden], "dtype": "FLOAT32"},
                                {"name": "input_pos", "shape": [rows], "dtype": "INT32"}], f"{name} inputs {f['inputs']}")
        _expect(f["outputs"] == [{"name": "logits", "shape": [1, vocab], "dtype": "FLOAT32"}], f"{name} outputs {f['outputs']}")
        _expect(f["states"] == states, f"{name} states")
        _expect("INT4" in f["quantized_weights"] or not _has_int4(decoder), f"{name} has no int4 weights")
    emb = fns[C.METHOD_TOKEN_EMBEDDING]
    _expect(emb["inputs"] == [{"name": "ids", "shape": [1, chunk], "dtype": "INT32"}], f"token_embedding inputs {emb['inputs']}")
    _expect(emb["outputs"] == [{"name": "embeddings", "shape": [1, chunk, hidden], "dtype": "FLOAT32"}],
            f"token_embedding outputs {emb['outputs']}")
    _expect(not emb["states"], "token_embedding has states")


def _has_int4(module: torch.nn.Module) -> bool:
    return any(isinstance(m, _Dequant) and m.qmin == -8 for m in module.modules())


def _int4_blocks(summary: dict) -> list:
    return sorted({b[1] for f in summary["functions"].values() for b in f["quantized_weights"].get("INT4", {}).get("block_sizes", [])})


# ---------------------------------------------------------------------------------------------


def _image_size(ctx: ExportContext) -> int:
    """The encoder's tile side S: from the manifest, else from the model's vision config."""
    size = ctx.image_size or getattr(getattr(getattr(ctx.reference.model, "config", None), "vision", None), "image_size", None)
    if not size:
        raise RuntimeError("the vision encoder's input size is neither in the manifest nor in the vision config")
    return int(size)


def _verify_torch_graphs(ctx: ExportContext, engine: TorchGraphEngine) -> dict:
    """Teacher-forced check of the torch modules against the PyTorch reference (check_prompt)."""
    from edgevlm.engine import TorchEngine
    from edgevlm.models.cache import remove_kv_cache

    from ..backend import Verification, check_prompt, reference_run
    from ..core import N_TOKENS, verification_prompts

    ref = ctx.reference
    ref_engine = TorchEngine(ref.model, ctx.max_context, ctx.chunk_size)
    try:
        runs = []
        for text, images in verification_prompts(ref):
            inputs = ref.processor(text, images)
            runs.append((text, inputs, *reference_run(ref_engine, inputs, N_TOKENS)))
    finally:
        remove_kv_cache(ref.model)
    checks = [check_prompt(engine, text, inputs, toks, logits) for text, inputs, toks, logits in runs]
    return Verification(checks).to_dict()


def export(ctx: ExportContext, out: Path) -> TargetResult:
    """Write ``coreml/decoder.mlpackage`` (+ ``vision_encoder.mlpackage``) and check what can be checked here."""
    import coremltools as ct

    if getattr(ctx.reference.model, "kv_cache_quant", "float") != "float":
        raise CoreMLUnsupported("an int8 KV cache recipe has no CoreML equivalent (CoreML states are float16)")
    t0 = time.perf_counter()
    model = coreml_model(ctx.reference.model)
    cfg = model.language_model.config
    hidden, vocab, chunk = cfg.hidden_size, cfg.vocab_size, ctx.chunk_size
    decoder = StatefulDecoder(model, ctx.max_context).eval()
    embedding = TokenEmbedding(model).eval()
    vision = VisionEncoder(model).eval() if C.METHOD_VISION_ENCODER in ctx.methods else None
    checks: dict = {"coremltools": ct.__version__, "minimum_deployment_target": "iOS18",
                    "compute_precision": COMPUTE_PRECISION, "kv_state_dtype": "float16"}

    t = time.perf_counter()
    engine = TorchGraphEngine(ctx.manifest, decoder, embedding, vision)
    verification = _verify_torch_graphs(ctx, engine)
    checks["torch_graph_verification"] = verification
    checks["seconds"] = {"prepare": round(t - t0, 2), "torch_verification": round(time.perf_counter() - t, 2)}

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rel = out.relative_to(ctx.bundle).as_posix()
    files = {}
    checks["seconds"].update(_save_decoder(decoder, embedding, chunk, hidden, out / DECODER_FILE))
    for m in (C.METHOD_TOKEN_EMBEDDING, C.METHOD_PREFILL, C.METHOD_DECODE):
        files[m] = f"{rel}/{DECODER_FILE}"
    saved_keys: set[str] = set()
    summary, keys = inspect_package(out / DECODER_FILE)
    _, kv_heads, _, head_dim = ctx.cache_shape
    _check_decoder_spec(summary, decoder, chunk, hidden, vocab, (ctx.max_context, kv_heads, head_dim))
    saved_keys |= set().union(*keys.values())
    checks["decoder"] = summary
    ours = _our_weights(decoder, embedding)
    if vision is not None:
        t = time.perf_counter()
        size = _image_size(ctx)
        _convert(vision, (torch.zeros(1, 3, size, size),), "image_features").save(str(out / VISION_FILE))
        checks["seconds"]["vision_encoder"] = round(time.perf_counter() - t, 2)
        vsum, vkeys = inspect_package(out / VISION_FILE)
        f = vsum["functions"]["main"]
        _expect(f["inputs"] == [{"name": "pixel_values", "shape": [1, 3, size, size], "dtype": "FLOAT32"}],
                f"vision_encoder inputs {f['inputs']}")
        _expect([o["name"] for o in f["outputs"]] == ["image_features"] and f["outputs"][0]["shape"][-1] == hidden,
                f"vision_encoder outputs {f['outputs']}")
        saved_keys |= vkeys["main"]
        checks["vision_encoder"] = vsum
        ours.update(_our_weights(vision))
        files[C.METHOD_VISION_ENCODER] = f"{rel}/{VISION_FILE}"
    weights = _weights_check(ours, saved_keys)
    weights["int4_block_sizes"] = _int4_blocks(summary)
    checks["weights"] = weights
    _expect(weights["bit_identical"], f"integer weights not found unchanged in the packages: {weights['missing']}")
    note = (f"CoreML (not runnable here); torch graph vs reference: agreement {verification['agreement']:.3f}, "
            f"first 16 identical {verification['first16_identical']}, max |dlogit| {verification['max_abs_logit_error']:.2e}; "
            f"{weights['int4_layers']} int4 + {weights['layers'] - weights['int4_layers']} int8 layers bit-identical")
    return TargetResult(files, checks=_jsonable(checks), note=note)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return x
