"""The perturbations the faithfulness metrics query, streamed through the engine.

Every query-based faithfulness metric scores the model on perturbed copies of one
sample, each defined by which pixels show the input and which the substrate. Two
compact descriptions cover them all:

- :class:`RankSampler`: pixel ``p`` is *selected* in perturbation ``k`` when
  ``lo[k] <= rank[p] < hi[k]`` (deletion, insertion, faithfulness estimate, monotonicity,
  IROF, ROAD: ``rank`` orders pixels, or superpixels, by attribution);
- :class:`SubsetSampler`: perturbation ``k`` selects the pixels ``subsets[k]`` (random
  subsets of faithfulness correlation).

``remove=True`` replaces the selected pixels by the substrate (keep-mask 0 there);
``remove=False`` shows only them (keep-mask 1 there). All channels of a pixel move
together. :func:`score_perturbations` runs a sampler through
:func:`perturbx.engine.run` with any renderer and returns one row of target scalars per
perturbation; memory is one chunk of masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from perturbx import engine
from perturbx.renderers import BlendRenderer

from ._common import target_in_range

__all__ = ["RankChunk", "RankSampler", "ScoreCollector", "SubsetChunk", "SubsetSampler", "score_perturbations"]


@dataclass(frozen=True)
class RankChunk:
    """Perturbations ``index`` (n,) selecting the pixels with ``lo <= rank < hi``."""

    index: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sampler: RankSampler

    @property
    def size(self) -> int:
        return len(self.index)

    def materialize(self, backend, dtype):
        """Keep-masks ``(n, H, W)``: 0 where the substrate shows, 1 where the input does."""
        ranks = self.sampler.ranks_on(backend)[None, :]
        lo = backend.asarray(self.lo[:, None], np.int64)
        hi = backend.asarray(self.hi[:, None], np.int64)
        selected = (ranks >= lo) & (ranks < hi)
        keep = ~selected if self.sampler.remove else selected
        return backend.cast(keep, dtype).reshape(self.size, *self.sampler.spatial)


class RankSampler:
    """Yields perturbations ``k`` selecting the pixels of rank in ``[lo[k], hi[k])``.

    Parameters
    ----------
    ranks : int ndarray (H, W)
        Rank of every pixel (several pixels may share a rank: a superpixel).
    lo, hi : int ndarray (K,)
        Bounds of the selected ranks for each perturbation.
    remove : bool
        True: the selected pixels show the substrate; False: only they show the input.
    """

    chunk_type = RankChunk

    def __init__(self, ranks: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, remove: bool) -> None:
        self.spatial = tuple(ranks.shape)
        self.remove = bool(remove)
        self.lo = np.asarray(lo, dtype=np.int64)
        self.hi = np.asarray(hi, dtype=np.int64)
        self.n_total = len(self.lo)
        self._ranks = np.asarray(ranks, dtype=np.int64).ravel()
        self._cache: dict[tuple[str, str], object] = {}

    def ranks_on(self, backend):
        key = (backend.name, str(backend.device))
        if key not in self._cache:
            self._cache[key] = backend.asarray(self._ranks, np.int64)
        return self._cache[key]

    def chunks(self, chunk_size: int) -> Iterator[RankChunk]:
        for start in range(0, self.n_total, chunk_size):
            idx = np.arange(start, min(start + chunk_size, self.n_total))
            yield RankChunk(idx, self.lo[idx], self.hi[idx], self)


@dataclass(frozen=True)
class SubsetChunk:
    """Perturbations ``index`` (n,) selecting the flat pixel indices ``subsets`` (n, k)."""

    index: np.ndarray
    subsets: np.ndarray
    sampler: SubsetSampler

    @property
    def size(self) -> int:
        return len(self.index)

    def materialize(self, backend, dtype):
        """Keep-masks ``(n, H, W)`` built on the host (a subset is small) and moved to the backend."""
        h, w = self.sampler.spatial
        selected = np.zeros((self.size, h * w), dtype=bool)
        np.put_along_axis(selected, self.subsets, True, axis=1)
        keep = ~selected if self.sampler.remove else selected
        return backend.asarray(keep.reshape(self.size, h, w), dtype)


class SubsetSampler:
    """Yields perturbations ``k`` selecting the pixels ``subsets[k]`` (flat indices into ``(H, W)``)."""

    chunk_type = SubsetChunk

    def __init__(self, spatial: tuple[int, int], subsets: np.ndarray, *, remove: bool) -> None:
        self.spatial = tuple(spatial)
        self.subsets = np.asarray(subsets, dtype=np.int64)
        self.remove = bool(remove)
        self.n_total = len(self.subsets)

    def chunks(self, chunk_size: int) -> Iterator[SubsetChunk]:
        for start in range(0, self.n_total, chunk_size):
            idx = np.arange(start, min(start + chunk_size, self.n_total))
            yield SubsetChunk(idx, self.subsets[idx], self)


class ScoreCollector:
    """Estimator that keeps the target's scalars ``(K, T)`` of every perturbation (one row each)."""

    chunk_type = None

    def __init__(self, n: int, n_outputs: int) -> None:
        self.scores = np.full((n, n_outputs), np.nan)
        self._next = 0

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        index = getattr(chunk, "index", None)
        if index is None:
            index = np.arange(self._next, self._next + len(scores))
        self.scores[index] = scores
        self._next += len(scores)

    def finalize(self) -> np.ndarray:
        return self.scores


def score_perturbations(adapter, x: np.ndarray, base: np.ndarray, target, sampler, owner: str, *,
                        renderer=None, progress: bool | None = None) -> np.ndarray:
    """The target's scalars ``(K, T)`` for the ``K`` perturbations of ``sampler``, batched through the adapter.

    Parameters
    ----------
    adapter : perturbx.adapters.Adapter
    x, base : ndarray, the sample and its substrate in the adapter's layout
    target : bound perturbx.targets.Target
    sampler : RankSampler or SubsetSampler
    owner : str, the metric (progress label and error messages)
    renderer : renderer, optional
        Default: :class:`~perturbx.renderers.BlendRenderer` of ``x`` and ``base``.
    """
    if renderer is None:
        renderer = BlendRenderer(x, base, adapter.layout, adapter.backend, adapter.dtype)
    collector = ScoreCollector(sampler.n_total, target.n_outputs)
    with target_in_range(target, owner):
        engine.run(engine.Plan(sampler, renderer, collector), adapter, target, progress=progress, desc=owner)
    return collector.finalize()
