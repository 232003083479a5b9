"""Memory for perturbed batches, reused from one chunk to the next.

A batch of 64 RGB images at 224x224 in float32 is 38.5 MB, more than glibc's largest
``mmap`` threshold (32 MB): every fresh batch is mapped from the kernel, each of its
9,400 pages is faulted in (and zeroed) on the first write, and the mapping is returned
when the batch is freed. On the 2-core machine of ``benchmarks/results/overhead.md``, under
load, rendering a 64-row batch into fresh memory took 62 ms against 4 ms into a batch already
mapped (one thread; 49 against 16 ms with two). The engine therefore renders into buffers from
a :class:`BufferPool` and gives each back once its chunk's scores are in (issue 16).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import threading

import numpy as np

#: smaller batches are not pooled: malloc serves them from memory it already holds
MIN_POOLED_BYTES = 1 << 20
#: free buffers kept at most; more are dropped (the oldest first)
MAX_FREE = 4
#: host buffers from this size on are mapped with transparent huge pages where Linux offers them
HUGE_PAGE_BYTES = 2 << 20


class BufferPool:
    """Reusable arrays for perturbed batches, keyed by backend, device, shape and dtype.

    A buffer taken is the caller's until it is given back; the pool never hands one out
    twice at a time. It holds at most ``max_free`` free buffers, so it adds at most that
    many batches to what the caller already keeps alive. Safe to use from the engine's
    render-ahead thread and the main thread at once.

    Parameters
    ----------
    max_free : int, optional
        Free buffers kept for reuse (default :data:`MAX_FREE`).
    min_bytes : int, optional
        Batches smaller than this are allocated fresh every time, never pooled (default
        :data:`MIN_POOLED_BYTES`).
    """

    def __init__(self, max_free: int | None = None, min_bytes: int | None = None) -> None:
        self.max_free = MAX_FREE if max_free is None else int(max_free)
        self.min_bytes = MIN_POOLED_BYTES if min_bytes is None else int(min_bytes)
        self._free: list[tuple[tuple, object]] = []
        self._lock = threading.Lock()
        #: buffers allocated by this pool (for tests and benchmarks)
        self.n_allocated = 0

    def take(self, backend, shape: tuple[int, ...], dtype) -> object:
        """An array of ``shape`` and numpy ``dtype`` on ``backend``, contents undefined (a free one if any)."""
        shape = tuple(int(s) for s in shape)
        key = (backend.name, str(backend.device), shape, np.dtype(dtype).name)
        if math.prod(shape) * np.dtype(dtype).itemsize >= self.min_bytes:
            with self._lock:
                for i, (k, buf) in enumerate(self._free):
                    if k == key:
                        del self._free[i]
                        return buf
        self.n_allocated += 1
        return allocate(backend, shape, dtype)

    def give(self, backend, buf, dtype) -> None:
        """Return ``buf``, taken with ``take(backend, buf.shape, dtype)``; the next ``take`` may hand it out."""
        shape = tuple(int(s) for s in buf.shape)
        if math.prod(shape) * np.dtype(dtype).itemsize < self.min_bytes:
            return
        with self._lock:
            self._free.append(((backend.name, str(backend.device), shape, np.dtype(dtype).name), buf))
            if len(self._free) > self.max_free:
                del self._free[0]


def allocate(backend, shape: tuple[int, ...], dtype) -> object:
    """A zeroed array of ``shape`` and numpy ``dtype`` on ``backend``; in host memory of at least
    :data:`HUGE_PAGE_BYTES`, a fresh anonymous mapping advised to use transparent huge pages.

    Huge pages are faulted in 512 times less often and miss the TLB less: on the 2-core machine of
    ``benchmarks/results/overhead.md`` a 38.5 MB batch took 3.8 ms of CPU to map and zero instead of
    18, and rendering into it 3.3 ms instead of 5.0 (one thread). Where the system has no huge pages
    (or no ``madvise``) the mapping is an ordinary one; on other platforms and devices, the backend's
    ``zeros``.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if str(backend.device) != "cpu" or nbytes < max(HUGE_PAGE_BYTES, 1) or not hasattr(mmap, "MAP_ANONYMOUS"):
        return backend.zeros(shape, dtype)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages says EINVAL
            region.madvise(mmap.MADV_HUGEPAGE)
    host = np.frombuffer(region, dtype=dtype).reshape(shape)  # keeps the mapping alive; zeros
    return host if backend.name == "numpy" else backend.asarray(host, dtype)  # torch shares the memory
