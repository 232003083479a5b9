"""Seeded synthetic image data with ground-truth object masks and boxes.

The built-in data of the library. :func:`make_shapes` (classification): every
image shows one object whose *shape* decides the class, on a cluttered
background (a smooth colour gradient plus a low-amplitude noise texture) with a
few small distractors. :func:`make_scenes` (detection and segmentation): the
same kind of image with several non-overlapping objects, each with its class,
mask and box. Because the pixels of the objects are known, explanations can be
scored against ground truth (e.g. the "pointing game": does the most important
pixel lie on the object?).

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
>>> from perturbx.datasets import make_scenes
>>> sc = make_scenes(4, n_objects=(2, 3), random_state=0)
>>> image, boxes, labels, object_masks = sc[0]
>>> boxes.shape[1], sc.segmentation.shape
(4, (4, 64, 64))
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.draw import disk, line, polygon
from skimage.filters import gaussian
from skimage.morphology import isotropic_dilation

__all__ = ["CLASS_NAMES", "TEXTURES", "SceneDataset", "ShapesDataset", "make_scenes", "make_shapes", "mask_boxes"]

#: Names of the classes, indexed by label.
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

_CIRCLE, _SQUARE, _TRIANGLE, _CROSS = range(4)

# Sizes below are in pixels at the reference image size of 64 and are scaled
# linearly with ``size``.
_REF_SIZE = 64
_OBJECT_SIZE = (14.0, 26.0)  # object "diameter" range
_OBJECT_SIZE_LIMITS = (4.0, 40.0)  # make_shapes(object_size=...): smallest and largest allowed diameter
#: make_shapes(texture=...): the backgrounds it can draw
TEXTURES = ("smooth", "strong")
_N_GRATINGS = (2, 3)  # strong texture: inclusive range of the number of gratings
_GRATING_WAVELENGTH = (3.0, 9.0)  # strong texture: wavelength range of a grating, pixels at size 64
_GRATING_AMPLITUDE = (0.08, 0.16)  # strong texture: amplitude range per grating and colour channel
_SPECKLE_AMPLITUDE = 0.06  # strong texture: standard deviation of the per-pixel colour speckle
_BLOB_RADIUS = (1.5, 3.0)  # distractor blob radius range
_LINE_LENGTH = (5.0, 9.0)  # distractor line segment length range
_N_DISTRACTORS = (3, 6)  # inclusive range of the number of distractors
_MIN_CONTRAST = 0.45  # min. Euclidean RGB distance object colour <-> background
_OBJECT_GAP = 2.0  # scenes: object pixels lie more than this far from another object's
_MAX_OBJECTS = 3  # scenes: most objects per image (objects scale with the image, so at any size)
_SHAPE_TRIES, _POSITION_TRIES = 40, 25  # scenes: shape draws per object, positions per shape


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
    boxes : numpy.ndarray
        Property: shape ``(n, 4)``, float32, the box of each object (the
        tight hull of its mask) as ``(x1, y1, x2, y2)`` in pixels, ``x`` the
        column and ``y`` the row; ``x2``/``y2`` are the last pixel + 1.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def boxes(self) -> np.ndarray:
        """Tight box of each object's mask, ``(n, 4)`` float32 ``(x1, y1, x2, y2)`` in pixels."""
        return mask_boxes(self.masks)

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


