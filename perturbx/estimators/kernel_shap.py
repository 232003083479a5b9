"""KernelSHAP's constrained weighted least squares, folded from streamed coalitions.

Lundberg & Lee (2017): the Shapley values ``phi`` (M,) of the game
``v(z) = f(x with the superpixels outside z replaced by the baseline)`` solve

    minimise  sum_z pi(z) (v(z) - v(0) - z . phi)^2   subject to  sum(phi) = v(1) - v(0)

with the Shapley kernel ``pi``. The sufficient statistics ``A = sum w z z^T`` (M, M),
``sum w z`` (M,) and ``sum w z y^T`` (M, T) are kept per replicate group; the
constraint is solved exactly through the KKT system, so efficiency holds to rounding.
When every coalition was enumerated the solution is the exact Shapley value.

Logistic control variate (scores that are probabilities): when every score of a
target lies in (0, 1), the same regression is also run on the log-odds, giving the
surrogate game ``q(z) = sigmoid(logit v(0) + z . a)`` with ``q(0) = v(0)``,
``q(1) = v(1)``. Its Shapley values are computed exactly without the model, by
enumerating its ``2**M`` coalitions (so this is done for ``M <= 18`` superpixels only),
and only the residual game ``v - q`` is estimated from the model's samples:
``phi = phi(q) + KernelSHAP(v - q)``. A classifier's probability is close to a sigmoid of
additive evidence, so the residual is small and so is the error. This needs
``sum w z q(z)``, hence the coalitions ``z`` of the design (``n`` rows of ``M`` bytes,
kept as they stream by; the scores are not kept).

Third-order surrogate (``interactions=True``): see :mod:`perturbx.estimators.k_additive`;
it keeps the coalitions and the scores.

Of the estimates computed (linear always; logistic and third-order when enabled), the
one with the smallest jackknife standard error is kept, per target (``method`` says which).

Error estimate: random coalition pairs are dealt to ``G`` replicate groups; the
delete-a-group jackknife re-solves the regression without each group (its share of
the random part re-weighted by ``G / (G - 1)``) and reports the standard error
``sqrt((G - 1) / G * sum_g (phi_(g) - mean)^2)`` per superpixel and target (for the
control variate, with the surrogate ``q`` held fixed). Enumerated coalitions are in
every replicate, so exact results have error 0.
"""

from __future__ import annotations

import math

import numpy as np

from perturbx.segmentation import paint

from .k_additive import fit_third_order

#: scores within this distance of 0 or 1 rule out the logistic control variate
_PROB_MARGIN = 1e-9
#: most superpixels for which the control variate is tried (its Shapley values are enumerated)
CV_MAX_PLAYERS = 18


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


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _PROB_MARGIN, 1 - _PROB_MARGIN)
    return np.log(p) - np.log1p(-p)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def logistic_shapley(offset: float, coef: np.ndarray) -> np.ndarray:
    """Exact Shapley values (M,) of ``q(z) = sigmoid(offset + z . coef)``, from all ``2**M`` coalitions.

    ``phi_j = sum_{S not containing j} |S|! (M - |S| - 1)! / M! (q(S + j) - q(S))``, with the
    game held as a ``(2,) * M`` array (axis ``M - 1 - j`` is player j): ``O(M 2**M)``.
    """
    m = len(coef)
    total, size = np.zeros(1), np.zeros(1, dtype=np.int64)
    for j in range(m):  # index bit j <-> player j
        total, size = np.concatenate([total, total + coef[j]]), np.concatenate([size, size + 1])
    game = _sigmoid(offset + total).reshape((2,) * m)
    size = size.reshape((2,) * m)
    weight = np.array([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)])
    phi = np.empty(m)
    for j in range(m):
        axis = m - 1 - j
        gain = game.take(1, axis=axis) - game.take(0, axis=axis)
        phi[j] = (weight[size.take(0, axis=axis)] * gain).sum()
    return phi


