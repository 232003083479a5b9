"""Superpixels: the players of LIME and KernelSHAP on images.

A segmentation is an integer map ``(H, W)`` that assigns every pixel to one of ``M``
superpixels, labelled ``0 .. M-1``. ``segmentation=`` on :class:`perturbx.LIME` and
:class:`perturbx.KernelSHAP` takes

* a name: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` (scikit-image, default
  settings below) or ``"grid"`` (an 8 x 8 grid of rectangles);
* one of the classes :class:`SLIC`, :class:`Quickshift`, :class:`Felzenszwalb`,
  :class:`Grid` with other settings;
* a callable ``f(image) -> (H, W) int array`` that receives the sample as a float64
  image ``(H, W, C)`` (channels last, as scikit-image and lime take it; ``(H, W)`` for a
  one-channel sample);
* an integer array ``(H, W)``: a fixed segmentation.

Whatever the source, labels are renumbered to ``0 .. M-1`` in increasing order of the
original label (so a map already labelled ``0 .. M-1`` keeps its labels).

:func:`segment_mean` and :class:`SegmentMean` give the per-superpixel mean colour, the
baseline that ``baseline="mean"`` selects in LIME and KernelSHAP (lime's default hide
colour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._utils import Layout, check_int_tuple

__all__ = ["NAMES", "SLIC", "Felzenszwalb", "Grid", "Quickshift", "SegmentMean", "check_segmentation",
           "compute_segments", "paint", "relabel", "segment_mean", "superpixel_baseline"]

NAMES = ("slic", "quickshift", "felzenszwalb", "grid")


def _unit_range(image: np.ndarray) -> np.ndarray:
    """The image as float64, rescaled to [0, 1] only when it lies outside that range."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return image


def _channel_axis(image: np.ndarray) -> int | None:
    return -1 if image.ndim == 3 else None


@dataclass(frozen=True)
class SLIC:
    """k-means superpixels (``skimage.segmentation.slic``); ``n_segments`` is a target, not exact."""

    n_segments: int = 50
    compactness: float = 10.0
    sigma: float = 1.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.segmentation import slic

        return slic(_unit_range(image), n_segments=self.n_segments, compactness=self.compactness,
                    sigma=self.sigma, start_label=0, channel_axis=_channel_axis(image))


@dataclass(frozen=True)
class Quickshift:
    """Quickshift mode seeking (``skimage.segmentation.quickshift``) with lime's defaults."""

    kernel_size: float = 4.0
    max_dist: float = 200.0
    ratio: float = 0.2
    random_seed: int = 42

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.segmentation import quickshift

        image = _unit_range(image)
        if image.ndim == 2:
            image = image[:, :, None]
        return quickshift(image, kernel_size=self.kernel_size, max_dist=self.max_dist, ratio=self.ratio,
                          convert2lab=image.shape[-1] == 3, rng=self.random_seed, channel_axis=-1)


@dataclass(frozen=True)
class Felzenszwalb:
    """Graph-based segmentation (``skimage.segmentation.felzenszwalb``)."""

    scale: float = 100.0
    sigma: float = 0.5
    min_size: int = 50

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.segmentation import felzenszwalb

        return felzenszwalb(_unit_range(image), scale=self.scale, sigma=self.sigma, min_size=self.min_size,
                            channel_axis=_channel_axis(image))


@dataclass(frozen=True)
class Grid:
    """A regular grid of ``shape = (rows, cols)`` near-equal rectangles (row-major labels)."""

    shape: tuple[int, int] = (8, 8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", check_int_tuple(self.shape, "shape", "Grid"))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        rows = np.arange(h) * min(self.shape[0], h) // h
        cols = np.arange(w) * min(self.shape[1], w) // w
        return rows[:, None] * min(self.shape[1], w) + cols[None, :]


_BY_NAME: dict[str, Callable[[], Callable[[np.ndarray], np.ndarray]]] = {
    "slic": SLIC, "quickshift": Quickshift, "felzenszwalb": Felzenszwalb, "grid": Grid}


def check_segmentation(spec: object, owner: str) -> object:
    """Validate a ``segmentation=`` argument at construction time (the shape is checked later)."""
    if isinstance(spec, str):
        if spec not in NAMES:
            raise ValueError(f"The 'segmentation' parameter of {owner} must be one of {NAMES}, a callable "
                             f"or an integer array (H, W). Got {spec!r}.")
        return spec
    if callable(spec):
        return spec
    if isinstance(spec, np.ndarray) or hasattr(spec, "__array__"):
        arr = np.asarray(spec)
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"The 'segmentation' parameter of {owner} must be an integer segment map of "
                             f"shape (H, W) when given as an array. Got dtype {arr.dtype} and shape "
                             f"{arr.shape}; pass integer labels, one per pixel.")
        return arr
    raise TypeError(f"The 'segmentation' parameter of {owner} must be one of {NAMES}, a callable "
                    f"f(image) -> (H, W) int array, or an integer array (H, W). Got {type(spec).__name__}.")


