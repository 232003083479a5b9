"""LIME's locally weighted ridge surrogate, folded from streamed coalitions.

Ribeiro, Singh & Guestrin (2016), as ``lime.lime_image`` fits it: coalitions ``z`` (M,)
are weighted by an exponential kernel on their cosine distance to the all-on vector,
``pi(z) = sqrt(exp(-d(z)^2 / width^2))`` with ``d(z) = 1 - sqrt(|z| / M)``, and the
scores are regressed on ``z`` with an intercept and an L2 penalty ``alpha`` on the
coefficients (scikit-learn's ``Ridge(alpha, fit_intercept=True)`` with
``sample_weight``). Only the weighted sums of ``1, z, y, z z^T, z y^T, y^2`` are kept,
so memory is ``O(M * (M + T))`` whatever the number of samples; the solution equals
scikit-learn's to rounding.
"""

from __future__ import annotations

import numpy as np

from perturbx.segmentation import paint


def cosine_kernel(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's weights ``sqrt(exp(-d^2 / width^2))`` for coalitions ``z`` (n, M); ``d`` = cosine distance to all-on.

    The empty coalition has distance 1 (scikit-learn's convention for a zero vector).
    """
    d = 1.0 - np.sqrt(z.sum(axis=1) / z.shape[1])
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


class WeightedRidge:
    """Streaming weighted ridge regression of the scores on the coalitions.

    The unperturbed input (all-on coalition, which lime puts first in its sample) enters
    with its known score ``reference`` and weight 1, without another model query.

    Parameters
    ----------
    segments : int ndarray, shape (H, W), labels ``0 .. M-1``
    reference : ndarray, shape (T,)
        Scores of the unperturbed input.
    kernel_width : float
    alpha : float
        L2 penalty on the coefficients (not on the intercept); 0 is ordinary weighted least squares.

    Attributes (after ``finalize``)
    -------------------------------
    coef : ndarray (T, M)
    intercept : ndarray (T,)
    score : ndarray (T,)
        Weighted R^2 of the surrogate on its own samples (scikit-learn's ``Ridge.score``
        with ``sample_weight``); for a target whose scores do not vary it is 1.0 when the
        fit is perfect (it then is: coefficients 0) and 0.0 otherwise, as ``r2_score``.
    """

    def __init__(self, segments: np.ndarray, reference: np.ndarray, kernel_width: float, alpha: float) -> None:
        self.segments, self.kernel_width, self.alpha = segments, kernel_width, alpha
        self.reference = np.asarray(reference, dtype=np.float64)
        m, t = int(segments.max()) + 1, len(self.reference)
        self.m = m
        self._w, self._z, self._y = 0.0, np.zeros(m), np.zeros(t)
        self._zz, self._zy, self._yy = np.zeros((m, m)), np.zeros((m, t)), np.zeros(t)
        self.n_samples = 0
        self._fold(np.ones((1, m)), np.zeros((1, t)))  # the unperturbed input, centred score 0

    def _fold(self, z: np.ndarray, y: np.ndarray) -> None:
        w = cosine_kernel(z, self.kernel_width)
        zw = z * w[:, None]
        self._w += float(w.sum())
        self._z += zw.sum(axis=0)
        self._y += w @ y
        self._zz += zw.T @ z
        self._zy += zw.T @ y
        self._yy += w @ (y * y)
        self.n_samples += len(z)

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        # scores are centred on the reference: sums of squares keep their precision
        self._fold(chunk.z.astype(np.float64), np.asarray(scores, dtype=np.float64) - self.reference)

    def finalize(self) -> np.ndarray:
        """Surrogate coefficients painted on their superpixels, ``(T, H, W)``."""
        zbar, ybar = self._z / self._w, self._y / self._w
        czz = self._zz - self._w * np.outer(zbar, zbar)
        czy = self._zy - self._w * np.outer(zbar, ybar)
        cyy = self._yy - self._w * ybar ** 2
        lhs = czz + self.alpha * np.eye(self.m)
        beta = np.linalg.lstsq(lhs, czy, rcond=None)[0] if self.alpha == 0 else np.linalg.solve(lhs, czy)
        sse = cyy - 2 * np.einsum("mt,mt->t", beta, czy) + np.einsum("mt,mk,kt->t", beta, czz, beta)
        tiny = 1e-12 * np.maximum(self._yy, 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(cyy > tiny, 1.0 - sse / cyy, np.where(np.abs(sse) <= tiny, 1.0, 0.0))
        self.coef = beta.T
        self.intercept = ybar - zbar @ beta + self.reference
        self.score = score
        return paint(self.coef, self.segments)
