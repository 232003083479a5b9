"""Mean score drop over the perturbations that cover each pixel (occlusion)."""

from __future__ import annotations

import itertools

import numpy as np

from perturbx.samplers.sliding_window import WindowChunk

from .base import weighted_mask_sum


class _WindowSums:
    """Sums over axis-aligned windows, kept as a difference array on the host.

    Adding a value over a box ``[lo, hi)`` touches its ``2^k`` corners of a ``k``-dim array one
    larger than the shape along each axis; cumulative sums along every axis turn it into the
    sum over the boxes covering each element. A chunk of n windows costs ``O(n 2^k)`` instead of
    the ``O(n H W)`` of a product with the full-size masks (which also need to be rendered and
    read): measured in ``benchmarks/bench_overhead.py --profile``. Exact in float64 up to the
    rounding of the cumulative sums.
    """

    def __init__(self, shape: tuple[int, ...], window: tuple[int, ...], n_targets: int) -> None:
        self.shape, self.window = shape, window
        self.drop = np.zeros((*(s + 1 for s in shape), n_targets))
        self.cover = np.zeros(tuple(s + 1 for s in shape))

    def add(self, starts: np.ndarray, drops: np.ndarray) -> None:
        """Add ``drops`` ``(n, T)`` over the windows starting at ``starts`` ``(n, k)``."""
        ends = np.minimum(starts + np.asarray(self.window), np.asarray(self.shape))
        for corner in itertools.product((0, 1), repeat=len(self.shape)):
            index = tuple(ends[:, a] if c else starts[:, a] for a, c in enumerate(corner))
            sign = -1.0 if sum(corner) % 2 else 1.0
            np.add.at(self.drop, index, sign * drops)
            np.add.at(self.cover, index, sign)

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Drop ``(T, *shape)`` and cover ``shape`` summed over the windows covering each element."""
        drop, cover = self.drop, self.cover
        for axis in range(len(self.shape)):
            drop, cover = np.cumsum(drop, axis=axis), np.cumsum(cover, axis=axis)
        crop = tuple(slice(0, s) for s in self.shape)
        return np.moveaxis(drop[crop], -1, 0), cover[crop]


class ScoreDrop:
    """Attribution of u = mean over perturbations n covering u of ``f(x) - f(x_n)``.

    "Covering" is weighted by how much of u a perturbation removes, ``1 - mask``; for
    binary windows this is Captum's Occlusion. Pixels no perturbation touches get 0.
    Window chunks (:class:`~perturbx.samplers.sliding_window.WindowChunk`) are folded from
    their positions on the host, without reading their masks; other chunks through their masks.

    Parameters
    ----------
    backend : array backend of the model
    reference : ndarray, shape (T,)
        Scores of the unperturbed input for the selected targets.
    """

    chunk_type = None

    def __init__(self, backend, reference: np.ndarray) -> None:
        self.backend = backend
        self.reference = np.asarray(reference, dtype=np.float64)
        self._drop = None
        self._cover = None
        self._windows: _WindowSums | None = None
        self._shape: tuple[int, ...] = ()

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        drops = self.reference[None, :] - np.asarray(scores, dtype=np.float64)
        self._shape = tuple(masks.shape[1:])
        if isinstance(chunk, WindowChunk):
            if self._windows is None:
                self._windows = _WindowSums(chunk.shape, chunk.window, len(self.reference))
            self._windows.add(chunk.starts, drops)
            return
        removed = 1.0 - masks
        drop = weighted_mask_sum(self.backend, drops, removed)
        cover = self.backend.cast(removed.reshape(removed.shape[0], -1).sum(0), np.float64)
        self._drop = drop if self._drop is None else self._drop + drop
        self._cover = cover if self._cover is None else self._cover + cover

    def finalize(self) -> np.ndarray:
        """Attributions ``(T, *mask_shape)``."""
        t = len(self.reference)
        drop, cover = np.zeros((t, int(np.prod(self._shape)))), np.zeros(int(np.prod(self._shape)))
        if self._drop is not None:
            drop += self.backend.to_numpy(self._drop)
            cover += self.backend.to_numpy(self._cover)
        if self._windows is not None:
            window_drop, window_cover = self._windows.totals()
            drop += window_drop.reshape(t, -1)
            cover += window_cover.reshape(-1)
        out = np.divide(drop, cover, out=np.zeros_like(drop), where=cover > 0)
        return out.reshape(t, *self._shape)
