"""The TVM target: a Relax build of the static graphs, for the host and for aarch64.

Each contract method (``vision_encoder`` for vision models, ``token_embedding``, ``prefill``,
``decode``) is traced with ``torch.export`` from the shared graphs (:mod:`edgevlm.export.graphs`,
adapted in :mod:`edgevlm.export.tvm_graphs`), imported with TVM's Relax PyTorch frontend, and
becomes one function of a single IRModule, compiled twice:

- ``tvm/host.so``: target ``llvm`` (this machine), loaded here by :func:`open_engine`;
- ``tvm/aarch64.so``: target llvm with ``mtriple=aarch64-linux-gnu``, ``mattr=+neon``, linked with
  ``aarch64-linux-gnu-g++`` (when that cross compiler is missing, ``tvm/aarch64.tar`` holds the
  object files instead).

Weights are function *inputs*, not constants compiled into the libraries: ``tvm/params.safetensors``
holds every stored tensor once (int4 stays packed two per byte with its scales, int8 with its
scales; norms and biases float), and the graphs unpack and dequantize them with bitwise ops
before each matmul, exactly as the reference does. ``tvm/methods.json`` lists, per function, its
user inputs and the names of the parameters that follow them, in call order.

A function is called as ``vm[method](*inputs, *params)`` and returns the method's outputs
(contract 2). Numerics: the weights are the reference's exact values; TVM's matmul and attention
kernels sum in another order than PyTorch's, so logits differ at float rounding level.
"""

from __future__ import annotations

import json
import operator
import shutil
from pathlib import Path

import numpy as np
import torch

from edgevlm import contract as C
from edgevlm.errors import CheckpointError

from ..backend import GraphEngine
from ..base import ExportContext, TargetResult
from ..graphs import example_inputs

RUNS_HERE = True
TOOLCHAIN = ("tvm",)

HOST_TARGET = "llvm"
AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
AARCH64_CC = "aarch64-linux-gnu-g++"
HOST_LIB = "host.so"
AARCH64_LIB = "aarch64.so"
AARCH64_OBJECTS = "aarch64.tar"
PARAMS_FILE = "params.safetensors"
METHODS_FILE = "methods.json"
EM_AARCH64 = 183  # ELF e_machine of aarch64


def _converters() -> dict:
    """Frontend converters for aten ops TVM 0.27's importer lacks or gets wrong.

    - ``__rshift__`` (the int4 unpacking's high nibble) is missing;
    - ``select(dim, i)`` with a negative ``i`` (``hidden[:, -1]``) becomes a ``take`` that reads
      out of bounds (garbage logits): the index is made non-negative first;
    - ``amin`` / ``amax`` (the row range of per-token activation quantization, recipe ``8da4w``)
      are missing: Relax ``min`` / ``max`` over the same dims.
    """
    from tvm import relax

    def right_shift(node, importer):
        return importer._binary_op(relax.op.right_shift, operator.rshift)(node)

    def select(node, importer):
        x, dim, index = importer.env[node.args[0]], node.args[1], int(node.args[2])
        if index < 0:
            index += int(node.args[0].meta["val"].shape[dim])
        return importer.block_builder.emit(relax.op.take(x, relax.const(index, "int64"), dim))

    def reduction(op):  # amin / amax (per-token activation quantization): Relax min / max over the dims
        def convert(node, importer):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", ())
            keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
            axis = None if dim in (None, (), []) else (list(dim) if isinstance(dim, (list, tuple)) else [dim])
            return importer.block_builder.emit(op(importer.env[node.args[0]], axis=axis, keepdims=bool(keepdim)))

        return convert

    return {"__rshift__.Scalar": right_shift, "bitwise_right_shift.Tensor_Scalar": right_shift, "select.int": select,
            "amin.default": reduction(relax.op.min), "amax.default": reduction(relax.op.max)}


