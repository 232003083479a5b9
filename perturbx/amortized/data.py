"""Training images and the coalition values queried on them.

:func:`training_images` reads what ``Amortized.fit`` is given (an array, a folder of
image files, or ``"shapes"``: the built-in synthetic data) as samples in the model's
layout. :func:`query_games` makes the model queries of training and validation: for
every image the unperturbed input, the baseline and its coalitions, rendered with the
renderer every black-box method uses and scored in the engine's batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from perturbx.adapters import Adapter
from perturbx.baselines import resolve_baseline
from perturbx.engine import predict_in_batches
from perturbx.renderers import BlendRenderer
from perturbx.samplers.coalitions import CoalitionChunk, SegmentMap
from perturbx.segmentation import superpixel_baseline
from perturbx.targets import Target

from .game import sample_coalitions

__all__ = ["GameTable", "baseline_of", "holdout_split", "image_coalitions", "query_games", "training_images"]

#: rows rendered and held at once when querying (several model batches; 2048 rows of 3 x 64 x 64 float32: 96 MiB)
RENDER_ROWS = 2048


def training_images(data: object, adapter: Adapter, n_images: int, seed: int) -> np.ndarray:
    """The images ``fit`` trains and validates on, ``(N, *sample_shape)`` float32 in the adapter's layout.

    Parameters
    ----------
    data : ndarray, str or os.PathLike
        An array ``(N, *sample_shape)``; a folder whose image files
        (:func:`perturbx.images.image_files`) are read in the adapter's layout; or ``"shapes"``:
        ``n_images`` images of :func:`perturbx.datasets.make_shapes` (64 x 64 RGB unless the
        adapter declares another square size), seeded by ``seed``.
    adapter : Adapter
    n_images : int
        Images drawn for ``"shapes"``.
    seed : int
    """
    if isinstance(data, str) and data == "shapes":
        from perturbx.datasets import make_shapes

        shape = adapter.sample_shape
        size = adapter.layout.spatial_shape(shape)[0] if shape is not None else 64
        # one view of the whole set: a stacked copy doubled the memory (192,000 images are 9.4 GB as float32)
        images = adapter.layout.from_chw_array(make_shapes(n_images, size=size, random_state=seed).images)
    elif isinstance(data, (str, os.PathLike)):
        images = _folder(Path(data), adapter)
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        images = np.asarray(data)
    else:
        raise TypeError(f"The 'data' argument of Amortized.fit must be an array (N, *sample_shape), a folder of "
                        f"images or 'shapes' (the built-in data). Got {type(data).__name__}.")
    if images.ndim != adapter.layout.ndim + 1 or len(images) < 1:
        raise ValueError(f"The 'data' argument of Amortized.fit must hold samples of layout "
                         f"'N{adapter.layout.name}' ({adapter.layout.ndim + 1} axes). Got shape {images.shape}.")
    first = adapter.check_sample(images[0])
    return np.ascontiguousarray(images, dtype=first.dtype)


def holdout_split(images: np.ndarray, data: object, validation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of ``images``: a seeded random choice of ``validation`` rows held out.

    Both parts keep the rows' order. Where ``images`` is perturbx's own array (``data`` was
    ``"shapes"``, a folder, or an array that :func:`training_images` had to convert), its rows
    are rearranged in place (training rows first) and the two parts are views of it: no copy of
    the whole set (192,000 images of 3 x 64 x 64 are 9.4 GB as float32). An array of the
    caller's is never changed; its rows are copied.

    Parameters
    ----------
    images : ndarray (N, *sample_shape)
        What :func:`training_images` returned for ``data``.
    data : object
        What ``fit`` was given (only to tell whether ``images`` shares the caller's memory).
    validation : int
        Rows held out, ``0 <= validation < N``.
    seed : int

    Returns
    -------
    train : ndarray (N - validation, *sample_shape)
    val : ndarray (validation, *sample_shape)
    """
    n = len(images)
    order = np.random.default_rng([seed, 1]).permutation(n)
    held = np.sort(order[:validation])
    if _callers(images, data):
        return images[np.sort(order[validation:])], images[held]
    val = images[held]  # a copy of the few held-out rows
    _compact(images, held)
    images[n - validation:] = val
    return images[:n - validation], images[n - validation:]


def _callers(images: np.ndarray, data: object) -> bool:
    """Whether ``images`` may share memory with the caller's ``data``."""
    if isinstance(data, (str, os.PathLike)):
        return False
    try:
        return bool(np.may_share_memory(images, np.asarray(data)))
    except (TypeError, ValueError):  # not an array after all: training_images made ``images``
        return False


def _compact(images: np.ndarray, held: np.ndarray) -> None:
    """Move every row not in ``held`` (sorted) forward over the held rows, keeping their order, in place.

    A row moves forward by the number of held rows before it; it is copied in blocks no longer
    than that shift, so that a block's source and destination never overlap (numpy would
    otherwise copy the source to a temporary first).
    """
    bounds = [*held.tolist(), len(images)]
    for shift, (lo, hi) in enumerate(pairwise(bounds), start=1):  # rows lo+1 .. hi-1 move by shift
        for src in range(lo + 1, hi, shift):
            end = min(src + shift, hi)
            images[src - shift:end - shift] = images[src:end]


