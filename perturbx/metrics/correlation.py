"""Faithfulness as agreement between attribution and score change: correlation, estimate, monotonicity.

- :func:`faithfulness_correlation` (Bhatt, Weller & Moura 2020): Pearson correlation, over
  random pixel subsets, between the attribution a subset holds and the score drop when it
  is removed.
- :func:`faithfulness_estimate` (Alvarez-Melis & Jaakkola 2018): the same correlation over
  consecutive groups of pixels in decreasing attribution, each removed alone.
- :func:`monotonicity` (Arya et al. 2019): inserting pixels into the substrate in
  increasing attribution never lowers the score.

Every perturbation is a keep-mask streamed through :func:`perturbx.engine.run` in chunks of
the adapter's batch size; all channels of a pixel move together.
"""

from __future__ import annotations

import math

import numpy as np

from perturbx._utils import check_int, check_random_state
from perturbx.baselines import check_baseline, resolve_baseline

from ._common import pearson, pixel_ranks, prepare
from ._perturb import RankSampler, SubsetSampler, score_perturbations

__all__ = ["faithfulness_correlation", "faithfulness_estimate", "monotonicity", "random_subsets"]


def random_subsets(n_pixels: int, n_subsets: int, subset_size: int, rng: np.random.Generator) -> np.ndarray:
    """``n_subsets`` subsets of ``subset_size`` distinct flat pixel indices each, ``(n_subsets, subset_size)``."""
    return np.stack([rng.choice(n_pixels, subset_size, replace=False) for _ in range(n_subsets)])


def faithfulness_correlation(model: object, x: np.ndarray, attribution: object, target: object = None, *,
                             n_subsets: int = 100, subset_size: int | None = None, baseline: object = 0.0,
                             subsets: np.ndarray | None = None, random_state: object = 0,
                             progress: bool | None = None) -> float:
    """Faithfulness correlation (Bhatt et al. 2020): Pearson(sum of a over S, f(x) - f(x with S removed)).

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    x : ndarray
        One sample in the adapter's layout.
    attribution : Explanation or ndarray (H, W)
    target : int or perturbx.targets target, optional
        Default: the Explanation's target, else the top class.
    n_subsets : int, default 100
        Random subsets ``S``, one model query each (Quantus's ``nr_runs``).
    subset_size : int, optional
        Pixels per subset; default ``H * W // 20`` (5 % of the image).
    baseline : baseline spec, default 0.0
        What removed pixels become.
    subsets : int ndarray (n_subsets, subset_size), optional
        Flat pixel indices of the subsets to use instead of random ones (to reuse another
        tool's draws).
    random_state : int, Generator or None, default 0
        Seed of the subsets (an int gives every method the same subsets).
    progress : bool or None

    Returns
    -------
    float
        In [-1, 1], higher is better; NaN when the drops or the sums are constant.

    Notes
    -----
    Queries: ``n_subsets + 1``.
    """
    owner = "faithfulness_correlation"
    adapter, x, amap, target, ref = prepare(model, x, attribution, target, owner, need_reference=True)
    n_pixels = amap.size
    if subsets is None:
        n = check_int(n_subsets, "n_subsets", owner)
        size = max(1, n_pixels // 20) if subset_size is None else check_int(subset_size, "subset_size", owner)
        if size > n_pixels:
            raise ValueError(f"The 'subset_size' argument of {owner} is {size} but the image has only {n_pixels} "
                             f"pixels; use a smaller subset.")
        subsets = random_subsets(n_pixels, n, size, check_random_state(random_state, owner=owner))
    subsets = _check_subsets(subsets, n_pixels, owner)
    base = resolve_baseline(check_baseline(baseline, owner), x, adapter.layout, np.random.default_rng(0))
    scores = score_perturbations(adapter, x, base, target, SubsetSampler(amap.shape, subsets, remove=True), owner,
                                 progress=progress)[:, 0]
    sums = amap.ravel()[subsets].sum(axis=1)
    return pearson(sums, ref[0] - scores)


def _check_subsets(subsets: object, n_pixels: int, owner: str) -> np.ndarray:
    arr = np.asarray(subsets)
    if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) \
            or arr.min() < 0 or arr.max() >= n_pixels:
        raise ValueError(f"The 'subsets' argument of {owner} must be an int array (n_subsets, subset_size) of flat "
                         f"pixel indices in [0, {n_pixels}). Got shape {arr.shape}, dtype {arr.dtype}.")
    return arr.astype(np.int64)


