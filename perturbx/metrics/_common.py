"""Argument handling shared by the metrics: attribution maps, masks and targets."""

from __future__ import annotations

import contextlib

import numpy as np

from perturbx.explanation import Explanation


def as_map(attribution: object, spatial: tuple[int, int] | None, owner: str) -> tuple[np.ndarray, int | None]:
    """One attribution map ``(H, W)`` as float64, and the target it explains when known.

    Parameters
    ----------
    attribution : Explanation or array-like (H, W)
        An :class:`~perturbx.Explanation` of one target, or a bare map.
    spatial : (H, W) or None
        Expected size of the map (the sample's spatial size); None skips the check.
    owner : str
        Name of the calling metric, for error messages.
    """
    target = None
    if isinstance(attribution, Explanation):
        if attribution.attributions.ndim != 2:
            raise ValueError(f"{owner} scores one map at a time, but the Explanation holds "
                             f"{len(attribution.targets)} targets (attributions of shape "
                             f"{attribution.attributions.shape}); pass e.attributions[i] and target=e.targets[i].")
        target = int(attribution.targets[0])
        attribution = attribution.attributions
    try:
        a = np.asarray(attribution, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The 'attribution' argument of {owner} must be an Explanation or a numeric "
                        f"array (H, W). Got {type(attribution).__name__}.") from exc
    if a.ndim != 2:
        raise ValueError(f"The 'attribution' argument of {owner} must be one map of shape (H, W). "
                         f"Got shape {a.shape}.")
    if spatial is not None and a.shape != tuple(spatial):
        raise ValueError(f"The 'attribution' argument of {owner} has shape {a.shape} but the sample's "
                         f"spatial size is {tuple(spatial)}; the map must cover the sample pixel for pixel.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"The 'attribution' argument of {owner} contains NaN or infinite values.")
    return a, target


def as_mask(mask: object, shape: tuple[int, int], owner: str) -> np.ndarray:
    """A ground-truth mask ``(H, W)`` as bool, checked against the map's shape."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"The 'mask' argument of {owner} has shape {m.shape} but the attribution map "
                         f"has shape {tuple(shape)}; they must match.")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"The 'mask' argument of {owner} must be boolean (or 0/1). Got values other "
                             f"than 0 and 1 (dtype {m.dtype}).")
        m = m.astype(bool)
    return m


def reference_scores(adapter, x: np.ndarray) -> np.ndarray:
    """The model's scores ``(n_classes,)`` for the unperturbed sample (one query)."""
    return adapter.predict_batch(adapter.backend.asarray(x[None], adapter.dtype))[0]


def resolve_target(target: object, from_map: int | None, scores: np.ndarray | None, owner: str) -> int:
    """The class a metric scores: ``target``, else the explanation's, else the top class of ``scores``.

    ``scores`` (the unperturbed scores) may be None when ``target`` or ``from_map`` is
    given; the range is then checked when the model answers (:func:`target_in_range`).
    """
    if target is None:
        return int(np.argmax(scores)) if from_map is None else from_map
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise TypeError(f"The 'target' argument of {owner} must be a non-negative int or None. Got {target!r}.")
    if scores is not None and int(target) >= len(scores):
        raise ValueError(f"The 'target' argument of {owner} is {target} but the model returns "
                         f"{len(scores)} classes; use a class index in [0, {len(scores) - 1}].")
    return int(target)


@contextlib.contextmanager
def target_in_range(target: int, owner: str):
    """Turn the engine's IndexError for a class the model does not return into a ValueError."""
    try:
        yield
    except IndexError as exc:
        if "out of bounds" not in str(exc):
            raise
        raise ValueError(f"The 'target' argument of {owner} is {target} but the model returns fewer classes "
                         f"({exc}); use a class index the model returns.") from exc
