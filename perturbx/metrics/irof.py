"""IROF: iterative removal of features (Rieger & Hansen 2020).

The image is cut into superpixels, ranked by their mean attribution, and removed one
after another, most relevant first; the curve is the target's score relative to the
unperturbed score. A faithful map makes it fall fast: IROF is the area *over* the curve,
on a removed-fraction axis from 0 to 1, so it lies in [0, 1] for a score that stays
between 0 and f(x) (higher is better).

Quantus 0.6's ``IROF`` differs in three documented ways: it reports the area over the
curve in units of segments (``n_segments - sum of trapezoids over the points 1..n``)
rather than normalised, its "mean" substrate is the mean of the whole *batch* of images
as already perturbed (it drifts as segments are removed and depends on the batch), and it
perturbs single channels when the map has them. The curve here lets one recompute its
number: :meth:`IrofCurve.quantus_aoc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perturbx._utils import check_random_state
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.segmentation import check_segmentation, compute_segments

from ._common import prepare, target_label, trapezoid
from ._perturb import RankSampler, score_perturbations

__all__ = ["IrofCurve", "irof", "segment_ranks"]


@dataclass
class IrofCurve:
    """The IROF curve of one sample.

    Attributes
    ----------
    fractions : ndarray (M + 1,)
        Share of the superpixels removed: ``0, 1/M, ..., 1``.
    scores : ndarray (M + 1,)
        ``f(x with the k most relevant superpixels removed) / f(x)``; ``scores[0] = 1``.
    segments : int ndarray (H, W)
        The superpixels, labelled ``0 .. M-1``.
    target : int or Target
    n_queries : int
    params : dict
    """

    fractions: np.ndarray
    scores: np.ndarray
    segments: np.ndarray
    target: object
    n_queries: int
    params: dict = field(default_factory=dict)

    @property
    def aoc(self) -> float:
        """Area over the curve, ``1 - trapz(scores, fractions)`` (higher is better)."""
        return 1.0 - trapezoid(self.scores, self.fractions)

    def quantus_aoc(self) -> float:
        """Quantus 0.6's number from this curve: ``M - trapz(scores[1:], dx=1)`` (segments units)."""
        return float(len(self.scores) - 1) - trapezoid(self.scores[1:])


def segment_ranks(attribution: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Rank ``(H, W)`` of each pixel's superpixel in decreasing mean attribution (ties: lower label first)."""
    flat = segments.ravel()
    n = int(flat.max()) + 1
    means = np.bincount(flat, weights=attribution.ravel(), minlength=n) / np.maximum(np.bincount(flat, minlength=n), 1)
    order = np.argsort(-means, kind="stable")
    rank_of = np.empty(n, dtype=np.int64)
    rank_of[order] = np.arange(n)
    return rank_of[segments]


def irof(model: object, x: np.ndarray, attribution: object, target: object = None, *,
         segmentation: object = "slic", baseline: object = "mean", random_state: object = 0,
         progress: bool | None = None) -> IrofCurve:
    """IROF (Rieger & Hansen 2020): remove superpixels in decreasing mean attribution.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    x : ndarray
        One sample in the adapter's layout.
    attribution : Explanation or ndarray (H, W)
    target : int or perturbx.targets target, optional
        Default: the Explanation's target, else the top class.
    segmentation : str, callable or int ndarray (H, W), default "slic"
        Any ``segmentation=`` of :mod:`perturbx.segmentation`.
    baseline : baseline spec, default "mean"
        What removed superpixels become: the unperturbed image's per-channel mean by default
        (the paper's mean value), fixed for the whole curve.
    random_state : int, Generator or None, default 0
        Only used by a "noise" baseline.
    progress : bool or None

    Returns
    -------
    IrofCurve
        ``curve.aoc`` is IROF.

    Notes
    -----
    Queries: ``M + 1`` for ``M`` superpixels. The score must be positive at ``x`` (use
    probabilities, ``Torch(..., output="probs")``, as the paper).
    """
    owner = "irof"
    spec = check_segmentation(segmentation, owner)
    adapter, x, amap, target, ref = prepare(model, x, attribution, target, owner, need_reference=True)
    if not ref[0] > 0:
        raise ValueError(f"{owner} divides by the target's score at x, which is {ref[0]:.6g}; it needs a positive "
                         f"score (class probabilities: Torch(..., output='probs')).")
    before = adapter.n_queries
    segments = compute_segments(spec, x, adapter.layout, owner)
    n_segments = int(segments.max()) + 1
    hi = np.arange(1, n_segments + 1)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    base = resolve_baseline(check_baseline(baseline, owner), x, adapter.layout, rng)
    sampler = RankSampler(segment_ranks(amap, segments), np.zeros_like(hi), hi, remove=True)
    scores = score_perturbations(adapter, x, base, target, sampler, owner, progress=progress)[:, 0]
    curve = np.concatenate([[1.0], scores / ref[0]])
    return IrofCurve(np.arange(n_segments + 1) / n_segments, curve, segments, target_label(target),
                     adapter.n_queries - before + 1, {"baseline": baseline if isinstance(baseline, (str, float, int))
                                                      else type(baseline).__name__})