def _canonical_names(model: torch.nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name in the model, so tensors shared by methods are stored once."""
    names: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), name)
    return names


def image_size(ctx: ExportContext) -> int | None:
    """The encoder's square tile side S: the manifest's (an int, or ``[S, S]`` for CLIP crops), else
    the vision config's."""
    size = ctx.image_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"the vision encoder needs a square input, the manifest gives {size}")
        size = size[0]
    if not size:
        vision = getattr(getattr(ctx.reference.model, "config", None), "vision", None)
        size = getattr(vision, "image_size", None)
    return int(size) if size else None


def trace_method(model, method: str, ctx: ExportContext):
    """``torch.export`` one method of the packed model, then import it into Relax.

    Returns the Relax function (user inputs first, then parameters), ``(canonical name, tensor)``
    of each parameter in call order, and the user inputs' names, shapes and dtypes.
    """
    from tvm.relax.frontend.torch import from_exported_program

    from ..tvm_graphs import graph_for

    graph = graph_for(model, method)
    args = example_inputs(model, method, ctx.chunk_size, ctx.max_context, image_size(ctx))
    with torch.no_grad():
        ep = torch.export.export(graph, args, strict=False)
    mod = from_exported_program(ep, keep_params_as_input=True, custom_convert_map=_converters())
    func = mod["main"].without_attr("params")
    n_inputs = int(func.attrs["num_input"])
    by_arg = {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs}
    canonical = _canonical_names(model)
    params = []
    for var in func.params[n_inputs:]:
        target = by_arg[var.name]
        tensor = ep.state_dict[target]
        params.append((canonical.get(id(tensor), f"{method}.{target}"), tensor))
    inputs = [{"name": v.name, "shape": [int(d) for d in v.ty.shape], "dtype": str(v.ty.dtype)}
              for v in func.params[:n_inputs]]
    return func, params, inputs


def build_module(ctx: ExportContext):
    """The IRModule of every method (one function each), the parameter tensors by name, and the
    call signature of each function."""
    import tvm

    from ..tvm_graphs import packed_copy

    model = packed_copy(ctx.reference.model)
    funcs, tensors, signature = {}, {}, {}
    for method in ctx.methods:
        func, params, inputs = trace_method(model, method, ctx)
        funcs[tvm.ir.GlobalVar(method)] = func.with_attr("global_symbol", method)
        for name, t in params:
            tensors.setdefault(name, t)
        signature[method] = {"inputs": inputs, "params": [name for name, _ in params]}
    return tvm.IRModule(funcs), tensors, signature


def _save_params(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(t.detach().cpu().numpy()) for k, t in tensors.items()}, str(path),
              metadata={"format": "edgevlm-tvm-params", "note": "int4 tensors are packed two per byte, low nibble first"})


