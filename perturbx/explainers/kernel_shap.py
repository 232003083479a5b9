"""KernelSHAP on superpixels (Lundberg & Lee 2017), with exact efficiency and an error estimate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from perturbx import engine
from perturbx._utils import check_choice, check_int
from perturbx.estimators.k_additive import n_parameters
from perturbx.estimators.kernel_shap import ShapleyRegression, kkt_is_singular
from perturbx.samplers.coalitions import SAMPLING, SegmentMap, ShapleyKernelSampler
from perturbx.segmentation import check_segmentation, compute_segments, superpixel_baseline

from .base import Context, PerturbationExplainer

#: replicate groups of the jackknife error estimate
N_GROUPS = 16
#: "auto" fits the third-order surrogate with at most this many parameters (M <= 18) ...
MAX_THIRD_ORDER_PARAMETERS = 1000
#: ... when there are at least this many samples per parameter ...
MIN_SAMPLES_PER_PARAMETER = 1.5
#: ... and its normal equations cost at most this many multiply-adds (n * P**2, a few seconds on a CPU)
MAX_THIRD_ORDER_WORK = 2e10


def third_order_fits(m: int, n_rows: int) -> bool:
    """Whether ``interactions="auto"`` fits the third-order surrogate for M superpixels and n coalitions."""
    p = n_parameters(m)
    return p <= MAX_THIRD_ORDER_PARAMETERS and n_rows >= MIN_SAMPLES_PER_PARAMETER * p and \
        n_rows * p * p <= MAX_THIRD_ORDER_WORK


class KernelSHAP(PerturbationExplainer):
    """Shapley values of superpixels by KernelSHAP's weighted linear regression.

    The game is ``v(z) = f(x with the superpixels outside z replaced by the baseline)``.
    Coalition sizes come in complementary pairs ``{s, M - s}``, one stratum each; from the
    outside in, a pair whose coalitions all fit its share of the remaining budget (shares
    in proportion to the Shapley kernel mass, as in ``shap.KernelExplainer``) is
    enumerated completely. Each remaining size gets a fixed number of distinct
    coalitions, drawn without replacement together with their complements (antithetic
    pairs). The strata are interleaved in the stream and the weights seen in each are
    scaled to its kernel mass (post-stratification), so the run can stop at any point
    with a valid estimate (``tolerance``). The regression is solved with the
    efficiency constraint ``sum(segment_weights) = f(x) - f(baseline)``, which therefore
    holds exactly (to float64 rounding), and with ``n_samples >= 2**M`` every coalition is
    enumerated and the result is the exact Shapley value.

    Parameters
    ----------
    n_samples : int, default 2048
        Model queries of the whole explanation: the unperturbed input, the baseline (the
        empty coalition) and ``n_samples - 2`` other coalitions; capped at ``2**M``.
        (``shap.KernelExplainer(nsamples=n)`` makes ``n + 2`` queries.)
    segmentation : str, callable or int array (H, W), default "slic"
        Superpixels; see :mod:`perturbx.segmentation`.
    baseline : float, str, array or callable, default "mean"
        What hidden superpixels become. ``"mean"`` is the mean colour of each superpixel;
        other values as in :mod:`perturbx.baselines`.
    interactions : {"auto", True, False}, default "auto"
        Also fit a third-order surrogate (pairwise and three-way interactions of the
        superpixels, Pelegrina et al. 2023; see :mod:`perturbx.estimators.k_additive`) and
        keep it for the targets where its jackknife error is smaller. ``"auto"`` does so
        when the surrogate's ``P = M + C(M,2) + C(M,3)`` parameters are at most 1000
        (``M <= 18``), the coalitions number at least ``1.5 P`` and the fit costs at most
        ``2e10`` multiply-adds; ``True`` whenever there are more coalitions than ``P``. On
        image classifiers it cuts the error many times once the budget allows it.
    control_variate : bool, default True
        For a target whose scores all lie in (0, 1) (probabilities), with at most 128
        superpixels, also estimate the values as those of a logistic surrogate game
        ``sigmoid(c + z . a + sum b_ij z_i z_j)`` fitted to the samples (pairwise terms
        among the superpixels with the largest linear estimates, as many as the samples
        support; its Shapley values enumerated for ``M <= 18``, else sampled stratified
        by size, without the model) plus
        KernelSHAP of the residual game, and keep whichever estimate has the smaller
        jackknife error (see :mod:`perturbx.estimators.kernel_shap`). Same target
        quantity; on the demo CNN with ~43 superpixels about 40 % less error at 512 to
        2,148 queries (benchmarks/RESULTS.md); no effect on exact results.
    sampling : {"stratified", "leverage-stratified", "kernel", "leverage"}, default "stratified"
        How coalitions are drawn (:class:`~perturbx.samplers.coalitions.ShapleyKernelSampler`):
        the stratified design above; the same with equal shares per size (the leverage
        scores of the Shapley regression, Musco & Witter 2024); i.i.d. pairs from the
        Shapley kernel (``shap``'s scheme without enumeration); or i.i.d. pairs with sizes
        uniform and importance weights (Leverage SHAP, with replacement). The default was
        the most accurate per query in ``benchmarks/results/shap_sampling.md``.
    random_state : int, Generator or None
        Seed of the coalitions.
    progress : bool or None
    max_queries : int, optional
        Most model queries, the unperturbed input included. Without ``tolerance`` a run
        that needs more raises; with it, the run stops there (``converged`` False).
    tolerance : float, optional
        Stop early, with ``n_samples`` as the maximum, once the values' estimated
        relative error (:func:`perturbx.engine.relative_error` of the jackknife standard
        errors below) is at most this; ``0.1`` is a Pearson correlation of about 0.995
        with the values of unlimited samples. None (the default) always uses
        ``n_samples`` samples.
    min_queries : int, default 100
        With ``tolerance``: samples before the first convergence check. The check is
        also passed over (error infinite) until every coalition size of the design has
        been drawn into two replicate groups (a few queries per superpixel pair).

    Notes
    -----
    The :class:`~perturbx.Explanation` adds ``segments`` (H, W), ``segment_weights``
    (T, M) (``attributions`` paints them on the superpixels), ``base_value`` (T,) =
    ``f(baseline)``, ``exact`` (bool), ``estimate`` (T,): which estimate each target's
    values come from (``"linear"``, ``"logistic"`` or ``"third-order"``), and ``errors``
    (T, M): the delete-a-group jackknife standard error of each value. Within each
    stratum the random pairs are dealt round-robin to 16 replicate groups; the
    regression is re-solved without each group (each stratum's remaining weights scaled
    back to its kernel mass), and the spread of the 16 solutions gives the standard
    error. Complete strata are in every solution, so ``errors`` is 0 when the result is
    exact. With ``tolerance`` it also adds ``converged``, ``estimated_error``,
    ``tolerance`` and ``convergence_history`` (see :class:`perturbx.engine.RunResult`).

    Raises
    ------
    ValueError
        At ``explain``, before any query, when ``n_samples`` is too small for the
        coalitions to determine the ``M`` values (fewer than ``M + 2``, or a singular design).
    """

    def __init__(self, n_samples: int = 2048, segmentation: object = "slic", *, baseline: object = "mean",
                 interactions: bool | str = "auto", control_variate: bool = True, sampling: str = "stratified",
                 random_state: object = None, progress: bool | None = None, max_queries: int | None = None,
                 tolerance: float | None = None, min_queries: int = 100) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries, tolerance=tolerance, min_queries=min_queries)
        self.n_samples = check_int(n_samples, "n_samples", "KernelSHAP", minimum=4)
        self.sampling = check_choice(sampling, "sampling", "KernelSHAP", SAMPLING)
        self.segmentation = check_segmentation(segmentation, "KernelSHAP")
        if not isinstance(control_variate, bool):
            raise TypeError(f"The 'control_variate' parameter of KernelSHAP must be True or False. "
                            f"Got {control_variate!r}.")
        self.control_variate = control_variate
        if interactions not in ("auto", True, False):
            raise ValueError(f"The 'interactions' parameter of KernelSHAP must be 'auto', True or False. "
                             f"Got {interactions!r}.")
        self.interactions = interactions

    def _plan(self, ctx: Context) -> engine.Plan:
        segments = compute_segments(self.segmentation, ctx.x, ctx.layout, "KernelSHAP")
        m = int(segments.max()) + 1
        sampler = None
        if self.n_samples >= m + 2:
            sampler = ShapleyKernelSampler(SegmentMap(segments), self.n_samples, ctx.rng, n_groups=N_GROUPS,
                                           sampling=self.sampling)
        if sampler is None or (not sampler.exact and kkt_is_singular(sampler.gram())):
            raise ValueError(f"The 'n_samples' parameter of KernelSHAP is {self.n_samples}, too few for the "
                             f"coalitions to determine {m} Shapley values; use n_samples >= {2 * m + 2} "
                             f"(more for a small error) or fewer superpixels.")
        baseline = superpixel_baseline(self.baseline, ctx.baseline, ctx.x, ctx.layout, segments)
        if self.interactions == "auto":
            interactions = not sampler.exact and third_order_fits(m, sampler.n_total)
        else:
            interactions = bool(self.interactions) and not sampler.exact and sampler.n_total > n_parameters(m)
        estimator = ShapleyRegression(segments, ctx.reference, N_GROUPS, control_variate=self.control_variate,
                                      interactions=interactions, strata=sampler.strata)
        return engine.Plan(sampler, replace(ctx, baseline=baseline).blend_renderer(), estimator)

    def _extras(self, ctx: Context, plan: engine.Plan) -> dict[str, Any]:
        est = plan.estimator
        return {"segments": est.segments, "segment_weights": est.values, "base_value": est.base_value,
                "errors": est.errors, "exact": plan.sampler.exact, "estimate": est.method}
