"""Sufficiency (Dasgupta, Frost & Moshkovitz 2022): do similar explanations go with equal predictions?

Computed over a *set* of samples: for each sample, among the other samples whose maps lie
within ``threshold`` of its own (distances scaled by the largest distance in the set),
the share that the model assigns the same top class. A map that carries what the model
decides on gives high sufficiency (higher is better). Quantus 0.6's ``Sufficiency``
computes the same number over each *batch* it is given; here the set is explicit.
"""

from __future__ import annotations

import numpy as np

from perturbx import engine
from perturbx._utils import check_float
from perturbx.adapters import as_adapter

__all__ = ["sufficiency"]


def sufficiency(model: object, xs: np.ndarray, attributions: object, *, threshold: float = 0.6,
                metric: str = "seuclidean") -> np.ndarray:
    """Per sample, the share of the samples with a nearby map that get the same predicted class.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        A classifier; ``xs`` are scored in batches through its adapter.
    xs : ndarray (N, *sample_shape)
        The samples, in the adapter's layout.
    attributions : ndarray (N, H, W) or list of Explanations
        One map per sample.
    threshold : float in [0, 1], default 0.6
        Two maps are near when their distance is at most ``threshold`` times the largest
        distance between two maps of the set.
    metric : str, default "seuclidean"
        Any metric of :func:`scipy.spatial.distance.cdist` (standardised Euclidean by
        default, as Quantus).

    Returns
    -------
    ndarray (N,)
        In [0, 1]; 0 for a sample with no near neighbour (as Quantus).
    """
    from scipy.spatial.distance import cdist

    owner = "sufficiency"
    threshold = check_float(threshold, "threshold", owner, low=0.0, high=1.0)
    adapter = as_adapter(model)
    xs = np.asarray(xs)
    maps = np.stack([np.asarray(getattr(a, "attributions", a), dtype=np.float64) for a in attributions])
    if maps.ndim != 3 or len(maps) != len(xs) or len(xs) < 2:
        raise ValueError(f"The 'attributions' argument of {owner} must hold one map (H, W) per sample of 'xs' "
                         f"(at least two samples). Got maps of shape {maps.shape} for {len(xs)} samples.")
    dist = cdist(maps.reshape(len(maps), -1), maps.reshape(len(maps), -1), metric)
    top = float(np.abs(dist).max())
    near = (dist / top if top > 0 else dist) <= threshold
    np.fill_diagonal(near, False)
    classes = engine.predict_in_batches(adapter, adapter.backend.asarray(
        np.stack([adapter.check_sample(x) for x in xs]), adapter.dtype)).argmax(axis=1)
    same = classes[None, :] == classes[:, None]
    counts = near.sum(axis=1)
    return np.where(counts > 0, (near & same).sum(axis=1) / np.maximum(counts, 1), 0.0)
