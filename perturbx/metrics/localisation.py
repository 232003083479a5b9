"""Does the map point at the object? Pointing game and energy-based pointing.

Both compare one attribution map ``(H, W)`` with a ground-truth mask ``(H, W)`` of the
object that decides the class; neither queries the model. A mask with no object pixel
gives NaN (nothing to point at), never a hit. :mod:`perturbx.metrics.ranking` has the
rank-based localisation metrics and :mod:`perturbx.metrics.focus` the mosaic test.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.ndimage import distance_transform_edt

from ._common import as_map, as_mask

__all__ = ["energy_pointing", "pointing_game"]


def pointing_game(attribution: object, mask: object, *, tolerance: float = 15.0, ties: str = "share") -> float:
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
    ties : {"share", "first"}, default "share"
        How a maximum shared by several pixels (a flat peak: occlusion windows,
        superpixel methods) scores. ``"share"``: the share of the tied maxima that hit,
        so a peak that straddles the object's edge scores its overlap. ``"first"``: the
        first tied maximum in raster order decides, the rule of earlier perturbx versions,
        which at zero tolerance scores such maps by where their plateau happens to start
        (a bias against them).

    Returns
    -------
    float
        1.0 for a hit and 0.0 for a miss when the maximum is unique; with ties and
        ``ties="share"``, the share in [0, 1]. NaN when the mask has no object pixel: there
        is nothing to point at (Quantus 0.6 scores that case as a hit).
    """
    amap, _ = as_map(attribution, None, "pointing_game")
    m = as_mask(mask, amap.shape, "pointing_game")
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
            or not np.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"The 'tolerance' argument of pointing_game must be a real number >= 0 "
                         f"(pixels). Got {tolerance!r}.")
    if ties not in ("share", "first"):
        raise ValueError(f"The 'ties' argument of pointing_game must be 'share' or 'first'. Got {ties!r}.")
    if not m.any():
        return float("nan")
    near = distance_transform_edt(~m) <= tolerance
    if ties == "first":
        return float(near.ravel()[int(np.argmax(amap))])
    return float(near[amap == amap.max()].mean())


def energy_pointing(attribution: object, mask: object, *, weighted: bool = False) -> float:
    """Energy-based pointing (Wang et al. 2020, Score-CAM): share of positive attribution on the object.

    ``sum(max(a, 0) on the mask) / sum(max(a, 0))``, in [0, 1]; this is also the attribution
    localisation of Kohlbrenner et al. (2020).

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
    mask : ndarray (H, W) of bool
    weighted : bool, default False
        Multiply by ``H * W / |mask|`` (Kohlbrenner et al.'s size-weighted variant): a map
        that spreads its relevance uniformly scores 1 whatever the object's size, and a
        map entirely on the object scores ``H * W / |mask|``. Quantus 0.6 instead
        multiplies by a ratio whose denominator is the size of the *batch* from its third
        image on, so its number depends on the batch.

    Returns
    -------
    float
        NaN when the map has no positive value (nothing to point with) or the mask no
        object pixel (nothing to point at).
    """
    amap, _ = as_map(attribution, None, "energy_pointing")
    m = as_mask(mask, amap.shape, "energy_pointing")
    pos = np.maximum(amap, 0.0)
    total = float(pos.sum())
    if total <= 0 or not m.any():
        return float("nan")
    share = float(pos[m].sum() / total)
    return share * m.size / float(m.sum()) if weighted else share
