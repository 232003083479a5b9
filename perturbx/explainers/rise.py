"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko 2018)."""

from __future__ import annotations

import numpy as np

from perturbx import engine
from perturbx._utils import check_float, check_int, check_int_tuple
from perturbx.estimators import MaskAverage
from perturbx.estimators.grid_regression import GridRegression
from perturbx.samplers import RandomGridSampler

from .base import Context, PerturbationExplainer


class RISE(PerturbationExplainer):
    """Score-weighted average of random smooth masks.

    Masks are ``grid_size`` binary grids (cells kept with probability ``p_keep``),
    bilinearly upsampled and randomly shifted as in the paper's reference code; the
    saliency estimates the paper's ``E[f(x ⊙ M) M] / p_keep``, by default with a regression
    control variate (``control_variate``) that needs far fewer masks for the same map than the
    paper's ``sum_n f(x ⊙ M_n) M_n / (n_masks * p_keep)``. Masks are generated per batch on
    the model's device from the seeded stream, so memory does not grow with ``n_masks`` and
    the result does not depend on the batch size.

    Parameters
    ----------
    n_masks : int, default 4000
        Number of random masks (model queries, plus one for the unperturbed input).
    grid_size : int or (gh, gw), default 7
        Resolution of the random grid.
    p_keep : float in (0, 1], default 0.5
        Probability that a grid cell keeps the input.
    baseline : float, str, array or callable, default 0.0
        What masked pixels become; see :mod:`perturbx.baselines`.
    random_state : int, Generator or None
        Seed of the masks; the same int gives the same map on every run.
    progress : bool or None
    max_queries : int, optional
        Most model queries, the unperturbed input included. Without ``tolerance`` a run
        that needs more raises; with it, the run stops there (``converged`` False).
    tolerance : float, optional
        Stop early, with ``n_masks`` as the maximum, once the map's estimated relative
        error (:func:`perturbx.engine.relative_error`) is at most this; ``0.1`` is a
        Pearson correlation of about 0.995 with the map of unlimited masks. None (the
        default) always uses ``n_masks`` masks.
    min_queries : int, default 100
        With ``tolerance``: masks before the first convergence check.
    control_variate : {"regression", "mean", "none"} or bool, default "regression"
        The estimator; all converge to the paper's map. ``"regression"``: a surrogate of
        the score, a monotone (isotonic) function of a linear one in the mask's block means
        (about the grid's resolution), is fitted on the first 512 masks; its RISE map is
        computed without the model (exact for the linear part,
        :mod:`perturbx.estimators.grid_regression`; 0.2 s of CPU at 224 px) and only the
        residual is estimated from the masks. ``"mean"`` (``True``; the default before
        issue 20): the mask value as control variate, ``sum_n (f_n - f_bar) M_n /
        ((n_masks - 1) p_keep) + f_bar``, ``f_bar`` the mean score. ``"none"``
        (``False``): the paper's ``sum_n f_n M_n / (n_masks p_keep)``. The queries each
        needs for the same agreement on three classifiers:
        ``benchmarks/results/queries_models.md``. A model whose score never
        changes gets a constant map from the first two.

    Notes
    -----
    With ``tolerance`` the estimator also accumulates second moments for its standard error
    (:meth:`perturbx.estimators.MaskAverage.standard_error`, the error of the map relative to
    its mean), and the run stops once :func:`perturbx.engine.relative_error` of it is at most
    ``tolerance``. Stratified and antithetic mask grids were measured too and did not help
    on top of the control variate (``benchmarks/results/rise_variance.md``).
    """

    def __init__(self, n_masks: int = 4000, grid_size=7, p_keep: float = 0.5, *, baseline=0.0,
                 random_state=None, progress: bool | None = None, max_queries: int | None = None,
                 tolerance: float | None = None, min_queries: int = 100,
                 control_variate: bool | str = "regression") -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries, tolerance=tolerance, min_queries=min_queries)
        self.n_masks = check_int(n_masks, "n_masks", "RISE")
        self.grid_size = check_int_tuple(grid_size, "grid_size", "RISE")
        self.p_keep = check_float(p_keep, "p_keep", "RISE", low=0.0, high=1.0, low_open=True)
        self.control_variate = control_variate
        self._estimator_kind = _control_variate_kind(control_variate, type(self).__name__)

    def _plan(self, ctx: Context) -> engine.Plan:
        sampler = RandomGridSampler(ctx.chw[1:], self.n_masks, self.grid_size, self.p_keep, ctx.rng)
        track = self.tolerance is not None
        if self._estimator_kind == "regression":
            estimator = GridRegression(ctx.adapter.backend, self.p_keep, link="isotonic", track_error=track)
        else:
            estimator = MaskAverage(ctx.adapter.backend, self.p_keep, control_variate=self._estimator_kind == "mean",
                                    track_error=track)
        return engine.Plan(sampler, ctx.blend_renderer(), estimator)


#: RISE's estimators: ``control_variate=`` values and what they mean
CONTROL_VARIATES = {"regression": "regression", "mean": "mean", "none": "none", True: "mean", False: "none"}


def _control_variate_kind(value: object, owner: str) -> str:
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, (bool, str)) or value not in CONTROL_VARIATES:
        raise ValueError(f"The 'control_variate' parameter of {owner} must be one of 'regression', 'mean', 'none' "
                         f"(True means 'mean', False 'none'). Got {value!r} instead.")
    return CONTROL_VARIATES[value]
