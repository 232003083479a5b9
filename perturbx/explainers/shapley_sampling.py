"""Shapley values of superpixels by antithetic permutation sampling (Castro et al. 2009)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from perturbx import engine
from perturbx._utils import check_int
from perturbx.estimators.shapley_sampling import PermutationShapley
from perturbx.samplers.coalitions import PermutationSampler, SegmentMap
from perturbx.segmentation import check_segmentation, compute_segments, superpixel_baseline

from .base import Context, PerturbationExplainer


class ShapleySampling(PerturbationExplainer):
    """Mean marginal contribution of each superpixel over random orders and their reverses.

    Each permutation of the ``M`` superpixels is walked from the baseline to the input,
    adding one superpixel at a time (``M - 1`` new queries; the empty and the full
    coalition are shared); every random order is followed by its reverse (antithetic
    pairs), which cancels much of the noise. Unbiased, with exact efficiency
    (``segment_weights.sum() == f(x) - f(baseline)``) and a plain error estimate; for the
    same budget KernelSHAP is usually more accurate.

    Parameters
    ----------
    n_samples : int, default 2048
        Query budget of the whole explanation: ``(n_samples - 2) // (2 * (M - 1))``
        permutation pairs are walked, so ``2 + 2 * pairs * (M - 1)`` queries are made
        (at most ``n_samples``); at least ``2 * M`` is needed.
    segmentation : str, callable or int array (H, W), default "slic"
        Superpixels; see :mod:`perturbx.segmentation`.
    baseline : float, str, array or callable, default "mean"
        What hidden superpixels become; ``"mean"`` is each superpixel's mean colour.
    random_state : int, Generator or None
    progress : bool or None
    max_queries : int, optional

    Notes
    -----
    The :class:`~perturbx.Explanation` adds ``segments``, ``segment_weights`` (T, M),
    ``base_value`` (T,) and ``errors`` (T, M): the standard error of the mean over the
    permutation pairs, ``std(ddof=1) / sqrt(pairs)`` (NaN with one pair).
    """

    def __init__(self, n_samples: int = 2048, segmentation: object = "slic", *, baseline: object = "mean",
                 random_state: object = None, progress: bool | None = None,
                 max_queries: int | None = None) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries)
        self.n_samples = check_int(n_samples, "n_samples", "ShapleySampling", minimum=4)
        self.segmentation = check_segmentation(segmentation, "ShapleySampling")

    def _plan(self, ctx: Context) -> engine.Plan:
        segments = compute_segments(self.segmentation, ctx.x, ctx.layout, "ShapleySampling")
        m = int(segments.max()) + 1
        n_pairs = (self.n_samples - 2) // (2 * (m - 1))
        if n_pairs < 1:
            raise ValueError(f"The 'n_samples' parameter of ShapleySampling is {self.n_samples}, too few to walk "
                             f"one pair of permutations of {m} superpixels; use n_samples >= {2 * m} (many "
                             f"times more for a small error) or fewer superpixels.")
        baseline = superpixel_baseline(self.baseline, ctx.baseline, ctx.x, ctx.layout, segments)
        sampler = PermutationSampler(SegmentMap(segments), n_pairs, ctx.rng)
        estimator = PermutationShapley(segments, ctx.reference)
        return engine.Plan(sampler, replace(ctx, baseline=baseline).blend_renderer(), estimator)

    def _extras(self, ctx: Context, plan: engine.Plan) -> dict[str, Any]:
        est = plan.estimator
        return {"segments": est.segments, "segment_weights": est.values, "base_value": est.base_value,
                "errors": est.errors}
