"""KernelSHAP's constrained weighted least squares, folded from streamed coalitions.

Lundberg & Lee (2017): the Shapley values ``phi`` (M,) of the game
``v(z) = f(x with the superpixels outside z replaced by the baseline)`` solve

    minimise  sum_z pi(z) (v(z) - v(0) - z . phi)^2   subject to  sum(phi) = v(1) - v(0)

with the Shapley kernel ``pi``. The sufficient statistics ``A = sum w z z^T`` (M, M),
``sum w z`` (M,) and ``sum w z y^T`` (M, T) are kept per replicate group; the
constraint is solved exactly through the KKT system, so efficiency holds to rounding.
When every coalition was enumerated the solution is the exact Shapley value.

Logistic control variate (scores that are probabilities): when every score of a
target lies in (0, 1), a surrogate game ``q(z) = sigmoid(c + z . a + sum b_ij z_i z_j)``
(:mod:`perturbx.estimators.logistic_game`: additive log-odds plus the pairwise
interactions of the superpixels with the largest linear estimates, as many as the
samples support) is fitted to the scores, its Shapley values are computed without the
model, and only the residual game ``v - q`` is estimated from the model's samples:
``phi = phi(q) + KernelSHAP(v - q)``. A classifier's probability is close to a sigmoid
of additive evidence with a few interactions, so the residual is small and so is the
error (on the demo CNN with about 43 superpixels, half the error of the plain regression
at 512 to 1,024 queries; benchmarks/RESULTS.md). The jackknife error of this estimate
holds the surrogate fixed.

Third-order surrogate (``interactions=True``): see :mod:`perturbx.estimators.k_additive`;
it keeps the coalitions and the scores.

Of the estimates computed (linear always; logistic and third-order when enabled), the
one with the smallest jackknife standard error is kept, per target (``method`` says which).

Post-stratification: each row carries a stratum of the sampler's design
(:class:`perturbx.samplers.coalitions.Strata`, for the default design one per pair of
coalition sizes ``{s, M - s}``); the weights of the rows seen in a stratum are scaled to
sum to its Shapley kernel mass, whatever their number. So the regression of any prefix
of the stream is a valid KernelSHAP estimate, and the engine can stop early
(:meth:`ShapleyRegression.standard_error`). The coalitions ``z`` (n, M) bytes and the
scores (n, T) are kept, and the sums are formed when an estimate is asked for.

Error estimate: within each stratum the antithetic pairs, in stream order, are dealt
round-robin to ``G`` replicate groups; the delete-a-group jackknife re-solves the
regression without each group (each stratum's remaining weights scaled back to its
mass) and reports the standard error ``sqrt((G - 1) / G * sum_g (phi_(g) - mean)^2)``
per superpixel and target (for the control variate, with the surrogate ``q`` held
fixed). Complete strata (every coalition seen) and enumerated designs are in every
replicate, so exact results have error 0. The error is NaN (infinite for stopping)
while a stratum of the design has not been seen in two groups.
"""

from __future__ import annotations

import contextlib

import numpy as np

from perturbx.samplers.coalitions import WeightedCoalitionChunk
from perturbx.segmentation import paint

from .k_additive import fit_third_order, n_parameters
from .logistic_game import CV_MAX_PLAYERS, PROB_MARGIN, fit_logistic_game, model_free_tolerance, screen_pairs


class UnderdeterminedError(ValueError):
    """The coalitions seen do not determine the Shapley values (too few samples)."""


def kkt_is_singular(a: np.ndarray) -> bool:
    """Whether the constrained problem with Gram matrix ``a = sum w z z^T`` (M, M) has no unique solution."""
    m = len(a)
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m], kkt[:m, m], kkt[m, :m] = a / max(np.abs(a).max(), 1e-300), 1.0, 1.0
    return np.linalg.matrix_rank(kkt, tol=1e-10) < m + 1


