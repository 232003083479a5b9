"""Shapley values as mean marginal contributions over antithetic permutations, streamed.

Castro, Gómez & Tejada (2009), with antithetic permutations (each random order is
followed by its reverse; Mitchell et al. 2022): walking along a permutation, each
superpixel is credited with the change of the score when it joins the prefix before
it. Contributions of one permutation sum to ``f(x) - f(baseline)``, so efficiency holds
exactly for the mean. Memory: the running mean and squared deviations over
permutation pairs (Welford), ``O(M * T)``, plus the sums of the one or two pairs a chunk
leaves unfinished.

Error estimate: the standard error of the mean over the ``P`` antithetic pairs,
``std(pair means, ddof=1) / sqrt(P)`` per superpixel and target (NaN for one pair).
"""

from __future__ import annotations

import numpy as np

from perturbx.samplers.coalitions import PermutationChunk
from perturbx.segmentation import paint


class PermutationShapley:
    """Streaming mean of marginal contributions along permutation prefixes.

    Parameters
    ----------
    segments : int ndarray, shape (H, W), labels ``0 .. M-1``
    reference : ndarray, shape (T,)
        Scores of the full coalition (the unperturbed input).

    Attributes (after ``finalize``)
    -------------------------------
    values, errors : ndarray (T, M)
    base_value : ndarray (T,)
    n_pairs : int
    """

    chunk_type = PermutationChunk

    def __init__(self, segments: np.ndarray, reference: np.ndarray) -> None:
        self.segments = segments
        self.m = int(segments.max()) + 1
        self.reference = np.asarray(reference, dtype=np.float64)
        shape = (self.m, len(self.reference))
        self.base_value: np.ndarray | None = None
        self._prev = None
        self._open: dict[int, np.ndarray] = {}
        self._mean, self._m2, self.n_pairs = np.zeros(shape), np.zeros(shape), 0

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        y = np.asarray(scores, dtype=np.float64)
        rows = np.flatnonzero(chunk.perm >= 0)
        if len(rows) < len(y):  # the empty coalition: the first row of the first chunk
            self.base_value = y[np.flatnonzero(chunk.perm < 0)[0]]
        if not len(rows):
            return
        prev = np.vstack([self._prev[None] if self._prev is not None else y[:1], y[:-1]])[rows]
        prev[chunk.position[rows] == 0] = self.base_value
        gain = y[rows] - prev
        last = rows[chunk.position[rows] == self.m - 2]
        for perm in np.unique(chunk.perm[rows]):
            pair = int(perm) // 2
            acc = self._open.setdefault(pair, np.zeros_like(self._mean))
            mine = chunk.perm[rows] == perm
            np.add.at(acc, chunk.player[rows[mine]], gain[mine])
        for r in last:  # the final superpixel joins to give the full coalition, scored as the reference
            pair = int(chunk.perm[r]) // 2
            self._open[pair][np.argmin(chunk.z[r])] += self.reference - y[r]
            if chunk.perm[r] % 2 == 1:
                self._close(pair)
        self._prev = y[-1]

    def _close(self, pair: int) -> None:
        value = self._open.pop(pair) / 2.0
        self.n_pairs += 1
        delta = value - self._mean
        self._mean += delta / self.n_pairs
        self._m2 += delta * (value - self._mean)

    def finalize(self) -> np.ndarray:
        """Shapley value estimates painted on their superpixels, ``(T, H, W)``."""
        self.values = self._mean.T.copy()
        if self.n_pairs > 1:
            self.errors = np.sqrt(self._m2.T / (self.n_pairs - 1) / self.n_pairs)
        else:
            self.errors = np.full_like(self.values, np.nan)
        return paint(self.values, self.segments)
