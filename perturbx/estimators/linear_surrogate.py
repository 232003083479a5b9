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

    Error estimate: sample ``i`` (in the order streamed) belongs to replicate group
    ``(i // block) mod n_groups``; the sums are kept per group, and the delete-a-group jackknife
    re-solves the ridge without each group (the other groups re-weighted by
    ``G / (G - 1)``, so the penalty and the unperturbed row keep their share), giving
    the standard error ``sqrt((G - 1) / G * sum_g (beta_(g) - mean)^2)`` of every
    coefficient. The groups do not depend on the model's batch size.

    Parameters
    ----------
    segments : int ndarray, shape (H, W), labels ``0 .. M-1``
    reference : ndarray, shape (T,)
        Scores of the unperturbed input.
    kernel_width : float
    alpha : float
        L2 penalty on the coefficients (not on the intercept); 0 is ordinary weighted least squares.
    n_groups : int, default 8
        Replicate groups of the jackknife.
    block : int, default 1
        Consecutive samples dealt to the same group (2 for antithetic pairs, which are
        not independent of each other).

    Attributes (after ``finalize``)
    -------------------------------
    coef : ndarray (T, M)
    intercept : ndarray (T,)
    score : ndarray (T,)
        Weighted R^2 of the surrogate on its own samples (scikit-learn's ``Ridge.score``
        with ``sample_weight``); for a target whose scores do not vary it is 1.0 when the
        fit is perfect (it then is: coefficients 0) and 0.0 otherwise, as ``r2_score``.
    """

    #: names of the weighted sums kept per group: of 1, z, y, z z^T, z y^T, y^2
    _SUMS = ("w", "z", "y", "zz", "zy", "yy")

    def __init__(self, segments: np.ndarray, reference: np.ndarray, kernel_width: float, alpha: float,
                 n_groups: int = 8, block: int = 1) -> None:
        self.segments, self.kernel_width, self.alpha = segments, kernel_width, alpha
        self.reference = np.asarray(reference, dtype=np.float64)
        m, t, g = int(segments.max()) + 1, len(self.reference), int(n_groups) + 1  # last slot: the input
        self.m, self.n_groups, self.block = m, int(n_groups), int(block)
        self._sums = {"w": np.zeros(g), "z": np.zeros((g, m)), "y": np.zeros((g, t)), "zz": np.zeros((g, m, m)),
                      "zy": np.zeros((g, m, t)), "yy": np.zeros((g, t))}
        self.n_samples = 0
        self._fold(np.ones((1, m)), np.zeros((1, t)), -1)  # the unperturbed input, centred score 0
        self.n_samples = 1

    def _fold(self, z: np.ndarray, y: np.ndarray, g: int) -> None:
        w = cosine_kernel(z, self.kernel_width)
        zw = z * w[:, None]
        sums = self._sums
        sums["w"][g] += float(w.sum())
        sums["z"][g] += zw.sum(axis=0)
        sums["y"][g] += w @ y
        sums["zz"][g] += zw.T @ z
        sums["zy"][g] += zw.T @ y
        sums["yy"][g] += w @ (y * y)

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        # scores are centred on the reference: sums of squares keep their precision
        z, y = chunk.z.astype(np.float64), np.asarray(scores, dtype=np.float64) - self.reference
        groups = ((self.n_samples - 1 + np.arange(len(z))) // self.block) % self.n_groups
        for g in np.unique(groups):
            rows = groups == g
            self._fold(z[rows], y[rows], int(g))
        self.n_samples += len(z)

    def _stats(self, drop: int | None = None) -> dict[str, np.ndarray]:
        """The sums over all groups, or without group ``drop`` (the others scaled by ``G / (G - 1)``)."""
        seen = self._seen_groups()
        out = {}
        for name in self._SUMS:
            part = self._sums[name]
            if drop is None:
                out[name] = part.sum(axis=0)
            else:
                k = len(seen)
                out[name] = part[-1] + k / (k - 1) * (part[seen].sum(axis=0) - part[drop])
        return out

    def _seen_groups(self) -> np.ndarray:
        return np.flatnonzero(self._sums["w"][:-1] > 0)

    def _solve(self, st: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Coefficients ``(M, T)``, mean coalition, mean score and centred sums of one set of sums."""
        zbar, ybar = st["z"] / st["w"], st["y"] / st["w"]
        czz = st["zz"] - st["w"] * np.outer(zbar, zbar)
        czy = st["zy"] - st["w"] * np.outer(zbar, ybar)
        lhs = czz + self.alpha * np.eye(self.m)
        beta = np.linalg.lstsq(lhs, czy, rcond=None)[0] if self.alpha == 0 else np.linalg.solve(lhs, czy)
        return beta, zbar, ybar, czz, czy

    def standard_error(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``(T, M)`` and their jackknife standard errors ``(T, M)`` (NaN with < 2 groups seen)."""
        beta = self._solve(self._stats())[0].T
        seen = self._seen_groups()
        if len(seen) < 2:
            return beta, np.full_like(beta, np.nan)
        reps = np.stack([self._solve(self._stats(int(g)))[0].T for g in seen])
        k = len(seen)
        return beta, np.sqrt((k - 1) / k * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))

    def finalize(self) -> np.ndarray:
        """Surrogate coefficients painted on their superpixels, ``(T, H, W)``."""
        st = self._stats()
        beta, zbar, ybar, czz, czy = self._solve(st)
        cyy = st["yy"] - st["w"] * ybar ** 2
        sse = cyy - 2 * np.einsum("mt,mt->t", beta, czy) + np.einsum("mt,mk,kt->t", beta, czz, beta)
        tiny = 1e-12 * np.maximum(st["yy"], 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(cyy > tiny, 1.0 - sse / cyy, np.where(np.abs(sse) <= tiny, 1.0, 0.0))
        self.coef = beta.T
        self.intercept = ybar - zbar @ beta + self.reference
        self.score = score
        return paint(self.coef, self.segments)
