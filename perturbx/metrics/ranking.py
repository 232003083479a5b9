"""Localisation by ranking: do the map's highest pixels fall on the object?

Each compares one map ``(H, W)`` with a ground-truth mask ``(H, W)`` and queries no model:

- :func:`relevance_rank_accuracy` (Arras, Osman & Samek 2022): the share of the ``K``
  highest pixels that lie on the object, ``K = |mask|``;
- :func:`top_k_intersection` (Theiner, Müller-Budack & Ewerth 2022): the share of the
  ``k`` highest pixels on the object, for a fixed ``k``;
- :func:`localisation_auc` (Fawcett 2006): the ROC AUC of the map as a classifier of
  object pixels (1: every object pixel above every background pixel; 0.5: chance).

Ties in the ranking keep raster order (a stable sort); a mask with no object pixel gives
NaN, and so does, for the AUC, a mask with no background pixel.
"""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_int

from ._common import as_map, as_mask

__all__ = ["localisation_auc", "relevance_rank_accuracy", "top_k_intersection"]


def _inputs(attribution: object, mask: object, owner: str) -> tuple[np.ndarray, np.ndarray]:
    amap, _ = as_map(attribution, None, owner)
    return amap.ravel(), as_mask(mask, amap.shape, owner).ravel()


def relevance_rank_accuracy(attribution: object, mask: object) -> float:
    """Share of the ``|mask|`` highest-attributed pixels that lie on the object (higher is better).

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool

    Returns
    -------
    float in [0, 1], NaN for an empty mask.
    """
    a, m = _inputs(attribution, mask, "relevance_rank_accuracy")
    k = int(m.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-a, kind="stable")[:k]
    return float(m[top].mean())


def top_k_intersection(attribution: object, mask: object, *, k: int | None = None,
                       concept_influence: bool = False) -> float:
    """Share of the ``k`` highest-attributed pixels that lie on the object (higher is better).

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool
    k : int, optional
        Pixels counted; default 2 % of the image (``round(0.02 * H * W)``, at least 1: the
        paper's 1000 of a 224 x 224 image). At most ``H * W``.
    concept_influence : bool, default False
        Divide by the object's share of the image (``|mask| / (H * W)``), so that chance
        scores 1.

    Returns
    -------
    float, NaN for an empty mask.
    """
    owner = "top_k_intersection"
    a, m = _inputs(attribution, mask, owner)
    k = max(1, round(0.02 * a.size)) if k is None else check_int(k, "k", owner)
    if k > a.size:
        raise ValueError(f"The 'k' argument of {owner} is {k} but the map has only {a.size} pixels; use k <= {a.size}.")
    if not m.any():
        return float("nan")
    score = float(m[np.argsort(-a, kind="stable")[:k]].mean())
    return score * a.size / float(m.sum()) if concept_influence else score


def localisation_auc(attribution: object, mask: object) -> float:
    """ROC AUC of the attribution as a score separating object pixels from the rest (higher is better).

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool

    Returns
    -------
    float in [0, 1] (0.5 is chance; tied values count half), NaN when the mask is empty or full.
    """
    from sklearn.metrics import roc_auc_score

    a, m = _inputs(attribution, mask, "localisation_auc")
    if m.all() or not m.any():
        return float("nan")
    return float(roc_auc_score(m, a))
