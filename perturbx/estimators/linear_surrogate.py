"""LIME's locally weighted ridge surrogate, folded from streamed coalitions.

Ribeiro, Singh & Guestrin (2016), as ``lime.lime_image`` fits it: coalitions ``z`` (M,)
are weighted by an exponential kernel on their cosine distance to the all-on vector,
``pi(z) = sqrt(exp(-d(z)^2 / width^2))`` with ``d(z) = 1 - sqrt(|z| / M)``, and the
scores are regressed on ``z`` with an intercept and an L2 penalty ``alpha`` on the
coefficients (scikit-learn's ``Ridge(alpha, fit_intercept=True)`` with
``sample_weight``). Only the weighted sums of ``1, z, y, z z^T, z y^T, y^2`` are kept,
so memory is ``O(M * (M + T))`` whatever the number of samples; the solution equals
scikit-learn's to rounding.

Logistic control variate (``control_variate=True``, for targets whose scores are all in
(0, 1)): the coalitions (n bytes of M) and scores are kept, a surrogate game
``q(z) = sigmoid(c + z . a + sum b_ij z_i z_j)`` is fitted to them
(:mod:`perturbx.estimators.logistic_game`), and since the ridge solution is linear in the
scores, ``beta_n(y) = beta_n(q) + beta_n(y - q)``: the first term is replaced by its
expectation, lime's ridge on ``q`` over up to ``POPULATION_SAMPLES`` coalitions drawn from
the same distribution without the model (penalty and unperturbed row scaled to keep their
share; as many as bring its Monte Carlo error to ``POPULATION_TOLERANCE`` of the rest's), and
only the residual ``y - q`` is regressed on the model's samples. The target is lime's
surrogate at ``n`` samples, with less noise when ``q`` predicts the model well; its error is
the residual fit's jackknife error and the population fit's Monte Carlo error together.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from perturbx.samplers.coalitions import CoalitionChunk
from perturbx.segmentation import paint

from .logistic_game import CV_MAX_PLAYERS, PROB_MARGIN, fit_logistic_game, model_free_tolerance, screen_pairs

#: coalitions of the model-free regression on the surrogate game (control variate) ...
POPULATION_SAMPLES = 2 ** 17
#: ... at most this many coalition bits (32 MB of float32 cached)
POPULATION_BITS = 2 ** 23


def cosine_kernel(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's weights ``sqrt(exp(-d^2 / width^2))`` for coalitions ``z`` (n, M); ``d`` = cosine distance to all-on.

    The empty coalition has distance 1 (scikit-learn's convention for a zero vector).
    """
    d = 1.0 - np.sqrt(z.sum(axis=1) / z.shape[1])
    return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))


def solve_ridge(st: dict[str, np.ndarray], alpha: float) -> tuple[np.ndarray, ...]:
    """Coefficients ``(M, T)``, mean coalition, mean score and centred sums from weighted sums ``st``.

    ``st`` holds the weighted sums ``w`` (), ``z`` (M,), ``y`` (T,), ``zz`` (M, M) and
    ``zy`` (M, T); the intercept is not penalised (scikit-learn's ``Ridge``).
    """
    zbar, ybar = st["z"] / st["w"], st["y"] / st["w"]
    czz = st["zz"] - st["w"] * np.outer(zbar, zbar)
    czy = st["zy"] - st["w"] * np.outer(zbar, ybar)
    lhs = czz + alpha * np.eye(len(zbar))
    beta = np.linalg.lstsq(lhs, czy, rcond=None)[0] if alpha == 0 else np.linalg.solve(lhs, czy)
    return beta, zbar, ybar, czz, czy


#: the population fit's Monte Carlo error is brought to this fraction of the residual fit's error (adding at
#: most 3 % to the total: a coarser population would save host time at the price of model queries)
POPULATION_TOLERANCE = 0.25
#: rows of the population evaluated at a time (its temporaries stay a few MB); even: whole antithetic pairs
POPULATION_BLOCK = 8192


