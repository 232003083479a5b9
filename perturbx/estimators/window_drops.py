"""The score drop of every occluded window, kept per window (coarse-to-fine occlusion)."""

from __future__ import annotations

import numpy as np

from perturbx.samplers.sliding_window import WindowChunk


class WindowDrops:
    """Record ``f(x) - f(x with window n occluded)`` for every window, in the sampler's order.

    Unlike :class:`~perturbx.estimators.ScoreDrop`, which folds the drops into a pixel map
    as they arrive, this keeps one number per window and target (a few kilobytes: the
    windows are few, the masks are not kept), so that windows never queried can be
    interpolated from their neighbours before the pixel map is made.

    Parameters
    ----------
    reference : ndarray, shape (T,)
        Scores of the unperturbed input for the selected targets.
    """

    chunk_type = WindowChunk

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)
        self._parts: list[np.ndarray] = []

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        self._parts.append(self.reference[None, :] - np.asarray(scores, dtype=np.float64))

    def finalize(self) -> np.ndarray:
        """Drops ``(n_windows, T)`` in the order the windows were queried."""
        if not self._parts:
            return np.zeros((0, len(self.reference)))
        return np.concatenate(self._parts)
