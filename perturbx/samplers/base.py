"""Sampler interface: where perturbations come from.

A sampler yields *chunks*: compact descriptions of a few perturbation masks (window
positions, low-resolution random grids, coalitions of superpixels), generated lazily
so that memory never grows with the number of perturbations. A chunk turns itself
into full-resolution masks on the model's array backend with :meth:`MaskChunk.materialize`.

Mask convention: 1 keeps the input, 0 replaces it by the baseline; values in between
blend the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from perturbx.backend import Array


@runtime_checkable
class MaskChunk(Protocol):
    """A few masks in compact form."""

    #: number of masks in the chunk
    size: int

    def materialize(self, backend, dtype) -> Array:
        """Full-resolution keep-masks ``(size, H, W)`` or per-channel ``(size, C, H, W)``.

        Optional: a chunk that also has a ``mask_shape`` attribute (the shape of one mask)
        takes ``out=``, an array ``(size, *mask_shape)`` of ``dtype`` on ``backend``, and writes
        its masks there; the engine then passes memory from its buffer pool, reused from one
        chunk to the next, and estimators must not keep ``masks`` after their ``update``.
        """


@runtime_checkable
class Sampler(Protocol):
    """A finite, seeded source of mask chunks."""

    #: total number of masks the sampler will yield; read by ``chunks``, so the engine can
    #: lower it before iterating to keep the first masks of a stream whose every prefix is a
    #: valid sample (early stopping under a query budget)
    n_total: int

    def chunks(self, chunk_size: int) -> Iterator[MaskChunk]:
        """Yield chunks of at most ``chunk_size`` masks, ``n_total`` masks in all."""
