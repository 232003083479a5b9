"""Random logit test (Sixt, Granz & Landgraf 2020): does the map change with the class explained?

The sample is explained once for its target class and once for another class drawn at
random; a map that explains the class (rather than the image) should differ, so a low
similarity between the two maps is better. The layer randomisation tests are in
:mod:`perturbx.metrics.sanity` (:func:`~perturbx.metrics.model_randomization`, cascading
or independent).
"""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_random_state
from perturbx.adapters import as_adapter
from perturbx.targets import Class, check_scores

from ._common import as_map, reference_output

__all__ = ["random_logit", "ssim"]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps, with the data range of both together (as Quantus's ``ssim``)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.concatenate([a.ravel(), b.ravel()])
    data_range = float(both.max() - both.min())
    if data_range == 0:
        return 1.0
    return float(structural_similarity(a, b, data_range=data_range))


SIMILARITIES = {"ssim": ssim}


def random_logit(model: object, explainer: object, x: np.ndarray, target: int | None = None, *,
                 other: int | None = None, similarity: str = "ssim", random_state: object = 0,
                 reference: object = None) -> float:
    """Similarity between the map of the target class and that of a random other class (lower is better).

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        A classifier (its scores give the number of classes).
    explainer : object with ``explain(model, x, target)``
    x : ndarray
        One sample in the adapter's layout.
    target : int, optional
        Default: the reference explanation's class, else the top class.
    other : int, optional
        The other class; default one drawn uniformly from the classes other than ``target``.
    similarity : {"ssim"} or callable, default "ssim"
        ``f(map_target, map_other) -> float``; "ssim" is the structural similarity with the
        joint data range (Quantus's default).
    random_state : int, Generator or None, default 0
        Seed of the other class.
    reference : Explanation, optional
        The explanation of ``x`` for ``target`` if already computed.

    Returns
    -------
    float
        SSIM in [-1, 1]: 1 when the map ignores the class.
    """
    owner = "random_logit"
    if not hasattr(explainer, "explain"):
        raise TypeError(f"The 'explainer' argument of {owner} must have an explain(model, x, target) "
                        f"method. Got {type(explainer).__name__}.")
    sim = SIMILARITIES.get(similarity) if isinstance(similarity, str) else similarity
    if not callable(sim):
        raise ValueError(f"The 'similarity' argument of {owner} must be one of {sorted(SIMILARITIES)} or a "
                         f"callable f(a, b) -> float. Got {similarity!r}.")
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    n_classes = check_scores(reference_output(adapter, x), 1, adapter._model_name()).shape[1]
    e0 = reference if reference is not None else explainer.explain(adapter, x, target)
    a0, t0 = as_map(e0, adapter.layout.spatial_shape(x.shape), owner)
    label = int(target) if target is not None else int(t0.labels[0]) if isinstance(t0, Class) else int(t0)
    if n_classes < 2:
        raise ValueError(f"{owner} needs a model with at least two classes; it returns {n_classes}.")
    if other is None:
        rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
        others = np.delete(np.arange(n_classes), label)
        other = int(others[rng.integers(len(others))])
    elif isinstance(other, bool) or not isinstance(other, (int, np.integer)) or not 0 <= other < n_classes \
            or other == label:
        raise ValueError(f"The 'other' argument of {owner} must be a class index in [0, {n_classes - 1}] other "
                         f"than the target {label}. Got {other!r}.")
    a1, _ = as_map(explainer.explain(adapter, x, int(other)), a0.shape, owner)
    return float(sim(a0, a1))
