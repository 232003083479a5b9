"""Small PNG images of the HTML report: each map over its greyscale image, and each input image.

A tile is drawn without a matplotlib figure (the colour map, then ``matplotlib.image.imsave``),
magnified by a whole factor with nearest-neighbour pixels so that a small image stays sharp,
the ground-truth object outlined in green one screen pixel wide.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from scipy.ndimage import binary_erosion

from perturbx.compare import Comparison

from .figures import ALPHA, CMAP

__all__ = ["TILE_PIXELS", "colourbar_css", "image_tile", "map_tile"]

#: A tile is magnified until its longer side has at least this many pixels
TILE_PIXELS = 128
_OUTLINE = np.array([0.1, 0.85, 0.1])


def _cmap():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("Comparison figures and reports need matplotlib: pip install 'perturbx[viz]'") from exc
    return matplotlib.colormaps[CMAP]


def _factor(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(TILE_PIXELS / max(shape[:2])))


def _magnify(arr: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(arr, k, axis=0), k, axis=1)


def _data_uri(rgb: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.clip(rgb, 0.0, 1.0), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _outlined(rgb: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    rgb = _magnify(rgb, k)
    if mask is not None and mask.any():
        big = _magnify(mask.astype(bool), k)
        edge = big & ~binary_erosion(big, border_value=0)
        rgb[edge] = _OUTLINE
    return rgb


def map_tile(comp: Comparison, method: str, i: int) -> str:
    """``method``'s map of image ``i`` as a PNG data URI.

    The map is coloured in :data:`~perturbx.report.figures.CMAP` from ``-max|a|`` to
    ``+max|a|`` and laid over the greyscale image with weight ``ALPHA``.
    """
    heat = np.asarray(comp.maps[method][i], dtype=np.float64)
    lim = comp.map_scale(method, i).max_abs or 1.0
    colour = _cmap()(np.clip((heat / lim + 1.0) / 2.0, 0.0, 1.0))[..., :3]
    img = comp.images[i]
    gray = img.mean(axis=-1) if img.ndim == 3 else img
    rgb = (1 - ALPHA) * gray[..., None] + ALPHA * colour
    mask = None if comp.ground_truth is None else comp.ground_truth[i]
    return _data_uri(_outlined(rgb, mask, _factor(heat.shape)))


def image_tile(comp: Comparison, i: int) -> str:
    """Image ``i`` as displayed (RGB or greyscale), the object outlined, as a PNG data URI."""
    img = np.asarray(comp.images[i], dtype=np.float64)
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
    mask = None if comp.ground_truth is None else comp.ground_truth[i]
    return _data_uri(_outlined(rgb, mask, _factor(rgb.shape)))


def colourbar_css(stops: int = 11) -> str:
    """A CSS ``linear-gradient`` of :data:`~perturbx.report.figures.CMAP` from -max|a| (left) to +max|a|."""
    cmap = _cmap()
    parts = []
    for t in np.linspace(0.0, 1.0, stops):
        r, g, b = (round(255 * c) for c in cmap(float(t))[:3])
        parts.append(f"rgb({r},{g},{b}) {100 * t:.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"