def faithfulness_estimate(model: object, x: np.ndarray, attribution: object, target: object = None, *,
                          step: int | None = None, baseline: object = 0.0, progress: bool | None = None) -> float:
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018): Pearson(a of group k, drop when group k is removed).

    The pixels are sorted by decreasing attribution and cut into groups of ``step``; each
    group is removed alone (the others keep the input), and the correlation is taken over
    the groups between the attribution each holds and the score drop it causes.

    Parameters
    ----------
    model, x, attribution, target
        As for :func:`faithfulness_correlation`.
    step : int, optional
        Pixels per group; default the image width (Quantus's ``features_in_step``,
        whose default of 1 costs one query per pixel).
    baseline : baseline spec, default 0.0
    progress : bool or None

    Returns
    -------
    float
        In [-1, 1], higher is better; NaN when the drops or the sums are constant.

    Notes
    -----
    Queries: ``ceil(H * W / step) + 1``.
    """
    owner = "faithfulness_estimate"
    adapter, x, amap, target, ref = prepare(model, x, attribution, target, owner, need_reference=True)
    n_pixels = amap.size
    step = amap.shape[1] if step is None else check_int(step, "step", owner)
    lo = np.arange(math.ceil(n_pixels / step)) * step
    hi = np.minimum(lo + step, n_pixels)
    ranks = pixel_ranks(amap, "morf")
    base = resolve_baseline(check_baseline(baseline, owner), x, adapter.layout, np.random.default_rng(0))
    scores = score_perturbations(adapter, x, base, target, RankSampler(ranks, lo, hi, remove=True), owner,
                                 progress=progress)[:, 0]
    sums = np.add.reduceat(_by_rank(amap, ranks), lo)
    return pearson(sums, ref[0] - scores)


def _by_rank(amap: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The map's values listed by rank (position ``r`` holds the pixel of rank ``r``)."""
    out = np.empty(amap.size)
    out[ranks.ravel()] = amap.ravel()
    return out


def monotonicity(model: object, x: np.ndarray, attribution: object, target: object = None, *,
                 step: int | None = None, baseline: object = 0.0, return_curve: bool = False,
                 progress: bool | None = None) -> bool | tuple[bool, np.ndarray]:
    """Monotonicity (Arya et al. 2019): adding pixels in increasing attribution never lowers the score.

    Starting from the substrate, the pixels are put back ``step`` at a time, least
    relevant first (signed attribution, ties in raster order), and the score is recorded
    after every step; the map passes when the scores never decrease.

    Parameters
    ----------
    model, x, attribution, target
        As for :func:`faithfulness_correlation`.
    step : int, optional
        Pixels added per step; default the image width.
    baseline : baseline spec, default 0.0
        The substrate the pixels are added to.
    return_curve : bool, default False
        Also return the scores ``(ceil(H * W / step),)`` after each step.
    progress : bool or None

    Returns
    -------
    bool, or (bool, ndarray)
        True when ``scores[k + 1] >= scores[k]`` for every step.

    Notes
    -----
    Queries: ``ceil(H * W / step)`` (one more to find the top class when needed).
    The first score is that of the first step, not of the bare substrate, as in Quantus.
    """
    owner = "monotonicity"
    adapter, x, amap, target, _ = prepare(model, x, attribution, target, owner)
    n_pixels = amap.size
    step = amap.shape[1] if step is None else check_int(step, "step", owner)
    hi = np.minimum(np.arange(1, math.ceil(n_pixels / step) + 1) * step, n_pixels)
    base = resolve_baseline(check_baseline(baseline, owner), x, adapter.layout, np.random.default_rng(0))
    sampler = RankSampler(pixel_ranks(amap, "lerf"), np.zeros_like(hi), hi, remove=False)
    scores = score_perturbations(adapter, x, base, target, sampler, owner, progress=progress)[:, 0]
    passed = bool(np.all(np.diff(scores) >= 0))
    return (passed, scores) if return_curve else passed