def _folder(root: Path, adapter: Adapter) -> np.ndarray:
    from perturbx.images import image_files, read_image

    if not root.is_dir():
        raise ValueError(f"The 'data' argument of Amortized.fit is {str(root)!r}, which is not a folder; pass a "
                         f"folder of images, an array (N, *sample_shape) or 'shapes'.")
    files = image_files(root)
    if not files:
        raise ValueError(f"The folder {str(root)!r} given as 'data' to Amortized.fit holds no image files.")
    images = [read_image(f, layout=adapter.layout.name) for f in files]
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise ValueError(f"The images of {str(root)!r} have several shapes {sorted(shapes)}; Amortized trains "
                         f"on one input shape, so resize them to the model's input size first.")
    return np.stack(images)


def baseline_of(spec: object, x: np.ndarray, adapter: Adapter, segments: np.ndarray) -> np.ndarray:
    """The baseline of sample ``x``: exactly what :class:`perturbx.KernelSHAP` uses with these segments."""
    rng = np.random.default_rng(0)  # only a "noise" baseline would draw, and Amortized refuses it
    resolved = resolve_baseline(spec, x, adapter.layout, rng)
    return superpixel_baseline(spec, resolved, x, adapter.layout, segments)


def image_coalitions(seed: int, index: int, n_coalitions: int, m: int) -> np.ndarray:
    """The training coalitions of image ``index``: ``n_coalitions`` (even) rows, in complementary pairs.

    Drawn from a stream of their own (``seed``, ``index``), so they do not depend on which
    images were queried before (a resumed run draws the same).
    """
    return sample_coalitions(np.random.default_rng([seed, index]), n_coalitions // 2, m)


@dataclass
class GameTable:
    """The queried games of ``N`` images: ``T`` target scalars for every coalition.

    Attributes
    ----------
    full : ndarray (N, T)
        ``v(1) = f(x)``.
    empty : ndarray (N, T)
        ``v(0) = f(baseline)``.
    z : ndarray (N, K, M) uint8
        The coalitions (K per image, complementary pairs).
    values : ndarray (N, K, T)
        ``v(z)``.
    """

    full: np.ndarray
    empty: np.ndarray
    z: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.full)

    @classmethod
    def empty_table(cls, n_targets: int, k: int, m: int) -> GameTable:
        return cls(np.zeros((0, n_targets)), np.zeros((0, n_targets)), np.zeros((0, k, m), np.uint8),
                   np.zeros((0, k, n_targets)))

    def extend(self, other: GameTable) -> GameTable:
        return GameTable(*(np.concatenate([a, b]) for a, b in zip(
            (self.full, self.empty, self.z, self.values), (other.full, other.empty, other.z, other.values),
            strict=True)))


def query_games(adapter: Adapter, target: Target, images: np.ndarray, baselines: Iterator[np.ndarray],
                segments: np.ndarray, coalitions: list[np.ndarray]) -> GameTable:
    """Query ``f(x)``, ``f(baseline)`` and ``v(z)`` for each image and its coalitions.

    Each image's rows (the full and the empty coalition first, then its coalitions) are
    rendered by :class:`~perturbx.renderers.BlendRenderer` on the adapter's backend;
    the rows of several images are scored together by
    :func:`perturbx.engine.predict_in_batches`, so the model sees full batches.

    Parameters
    ----------
    adapter : Adapter
    target : Target
        Bound target giving ``T`` scalars per row.
    images : ndarray (N, *sample_shape)
    baselines : iterable of ndarray, one per image
    segments : int ndarray (H, W)
        The players.
    coalitions : list of N arrays (K, M) uint8

    Returns
    -------
    GameTable
    """
    segmap = SegmentMap(segments)
    m = segmap.n_segments
    scorer = _ChunkedScorer(adapter, target)
    counts = []
    for x, base, z in zip(images, baselines, coalitions, strict=True):
        z = np.concatenate([np.ones((1, m), np.uint8), np.zeros((1, m), np.uint8), z])
        masks = CoalitionChunk(z, None, None, segmap).materialize(adapter.backend, adapter.dtype)
        scorer.add(BlendRenderer(x, base, adapter.layout, adapter.backend, adapter.dtype).render(masks))
        counts.append(len(z))
    split = np.split(scorer.finish(), np.cumsum(counts)[:-1])
    return GameTable(np.stack([s[0] for s in split]), np.stack([s[1] for s in split]),
                     np.stack(coalitions) if coalitions[0].size else np.zeros((len(images), 0, m), np.uint8),
                     np.stack([s[2:] for s in split]))


class _ChunkedScorer:
    """Scores rendered rows as they come, in full model batches, holding at most about :data:`RENDER_ROWS` rows.

    Rows are sent in multiples of the adapter's ``batch_size`` (the remainder waits for the
    next image's rows), so the model calls are the same whatever the images' row counts.
    """

    def __init__(self, adapter: Adapter, target: Target) -> None:
        self.adapter, self.target = adapter, target
        self.chunk = max(1, RENDER_ROWS // adapter.batch_size) * adapter.batch_size
        self.pending: list = []
        self.n_pending = 0
        self.scores: list[np.ndarray] = []

    def add(self, rows) -> None:
        self.pending.append(rows)
        self.n_pending += int(rows.shape[0])
        if self.n_pending >= self.chunk:
            self._send((self.n_pending // self.adapter.batch_size) * self.adapter.batch_size)

    def finish(self) -> np.ndarray:
        if self.n_pending:
            self._send(self.n_pending)
        return np.concatenate(self.scores)

    def _send(self, n: int) -> None:
        batch = self.pending[0] if len(self.pending) == 1 else self.adapter.backend.concatenate(self.pending)
        self.scores.append(predict_in_batches(self.adapter, batch[:n], self.target))
        self.pending = [batch[n:]] if n < self.n_pending else []
        self.n_pending -= n