def elf_machine(path: Path) -> int:
    """The ELF ``e_machine`` of a shared library or object (183 = aarch64, 62 = x86-64)."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def _build_aarch64(mod, out: Path) -> tuple[str, dict]:
    """Cross-compile for aarch64: a shared library when the cross linker exists, object files otherwise."""
    import tvm

    ex = tvm.compile(mod, target=tvm.target.Target(AARCH64_TARGET))
    if shutil.which(AARCH64_CC):
        ex.export_library(str(out / AARCH64_LIB), cc=AARCH64_CC)
        return AARCH64_LIB, {"aarch64_e_machine": elf_machine(out / AARCH64_LIB)}
    ex.export_library(str(out / AARCH64_OBJECTS))
    return AARCH64_OBJECTS, {"aarch64_note": f"{AARCH64_CC} not found: object files only"}


def export(ctx: ExportContext, out: Path) -> TargetResult:
    """Trace, import and compile every method; write the libraries, parameters and signature."""
    import time

    import tvm

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mod, tensors, signature = build_module(ctx)
    t_import = time.perf_counter() - t0
    _save_params(tensors, out / PARAMS_FILE)
    (out / METHODS_FILE).write_text(json.dumps({"host_target": HOST_TARGET, "aarch64_target": AARCH64_TARGET,
                                                "methods": signature}, indent=1))
    t0 = time.perf_counter()
    tvm.compile(mod, target=tvm.target.Target(HOST_TARGET)).export_library(str(out / HOST_LIB))
    t_host = time.perf_counter() - t0
    t0 = time.perf_counter()
    arm_file, arm_checks = _build_aarch64(mod, out)
    t_arm = time.perf_counter() - t0
    rel = out.relative_to(ctx.bundle).as_posix()
    files = {m: f"{rel}/{HOST_LIB}" for m in signature}
    files.update({"params": f"{rel}/{PARAMS_FILE}", "signature": f"{rel}/{METHODS_FILE}", "aarch64": f"{rel}/{arm_file}"})
    int4 = sum(1 for k, t in tensors.items() if k.endswith("qdata") and t.dtype == torch.uint8)
    checks = {"host_e_machine": elf_machine(out / HOST_LIB), **arm_checks, "int4_packed_tensors": int4,
              "params_bytes": (out / PARAMS_FILE).stat().st_size, "host_lib_bytes": (out / HOST_LIB).stat().st_size,
              "seconds": {"trace_import": round(t_import, 2), "host_compile": round(t_host, 2),
                          "aarch64_compile": round(t_arm, 2)}}
    return TargetResult(files, checks=checks,
                        note=f"Relax VM; host {HOST_TARGET}, aarch64 {arm_file}; weights as inputs ({int4} int4-packed tensors)")


class TvmEngine(GraphEngine):
    """The TVM Relax VM over a bundle's host library (the backend the SDK uses for ``tvm``)."""

    def __init__(self, bundle: Path, manifest: dict):
        import tvm
        from safetensors.numpy import load_file

        super().__init__(manifest)
        entry = manifest[C.KEY_TARGETS].get(C.TARGET_TVM) if C.KEY_TARGETS in manifest else None
        folder = Path(bundle) / C.TARGET_TVM
        if entry:
            folder = (Path(bundle) / entry["files"]["signature"]).parent
        for name in (HOST_LIB, PARAMS_FILE, METHODS_FILE):
            if not (folder / name).is_file():
                raise CheckpointError(f"TVM target file missing: {folder / name}")
        self.signature = json.loads((folder / METHODS_FILE).read_text())["methods"]
        self.device = tvm.cpu()
        self.vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(folder / HOST_LIB)), self.device)
        stored = load_file(str(folder / PARAMS_FILE))
        missing = sorted({p for sig in self.signature.values() for p in sig["params"]} - stored.keys())
        if missing:
            raise CheckpointError(f"{folder / PARAMS_FILE} lacks parameters: {', '.join(missing[:5])}")
        weights = {k: tvm.runtime.tensor(v, self.device) for k, v in stored.items()}
        self.params = {m: [weights[p] for p in sig["params"]] for m, sig in self.signature.items()}

    def run(self, method: str, *arrays: np.ndarray) -> list[np.ndarray]:
        import tvm

        if method not in self.signature:
            raise ValueError(f"the TVM build has no method {method!r}; it has {', '.join(self.signature)}")
        spec = self.signature[method]["inputs"]
        if len(arrays) != len(spec):
            raise ValueError(f"{method} takes {len(spec)} inputs, got {len(arrays)}")
        args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=s["dtype"]), self.device) for a, s in zip(arrays, spec)]
        out = self.vm[method](*args, *self.params[method])
        outs = [out] if hasattr(out, "numpy") else list(out)  # one tensor, or a tuple of them
        return [o.numpy() for o in outs]


def open_engine(bundle: Path, manifest: dict) -> TvmEngine:
    """A :class:`GraphEngine` running the bundle's TVM host library in the Relax VM."""
    return TvmEngine(bundle, manifest)
