"""Deletion and insertion curves (Petsiuk, Das & Saenko 2018, "RISE", section 4.1).

Deletion removes pixels from the input in decreasing order of attribution, ``step``
pixels at a time, replacing them by a substrate (zeros in the paper), and records the
model's score for the target after every step; a faithful map makes the score fall
fast (low area under the curve). Insertion starts from the substrate (a blurred copy
in the paper) and puts the input's pixels back in the same order; a faithful map makes
the score rise fast (high area).

The steps run through the same machinery as every perturbation method: a sampler
(:class:`~perturbx.metrics._perturb.RankSampler`) yields the steps in chunks of the
adapter's batch size, each chunk turns into keep-masks on the model's backend,
:class:`~perturbx.renderers.BlendRenderer` blends input and substrate, and a collector
keeps one score per step. Memory is one chunk of masks plus the curve.

``order="lerf"`` (least relevant first) and ``order="random"`` draw the control curves
beside the most-relevant-first one (Samek et al. 2017; Tomsett et al. 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from perturbx._utils import check_choice, check_int, check_random_state
from perturbx.adapters import as_adapter
from perturbx.baselines import check_baseline, resolve_baseline

from ._common import ORDERS, as_map, one_scalar, pixel_ranks, resolve_target, target_label, trapezoid
from ._perturb import RankSampler, score_perturbations

__all__ = ["Curve", "deletion", "insertion", "pixel_order"]

@dataclass
class Curve:
    """A deletion or insertion curve for one sample and one target.

    Attributes
    ----------
    kind : {"deletion", "insertion"}
    fractions : ndarray (S + 1,)
        Fraction of the pixels removed (deletion) or inserted (insertion) at each step,
        from 0 to 1.
    scores : ndarray (S + 1,)
        The target's scalar at each step, in the model's output units.
    target : int or Target
        The class index for a class target, else the bound :mod:`perturbx.targets` target.
    step : int
        Pixels removed or inserted per step.
    n_queries : int
        Model rows evaluated to draw the curve.
    params : dict
        The substrate and step used.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    target: object
    step: int
    n_queries: int
    params: dict = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """Area under the curve over the fraction axis [0, 1] (trapezoidal rule)."""
        return trapezoid(self.scores, self.fractions)


def pixel_order(attribution: np.ndarray) -> np.ndarray:
    """Rank of every pixel ``(H, W)`` in decreasing attribution (0 = most important).

    Ties keep raster order (a stable sort), so the order is deterministic.
    """
    return pixel_ranks(attribution, "morf")


def _curve(kind: str, model: object, x: np.ndarray, attribution: object, target: int | None, step: int | None,
           substrate: object, order: str, random_state: object, progress: bool | None) -> Curve:
    owner = kind
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    spatial = adapter.layout.spatial_shape(x.shape)
    amap, map_target = as_map(attribution, spatial, owner)
    step = spatial[1] if step is None else check_int(step, "step", owner)
    substrate = check_baseline(substrate, owner)
    order = check_choice(order, "order", owner, ORDERS)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    before = adapter.n_queries
    target, ref = resolve_target(adapter, x, target, map_target, owner)
    one_scalar(target, owner)
    base = resolve_baseline(substrate, x, adapter.layout, rng)
    n_pixels = amap.size
    n_steps = math.ceil(n_pixels / step)
    counts = np.minimum(np.arange(n_steps + 1) * step, n_pixels)
    first = 1 if kind == "deletion" and ref is not None else 0  # a deletion curve starts at the input
    sampler = RankSampler(pixel_ranks(amap, order, rng), np.zeros(n_steps + 1 - first, np.int64), counts[first:],
                          remove=kind == "deletion")
    scores = score_perturbations(adapter, x, base, target, sampler, owner, progress=progress)[:, 0]
    if first:
        scores = np.concatenate([[ref[0]], scores])
    params = {"step": step, "substrate": substrate if not isinstance(substrate, np.ndarray) else "array",
              "order": order}
    return Curve(kind, counts / n_pixels, scores, target_label(target), step, adapter.n_queries - before, params)


def deletion(model: object, x: np.ndarray, attribution: object, target: int | None = None, *,
             step: int | None = None, substrate: object = 0.0, order: str = "morf", random_state: object = None,
             progress: bool | None = None) -> Curve:
    """Deletion curve: remove pixels in decreasing order of attribution (lower AUC is better).

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        The model, as for an explainer. The curve uses its scores as they come (use
        ``Torch(..., output="probs")`` for the paper's probabilities).
    x : ndarray
        One sample in the adapter's layout, no batch axis.
    attribution : Explanation or ndarray (H, W)
        The map that orders the pixels; all channels of a pixel are removed together.
    target : int, optional
        Class whose score is recorded; default: the Explanation's target, else the
        model's top class for ``x``.
    step : int, optional
        Pixels removed per step; default the image width (one row's worth, as the
        paper's code). The curve has ``ceil(H * W / step) + 1`` points.
    substrate : float, str, array or callable, default 0.0
        What removed pixels become, any ``baseline=`` of :mod:`perturbx.baselines`
        ("blur", "mean", a number, an array).
    order : {"morf", "lerf", "random"}, default "morf"
        Most relevant first (the paper's deletion), least relevant first, or a random
        order (``random_state``) whatever the map. The last two are controls: a faithful
        map's MoRF curve falls faster than its random curve, and its LeRF curve slower.
        Ties keep raster order; all channels of a pixel are removed together.
    random_state : int, Generator or None
        Used by a "noise" substrate and by ``order="random"``.
    progress : bool or None

    Returns
    -------
    Curve
        ``curve.auc`` is the area under the curve, in score units.

    Notes
    -----
    Queries: ``ceil(H * W / step) + 1`` (the first point is the unperturbed input).
    With neither ``target`` nor an Explanation, the top class comes from that first point.
    """
    return _curve("deletion", model, x, attribution, target, step, substrate, order, random_state, progress)


def insertion(model: object, x: np.ndarray, attribution: object, target: int | None = None, *,
              step: int | None = None, substrate: object = "blur", order: str = "morf", random_state: object = None,
              progress: bool | None = None) -> Curve:
    """Insertion curve: start from the substrate, insert pixels in decreasing order (higher AUC is better).

    Parameters are those of :func:`deletion`; the substrate defaults to ``"blur"``
    (:class:`perturbx.baselines.Blur`, the paper's blurred canvas).

    Returns
    -------
    Curve

    Notes
    -----
    Queries: ``ceil(H * W / step) + 1``, every step from the bare substrate to the full
    input; one more to find the top class when neither ``target`` nor an Explanation
    says which class.
    """
    return _curve("insertion", model, x, attribution, target, step, substrate, order, random_state, progress)