class ShapleyRegression:
    """Streaming constrained weighted least squares over coalitions.

    Parameters
    ----------
    segments : int ndarray, shape (H, W)
        Segment map with labels ``0 .. M-1``; ``finalize`` paints the values on it.
    reference : ndarray, shape (T,)
        Scores of the full coalition (the unperturbed input) for the targets.
    n_groups : int
        Number of replicate groups the sampler deals random pairs to.
    control_variate : bool, default True
        Try the logistic control variate for targets whose scores all lie in (0, 1)
        (with at most ``CV_MAX_PLAYERS`` superpixels).
    interactions : bool, default False
        Also fit the third-order surrogate (:mod:`perturbx.estimators.k_additive`); this
        keeps the coalitions and scores of the random design.

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

    def __init__(self, segments: np.ndarray, reference: np.ndarray, n_groups: int,
                 control_variate: bool = True, interactions: bool = False) -> None:
        self.segments = segments
        self.m = int(segments.max()) + 1
        self.reference = np.asarray(reference, dtype=np.float64)
        t, m, g = len(self.reference), self.m, n_groups + 1  # last slot: the enumerated rows
        self._a, self._wz = np.zeros((g, m, m)), np.zeros((g, m))
        self._wzy, self._wzl = np.zeros((g, m, t)), np.zeros((g, m, t))
        self._seen = np.zeros(g, dtype=bool)
        self._random = False
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_groups, self.interactions = n_groups, interactions
        self._probability = (self.reference > _PROB_MARGIN) & (self.reference < 1 - _PROB_MARGIN)
        self._probability &= bool(control_variate) and m <= CV_MAX_PLAYERS
        self.base_value: np.ndarray | None = None

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        z = chunk.z.astype(np.float64)
        y = np.asarray(scores, dtype=np.float64)
        empty = z.sum(axis=1) == 0
        if self.base_value is None and empty.any():
            self.base_value = y[np.argmax(empty)]
        self._probability &= ((y > _PROB_MARGIN) & (y < 1 - _PROB_MARGIN)).all(axis=0)
        dy, dl = y - self.reference, _logit(y) - _logit(self.reference)  # centred: better conditioned sums
        for g in np.unique(chunk.groups):
            rows = chunk.groups == g
            zw = z[rows] * chunk.weights[rows, None]
            self._a[g] += zw.T @ z[rows]
            self._wz[g] += zw.sum(axis=0)
            self._wzy[g] += zw.T @ dy[rows]
            self._wzl[g] += zw.T @ dl[rows]
            self._seen[g] = True
        self._random |= bool((chunk.groups >= 0).any())
        if self._probability.any() or self.interactions:
            self._rows.append((chunk.z, chunk.weights, chunk.groups, y if self.interactions else None))

    def finalize(self) -> np.ndarray:
        """Shapley values painted on their superpixels, ``(T, H, W)``."""
        if self.base_value is None:
            raise RuntimeError("ShapleyRegression saw no empty coalition; the sampler must yield it.")
        delta = self.reference - self.base_value
        b = self._wzy + self._wz[:, :, None] * delta  # sum w z (y - v(0)), per group
        self.values, self.errors = self._fit(b, delta)
        self.method = np.full(len(delta), "linear", dtype=object)
        if self._random:
            for t in np.flatnonzero(self._probability):
                self._keep_better(t, "logistic", *self._fit_control_variate(t))
            if self.interactions:
                try:
                    values, errors = fit_third_order(self._rows, self.base_value, self.reference, self.n_groups)
                except np.linalg.LinAlgError:
                    values = None
                for t in range(len(delta)) if values is not None else ():
                    self._keep_better(t, "third-order", values[t], errors[t])
        return paint(self.values, self.segments)

    def _keep_better(self, t: int, method: str, values: np.ndarray, errors: np.ndarray) -> None:
        """Keep ``values`` for target ``t`` when their jackknife error is the smaller."""
        if np.isfinite(errors).all() and (errors ** 2).sum() < np.nan_to_num((self.errors[t] ** 2).sum(), nan=np.inf):
            self.values[t], self.errors[t], self.method[t] = values, errors, method

    def _fit(self, b: np.ndarray, delta: np.ndarray, offset: np.ndarray | float = 0.0):
        """Values ``offset + solve(A, b, delta)`` and their jackknife errors, from per-group ``b``."""
        values = offset + solve_constrained(self._a.sum(axis=0), b.sum(axis=0), delta)
        groups = np.flatnonzero(self._seen[:-1])
        k = len(groups)
        if k < 2:
            return values, np.full_like(values, 0.0 if k == 0 else np.nan)
        scale = k / (k - 1)
        a_rand, b_rand = self._a[:-1].sum(axis=0), b[:-1].sum(axis=0)
        try:
            reps = np.stack([solve_constrained(self._a[-1] + scale * (a_rand - self._a[g]),
                                               b[-1] + scale * (b_rand - b[g]), delta) for g in groups])
        except UnderdeterminedError:
            return values, np.full_like(values, np.nan)
        return values, np.sqrt((k - 1) / k * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))

    def _fit_control_variate(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Values and errors of target ``t`` by the logistic control variate."""
        l0, l1 = _logit(self.base_value[t]), _logit(self.reference[t])
        bl = self._wzl[:, :, t] + self._wz * (l1 - l0)
        coef = solve_constrained(self._a.sum(axis=0), bl.sum(axis=0)[:, None], np.array([l1 - l0]))[0]
        wzq = np.zeros_like(self._wz)  # sum w z q(z), per group, from the kept coalitions
        for z, w, g, _ in self._rows:
            zf = z.astype(np.float64)
            contrib = zf * (w * _sigmoid(l0 + zf @ coef))[:, None]
            np.add.at(wzq, g, contrib)
        b = (self._wzy[:, :, t] + self._wz * self.reference[t] - wzq)[:, :, None]  # sum w z (v - q)
        values, errors = self._fit(b, np.zeros(1), offset=logistic_shapley(l0, coef))
        return values[0], errors[0]
