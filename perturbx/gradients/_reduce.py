"""Channel reduction: per-channel attributions ``(T, *sample_shape)`` to maps ``(T, H, W)``."""

from __future__ import annotations

import numpy as np

from perturbx._utils import Layout

#: name -> what it does to the channel values of one pixel
REDUCTIONS = {
    "sum": "sum over channels (signed; Captum's visualisation sums channels too)",
    "abs_sum": "sum of absolute values over channels",
    "max_abs": "largest absolute value over channels (Simonyan et al. 2014)",
    "l2": "Euclidean norm over channels",
    "mean": "mean over channels (signed)",
}


def reduce_channels(raw: np.ndarray, layout: Layout, reduction: str) -> np.ndarray:
    """Reduce the channel axis of ``raw``.

    Parameters
    ----------
    raw : ndarray, shape (T, *sample_shape)
        Per-channel attributions in the model's layout.
    layout : Layout
        Layout of one sample; for ``"HW"`` there is no channel axis and only the
        sign-dropping reductions (``abs_sum``, ``max_abs``, ``l2``) change anything.
    reduction : one of :data:`REDUCTIONS`

    Returns
    -------
    ndarray, shape (T, H, W)
    """
    if layout.name == "HW":
        return np.abs(raw) if reduction in ("abs_sum", "max_abs", "l2") else raw
    axis = 1 + layout.name.index("C")
    if reduction == "sum":
        return raw.sum(axis=axis)
    if reduction == "abs_sum":
        return np.abs(raw).sum(axis=axis)
    if reduction == "max_abs":
        return np.abs(raw).max(axis=axis)
    if reduction == "l2":
        return np.sqrt(np.square(raw).sum(axis=axis))
    if reduction == "mean":
        return raw.mean(axis=axis)
    raise ValueError(f"Unknown reduction {reduction!r}; expected one of {tuple(REDUCTIONS)}.")
