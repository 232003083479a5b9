"""LIME on superpixels (Ribeiro, Singh & Guestrin 2016), as ``lime.lime_image`` computes it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from perturbx import engine
from perturbx._utils import check_choice, check_float, check_int
from perturbx.estimators.linear_surrogate import WeightedRidge
from perturbx.samplers.coalitions import UNIFORM_DESIGNS, SegmentMap, UniformCoalitionSampler
from perturbx.segmentation import check_segmentation, compute_segments, superpixel_baseline

from .base import Context, PerturbationExplainer


class LIME(PerturbationExplainer):
    """Local linear surrogate over superpixels.

    Each sample keeps every superpixel with probability 1/2 and replaces the others by
    the baseline; the scores are regressed on the binary coalition vectors by weighted
    ridge regression, with lime's exponential kernel on the cosine distance to the
    unperturbed input (``sqrt(exp(-d^2 / kernel_width^2))``). With the same segments,
    hide colour and kernel this is ``lime_image.LimeImageExplainer`` (whose default
    feature selection keeps every superpixel), computed in batches on the model's
    device and folded into the regression as scores arrive. By default the samples
    come in orthogonal blocks and a logistic control variate is used (``sampling``,
    ``control_variate``): the same surrogate in expectation, with less noise per query;
    ``sampling="iid", control_variate=False`` is lime's estimator exactly.

    Parameters
    ----------
    n_samples : int, default 1000
        Samples of the regression, the unperturbed input included (as in lime): model
        queries of the whole explanation. Must be at least ``M + 1`` for ``M``
        superpixels, the number of the surrogate's parameters.
    segmentation : str, callable or int array (H, W), default "slic"
        Superpixels; see :mod:`perturbx.segmentation`.
    kernel_width : float > 0, default 0.25
        Width of the kernel on the cosine distance (lime's default for images).
    alpha : float >= 0, default 1.0
        Ridge penalty on the coefficients (lime's default ``Ridge(alpha=1)``).
    baseline : float, str, array or callable, default "mean"
        What hidden superpixels become. ``"mean"`` is the mean colour of each superpixel
        (lime's default hide colour); other values as in :mod:`perturbx.baselines`.
    sampling : {"orthogonal", "antithetic", "iid"}, default "orthogonal"
        How the coalitions are drawn; every coalition is lime's uniform draw in all three,
        so the surrogate is lime's in expectation.
        ``"iid"``: lime's independent fair coins. ``"antithetic"``: every other coalition
        is the complement of the previous one (the pair cancels the model's even-order
        interactions in the fit). ``"orthogonal"``: blocks of a randomised Hadamard
        orthogonal array with their complements (each superpixel on half the time and
        each pair a quarter of the time within a block; see
        :func:`perturbx.samplers.coalitions.orthogonal_block`). On the demo CNN the
        orthogonal design was the most accurate of the three at every budget measured
        (125 to 1,000 samples; benchmarks/RESULTS.md). The jackknife error treats
        complementary pairs as independent units, which errs on the safe side for the
        orthogonal blocks.
    control_variate : bool, default True
        For a target whose scores all lie in (0, 1) (probabilities), with at most 128
        superpixels, also fit a logistic surrogate game with pairwise terms to the
        samples, take its ridge fit from many model-free samples and regress only the
        residual on the model's samples (see :mod:`perturbx.estimators.linear_surrogate`);
        kept where its error (the residual's jackknife error and the model-free fit's Monte
        Carlo error) is smaller. Same target (lime's surrogate), less noise; keeps the coalitions in
        memory (``n_samples * M`` bytes).
    random_state : int, Generator or None
        Seed of the coalitions.
    progress : bool or None
    max_queries : int, optional
        Most model queries, the unperturbed input included. Without ``tolerance`` a run
        that needs more raises; with it, the run stops there (``converged`` False).
    tolerance : float, optional
        Stop early, with ``n_samples`` as the maximum, once the coefficients' estimated
        relative error (:func:`perturbx.engine.relative_error`, from a delete-a-group
        jackknife over ``n_groups`` replicate groups of samples) is at most this. None
        (the default) always uses ``n_samples`` samples.
    min_queries : int, default 100
        With ``tolerance``: samples before the first convergence check.

    Notes
    -----
    The :class:`~perturbx.Explanation` adds ``segments`` (H, W), ``segment_weights``
    (T, M) (the surrogate's coefficients; ``attributions`` paints them on the
    superpixels), ``intercept`` (T,) and ``surrogate_score`` (T,), the weighted R^2 of
    the surrogate on its samples (1.0 for a target whose scores never change).
    """

    def __init__(self, n_samples: int = 1000, segmentation: object = "slic", kernel_width: float = 0.25, *,
                 alpha: float = 1.0, baseline: object = "mean", sampling: str = "orthogonal",
                 control_variate: bool = True, random_state: object = None,
                 progress: bool | None = None, max_queries: int | None = None, tolerance: float | None = None,
                 min_queries: int = 100) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries, tolerance=tolerance, min_queries=min_queries)
        self.n_samples = check_int(n_samples, "n_samples", "LIME", minimum=3)
        self.segmentation = check_segmentation(segmentation, "LIME")
        self.kernel_width = check_float(kernel_width, "kernel_width", "LIME", low=0.0, high=float("inf"),
                                        low_open=True, high_open=True)
        self.alpha = check_float(alpha, "alpha", "LIME", low=0.0, high=float("inf"), high_open=True)
        self.sampling = check_choice(sampling, "sampling", "LIME", UNIFORM_DESIGNS)
        if not isinstance(control_variate, bool):
            raise TypeError(f"The 'control_variate' parameter of LIME must be True or False. Got {control_variate!r}.")
        self.control_variate = control_variate

    def _plan(self, ctx: Context) -> engine.Plan:
        segments = compute_segments(self.segmentation, ctx.x, ctx.layout, "LIME")
        m = int(segments.max()) + 1
        if self.n_samples < m + 1:
            raise ValueError(f"The 'n_samples' parameter of LIME is {self.n_samples}, too few to fit a surrogate "
                             f"with {m} superpixels and an intercept; use n_samples >= {m + 1} (a few times "
                             f"more for a stable fit) or fewer superpixels.")
        baseline = superpixel_baseline(self.baseline, ctx.baseline, ctx.x, ctx.layout, segments)
        sampler = UniformCoalitionSampler(SegmentMap(segments), self.n_samples - 1, ctx.rng, self.sampling)
        paired = self.sampling != "iid"
        estimator = WeightedRidge(segments, ctx.reference, self.kernel_width, self.alpha, block=2 if paired else 1,
                                  control_variate=self.control_variate)
        return engine.Plan(sampler, replace(ctx, baseline=baseline).blend_renderer(), estimator)

    def _extras(self, ctx: Context, plan: engine.Plan) -> dict[str, Any]:
        est = plan.estimator
        return {"segments": est.segments, "segment_weights": est.coef, "intercept": est.intercept,
                "surrogate_score": est.score, "estimate": est.method}
