"""Seeded synthetic image-classification data with ground-truth object masks.

The built-in data of the library: every image shows one object whose *shape*
decides the class, on a cluttered background (a smooth colour gradient plus a
low-amplitude noise texture) with a few small distractors. Because the pixels of
the object are known, explanations can be scored against ground truth (e.g. the
"pointing game": does the most important pixel lie on the object?).

This module depends on numpy and scikit-image only; it never imports torch.

Examples
--------
>>> from perturbx.datasets import make_shapes
>>> ds = make_shapes(8, random_state=0)
>>> ds.images.shape, ds.labels.shape, ds.masks.shape
((8, 3, 64, 64), (8,), (8, 64, 64))
>>> image, label, mask = ds[0]
>>> ds.class_names[label] in ds.class_names
True
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from skimage.draw import disk, line, polygon
from skimage.filters import gaussian

__all__ = ["CLASS_NAMES", "ShapesDataset", "make_shapes"]

#: Names of the classes, indexed by label.
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

_CIRCLE, _SQUARE, _TRIANGLE, _CROSS = range(4)

# Sizes below are in pixels at the reference image size of 64 and are scaled
# linearly with ``size``.
_REF_SIZE = 64
_OBJECT_SIZE = (14.0, 26.0)  # object "diameter" range
_BLOB_RADIUS = (1.5, 3.0)  # distractor blob radius range
_LINE_LENGTH = (5.0, 9.0)  # distractor line segment length range
_N_DISTRACTORS = (3, 6)  # inclusive range of the number of distractors
_MIN_CONTRAST = 0.45  # min. Euclidean RGB distance object colour <-> background


@dataclass(frozen=True, eq=False)
class ShapesDataset:
    """A set of synthetic shape images with labels and object masks.

    Attributes
    ----------
    images : numpy.ndarray
        Shape ``(n, 3, size, size)``, dtype float32, values in ``[0, 1]``
        (RGB, channels-first / CHW layout).
    labels : numpy.ndarray
        Shape ``(n,)``, dtype int64, values in ``range(len(class_names))``.
    masks : numpy.ndarray
        Shape ``(n, size, size)``, dtype bool; ``True`` on the pixels of the
        object that decides the class (distractors are not included).
    class_names : tuple of str
        Name of each class, indexed by label.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        """Number of images ``n``."""
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64, np.ndarray]:
        """Return ``(image, label, mask)`` of item ``i``.

        Parameters
        ----------
        i : int
            Index (negative values count from the end, as for sequences).

        Returns
        -------
        image : numpy.ndarray
            Shape ``(3, size, size)``, float32 in ``[0, 1]`` (a view).
        label : numpy.int64
            Class index.
        mask : numpy.ndarray
            Shape ``(size, size)``, bool (a view).
        """
        return self.images[i], self.labels[i], self.masks[i]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}; got {value!r} "
            f"of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return int(value)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour gradient plus a low-amplitude noise texture.

    Returns an array of shape ``(3, size, size)``, float64 in ``[0, 1]``.
    """
    c0 = rng.uniform(0.15, 0.85, size=3)
    c1 = rng.uniform(0.15, 0.85, size=3)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (t.max() - t.min())
    bg = c0[:, None, None] + (c1 - c0)[:, None, None] * t[None]
    scale = size / _REF_SIZE
    fine = gaussian(rng.standard_normal((3, size, size)), sigma=0.8 * scale,
                    channel_axis=0)
    coarse = gaussian(rng.standard_normal((3, size, size)), sigma=3.0 * scale,
                      channel_axis=0)
    fine /= fine.std() + 1e-12
    coarse /= coarse.std() + 1e-12
    bg += 0.025 * fine + 0.04 * coarse
    return np.clip(bg, 0.0, 1.0)


def _unit_vertices(cls: int) -> np.ndarray:
    """Polygon vertices ``(k, 2)`` as (x, y) for a shape of "diameter" 2."""
    if cls == _SQUARE:
        h = 0.85  # side 1.7: area close to the circle's
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if cls == _TRIANGLE:
        ang = np.deg2rad([-90.0, 30.0, 150.0])
        r = 1.25  # equilateral, circumradius 1.25
        return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)
    if cls == _CROSS:
        a, w = 1.05, 0.36  # arm half-length, bar half-thickness
        return np.array([
            [-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
            [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w],
        ])
    raise ValueError(f"no polygon for class {cls}")  # pragma: no cover


def _draw_object(
    rng: np.random.Generator, cls: int, size: int
) -> tuple[np.ndarray, float, float, float]:
    """Draw the class object at a random size, rotation and position.

    Returns ``(mask, row, col, extent)``: the ``(size, size)`` bool mask, the
    centre and the radius of a circle that contains the whole object.
    """
    scale = size / _REF_SIZE
    radius = 0.5 * scale * rng.uniform(*_OBJECT_SIZE)
    if cls == _CIRCLE:
        verts = None
        extent = radius
    else:
        period = {_SQUARE: 90.0, _TRIANGLE: 120.0, _CROSS: 90.0}[cls]
        theta = np.deg2rad(rng.uniform(0.0, period))
        rot = np.array([[np.cos(theta), -np.sin(theta)],
                        [np.sin(theta), np.cos(theta)]])
        verts = radius * _unit_vertices(cls) @ rot.T
        extent = float(np.sqrt((verts**2).sum(axis=1)).max())
    # Keep the whole object (plus one pixel) inside the image.
    lo, hi = extent + 1.0, size - 2.0 - extent
    row, col = rng.uniform(lo, hi, size=2)
    mask = np.zeros((size, size), dtype=bool)
    if verts is None:
        rr, cc = disk((row, col), radius, shape=(size, size))
    else:
        rr, cc = polygon(row + verts[:, 1], col + verts[:, 0], shape=(size, size))
    mask[rr, cc] = True
    return mask, row, col, extent


def _object_colour(rng: np.random.Generator, bg_colour: np.ndarray) -> np.ndarray:
    """Random colour at least ``_MIN_CONTRAST`` away from ``bg_colour``."""
    best, best_d = None, -1.0
    for _ in range(64):
        c = rng.uniform(0.0, 1.0, size=3)
        d = float(np.linalg.norm(c - bg_colour))
        if d >= _MIN_CONTRAST:
            return c
        if d > best_d:
            best, best_d = c, d
    return best  # pragma: no cover - practically unreachable


def _draw_distractors(
    rng: np.random.Generator,
    img: np.ndarray,
    row: float,
    col: float,
    keep_out: float,
) -> None:
    """Draw a few small blobs / line segments away from the object, in place."""
    size = img.shape[-1]
    scale = size / _REF_SIZE
    n = int(rng.integers(_N_DISTRACTORS[0], _N_DISTRACTORS[1] + 1))
    for _ in range(n):
        colour = rng.uniform(0.0, 1.0, size=3)
        is_blob = rng.random() < 0.5
        for _attempt in range(30):
            if is_blob:
                r = scale * rng.uniform(*_BLOB_RADIUS)
                cy, cx = rng.uniform(r, size - 1 - r, size=2)
                rr, cc = disk((cy, cx), r, shape=(size, size))
            else:
                length = scale * rng.uniform(*_LINE_LENGTH)
                ang = rng.uniform(0.0, np.pi)
                dy, dx = 0.5 * length * np.sin(ang), 0.5 * length * np.cos(ang)
                cy = rng.uniform(abs(dy), size - 1 - abs(dy))
                cx = rng.uniform(abs(dx), size - 1 - abs(dx))
                rr, cc = line(round(cy - dy), round(cx - dx),
                              round(cy + dy), round(cx + dx))
            if rr.size == 0:
                continue
            dist = np.hypot(rr - row, cc - col).min()
            if dist > keep_out:
                img[:, rr, cc] = colour[:, None]
                break


def make_shapes(
    n: int,
    *,
    size: int = 64,
    random_state: int | np.random.Generator | None = None,
) -> ShapesDataset:
    """Generate ``n`` synthetic shape images with labels and object masks.

    Each image holds exactly one object -- a circle, square, triangle or
    cross -- whose shape decides the class. The object has a random size
    (a "diameter" of roughly 14-26 pixels at ``size=64``, scaled linearly with
    ``size``), a random rotation, a random position fully inside the image and
    a random colour that contrasts with the background beneath it. The
    background is a smooth random colour gradient with a low-amplitude noise
    texture, and 3-6 small distractors (blobs or short line segments of random
    colours, smaller than the object) are drawn away from the object, never
    touching it.

    Labels are drawn independently and uniformly, and images are generated one
    after another from the same random stream, so ``make_shapes(m, ...)`` with
    the same integer seed starts with the ``n < m`` items of
    ``make_shapes(n, ...)``.

    Parameters
    ----------
    n : int
        Number of images, ``n >= 1``.
    size : int, default 64
        Height and width of the square images in pixels, ``size >= 32``.
    random_state : int, numpy.random.Generator or None, default None
        Seed or generator (as accepted by :func:`numpy.random.default_rng`).
        The same integer seed always gives identical data; ``None`` draws
        fresh entropy. A generator passed in is advanced.

    Returns
    -------
    ShapesDataset
        ``images`` of shape ``(n, 3, size, size)`` float32 in ``[0, 1]``,
        ``labels`` of shape ``(n,)`` int64, ``masks`` of shape
        ``(n, size, size)`` bool and ``class_names``.

    Raises
    ------
    ValueError
        If ``n < 1`` or ``size < 32`` or either is not an integer.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 32)
    rng = np.random.default_rng(random_state)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for i in range(n):
        cls = int(rng.integers(len(CLASS_NAMES)))
        img = _background(rng, size)
        mask, row, col, extent = _draw_object(rng, cls, size)
        _draw_distractors(rng, img, row, col, keep_out=extent + 2.0 * size / _REF_SIZE)
        bg_colour = img[:, mask].mean(axis=1)
        img[:, mask] = _object_colour(rng, bg_colour)[:, None]
        images[i] = img
        labels[i] = cls
        masks[i] = mask
    return ShapesDataset(images=images, labels=labels, masks=masks,
                         class_names=CLASS_NAMES)