def relabel(segments: np.ndarray) -> np.ndarray:
    """Renumber labels to ``0 .. M-1`` in increasing order of the original label; int64 ``(H, W)``."""
    _, inverse = np.unique(segments, return_inverse=True)
    return inverse.reshape(segments.shape).astype(np.int64)


def compute_segments(spec: object, x: np.ndarray, layout: Layout, owner: str) -> np.ndarray:
    """The segment map ``(H, W)``, labelled ``0 .. M-1``, of sample ``x`` (in ``layout``).

    Raises
    ------
    ValueError
        The map does not have the sample's spatial shape, holds non-integer labels, or
        has fewer than two segments (a single player has nothing to be compared with).
    """
    spatial = layout.spatial_shape(x.shape)
    if isinstance(spec, np.ndarray):
        raw = spec
    else:
        segmenter = _BY_NAME[spec]() if isinstance(spec, str) else spec
        image = np.moveaxis(layout.to_chw_array(x.astype(np.float64)), 0, -1)
        raw = np.asarray(segmenter(image[:, :, 0] if image.shape[-1] == 1 else image))
    if raw.shape != spatial:
        raise ValueError(f"The segment map of {owner} has shape {raw.shape} but the sample's spatial shape "
                         f"(H, W) is {spatial}; the map must label every pixel exactly once.")
    if not (np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool):
        raise ValueError(f"The segment map of {owner} must hold integer labels. Got dtype {raw.dtype}.")
    segments = relabel(raw)
    n_segments = int(segments.max()) + 1
    if n_segments < 2:
        raise ValueError(f"The segment map of {owner} has a single segment, so there is nothing to attribute "
                         f"between; use a segmentation with at least 2 segments (e.g. more n_segments).")
    return segments


def segment_mean(x_chw: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Each pixel replaced by the mean of its superpixel, channel by channel.

    Parameters
    ----------
    x_chw : ndarray, shape (C, H, W)
    segments : int ndarray, shape (H, W), labels ``0 .. M-1``

    Returns
    -------
    ndarray, shape (C, H, W), float64
    """
    flat = segments.ravel()
    n_segments = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=n_segments).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=channel.ravel(), minlength=n_segments)
                     for channel in np.asarray(x_chw, dtype=np.float64)])
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return means[:, segments]


@dataclass(frozen=True, eq=False)
class SegmentMean:
    """Baseline callable ``f(x) -> baseline``: per-superpixel mean colour for a fixed segment map.

    Usable as ``baseline=`` of any explainer (e.g. RISE or Occlusion) once a segment map
    is known; LIME and KernelSHAP build it themselves for ``baseline="mean"``.

    Parameters
    ----------
    segments : int ndarray, shape (H, W)
    layout : {"CHW", "HWC", "HW"}, default "CHW"
        Layout of the samples it will be called with.
    """

    segments: np.ndarray
    layout: str = "CHW"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lay = Layout(self.layout)
        return lay.from_chw_array(segment_mean(lay.to_chw_array(np.asarray(x)), relabel(self.segments)))


def paint(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Per-segment values ``(..., M)`` painted on their pixels: ``(..., H, W)``."""
    return np.asarray(values)[..., segments]


def superpixel_baseline(spec: object, baseline: np.ndarray, x: np.ndarray, layout: Layout,
                        segments: np.ndarray) -> np.ndarray:
    """The baseline of a superpixel explainer, in the model's layout and dtype.

    ``baseline="mean"`` means the per-superpixel mean colour (lime's default hide
    colour); any other ``spec`` keeps ``baseline``, already resolved by the explainer.
    """
    if isinstance(spec, str) and spec == "mean":
        return layout.from_chw_array(segment_mean(layout.to_chw_array(x), segments)).astype(x.dtype)
    return baseline
