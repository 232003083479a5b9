"""A logistic surrogate game with pairwise interactions, its fit and its Shapley values.

The surrogate of a classifier's probability over coalitions ``z`` (M,) of superpixels is

    q(z) = sigmoid(c + z . a + sum_{(i, j) in pairs} b_ij z_i z_j)

(additive evidence for the class plus a few two-way interactions, passed through the
logistic link). It is fitted to the scores of the coalitions seen by weighted Gauss-Newton
on the probability scale (started from least squares on the log-odds), with a small ridge
penalty. Its Shapley values are computed without the model: exactly, by enumerating the
``2**M`` coalitions, for ``M <= EXACT_MAX_PLAYERS``; otherwise by sampling stratified by
coalition size with a Taylor control variate (:func:`sampled_shapley`), with as many
orders as bring their standard error within a tolerance that the caller sets from the error
of the rest of its estimate (:meth:`LogisticGame.shapley_within`).

Used as a control variate by :class:`perturbx.estimators.kernel_shap.ShapleyRegression`:
``phi(v) = phi(q) + phi(v - q)``, the first term known, the second estimated from the
model's samples with an error set by how well ``q`` predicts the model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

#: most superpixels for which the surrogate's Shapley values are enumerated exactly
EXACT_MAX_PLAYERS = 18
#: most superpixels for which LIME and KernelSHAP try the control variate (its fit and
#: sampled Shapley values cost O(M**2) per row or order)
CV_MAX_PLAYERS = 128
#: fewest and most orders of :meth:`LogisticGame.shapley_within`
MIN_ORDERS, MAX_ORDERS = 256, 4096
#: scores are clipped this far inside (0, 1) before taking log-odds
PROB_MARGIN = 1e-9
#: most pairwise terms of a surrogate (bounds the fit's cost at large budgets)
MAX_PAIRS = 120
#: a surrogate gets at most one parameter per this many coalitions
ROWS_PER_PARAMETER = 4
#: what the surrogate contributes model-free (its Shapley values, LIME's population fit) is computed to this
#: fraction of the residual estimate's jackknife error ...
SURROGATE_TOLERANCE = 0.5
#: ... or to this fraction of the plain estimate's error, if larger
SURROGATE_FLOOR = 0.1
#: Gauss-Newton stops after a step below this, relative to the largest parameter (usually the 3rd-5th)
CONVERGED_STEP = 1e-10


def model_free_tolerance(residual_error: np.ndarray, plain_error: np.ndarray,
                         fraction: float = SURROGATE_TOLERANCE) -> float:
    """The error (a norm, in the values' units) to which a surrogate's model-free part is computed.

    ``fraction`` times the larger of the norm of the residual estimate's errors
    ``residual_error`` (M,) and ``SURROGATE_FLOOR`` times that of the plain estimate's
    ``plain_error`` (M,): within the error of the rest, or far below that of the estimate it
    competes with when the surrogate fits the model almost exactly. NaN errors count as 0.
    """
    return fraction * max(float(np.linalg.norm(np.nan_to_num(residual_error))),
                          SURROGATE_FLOOR * float(np.linalg.norm(np.nan_to_num(plain_error))))


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities clipped to ``[PROB_MARGIN, 1 - PROB_MARGIN]``."""
    p = np.clip(p, PROB_MARGIN, 1 - PROB_MARGIN)
    return np.log(p) - np.log1p(-p)


def sigmoid(t: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow (scipy's ``expit``)."""
    return expit(t)


@dataclass(frozen=True)
class LogisticGame:
    """``q(z) = sigmoid(offset + z . coef + z^T pair z / 2)``.

    Attributes
    ----------
    offset : float
    coef : ndarray (M,)
    pair : ndarray (M, M)
        Symmetric, zero diagonal: ``pair[i, j] = b_ij``.
    """

    offset: float
    coef: np.ndarray
    pair: np.ndarray

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Values (n,) on coalitions ``z`` (n, M) of 0/1.

        The quadratic term is computed on the players that have pairwise terms only (the
        surrogates screen pairs among the 16 or so most important of ~50 superpixels: a tenth of
        the multiply-adds of the full ``z @ pair``).
        """
        z = np.asarray(z)
        z = z if z.dtype in (np.float32, np.float64) else z.astype(np.float64)
        active = self._active
        t = z @ self.coef.astype(z.dtype)
        if len(active):
            za = z[:, active]
            t += 0.5 * ((za @ self.pair[np.ix_(active, active)].astype(z.dtype)) * za).sum(axis=1)
        return sigmoid(self.offset + t.astype(np.float64))

    @functools.cached_property
    def _active(self) -> np.ndarray:
        """The players (K,) with a nonzero pairwise term."""
        return np.flatnonzero(np.any(self.pair != 0, axis=0))

    def shapley(self, n_orders: int = 1024, seed: int = 0) -> np.ndarray:
        """Shapley values (M,): exact for ``M <= EXACT_MAX_PLAYERS``, else :func:`sampled_shapley`."""
        if len(self.coef) <= EXACT_MAX_PLAYERS:
            return self._enumerated_shapley()
        return sampled_shapley(self, n_orders, seed)

    def shapley_within(self, tolerance: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Shapley values (M,) and their standard errors (M,) (zero when enumerated), to a tolerance.

        Sampled with as many orders as bring the norm of the standard errors (same units
        as the game) below ``tolerance``: from ``MIN_ORDERS`` up to ``MAX_ORDERS``, in steps
        of 4x. A control variate needs its surrogate's values only to well within the error
        of the rest of its estimate.
        """
        if len(self.coef) <= EXACT_MAX_PLAYERS:
            phi = self._enumerated_shapley()
            return phi, np.zeros_like(phi)
        n = MIN_ORDERS
        while True:
            phi, error = sampled_shapley(self, n, seed, with_error=True)
            if not np.linalg.norm(error) > tolerance or n >= MAX_ORDERS:  # also stops on a NaN tolerance
                return phi, error
            n *= 4

    def _enumerated_shapley(self) -> np.ndarray:
        """``phi_j = sum_{S not containing j} |S|! (M - |S| - 1)! / M! (q(S + j) - q(S))``, ``O(M 2**M)``."""
        m = len(self.coef)
        z = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1  # row index bit j <-> player j
        game = self(z).reshape((2,) * m)
        size = z.sum(axis=1).reshape((2,) * m)
        weight = np.array([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)])
        phi = np.empty(m)
        for j in range(m):
            axis = m - 1 - j
            phi[j] = (weight[size.take(0, axis=axis)] * (game.take(1, axis=axis) - game.take(0, axis=axis))).sum()
        return phi


def sampled_shapley(game: LogisticGame, n_orders: int = 1024, seed: int = 0, control_variate: bool = True,
                    with_error: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Shapley values (M,) of a :class:`LogisticGame`, stratified by coalition size.

    ``phi_j = (1/M) sum_{s=0}^{M-1} E[q(S + j) - q(S)]`` over uniform ``S`` of size ``s``
    without ``j``. For ``n_orders`` random orders of the players and each size ``s``, the
    first ``s`` players of an order are a uniform ``s``-subset for every player placed
    after them; so each (player, size) stratum is the mean over about
    ``n_orders (M - s) / M`` subsets. Within a stratum the gain varies only with the
    composition of ``S``, hence the small error.

    With ``control_variate`` each gain ``sigmoid(u + a_j + v) - sigmoid(u)`` (``u`` the
    log-odds of ``S``, ``v = sum_{i in S} b_ij``) is taken minus its first-order Taylor term
    at the stratum's exact means of ``u`` and ``v`` (:func:`_stratum_means`): a term of
    mean zero, so the estimate stays unbiased, that removes the gains' linear spread.
    Near-additive surrogates become almost exact with a few hundred orders; on the strongly
    curved surrogate of ``tests/test_kernel_shap.py`` it halves the error at equal orders.
    Cost ``O(n_orders M**2)``; deterministic for a given ``seed``.
    ``with_error``: also return standard errors ``(M,)`` of the values: the orders are
    independent, and each order's influence on every stratum mean it enters (the
    linearised ratio of a stratum's sum of gains to its count) is summed over the sizes,
    since one order's nested coalitions give correlated gains.
    """
    m = len(game.coef)
    order = np.argsort(np.random.default_rng(seed).random((n_orders, m)), axis=1)
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.broadcast_to(np.arange(m), order.shape), axis=1)
    at = np.zeros((m + 1, m), dtype=np.int64)  # at[p + 1, j]: orders placing player j at position p
    np.add.at(at, (position.ravel() + 1, np.tile(np.arange(m), n_orders)), 1)
    after_count = np.maximum(n_orders - np.cumsum(at, axis=0)[:m], 1)  # (s, j): orders placing j at >= s
    rows = np.arange(n_orders)
    # the gains in float32 (half the memory traffic), their sums in float64: within 1e-8 of all-float64
    coef, pair = game.coef.astype(np.float32), game.pair.astype(np.float32)
    log_odds = np.full(n_orders, float(game.offset))  # of the first s players of each order
    inter = np.zeros((n_orders, m), np.float32)  # sum over the first s players i of pair[i, j]
    gain = np.empty((n_orders, m), np.float32)  # reused by in-place steps: no fresh (n_orders, M) temporaries
    taylor = np.empty((n_orders, m), np.float32) if control_variate else None
    phi = np.zeros(m)
    per_order = np.zeros((n_orders, m)) if with_error else None  # each order's share of M phi
    for s in range(m):
        np.add(inter, coef, out=gain)
        gain += log_odds.astype(np.float32)[:, None]
        expit(gain, out=gain)
        gain -= expit(log_odds).astype(np.float32)[:, None]
        if control_variate:
            gain -= _taylor_term(game, s, log_odds, inter, taylor)
        after = position >= s
        gain *= after
        total = gain.sum(axis=0, dtype=np.float64)
        phi += total / after_count[s]
        if with_error:  # each order's influence on the stratum mean sum(gain) / count (delta method)
            per_order += (gain - after * (total / after_count[s]).astype(np.float32)) / after_count[s]
        new = order[:, s]
        log_odds += game.coef[new] + inter[rows, new]
        inter += pair[new]
    if not with_error:
        return phi / m
    # the orders are independent; one order's influences on its nested sizes add up (they correlate)
    return phi / m, np.sqrt(n_orders / max(n_orders - 1, 1) * (per_order ** 2).sum(axis=0)) / m


def _stratum_means(game: LogisticGame, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact means ``(M,)`` of ``u`` (log-odds of ``S``) and ``v_j`` over uniform s-subsets ``S`` without ``j``.

    Each other player is in ``S`` with probability ``s / (M - 1)`` and each pair of them
    with ``s (s - 1) / ((M - 1)(M - 2))``.
    """
    m = len(game.coef)
    one = s / (m - 1) if m > 1 else 0.0
    two = s * (s - 1) / ((m - 1) * (m - 2)) if m > 2 else 0.0
    row = game.pair.sum(axis=1)  # sum_i b_ij
    u = game.offset + one * (game.coef.sum() - game.coef) + two * (row.sum() / 2 - row)
    return u, one * row


def _taylor_term(game: LogisticGame, s: int, log_odds: np.ndarray, inter: np.ndarray,
                 out: np.ndarray) -> np.ndarray:
    """First-order Taylor term of the gains ``(n_orders, M)`` at size ``s``'s means, written into ``out``.

    ``sigma'(mu_u + a_j + mu_v)(u - mu_u + v - mu_v) - sigma'(mu_u)(u - mu_u)``: zero mean
    over the stratum, since ``u`` and ``v`` enter linearly.
    """
    mu_u, mu_v = _stratum_means(game, s)
    hi, lo = expit(mu_u + game.coef + mu_v), expit(mu_u)
    hi, lo = (hi * (1 - hi)).astype(np.float32), (lo * (1 - lo)).astype(np.float32)
    du = (log_odds[:, None] - mu_u[None]).astype(np.float32)
    np.subtract(inter, mu_v.astype(np.float32), out=out)
    out += du
    out *= hi
    du *= lo
    out -= du
    return out


def screen_pairs(importance: np.ndarray, n_rows: int) -> np.ndarray:
    """Pairs (P, 2) among the superpixels of largest ``|importance|`` (M,) that ``n_rows`` coalitions support.

    All pairs of the ``k`` most important superpixels, ``k`` the largest with
    ``1 + M + k (k - 1) / 2`` parameters at most ``n_rows / ROWS_PER_PARAMETER`` and at
    most ``MAX_PAIRS`` pairs.
    """
    m = len(importance)
    budget = min(n_rows / ROWS_PER_PARAMETER - m - 1, MAX_PAIRS)
    k = int((1 + math.sqrt(1 + 8 * budget)) / 2) if budget >= 1 else 0
    top = np.argsort(-np.abs(importance), kind="stable")[:k]
    i, j = np.triu_indices(len(top), 1)
    return np.stack([top[i], top[j]], axis=1).astype(np.int64)


def fit_logistic_game(z: np.ndarray, y: np.ndarray, w: np.ndarray, pairs: np.ndarray, ridge: float = 1e-3,
                      iterations: int = 10) -> LogisticGame:
    """Fit a :class:`LogisticGame` to scores ``y`` (n,) in (0, 1) of coalitions ``z`` (n, M), weights ``w`` (n,).

    Minimises ``sum w (y - q(z))^2 + ridge * mean(w) * ||theta||^2`` (the offset not
    penalised) by Gauss-Newton steps from the weighted least-squares fit of the clipped
    log-odds, at most ``iterations`` of them, stopping once a step moves no parameter by more
    than ``CONVERGED_STEP`` relative to the largest. ``pairs`` (P, 2) are the interaction terms.
    """
    n, m = z.shape
    x = np.hstack([np.ones((n, 1)), z, z[:, pairs[:, 0]] * z[:, pairs[:, 1]]])
    penalty = ridge * w.sum() / n * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    xw = x * w[:, None]
    theta = np.linalg.solve(xw.T @ x + penalty + 1e-12 * np.eye(x.shape[1]), xw.T @ np.clip(logit(y), -10, 10))
    for _ in range(iterations):
        q = sigmoid(x @ theta)
        jac = x * (q * (1 - q))[:, None]
        lhs = (jac * w[:, None]).T @ jac + penalty + 1e-12 * np.eye(x.shape[1])
        step = np.linalg.solve(lhs, (jac * w[:, None]).T @ (y - q) - penalty @ theta)
        theta = theta + step
        if np.abs(step).max() <= CONVERGED_STEP * (1.0 + np.abs(theta).max()):
            break  # Gauss-Newton converges quadratically here: the next step would be ~1e-20
    pair = np.zeros((m, m))
    pair[pairs[:, 0], pairs[:, 1]] = pair[pairs[:, 1], pairs[:, 0]] = theta[1 + m:]
    return LogisticGame(float(theta[0]), theta[1:1 + m].copy(), pair)
