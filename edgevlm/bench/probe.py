"""The memory-bandwidth probe that decode bandwidth is compared with.

Decoding one token reads every decoder weight once plus the KV cache up to the current depth, so
at batch 1 it is bound by memory bandwidth, not arithmetic. :func:`memory_bandwidth` measures what
this machine's memory delivers with the benchmark's thread count: ``threads`` workers each stream
their own slice of a float32 array far larger than the last-level cache (128 MiB by default) in
numpy, which releases the GIL inside its loops so the workers run in parallel. Two passes:

- *read*: a max-reduction over the slice (vectorized, one compare per element, so it is limited by
  the memory, not by arithmetic as a pairwise float sum can be);
- *copy*: ``copyto`` into a second array (memcpy; bytes read + bytes written, like STREAM Copy).

Each is the best of ``repeat`` passes in GB/s (1e9 bytes/s); ``memory_bandwidth_gbs`` is the
larger of the two. It is a practical ceiling for a decode loop on this many threads, not the DRAM
datasheet figure; on a busy machine it is lower than on an idle one, which is why it is measured
in the same run as the backends. ``edgevlm bench`` records it in ``results.json`` (``machine.bandwidth_probe``)
and divides each backend's achieved decode bandwidth by it (``bandwidth_fraction``).
"""

from __future__ import annotations

import threading
import time

import numpy as np


def _timed_parallel(work, parts: int) -> float:
    """Seconds for ``parts`` threads to each run ``work(i)`` (all started together)."""
    barrier = threading.Barrier(parts + 1)

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(parts)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def memory_bandwidth(threads: int = 1, size_mib: int = 128, repeat: int = 5) -> dict:
    """Read and copy bandwidth in GB/s with ``threads`` workers; see the module docstring.

    Returns ``{"method", "threads", "bytes", "repeat", "read_gbs", "copy_gbs", "memory_bandwidth_gbs"}``.
    """
    threads = max(1, int(threads))
    n = (size_mib << 20) // 4 // threads * threads
    src = np.ones(n, dtype=np.float32)  # written once so every page is really mapped
    dst = np.empty_like(src)
    slices = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    sink = [0.0] * threads

    def read(i: int) -> None:
        sink[i] = float(np.maximum.reduce(src[slices[i]]))

    def copy(i: int) -> None:
        np.copyto(dst[slices[i]], src[slices[i]])

    copy_all = _timed_parallel(copy, threads)  # also touches dst's pages before timing
    read_s = min(_timed_parallel(read, threads) for _ in range(repeat))
    copy_s = min([copy_all] + [_timed_parallel(copy, threads) for _ in range(repeat)])
    nbytes = src.nbytes
    read_gbs = nbytes / read_s / 1e9
    copy_gbs = 2 * nbytes / copy_s / 1e9
    return {"method": "numpy float32 max-reduce (read) and copyto (read+write), one slice per thread, best of "
                      "repeat; memory_bandwidth_gbs = the larger", "threads": threads, "bytes": int(nbytes),
            "repeat": int(repeat), "read_gbs": round(read_gbs, 3), "copy_gbs": round(copy_gbs, 3),
            "memory_bandwidth_gbs": round(max(read_gbs, copy_gbs), 3)}


__all__ = ["memory_bandwidth"]