def solve_constrained(a: np.ndarray, b: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``phi`` (T, M) minimising ``phi^T a phi - 2 phi^T b`` subject to ``sum(phi) = delta``.

    Parameters
    ----------
    a : (M, M) Gram matrix ``sum w z z^T``
    b : (M, T) ``sum w z (v(z) - v(0))``
    delta : (T,) ``v(1) - v(0)``
    """
    m = len(a)
    if kkt_is_singular(a):
        raise UnderdeterminedError(f"The coalitions do not determine the {m} Shapley values (the regression "
                                   f"is singular); raise n_samples or use fewer superpixels.")
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m], kkt[:m, m], kkt[m, :m] = a, 1.0, 1.0
    return np.linalg.solve(kkt, np.vstack([b, np.atleast_1d(delta)[None, :]]))[:m].T


class ShapleyRegression:
    """Constrained weighted least squares over streamed coalitions, post-stratified.

    Parameters
    ----------
    segments : int ndarray, shape (H, W)
        Segment map with labels ``0 .. M-1``; ``finalize`` paints the values on it.
    reference : ndarray, shape (T,)
        Scores of the full coalition (the unperturbed input) for the targets.
    n_groups : int
        Number of replicate groups of the jackknife.
    control_variate : bool, default True
        Try the logistic control variate for targets whose scores all lie in (0, 1), with
        at most ``CV_MAX_PLAYERS`` (128) superpixels.
    interactions : bool, default False
        Also fit the third-order surrogate (:mod:`perturbx.estimators.k_additive`).
    strata : Strata, optional
        The design's strata (``sampler.strata``); None: the chunks' weights are used as
        given, with the chunks' ``groups`` as replicate groups.

    Attributes (after ``finalize``)
    -------------------------------
    values : ndarray (T, M)
        Shapley value estimates.
    base_value : ndarray (T,)
        Score of the empty coalition (the baseline).
    errors : ndarray (T, M)
        Jackknife standard errors (0 for exact results; NaN with fewer than 2 groups).
    method : ndarray of str (T,)
        Which estimate each target's values come from: ``"linear"`` (KernelSHAP),
        ``"logistic"`` (the logistic control variate) or ``"third-order"`` (the 3-additive
        fit); the candidate with the smallest jackknife error is kept.
    """

    chunk_type = WeightedCoalitionChunk

    def __init__(self, segments: np.ndarray, reference: np.ndarray, n_groups: int,
                 control_variate: bool = True, interactions: bool = False, strata=None) -> None:
        self.segments = segments
        self.m = int(segments.max()) + 1
        self.reference = np.asarray(reference, dtype=np.float64)
        self.n_groups, self.interactions, self.strata = int(n_groups), interactions, strata
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._probability = (self.reference > PROB_MARGIN) & (self.reference < 1 - PROB_MARGIN)
        self._probability &= bool(control_variate) and self.m <= CV_MAX_PLAYERS
        self.base_value: np.ndarray | None = None

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        y = np.asarray(scores, dtype=np.float64)
        empty = chunk.z.sum(axis=1) == 0
        if self.base_value is None and empty.any():
            self.base_value = y[np.argmax(empty)]
        self._probability &= ((y > PROB_MARGIN) & (y < 1 - PROB_MARGIN)).all(axis=0)
        strata = np.zeros(len(y), dtype=np.int64) if chunk.strata is None else np.asarray(chunk.strata, np.int64)
        self._rows.append((chunk.z, np.asarray(chunk.weights, np.float64), np.asarray(chunk.groups, np.int64),
                           strata, y))

    # ---- the design seen so far -----------------------------------------------------------------------------

    def _design(self) -> _Design:
        z, w, g, k, y = (np.concatenate(part) for part in zip(*self._rows, strict=True))
        return _Design(z, w, g, k, y, self.strata, self.n_groups)

    # ---- estimates ------------------------------------------------------------------------------------------

    def standard_error(self) -> tuple[np.ndarray, np.ndarray]:
        """Current Shapley values ``(T, M)`` and their jackknife standard errors ``(T, M)``.

        The estimate is the one ``finalize`` would return now (the best of the linear,
        logistic and third-order fits by their jackknife error); errors are NaN while
        the design seen so far does not determine them (a stratum seen in fewer than two
        replicate groups), and values too while the regression is singular.
        """
        try:
            return self._estimate()
        except UnderdeterminedError:
            nan = np.full((len(self.reference), self.m), np.nan)
            return nan, nan.copy()

    def finalize(self) -> np.ndarray:
        """Shapley values painted on their superpixels, ``(T, H, W)``."""
        self._estimate()
        return paint(self.values, self.segments)

    def _estimate(self) -> tuple[np.ndarray, np.ndarray]:
        if self.base_value is None:
            raise RuntimeError("ShapleyRegression saw no empty coalition; the sampler must yield it.")
        d = self._design()
        delta = self.reference - self.base_value
        values, errors = d.fit(d.y - self.base_value, delta)
        method = np.full(len(delta), "linear", dtype=object)
        candidates = []
        if d.random and self.interactions and len(d.z) >= 1.5 * n_parameters(self.m):  # else not determined well
            with contextlib.suppress(np.linalg.LinAlgError):
                third = fit_third_order(d.third_order_rows(), self.base_value, self.reference, self.n_groups)
                candidates += [(t, "third-order", third[0][t], third[1][t]) for t in range(len(delta))]
        if d.random:  # refit per replicate when competing with the third-order fit, whose error refits too
            refit = bool(candidates)
            for t in np.flatnonzero(self._probability):  # a singular surrogate fit leaves the plain estimate
                with contextlib.suppress(np.linalg.LinAlgError, UnderdeterminedError):
                    candidates.append((t, "logistic", *self._fit_control_variate(d, t, values[t], errors[t], refit)))
        for t, name, v, e in candidates:  # keep the estimate with the smaller jackknife error
            if np.isfinite(e).all() and (e ** 2).sum() < np.nan_to_num((errors[t] ** 2).sum(), nan=np.inf):
                values[t], errors[t], method[t] = v, e, name
        self.values, self.errors, self.method = values, errors, method
        return values, errors

    def _fit_control_variate(self, d: _Design, t: int, linear: np.ndarray, linear_error: np.ndarray,
                             refit: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Values and errors of target ``t`` by the logistic control variate; ``linear`` (M,) screens the pairs.

        The jackknife holds the surrogate fixed, unless ``refit``: then the surrogate is
        fitted again without each replicate group (an error comparable with the
        third-order fit's, at the cost of one more fit and Shapley computation per group).
        The surrogate's sampled Shapley values (M > 18) are computed to a standard error of
        ``SURROGATE_TOLERANCE`` times the larger of the residual regression's jackknife error
        and ``SURROGATE_FLOOR`` times the plain estimate's (``linear_error``, (M,)): within
        the error of the rest, or far below that of the estimate it competes with when the
        surrogate fits the model almost exactly. Their sampling error is part of the
        reported error.
        """
        pairs = screen_pairs(linear, len(d.y))
        game, residual, delta = self._surrogate(d, t, d.weights(), pairs)
        fitted, error = d.fit(residual[:, None], delta)
        tolerance = model_free_tolerance(error[0], linear_error)
        phi_q, phi_error = self._surrogate_values(game, tolerance)
        values = fitted[0] + phi_q
        if not refit:
            return values, np.hypot(error[0], phi_error)
        groups = np.unique(d.rep[d.random_rows])
        if len(groups) < 2 or getattr(d, "unseen", False) or not d._every_stratum_survives(groups):
            return values, np.full_like(values, np.nan)
        reps = []
        for g in groups:
            w = d.weights(int(g))
            game_g, residual_g, delta_g = self._surrogate(d, t, w, pairs)
            reps.append(d._solve(w, residual_g[:, None], delta_g)[0] + self._surrogate_values(game_g, tolerance)[0])
        k, reps = len(groups), np.stack(reps)
        return values, np.sqrt((k - 1) / k * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))

    def _surrogate(self, d: _Design, t: int, w: np.ndarray, pairs: np.ndarray):
        """The surrogate fitted under row weights ``w`` (n,), the residual game (n,) and its delta (1,)."""
        game = fit_logistic_game(d.zf, d.y[:, t], w, pairs)
        q0, q1 = game(np.zeros((1, self.m)))[0], game(np.ones((1, self.m)))[0]
        r0 = self.base_value[t] - q0  # the residual game v - q on the empty coalition
        return game, d.y[:, t] - game(d.zf) - r0, np.array([self.reference[t] - q1 - r0])

    def _surrogate_values(self, game, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
        """The surrogate's Shapley values (M,), summing exactly to ``q(1) - q(0)``, and their standard errors."""
        m = self.m
        phi_q, phi_error = game.shapley_within(tolerance)
        q0, q1 = game(np.zeros((1, m)))[0], game(np.ones((1, m)))[0]
        return phi_q + (q1 - q0 - phi_q.sum()) / m, phi_error  # efficiency of the sampled values


class _Design:
    """The rows seen: coalitions, given weights, groups, strata and scores; post-stratified weights."""

    def __init__(self, z, w, g, k, y, strata, n_groups: int) -> None:
        self.z, self.zf, self.y = z, z.astype(np.float64), y
        self.n_groups = n_groups
        n_strata = 1 if strata is None else len(strata.mass)
        self.k = k
        self.w0 = w
        if strata is None:  # weights as given; the chunks' groups are the replicates
            self.mass = np.full(n_strata, np.nan)
            self.rep = g
            self.random_rows = g >= 0
        else:
            self.mass = np.asarray(strata.mass, np.float64)
            rows_in = np.bincount(k, minlength=n_strata)
            complete = (np.asarray(strata.population) > 0) & (rows_in >= np.asarray(strata.population))
            sampled = np.isfinite(self.mass) & ~complete
            self.random_rows = sampled[k]
            # pair j of stratum k (in stream order) goes to replicate (j + k) mod G
            order = np.argsort(k, kind="stable")
            rank = np.empty(len(k), dtype=np.int64)
            rank[order] = np.arange(len(k)) - np.repeat(np.cumsum(rows_in) - rows_in, rows_in)
            self.rep = np.where(self.random_rows, (rank // 2 + k) % n_groups, -1)
            self.unseen = bool((np.isfinite(self.mass) & (rows_in == 0))[1:].any())
        self.random = bool(self.random_rows.any())

    def weights(self, drop: int | None = None) -> np.ndarray:
        """Row weights (n,), each stratum's scaled to its mass; without replicate ``drop`` if given."""
        w = self.w0.copy()
        if drop is not None:
            w[self.random_rows & (self.rep == drop)] = 0.0
            if not np.isfinite(self.mass).any():
                k = len(np.unique(self.rep[self.random_rows]))
                w[self.random_rows] *= k / (k - 1)
        scaled = np.isfinite(self.mass)
        if scaled.any():
            total = np.bincount(self.k, weights=w, minlength=len(self.mass))
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(scaled & (total > 0), self.mass / total, 1.0)
            w = w * factor[self.k]
        return w

    def _solve(self, w: np.ndarray, y: np.ndarray, delta: np.ndarray) -> np.ndarray:
        zw = self.zf * w[:, None]
        return solve_constrained(zw.T @ self.zf, zw.T @ y, delta)

    def fit(self, y: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (T, M) solving the regression on ``y`` (n, T) = scores minus ``v(0)``, and jackknife errors."""
        values = self._solve(self.weights(), y, delta)
        groups = np.unique(self.rep[self.random_rows])
        if len(groups) == 0:
            return values, np.zeros_like(values)
        if len(groups) < 2 or getattr(self, "unseen", False) or not self._every_stratum_survives(groups):
            return values, np.full_like(values, np.nan)
        try:
            reps = np.stack([self._solve(self.weights(int(g)), y, delta) for g in groups])
        except UnderdeterminedError:
            return values, np.full_like(values, np.nan)
        k = len(groups)
        return values, np.sqrt((k - 1) / k * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))

    def _every_stratum_survives(self, groups: np.ndarray) -> bool:
        """Whether every sampled stratum keeps rows when any one replicate group is left out."""
        if not np.isfinite(self.mass).any():
            return True
        k, rep = self.k[self.random_rows], self.rep[self.random_rows]
        per = np.zeros((len(self.mass), self.n_groups), dtype=np.int64)
        np.add.at(per, (k, rep), 1)
        seen = per[np.unique(k)]
        return bool(((seen > 0).sum(axis=1) >= 2).all())

    def third_order_rows(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Rows for :func:`fit_third_order`: post-stratified weights, replicate -1 for the non-random rows."""
        return [(self.z, self.weights(), np.where(self.random_rows, self.rep, -1), self.y)]
