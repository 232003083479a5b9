"""Estimator interface: fold model scores into an attribution as they arrive."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from perturbx.backend import Array
from perturbx.samplers.base import MaskChunk


@runtime_checkable
class Estimator(Protocol):
    """Streaming attribution estimate.

    ``update`` is called once per chunk with the chunk, its materialised keep-masks on
    the backend and the target's scalars ``(n, T)``; ``finalize`` returns
    the attributions ``(T, *mask_shape)`` as a numpy array. Memory is independent of
    the number of chunks.

    The class attribute ``chunk_type`` names the chunk class whose fields ``update``
    reads (None: only the masks, any sampler fits); a sampler declares the class of the
    chunks it yields the same way, and :func:`check_pairing` holds them together.
    """

    def update(self, chunk: MaskChunk, masks: Array, scores: np.ndarray) -> None: ...

    def finalize(self) -> np.ndarray: ...


def weighted_mask_sum(backend, weights: np.ndarray, masks, dtype=np.float32):
    """``weights.T @ masks``: ``(T, D)`` on the backend for weights ``(n, T)`` and masks ``(n, ...)``.

    The product runs in ``dtype`` (a chunk is small); callers accumulate chunks in float64.
    """
    flat = masks.reshape(masks.shape[0], -1)
    return backend.cast(backend.bmm(backend.asarray(weights.T, dtype), flat), np.float64)


def check_pairing(sampler, estimator) -> None:
    """Raise TypeError unless ``sampler``'s chunks carry the fields ``estimator`` reads.

    Both declare a class attribute ``chunk_type``: the sampler the class of its chunks, the
    estimator the class it needs (None: any chunk, only the masks are read). The sampler's
    must be that class or a subclass of it.
    """
    needed = getattr(estimator, "chunk_type", None)
    if needed is None:
        return
    produced = getattr(sampler, "chunk_type", None)
    if produced is None or not issubclass(produced, needed):
        what = "chunks of no declared type (no chunk_type attribute)" if produced is None else \
            f"{produced.__name__} chunks"
        raise TypeError(f"{type(estimator).__name__} reads {needed.__name__} chunks ({needed.__doc__.splitlines()[0]}) "
                        f"but {type(sampler).__name__} yields {what}; pair it with a sampler that yields "
                        f"{needed.__name__} (or a subclass).")