@dataclass(frozen=True, eq=False)
class SceneDataset:
    """A set of synthetic images with several objects each: boxes, labels, masks.

    Attributes
    ----------
    images : numpy.ndarray
        Shape ``(n, 3, size, size)``, dtype float32, values in ``[0, 1]``
        (RGB, channels-first / CHW layout).
    boxes : list of numpy.ndarray
        ``n`` arrays of shape ``(k_i, 4)``, float32: the box of each object of
        image ``i`` as ``(x1, y1, x2, y2)`` in pixels, ``x`` the column and
        ``y`` the row, ``x2``/``y2`` the last pixel + 1 (the tight hull of the
        object's mask, so ``x2 - x1`` is its width in pixels).
    labels : list of numpy.ndarray
        ``n`` arrays of shape ``(k_i,)``, int64, class of each object, values
        in ``range(len(class_names))``.
    object_masks : list of numpy.ndarray
        ``n`` arrays of shape ``(k_i, size, size)``, bool; ``True`` on the
        pixels of each object (distractors are not included). The masks of
        one image are disjoint.
    class_names : tuple of str
        Name of each class, indexed by label.
    segmentation : numpy.ndarray
        Property: shape ``(n, size, size)``, int64 label map, 0 on the
        background (distractors included) and ``1 + label`` on each object.
    """

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    object_masks: list[np.ndarray]
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        """Number of images ``n``."""
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(image, boxes, labels, object_masks)`` of item ``i``.

        Parameters
        ----------
        i : int
            Index (negative values count from the end, as for sequences).

        Returns
        -------
        image : numpy.ndarray
            Shape ``(3, size, size)``, float32 in ``[0, 1]`` (a view).
        boxes : numpy.ndarray
            Shape ``(k, 4)``, float32 ``(x1, y1, x2, y2)`` in pixels.
        labels : numpy.ndarray
            Shape ``(k,)``, int64.
        object_masks : numpy.ndarray
            Shape ``(k, size, size)``, bool.
        """
        return self.images[i], self.boxes[i], self.labels[i], self.object_masks[i]

    @property
    def segmentation(self) -> np.ndarray:
        """Label map ``(n, size, size)`` int64: 0 background, ``1 + class`` on objects."""
        n, _, height, width = self.images.shape
        out = np.zeros((n, height, width), dtype=np.int64)
        for seg, labels, masks in zip(out, self.labels, self.object_masks, strict=True):
            for label, mask in zip(labels, masks, strict=True):
                seg[mask] = 1 + label
        return out


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of boolean masks.

    Parameters
    ----------
    masks : numpy.ndarray
        Shape ``(k, H, W)``, bool; every mask must have a ``True`` pixel.

    Returns
    -------
    numpy.ndarray
        Shape ``(k, 4)``, float32, ``(x1, y1, x2, y2)`` in pixels: the first
        column and row of the mask and its last column and row + 1.

    Raises
    ------
    ValueError
        If ``masks`` is not 3-D or a mask is empty.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (k, H, W); got shape {masks.shape}")
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (k, H), (k, W)
    if masks.shape[0] and not rows.any(axis=1).all():
        empty = np.flatnonzero(~rows.any(axis=1)).tolist()
        raise ValueError(f"masks must each have a True pixel; masks {empty} are empty")
    height, width = masks.shape[1:]
    y1, x1 = rows.argmax(axis=1), cols.argmax(axis=1)
    y2 = height - rows[:, ::-1].argmax(axis=1)
    x2 = width - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


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


def _strong_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """The smooth background of :func:`_background` overlaid with high-contrast texture.

    Two or three sinusoidal gratings (random orientation, wavelength 3-9 px at size 64,
    phase, and a random colour direction with amplitude 0.08-0.16 per channel) and a
    per-pixel colour speckle (standard deviation 0.06): edges and periodic patterns
    everywhere, at the scale of small objects. Returns ``(3, size, size)`` float64 in
    ``[0, 1]``.
    """
    bg = _background(rng, size)
    scale = size / _REF_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(int(rng.integers(_N_GRATINGS[0], _N_GRATINGS[1] + 1))):
        angle = rng.uniform(0.0, np.pi)
        wavelength = scale * rng.uniform(*_GRATING_WAVELENGTH)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        colour = rng.uniform(-1.0, 1.0, size=3) * rng.uniform(*_GRATING_AMPLITUDE)
        wave = np.sin(2.0 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / wavelength + phase)
        bg += colour[:, None, None] * wave[None]
    bg += _SPECKLE_AMPLITUDE * rng.standard_normal((3, size, size))
    return np.clip(bg, 0.0, 1.0)


def _check_texture(value: object) -> str:
    if not isinstance(value, str) or value not in TEXTURES:
        raise ValueError(f"texture must be one of {TEXTURES}; got {value!r}; pass texture='strong' for "
                         "high-contrast gratings and speckle behind the objects, or 'smooth' (the default)")
    return value


def _check_object_size(value: object) -> tuple[float, float]:
    lo_limit, hi_limit = _OBJECT_SIZE_LIMITS
    expected = f"a pair (lo, hi) of real numbers with {lo_limit:g} <= lo <= hi <= {hi_limit:g}"
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"object_size must be {expected} (object diameters in pixels at size 64); "
                         f"got {value!r}; pass e.g. object_size=(8, 12) for small objects")
    lo, hi = float(value[0]), float(value[1])
    if not lo_limit <= lo <= hi <= hi_limit:
        raise ValueError(f"object_size must be {expected} (object diameters in pixels at size 64); "
                         f"got {(lo, hi)}; give the smaller diameter first, within the limits")
    return lo, hi


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


def _object_geometry(
    rng: np.random.Generator, cls: int, size: int, diameters: tuple[float, float] = _OBJECT_SIZE
) -> tuple[np.ndarray | None, float, float]:
    """Draw the size and rotation of a class object, centred at the origin.

    ``diameters`` is the range of the object's "diameter" in pixels at size 64.
    Returns ``(verts, radius, extent)``: polygon vertices ``(k, 2)`` as (x, y)
    in pixels (``None`` for a circle), the object's radius and the radius of a
    circle about its centre that contains the whole object, both in pixels.
    """
    scale = size / _REF_SIZE
    radius = 0.5 * scale * rng.uniform(*diameters)
    if cls == _CIRCLE:
        return None, radius, radius
    period = {_SQUARE: 90.0, _TRIANGLE: 120.0, _CROSS: 90.0}[cls]
    theta = np.deg2rad(rng.uniform(0.0, period))
    rot = np.array([[np.cos(theta), -np.sin(theta)],
                    [np.sin(theta), np.cos(theta)]])
    verts = radius * _unit_vertices(cls) @ rot.T
    return verts, radius, float(np.sqrt((verts**2).sum(axis=1)).max())


def _place(rng: np.random.Generator, extent: float, size: int) -> tuple[float, float]:
    """Random centre ``(row, col)`` that keeps the object (plus one pixel) inside."""
    lo, hi = extent + 1.0, size - 2.0 - extent
    row, col = rng.uniform(lo, hi, size=2)
    return row, col


def _rasterise(verts: np.ndarray | None, radius: float, row: float, col: float,
               size: int) -> np.ndarray:
    """The ``(size, size)`` bool mask of an object centred at ``(row, col)``."""
    mask = np.zeros((size, size), dtype=bool)
    if verts is None:
        rr, cc = disk((row, col), radius, shape=(size, size))
    else:
        rr, cc = polygon(row + verts[:, 1], col + verts[:, 0], shape=(size, size))
    mask[rr, cc] = True
    return mask


def _draw_object(
    rng: np.random.Generator, cls: int, size: int, diameters: tuple[float, float] = _OBJECT_SIZE
) -> tuple[np.ndarray, float, float, float]:
    """Draw the class object at a random size, rotation and position.

    Returns ``(mask, row, col, extent)``: the ``(size, size)`` bool mask, the
    centre and the radius of a circle that contains the whole object.
    """
    verts, radius, extent = _object_geometry(rng, cls, size, diameters)
    row, col = _place(rng, extent, size)
    return _rasterise(verts, radius, row, col, size), row, col, extent


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
    centres: Sequence[tuple[float, float]],
    keep_outs: Sequence[float],
) -> None:
    """Draw a few small blobs / line segments away from the objects, in place.

    A distractor is kept only if all its pixels lie farther than
    ``keep_outs[j]`` pixels from ``centres[j]`` (row, col) for every object
    ``j``; one that finds no such spot in 30 tries is left out.
    """
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
            if all(np.hypot(rr - row, cc - col).min() > keep_out
                   for (row, col), keep_out in zip(centres, keep_outs, strict=True)):
                img[:, rr, cc] = colour[:, None]
                break


def make_shapes(
    n: int,
    *,
    size: int = 64,
    texture: str = "smooth",
    object_size: tuple[float, float] = _OBJECT_SIZE,
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
    ``make_shapes(n, ...)``. The defaults of ``texture`` and ``object_size``
    give the same data as versions without these options.

    Parameters
    ----------
    n : int
        Number of images, ``n >= 1``.
    size : int, default 64
        Height and width of the square images in pixels, ``size >= 32``.
    texture : {"smooth", "strong"}, default "smooth"
        The background. ``"smooth"``: the colour gradient with a
        low-amplitude noise texture described above. ``"strong"``: the same
        overlaid with two or three high-contrast sinusoidal gratings
        (wavelength 3-9 pixels at ``size=64``, random orientation and
        colour, amplitude 0.08-0.16 per channel) and a per-pixel colour
        speckle (standard deviation 0.06): edges and periodic patterns
        everywhere, at the scale of the objects.
    object_size : (float, float), default (14.0, 26.0)
        Range of the object's "diameter" in pixels at ``size=64`` (scaled
        linearly with ``size``), ``4 <= lo <= hi <= 40``; e.g. ``(8, 12)``
        for small objects.
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
        If ``n < 1`` or ``size < 32`` or either is not an integer, if
        ``texture`` is not one of the names above or ``object_size`` is not
        an allowed range.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 32)
    draw_background = _strong_texture if _check_texture(texture) == "strong" else _background
    diameters = _check_object_size(object_size)
    rng = np.random.default_rng(random_state)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for i in range(n):
        cls = int(rng.integers(len(CLASS_NAMES)))
        img = draw_background(rng, size)
        mask, row, col, extent = _draw_object(rng, cls, size, diameters)
        _draw_distractors(rng, img, [(row, col)], [extent + 2.0 * size / _REF_SIZE])
        bg_colour = img[:, mask].mean(axis=1)
        img[:, mask] = _object_colour(rng, bg_colour)[:, None]
        images[i] = img
        labels[i] = cls
        masks[i] = mask
    return ShapesDataset(images=images, labels=labels, masks=masks,
                         class_names=CLASS_NAMES)


def _check_n_objects(value: object) -> tuple[int, int]:
    """Validate ``n_objects`` of :func:`make_scenes`; returns ``(lo, hi)``."""
    most = _MAX_OBJECTS
    expected = f"a pair (lo, hi) of integers with 1 <= lo <= hi <= {most}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"n_objects must be {expected}; got {value!r}; pass e.g. n_objects=(1, 3)")
    lo, hi = int(value[0]), int(value[1])
    if not 1 <= lo <= hi <= most:
        raise ValueError(f"n_objects must be {expected}; got {(lo, hi)}; "
                         f"ask for at least 1 and at most {most} objects, lower bound first")
    return lo, hi


def _free_centre(
    rng: np.random.Generator, occupied: np.ndarray, reach: float, extent: float
) -> tuple[float, float] | None:
    """A random centre more than ``reach`` pixels from every occupied pixel.

    The centre is a pixel centre at which an object of enclosing radius
    ``extent`` stays inside the image as in :func:`_place`; ``None`` if there
    is none.
    """
    size = occupied.shape[0]
    free = ~isotropic_dilation(occupied, reach)
    lo, hi = int(np.ceil(extent + 1.0)), int(np.floor(size - 2.0 - extent))
    rows, cols = np.nonzero(free[lo:hi + 1, lo:hi + 1])
    if rows.size == 0:
        return None
    j = int(rng.integers(rows.size))
    return float(rows[j] + lo), float(cols[j] + lo)


def _fit_shape(
    rng: np.random.Generator,
    shape: tuple[np.ndarray | None, float, float],
    occupied: np.ndarray,
    gap: float,
) -> tuple[tuple[float, float], np.ndarray] | None:
    """Find a centre for one object shape; returns ``(centre, mask)`` or ``None``.

    Tries ``_POSITION_TRIES`` random positions, then (crowded scenes) one
    centre among the free pixels, far enough from every object for the
    shape's enclosing circle. A position fits if no pixel of the object lies
    within ``gap`` pixels of an ``occupied`` one.
    """
    verts, radius, extent = shape
    size = occupied.shape[0]
    blocked = isotropic_dilation(occupied, gap) if occupied.any() else occupied
    for attempt in range(_POSITION_TRIES + 1):
        if attempt < _POSITION_TRIES:
            centre = _place(rng, extent, size)
        else:
            centre = _free_centre(rng, occupied, gap + extent + 1.0, extent)
            if centre is None:
                return None
        mask = _rasterise(verts, radius, *centre, size)
        if not (mask & blocked).any():
            return centre, mask
    return None


def _place_objects(
    rng: np.random.Generator, classes: np.ndarray, size: int
) -> tuple[np.ndarray, list[tuple[float, float]], list[float]]:
    """Draw the objects of one scene at random, pairwise more than a gap apart.

    Each object gets a random shape (size, rotation) placed by
    :func:`_fit_shape` so that no pixel of it lies within ``_OBJECT_GAP``
    (scaled) pixels of an object placed before; a shape that fits nowhere is
    redrawn, ``_SHAPE_TRIES`` times.

    Returns ``(masks, centres, extents)``: bool masks ``(k, size, size)``,
    ``(row, col)`` centres and enclosing radii in pixels.
    """
    gap = _OBJECT_GAP * size / _REF_SIZE
    occupied = np.zeros((size, size), dtype=bool)
    masks, centres, extents = [], [], []
    for cls in classes:
        for _shape in range(_SHAPE_TRIES):
            shape = _object_geometry(rng, int(cls), size)
            fit = _fit_shape(rng, shape, occupied, gap)
            if fit is not None:
                break
        else:  # pragma: no cover - n_objects is capped so that objects fit
            raise RuntimeError(f"could not place {len(classes)} objects in a {size}x{size} image; "
                               "ask for fewer objects (n_objects) or a larger size")
        centre, mask = fit
        occupied |= mask
        masks.append(mask)
        centres.append(centre)
        extents.append(shape[2])
    return np.stack(masks), centres, extents


def make_scenes(
    n: int,
    *,
    size: int = 64,
    n_objects: int | tuple[int, int] = (1, 3),
    random_state: int | np.random.Generator | None = None,
) -> SceneDataset:
    """Generate ``n`` synthetic scenes of several objects with boxes and masks.

    Each image holds between ``n_objects[0]`` and ``n_objects[1]`` objects
    (inclusive, uniformly), each a circle, square, triangle or cross (classes
    drawn independently and uniformly) drawn as in :func:`make_shapes`: a
    random size (a "diameter" of roughly 14-26 pixels at ``size=64``, scaled
    linearly with ``size``), rotation and position fully inside the image and
    a flat colour that contrasts with the background beneath it. Objects never
    overlap or touch: every pixel of one lies more than 2 pixels (scaled) from
    every pixel of another. The background is the same cluttered colour
    gradient, with 3-6 small distractors (blobs, short line segments) kept
    away from every object.

    Images are generated one after another from one random stream, so
    ``make_scenes(m, ...)`` with the same integer seed and arguments starts
    with the ``n < m`` items of ``make_scenes(n, ...)``.

    Parameters
    ----------
    n : int
        Number of images, ``n >= 1``.
    size : int, default 64
        Height and width of the square images in pixels, ``size >= 32``.
    n_objects : int or (int, int), default (1, 3)
        Inclusive range of the number of objects per image; an int ``k``
        means exactly ``k``. At most 3 (objects scale with ``size``, so
        no more fit at a larger size).
    random_state : int, numpy.random.Generator or None, default None
        Seed or generator (as accepted by :func:`numpy.random.default_rng`).
        The same integer seed always gives identical data; ``None`` draws
        fresh entropy. A generator passed in is advanced.

    Returns
    -------
    SceneDataset
        ``images`` ``(n, 3, size, size)`` float32 in ``[0, 1]``; per image
        ``boxes`` ``(k_i, 4)`` float32 ``(x1, y1, x2, y2)`` (the tight hull of
        each mask, in pixels), ``labels`` ``(k_i,)`` int64 and
        ``object_masks`` ``(k_i, size, size)`` bool; ``segmentation``
        ``(n, size, size)`` int64 and ``class_names``.

    Raises
    ------
    ValueError
        If ``n < 1``, ``size < 32`` (or either is not an integer) or
        ``n_objects`` is not an allowed range.
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 32)
    lo, hi = _check_n_objects(n_objects)
    rng = np.random.default_rng(random_state)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    boxes, labels, object_masks = [], [], []
    for i in range(n):
        classes = rng.integers(len(CLASS_NAMES), size=int(rng.integers(lo, hi + 1)))
        img = _background(rng, size)
        masks, centres, extents = _place_objects(rng, classes, size)
        _draw_distractors(rng, img, centres, [e + 2.0 * size / _REF_SIZE for e in extents])
        for mask in masks:
            bg_colour = img[:, mask].mean(axis=1)
            img[:, mask] = _object_colour(rng, bg_colour)[:, None]
        images[i] = img
        boxes.append(mask_boxes(masks))
        labels.append(classes.astype(np.int64))
        object_masks.append(masks)
    return SceneDataset(images=images, boxes=boxes, labels=labels,
                        object_masks=object_masks, class_names=CLASS_NAMES)
