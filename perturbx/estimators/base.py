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
    the backend and the scores ``(n, T)`` of the selected targets; ``finalize`` returns
    the attributions ``(T, *mask_shape)`` as a numpy array. Memory is independent of
    the number of chunks.
    """

    def update(self, chunk: MaskChunk, masks: Array, scores: np.ndarray) -> None: ...

    def finalize(self) -> np.ndarray: ...


def weighted_mask_sum(backend, weights: np.ndarray, masks, dtype=np.float32):
    """``weights.T @ masks``: ``(T, D)`` on the backend for weights ``(n, T)`` and masks ``(n, ...)``.

    The product runs in ``dtype`` (a chunk is small); callers accumulate chunks in float64.
    """
    flat = masks.reshape(masks.shape[0], -1)
    return backend.cast(backend.bmm(backend.asarray(weights.T, dtype), flat), np.float64)