@functools.lru_cache(maxsize=2)
def _population_design(m: int, kernel_width: float, n_big: int, seed: int) -> tuple[np.ndarray, ...]:
    """Antithetic fair-coin coalitions (n_big, M) as bools, pair by pair, their kernel weights and the
    weighted sums of each prefix of whole blocks (no game).

    Returns ``z`` (n_big, M) bool (rows ``2k`` and ``2k + 1`` complementary), ``w`` (n_big,),
    and per block ``b`` the sums over rows ``< (b + 1) * POPULATION_BLOCK``: ``w_sums`` (B,),
    ``z_sums`` (B, M), ``zz_sums`` (B, M, M). Kept as bools and summed in blocks: the float32
    coalitions and their products took 81 MB at peak for M = 50.
    """
    rng = np.random.default_rng(seed)
    half = rng.random((n_big // 2, m)) < 0.5
    z = np.stack([half, ~half], axis=1).reshape(n_big, m)
    w = np.empty(n_big)
    w_sums, z_sums, zz_sums = [0.0], [np.zeros(m)], [np.zeros((m, m))]
    for lo in range(0, n_big, POPULATION_BLOCK):
        block = z[lo:lo + POPULATION_BLOCK].astype(np.float64)
        w[lo:lo + len(block)] = wb = cosine_kernel(block, kernel_width)
        zw = block * wb[:, None]
        w_sums.append(w_sums[-1] + float(wb.sum()))
        z_sums.append(z_sums[-1] + zw.sum(axis=0))
        zz_sums.append(zz_sums[-1] + zw.T @ block)
    return z, w, np.array(w_sums[1:]), np.stack(z_sums[1:]), np.stack(zz_sums[1:])


def population_ridge(game, m: int, kernel_width: float, alpha: float, n_samples: int,
                     n_big: int = POPULATION_SAMPLES, seed: int = 0, tolerance: float = 0.0
                     ) -> tuple[np.ndarray, float, np.ndarray]:
    """lime's ridge fit ``(coef (M,), intercept, standard error (M,))`` of a known game over fair-coin coalitions.

    Stands for the expectation of the fit over ``n_samples`` samples (the unperturbed
    input included, with weight 1): that row and the penalty ``alpha`` are scaled by
    ``rows / (n_samples - 1)`` to keep their share. No model query; the coalitions
    and their sums are cached between calls, the game is evaluated a block of
    ``POPULATION_BLOCK`` rows at a time, up to ``n_big`` rows: after the first block, as
    many blocks as bring the fit's Monte Carlo standard error (which falls as one over the
    square root of the rows) to a norm of at most ``tolerance``.

    The standard error is the regression's sandwich estimate over antithetic pairs: the
    coefficients are ``A^-1 sum_i w_i (z_i - zbar) q_i`` (plus a known term), whose random part
    about the fit is ``sum_p u_p`` with ``u_p = sum_{i in p} w_i r_i (z_i - zbar)`` and ``r`` the
    fit's residuals, so the covariance is ``A^-1 (n_pairs Cov(u)) A^-1``, ``Cov(u)`` estimated on
    the latest block's pairs.
    """
    z, w, w_sums, z_sums, zz_sums = _population_design(m, float(kernel_width), int(n_big), int(seed))
    wq, zwq = 0.0, np.zeros(m)
    q_one = float(game(np.ones((1, m)))[0])  # the unperturbed row
    n_blocks = len(w_sums)
    stop, final = 1, False  # fitted after the first block, then after as many as its error asks for
    for b in range(n_blocks):
        lo = b * POPULATION_BLOCK
        block = z[lo:lo + POPULATION_BLOCK].astype(np.float64)
        w_block, q = w[lo:lo + len(block)], np.asarray(game(block), dtype=np.float64)
        weighted = w_block * q
        wq += float(weighted.sum())
        zwq += weighted @ block
        if b + 1 < stop:
            continue
        rows = lo + len(block)
        scale = rows / max(n_samples - 1, 1)
        st = {"w": w_sums[b] + scale, "z": z_sums[b] + scale, "y": np.array([wq + scale * q_one]),
              "zz": zz_sums[b] + scale, "zy": zwq[:, None] + scale * q_one}
        beta, zbar, ybar, czz = solve_ridge(st, alpha * scale)[:4]
        intercept = float(ybar[0] - zbar @ beta[:, 0])
        error = _population_error(block, w_block * (q - intercept - block @ beta[:, 0]), zbar,
                                  czz + alpha * scale * np.eye(m), rows // 2)
        norm = float(np.linalg.norm(error))
        if final or norm <= tolerance:
            break
        final = True  # the error falls as 1 / sqrt(rows)
        stop = n_blocks if tolerance <= 0 else min(n_blocks, max(b + 2, math.ceil((b + 1) * (norm / tolerance) ** 2)))
    return beta[:, 0], intercept, error


def _population_error(block: np.ndarray, weighted_residual: np.ndarray, zbar: np.ndarray, lhs: np.ndarray,
                      n_pairs: int) -> np.ndarray:
    """Sandwich standard errors (M,) of a population ridge fit from one block's antithetic pairs (rows 2k, 2k+1)."""
    m = block.shape[1]
    pairs = (weighted_residual[:, None] * (block - zbar)).reshape(-1, 2, m).sum(axis=1)
    inverse = np.linalg.inv(lhs)
    cov = np.cov(pairs, rowvar=False).reshape(m, m) * n_pairs
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", inverse, cov, inverse), 0.0))


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
    control_variate : bool, default False
        Try the logistic control variate (module docstring) for targets whose scores all
        lie in (0, 1), with at most ``CV_MAX_PLAYERS`` (128) superpixels, keeping it where
        its jackknife error (surrogate held fixed) is smaller.

    Attributes (after ``finalize``)
    -------------------------------
    coef : ndarray (T, M)
    intercept : ndarray (T,)
    score : ndarray (T,)
        Weighted R^2 of the surrogate on its own samples (scikit-learn's ``Ridge.score``
        with ``sample_weight``); for a target whose scores do not vary it is 1.0 when the
        fit is perfect (it then is: coefficients 0) and 0.0 otherwise, as ``r2_score``.
    method : ndarray of str (T,)
        ``"ridge"`` (the plain fit) or ``"logistic"`` (the control variate).
    """

    chunk_type = CoalitionChunk

    #: names of the weighted sums kept per group: of 1, z, y, z z^T, z y^T, y^2
    _SUMS = ("w", "z", "y", "zz", "zy", "yy")

    def __init__(self, segments: np.ndarray, reference: np.ndarray, kernel_width: float, alpha: float,
                 n_groups: int = 8, block: int = 1, control_variate: bool = False) -> None:
        self.segments, self.kernel_width, self.alpha = segments, kernel_width, alpha
        self.reference = np.asarray(reference, dtype=np.float64)
        m, t, g = int(segments.max()) + 1, len(self.reference), int(n_groups) + 1  # last slot: the input
        self.m, self.n_groups, self.block = m, int(n_groups), int(block)
        self._sums = {"w": np.zeros(g), "z": np.zeros((g, m)), "y": np.zeros((g, t)), "zz": np.zeros((g, m, m)),
                      "zy": np.zeros((g, m, t)), "yy": np.zeros((g, t))}
        self.n_samples = 0
        self._fold(np.ones((1, m)), np.zeros((1, t)), -1)  # the unperturbed input, centred score 0
        self.n_samples = 1
        self._rows: list[tuple[np.ndarray, np.ndarray]] | None = [] if control_variate else None
        self._probability = (self.reference > PROB_MARGIN) & (self.reference < 1 - PROB_MARGIN)

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
        if self._rows is not None:
            self._rows.append((chunk.z, y + self.reference))
            self._probability &= ((y + self.reference > PROB_MARGIN) & (y + self.reference < 1 - PROB_MARGIN)).all(0)
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
        return solve_ridge(st, self.alpha)

    def standard_error(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``(T, M)`` and their jackknife standard errors ``(T, M)`` (NaN with < 2 groups seen).

        With the control variate, per target the estimate ``finalize`` would keep.
        """
        beta, errors = self._plain_error()
        self.method = np.full(len(self.reference), "ridge", dtype=object)
        self._cv_intercept = {}
        for t in self._cv_targets():
            try:
                coef, intercept, err = self._control_variate(t, beta[t], errors[t])
            except np.linalg.LinAlgError:  # no surrogate: the plain fit stays
                continue
            if np.isfinite(err).all() and (err ** 2).sum() < np.nan_to_num((errors[t] ** 2).sum(), nan=np.inf):
                beta[t], errors[t], self.method[t], self._cv_intercept[t] = coef, err, "logistic", intercept
        return beta, errors

    def _cv_targets(self) -> np.ndarray:
        if self._rows is None or self.n_samples < self.m + 2 or self.m > CV_MAX_PLAYERS:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._probability)

    def _control_variate(self, t: int, plain: np.ndarray, plain_error: np.ndarray
                         ) -> tuple[np.ndarray, float, np.ndarray]:
        """Coefficients (M,), intercept and standard errors (M,) of target ``t`` by the control variate.

        The errors combine the residual fit's jackknife errors with the population fit's Monte
        Carlo error; the population grows until the latter's norm is within
        :func:`~perturbx.estimators.logistic_game.model_free_tolerance` at ``POPULATION_TOLERANCE``
        of the residual's error and the plain fit's (``plain_error``, (M,)).
        """
        z = np.concatenate([np.ones((1, self.m), np.uint8)] + [r[0] for r in self._rows]).astype(np.float64)
        y = np.concatenate([self.reference[t:t + 1]] + [r[1][:, t] for r in self._rows])
        game = fit_logistic_game(z, y, cosine_kernel(z, self.kernel_width), screen_pairs(plain, len(y)))
        residual = WeightedRidge(self.segments, self.reference[t:t + 1] - game(z[:1]), self.kernel_width,
                                 self.alpha, self.n_groups, self.block)
        start = 1
        for rows, _ in self._rows:  # same chunks, so the same replicate groups
            residual.update(_Rows(rows), None, (y - game(z))[start:start + len(rows), None])
            start += len(rows)
        coef, err = residual._plain_error()
        beta, zbar, ybar = residual._solve(residual._stats())[:3]
        n_big = min(POPULATION_SAMPLES, POPULATION_BITS // self.m) // POPULATION_BLOCK * POPULATION_BLOCK
        tolerance = model_free_tolerance(err[0], plain_error, POPULATION_TOLERANCE)
        pop_coef, pop_intercept, pop_error = population_ridge(
            game, self.m, self.kernel_width, self.alpha, self.n_samples, n_big=max(n_big, POPULATION_BLOCK),
            tolerance=tolerance)
        intercept = float((ybar - zbar @ beta)[0] + residual.reference[0]) + pop_intercept
        return coef[0] + pop_coef, intercept, np.hypot(err[0], pop_error)

    def _plain_error(self) -> tuple[np.ndarray, np.ndarray]:
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
        self.method = np.full(len(self.reference), "ridge", dtype=object)
        if len(self._cv_targets()):
            coef = self.standard_error()[0]
            for t, intercept in self._cv_intercept.items():
                self.coef[t], self.intercept[t] = coef[t], intercept
        return paint(self.coef, self.segments)


class _Rows:
    """A chunk stand-in carrying only coalitions ``z`` (n, M)."""

    def __init__(self, z: np.ndarray) -> None:
        self.z = z
