"""One ExecuTorch program from several: the methods of separately lowered ``.pte`` files in one file.

The executorch target lowers its methods in two processes at once (``targets/executorch.py``):
lowering is single-threaded Python, and ``prefill`` and ``decode`` are two whole decoders of the
same size. Each process writes a complete program; this module joins them at the level of the
program schema (``executorch.exir.schema.Program``, as ``exir._serialize`` reads and writes it):

- the execution plans (one per method) are concatenated; method names must not repeat;
- each plan's delegates point into the program-wide list of delegate blobs, and each constant
  tensor into the program-wide list of constant buffers: those indices are shifted by what the
  programs before it hold (constant buffer 0 is the runtime's empty placeholder in every program);
  identical constant buffers are stored once;
- named data (where XNNPACK keeps the packed weights, keyed by a hash of their content) is merged
  by key, so a weight both programs use is stored once, as it is when one process lowers all
  methods;
- programs with mutable buffers (a KV cache inside the program) or external tensor data are
  refused: their segments are indexed per program and are not remapped here.

The joined file is then serialized by ExecuTorch's own serializer with its default alignment.
"""

from __future__ import annotations

import hashlib

PLACEHOLDER = 0  # constant_buffer[0]: the empty buffer every program starts with


def _check_mergeable(pte, index: int) -> None:
    from executorch.exir.schema import Tensor, TensorDataLocation

    if pte.mutable_data:
        raise ValueError(f"program {index}: mutable buffers (state inside the program) are not merged")
    if pte.named_data is not None and pte.named_data.external_data:
        raise ValueError(f"program {index}: named data stored outside the .pte is not merged")
    for plan in pte.program.execution_plan:
        for value in plan.values:
            info = getattr(value.val, "extra_tensor_info", None) if isinstance(value.val, Tensor) else None
            if info is not None and info.location == TensorDataLocation.EXTERNAL:
                raise ValueError(f"program {index}, method {plan.name}: tensors stored outside the .pte are not merged")


def merge_programs(parts: list[bytes]) -> bytes:
    """The ``.pte`` holding every method of ``parts`` (serialized ``.pte`` files), in their order."""
    from executorch.exir._serialize._named_data_store import NamedDataStore
    from executorch.exir._serialize._program import PTEFile, deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.capture._config import ExecutorchBackendConfig
    from executorch.exir.schema import BackendDelegateDataReference, DataLocation, Tensor

    if not parts:
        raise ValueError("no programs to merge")
    ptes = [deserialize_pte_binary(bytes(p)) for p in parts]
    for i, pte in enumerate(ptes):
        _check_mergeable(pte, i)
    merged = ptes[0].program
    names = {plan.name for plan in merged.execution_plan}
    constants = {hashlib.sha256(bytes(b.storage)).digest(): i for i, b in enumerate(merged.constant_buffer)}
    store = NamedDataStore()
    if ptes[0].named_data is not None:
        store.merge_named_data_store(ptes[0].named_data)
    for index, pte in enumerate(ptes[1:], start=1):
        program = pte.program
        # constant buffers: the same bytes share one index; the rest are appended
        remap = {PLACEHOLDER: PLACEHOLDER}
        for i, buf in enumerate(program.constant_buffer):
            if i == PLACEHOLDER:
                continue
            key = hashlib.sha256(bytes(buf.storage)).digest()
            if key not in constants:
                constants[key] = len(merged.constant_buffer)
                merged.constant_buffer.append(buf)
            remap[i] = constants[key]
        delegate_base = len(merged.backend_delegate_data)
        merged.backend_delegate_data.extend(program.backend_delegate_data)
        for plan in program.execution_plan:
            if plan.name in names:
                raise ValueError(f"program {index}: method {plan.name!r} is already in an earlier program")
            names.add(plan.name)
            for value in plan.values:
                if isinstance(value.val, Tensor) and value.val.data_buffer_idx:
                    value.val.data_buffer_idx = remap[value.val.data_buffer_idx]
            for delegate in plan.delegates:
                if delegate.processed.location != DataLocation.INLINE:
                    raise ValueError(f"program {index}, method {plan.name}: delegate data not inline after reading")
                delegate.processed = BackendDelegateDataReference(
                    location=DataLocation.INLINE, index=delegate.processed.index + delegate_base)
            merged.execution_plan.append(plan)
        if pte.named_data is not None:
            store.merge_named_data_store(pte.named_data)
    named = store.get_named_data_store_output()
    config = ExecutorchBackendConfig()
    out = serialize_pte_binary(
        PTEFile(program=merged, mutable_data=None, named_data=named if named.pte_data else None),
        extract_delegate_segments=config.extract_delegate_segments, segment_alignment=config.segment_alignment,
        constant_tensor_alignment=config.constant_tensor_alignment, delegate_alignment=config.delegate_alignment)
    return bytes(out)


__all__ = ["merge_programs"]
