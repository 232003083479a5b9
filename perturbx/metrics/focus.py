"""Focus (Arias-Duart, Parés, Garcia-Gasulla & Giménez-Ábalos 2022) on mosaics of images.

A mosaic tiles four images 2 x 2, two of the explained class and two of other classes.
A map that explains the class should put its positive relevance on the two quadrants
that hold it: focus is that share, in [0, 1] (0.5 for a map that spreads relevance
evenly over the mosaic; higher is better). No ground-truth mask is needed, only labels,
so :func:`make_mosaics` builds the test set from any labelled images, for example
``perturbx.datasets.make_shapes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perturbx._utils import check_int, check_random_state

from ._common import as_map

__all__ = ["Mosaics", "focus", "make_mosaics", "quadrant_masks"]


@dataclass
class Mosaics:
    """Mosaics of four images each.

    Attributes
    ----------
    images : ndarray (n, C, 2H, 2W)
    targets : int ndarray (n,)
        The class each mosaic is explained for.
    quadrants : bool ndarray (n, 4)
        Which quadrant (top-left, top-right, bottom-left, bottom-right) holds an image of
        the target class (two per mosaic).
    sources : int ndarray (n, 4)
        Index of the image placed in each quadrant.
    """

    images: np.ndarray
    targets: np.ndarray
    quadrants: np.ndarray
    sources: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        """Bool ``(n, 2H, 2W)``: the quadrants of the target class (``ground_truth=`` for compare's focus)."""
        quads = quadrant_masks(self.images.shape[2:])
        return np.stack([quads[q].any(axis=0) for q in self.quadrants])


def make_mosaics(images: np.ndarray, labels: np.ndarray, n_mosaics: int, *, random_state: object = 0) -> Mosaics:
    """``n_mosaics`` mosaics, each of two images of a random class and two of other classes, shuffled.

    Parameters
    ----------
    images : ndarray (N, C, H, W)
    labels : int ndarray (N,)
    n_mosaics : int
    random_state : int, Generator or None, default 0

    Returns
    -------
    Mosaics
    """
    owner = "make_mosaics"
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"The 'images' and 'labels' arguments of {owner} must be (N, C, H, W) and (N,). Got "
                         f"shapes {images.shape} and {labels.shape}.")
    n = check_int(n_mosaics, "n_mosaics", owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2 and (labels != c).sum() >= 2]
    if not classes:
        raise ValueError(f"{owner} needs a class with at least two images and two images of other classes. Got "
                         f"labels with counts {dict(zip(*np.unique(labels, return_counts=True), strict=True))}.")
    _, c, h, w = images.shape
    out = np.empty((n, c, 2 * h, 2 * w), dtype=images.dtype)
    targets = np.empty(n, dtype=np.int64)
    quadrants = np.zeros((n, 4), dtype=bool)
    sources = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        cls = classes[int(rng.integers(len(classes)))]
        same = rng.choice(np.flatnonzero(labels == cls), 2, replace=False)
        other = rng.choice(np.flatnonzero(labels != cls), 2, replace=False)
        places = rng.permutation(4)
        sources[i, places] = np.concatenate([same, other])
        quadrants[i, places[:2]] = True
        targets[i] = int(cls)
        for q in range(4):
            r, s = divmod(q, 2)
            out[i, :, r * h:(r + 1) * h, s * w:(s + 1) * w] = images[sources[i, q]]
    return Mosaics(out, targets, quadrants, sources)


def quadrant_masks(shape: tuple[int, int]) -> np.ndarray:
    """Bool masks ``(4, H, W)`` of the quadrants (top-left, top-right, bottom-left, bottom-right); halves ``H // 2``."""
    h, w = shape
    masks = np.zeros((4, h, w), dtype=bool)
    hh, hw = h // 2, w // 2
    masks[0, :hh, :hw], masks[1, :hh, hw:], masks[2, hh:, :hw], masks[3, hh:, hw:] = True, True, True, True
    return masks


def focus(attribution: object, quadrants: object) -> float:
    """Share of the map's positive relevance on the quadrants that hold the explained class.

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)
        The map of a mosaic.
    quadrants : bool array-like (4,)
        Which quadrants (top-left, top-right, bottom-left, bottom-right) hold the class.

    Returns
    -------
    float in [0, 1] (higher is better); NaN when the map has no positive value.
    """
    amap, _ = as_map(attribution, None, "focus")
    q = np.asarray(quadrants)
    if q.shape != (4,) or not (q.dtype == bool or np.isin(q, (0, 1)).all()):
        raise ValueError(f"The 'quadrants' argument of focus must be 4 booleans (top-left, top-right, bottom-left, "
                         f"bottom-right). Got {quadrants!r}.")
    pos = np.maximum(amap, 0.0)
    total = float(pos.sum())
    if total <= 0:
        return float("nan")
    on = quadrant_masks(amap.shape)[q.astype(bool)].any(axis=0)
    return float(pos[on].sum() / total)
