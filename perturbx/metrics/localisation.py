"""Does the map point at the object? Pointing game and energy-based pointing.

Both compare one attribution map ``(H, W)`` with a ground-truth mask ``(H, W)`` of the
object that decides the class; neither queries the model.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.ndimage import distance_transform_edt

from ._common import as_map, as_mask

__all__ = ["energy_pointing", "pointing_game"]


def pointing_game(attribution: object, mask: object, *, tolerance: float = 15.0) -> bool:
    """Pointing game (Zhang et al. 2016): is the map's maximum on the object?

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool
        Ground-truth object pixels.
    tolerance : float, default 15.0
        A hit is a maximum within this many pixels (Euclidean distance to the nearest
        object pixel) of the object, the paper's 15-pixel tolerance; 0 demands the
        maximum to lie on the object itself.

    Returns
    -------
    bool
        True for a hit. With several equal maxima the first in raster order counts.
        A mask with no object pixel is never hit.
    """
    amap, _ = as_map(attribution, None, "pointing_game")
    m = as_mask(mask, amap.shape, "pointing_game")
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
            or not np.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"The 'tolerance' argument of pointing_game must be a real number >= 0 "
                         f"(pixels). Got {tolerance!r}.")
    if not m.any():
        return False
    peak = np.unravel_index(int(np.argmax(amap)), amap.shape)
    return bool(distance_transform_edt(~m)[peak] <= tolerance)


def energy_pointing(attribution: object, mask: object) -> float:
    """Energy-based pointing (Wang et al. 2020, Score-CAM): share of positive attribution on the object.

    ``sum(max(a, 0) on the mask) / sum(max(a, 0))``, in [0, 1].

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool

    Returns
    -------
    float
        NaN when the map has no positive value (nothing to point with).
    """
    amap, _ = as_map(attribution, None, "energy_pointing")
    m = as_mask(mask, amap.shape, "energy_pointing")
    pos = np.maximum(amap, 0.0)
    total = float(pos.sum())
    return float(pos[m].sum() / total) if total > 0 else float("nan")
