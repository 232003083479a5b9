"""Isotonic regression (pool adjacent violators) for :class:`~perturbx.estimators.GridRegression`'s link.

scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` computes the same fit (``tests/test_grid_regression.py``
checks it), but importing ``sklearn.isotonic`` adds about 80 MB to a process's memory (measured: resident size
of a process with torch and perturbx, before and after the import): more than RISE's own arrays, in a method
whose memory the benchmarks track. The fit itself is a few lines.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IsotonicFit"]


class IsotonicFit:
    """The non-decreasing least-squares fit of ``y`` on ``x``, predicted by linear interpolation between its knots.

    Parameters
    ----------
    knots_x, knots_y : ndarray (k,)
        The distinct ``x`` in increasing order and the fitted value at each.
    """

    def __init__(self, knots_x: np.ndarray, knots_y: np.ndarray) -> None:
        self.knots_x, self.knots_y = knots_x, knots_y

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> IsotonicFit:
        """Fit ``y`` ``(n,)`` on ``x`` ``(n,)``: tied ``x`` share the mean of their ``y``, then adjacent
        violators are pooled (each block takes the weighted mean of its points)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        knots_x, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=y, minlength=len(knots_x)) / counts
        return cls(knots_x, _pool_adjacent_violators(means, counts.astype(np.float64)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fitted values at ``x``: linear between knots, the end knots' values outside them."""
        return np.interp(np.asarray(x, dtype=np.float64), self.knots_x, self.knots_y)


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in weighted least squares (weights ``w``)."""
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, u in zip(y.tolist(), w.tolist(), strict=True):
        size = 1
        while values and values[-1] > v:  # the last block is above this one: pool them
            pv, pu, ps = values.pop(), weights.pop(), sizes.pop()
            v, u, size = (pv * pu + v * u) / (pu + u), pu + u, size + ps
        values.append(v)
        weights.append(u)
        sizes.append(size)
    return np.repeat(values, sizes)
