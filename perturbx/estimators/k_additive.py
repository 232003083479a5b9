"""Third-order (3-additive) KernelSHAP: Shapley values of a surrogate with interactions.

Pelegrina, Duarte & Grabisch (2023), "A k-additive Choquet integral-based approach to
approximate the SHAP values". Instead of a linear function of the coalition, the
Shapley-kernel-weighted least squares fits

    q(z) = v(0) + sum_i a_i z_i + sum_{i<j} b_ij z_i z_j + sum_{i<j<k} c_ijk z_i z_j z_k

(``P = M + C(M,2) + C(M,3)`` parameters) subject to ``q(1) = v(1)``, and returns the
Shapley values of ``q``, which are exact for such a game: ``phi_i = a_i + sum_j b_ij / 2
+ sum_jk c_ijk / 3``. With every coalition the fit gives the game's Shapley values
exactly, like the linear one; with sampled coalitions the error comes from the game's
interactions of order four and more only, which for the image classifier we measured
was far smaller than what a linear surrogate leaves (``benchmarks/results/lime_shap.md``;
with complementary pairs, a second-order fit gives the same values as the linear one,
so the third order is the first that helps). It needs clearly more samples than ``P``.

Cost: the coalitions ``z`` (n, M) and the scores ``y`` (n, T) of the random design are
kept (both tiny next to images) and the ``(P, P)`` normal equations are built at the end,
one per replicate group: ``O(n P^2 + G P^3)`` time and ``O(G P^2)`` memory for ``G``
groups (about 65 MB for M = 16, 140 MB for M = 18). Standard errors come from the same
delete-a-group jackknife as the linear fit (one Cholesky factorisation per group).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits


def n_parameters(m: int) -> int:
    """Coefficients of a 3-additive game of ``m`` players, without the constant."""
    return m + m * (m - 1) // 2 + m * (m - 1) * (m - 2) // 6


class ThirdOrder:
    """Features and Shapley map of 3-additive games over ``m`` players."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.pairs = np.array(list(combinations(range(m), 2)), dtype=np.int64).reshape(-1, 2)
        self.trips = np.array(list(combinations(range(m), 3)), dtype=np.int64).reshape(-1, 3)
        self.n_params = n_parameters(m)

    def features(self, z: np.ndarray) -> np.ndarray:
        """``[z_i, z_i z_j, z_i z_j z_k]`` (n, P) float64 for coalitions ``z`` (n, M) of 0/1."""
        zb = z.astype(bool)
        pair = zb[:, self.pairs[:, 0]] & zb[:, self.pairs[:, 1]]
        trip = zb[:, self.trips[:, 0]] & zb[:, self.trips[:, 1]] & zb[:, self.trips[:, 2]]
        return np.hstack([zb, pair, trip]).astype(np.float64)

    def shapley(self, theta: np.ndarray) -> np.ndarray:
        """Shapley values (T, M) of the 3-additive games with coefficients ``theta`` (P, T)."""
        m, n2 = self.m, len(self.pairs)
        phi = theta[:m].copy()
        for col in range(2):
            np.add.at(phi, self.pairs[:, col], theta[m:m + n2] / 2)
        for col in range(3):
            np.add.at(phi, self.trips[:, col], theta[m + n2:] / 3)
        return phi.T


def _solve(gram: np.ndarray, b: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``theta`` (P, T) minimising ``theta^T gram theta - 2 theta^T b`` with ``sum(theta) = delta``.

    Cholesky of ``gram`` and the closed-form Lagrange step, so the constraint holds to rounding.

    Raises
    ------
    numpy.linalg.LinAlgError
        ``gram`` is singular or nearly so (the coalitions do not determine the fit).
    """
    factor = scipy.linalg.cho_factor(gram, check_finite=False)
    diag = np.abs(np.diag(factor[0]))
    if diag.min() < 1e-7 * diag.max():
        raise np.linalg.LinAlgError("the third-order regression is singular")
    x_b = scipy.linalg.cho_solve(factor, b, check_finite=False)
    x_1 = scipy.linalg.cho_solve(factor, np.ones(len(gram)), check_finite=False)
    return x_b - np.outer(x_1, (x_b.sum(axis=0) - delta) / x_1.sum())


def _normal_equations(basis: ThirdOrder, z, w, y, base, size: int = 4096):
    """``sum w x x^T`` (P, P) and ``sum w x (y - base)`` (P, T) over the rows, in blocks."""
    gram, b = np.zeros((basis.n_params, basis.n_params)), np.zeros((basis.n_params, y.shape[1]))
    for i in range(0, len(z), size):
        x = basis.features(z[i:i + size])
        xw = x * w[i:i + size, None]
        gram += xw.T @ x
        b += xw.T @ (y[i:i + size] - base)
    return gram, b


def fit_third_order(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], base: np.ndarray,
                    reference: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values (T, M) of the 3-additive fit and their jackknife standard errors (T, M).

    Parameters
    ----------
    rows : list of (z (n, M) uint8, weights (n,), groups (n,), scores (n, T))
        The coalitions seen (the empty one may be among them; it carries no weight).
    base, reference : (T,)
        Scores of the empty and of the full coalition.
    n_groups : int
        Replicate groups of the random pairs (group -1: enumerated coalitions).

    Raises
    ------
    numpy.linalg.LinAlgError
        The coalitions do not determine the fit.
    """
    # one BLAS thread: these (P, P) factorisations are small, and threads contending for busy
    # cores made them ~30x slower on a shared 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(rows, base, reference, n_groups)


def _fit(rows, base: np.ndarray, reference: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    z, w, g, y = (np.concatenate(part) for part in zip(*rows, strict=True))
    basis = ThirdOrder(z.shape[1])
    delta = reference - base
    parts = {int(k): _normal_equations(basis, z[g == k], w[g == k], y[g == k], base) for k in np.unique(g)}
    gram = sum(p[0] for p in parts.values())
    b = sum(p[1] for p in parts.values())
    values = basis.shapley(_solve(gram, b, delta))
    seen = [k for k in parts if k >= 0]
    if len(seen) < 2:
        return values, np.full_like(values, 0.0 if not seen else np.nan)
    det = parts.get(-1, (0.0, 0.0))
    scale = len(seen) / (len(seen) - 1)
    gram_rand, b_rand = gram - det[0], b - det[1]
    reps = []
    for k in seen:  # re-solve without group k, the rest of the random part scaled up
        try:
            theta = _solve(det[0] + scale * (gram_rand - parts[k][0]), det[1] + scale * (b_rand - parts[k][1]), delta)
        except np.linalg.LinAlgError:
            return values, np.full_like(values, np.nan)
        reps.append(basis.shapley(theta))
    reps = np.stack(reps)
    return values, np.sqrt((len(seen) - 1) / len(seen) * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))
