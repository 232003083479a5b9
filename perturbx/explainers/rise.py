"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko 2018)."""

from __future__ import annotations

from perturbx import engine
from perturbx._utils import check_float, check_int, check_int_tuple
from perturbx.estimators import MaskAverage
from perturbx.samplers import RandomGridSampler

from .base import Context, PerturbationExplainer


class RISE(PerturbationExplainer):
    """Score-weighted average of random smooth masks.

    Masks are ``grid_size`` binary grids (cells kept with probability ``p_keep``),
    bilinearly upsampled and randomly shifted as in the paper's reference code; the
    saliency is ``sum_n f(x ⊙ M_n) M_n / (n_masks * p_keep)``. Masks are generated per
    batch on the model's device from the seeded stream, so memory does not grow with
    ``n_masks`` and the result does not depend on the batch size.

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
    """

    def __init__(self, n_masks: int = 4000, grid_size=7, p_keep: float = 0.5, *, baseline=0.0,
                 random_state=None, progress: bool | None = None, max_queries: int | None = None) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries)
        self.n_masks = check_int(n_masks, "n_masks", "RISE")
        self.grid_size = check_int_tuple(grid_size, "grid_size", "RISE")
        self.p_keep = check_float(p_keep, "p_keep", "RISE", low=0.0, high=1.0, low_open=True)

    def _plan(self, ctx: Context) -> engine.Plan:
        sampler = RandomGridSampler(ctx.chw[1:], self.n_masks, self.grid_size, self.p_keep, ctx.rng)
        return engine.Plan(sampler, ctx.blend_renderer(), MaskAverage(ctx.adapter.backend, self.p_keep))
