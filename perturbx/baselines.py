"""Baselines: what a perturbed region is replaced with.

Every explainer takes ``baseline=``: a number (constant), ``"mean"`` (per-channel mean
of the sample), ``"blur"`` (Gaussian blur of the sample), ``"noise"`` (Gaussian noise
with the sample's per-channel mean and standard deviation, seeded by the explainer's
``random_state``), an array of the sample's shape, one of the classes below (for other
settings), or a callable ``f(x) -> array`` of the sample's shape.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ._utils import Layout

NAMES = ("mean", "blur", "noise")


@dataclass(frozen=True)
class Constant:
    """Every value replaced by ``value``."""

    value: float = 0.0

    def __call__(self, x_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full_like(x_chw, self.value)


@dataclass(frozen=True)
class ChannelMean:
    """Each channel replaced by its mean over the image."""

    def __call__(self, x_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(x_chw.mean(axis=(1, 2), keepdims=True), x_chw.shape).copy()


@dataclass(frozen=True)
class Blur:
    """Gaussian blur of each channel; ``sigma`` in pixels, default ``max(H, W) / 16``."""

    sigma: float | None = None

    def __call__(self, x_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = self.sigma if self.sigma is not None else max(x_chw.shape[1:]) / 16
        return gaussian_filter(x_chw, sigma=(0, sigma, sigma), mode="reflect")


@dataclass(frozen=True)
class Noise:
    """Gaussian noise with the per-channel mean and ``scale`` times the per-channel std."""

    scale: float = 1.0

    def __call__(self, x_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = x_chw.mean(axis=(1, 2), keepdims=True)
        std = x_chw.std(axis=(1, 2), keepdims=True) * self.scale
        return mean + std * rng.standard_normal(x_chw.shape)


BaselineSpec = float | str | np.ndarray | Callable[[np.ndarray], np.ndarray] | Constant | ChannelMean | Blur | Noise


def check_baseline(spec: object, owner: str) -> object:
    """Validate a ``baseline=`` argument at construction time (the shape is checked later)."""
    if isinstance(spec, bool):
        raise TypeError(f"The 'baseline' parameter of {owner} must be a number, one of {NAMES}, "
                        f"an array or a callable. Got {spec!r}.")
    if isinstance(spec, numbers.Real):
        if not np.isfinite(spec):
            raise ValueError(f"The 'baseline' parameter of {owner} must be finite. Got {spec!r}.")
        return spec
    if isinstance(spec, str):
        if spec not in NAMES:
            raise ValueError(f"The 'baseline' parameter of {owner} must be a number, an array, a "
                             f"callable or one of {NAMES}. Got {spec!r}.")
        return spec
    if isinstance(spec, (np.ndarray, Constant, ChannelMean, Blur, Noise)) or callable(spec):
        return spec
    if hasattr(spec, "__array__"):
        return np.asarray(spec)
    raise TypeError(f"The 'baseline' parameter of {owner} must be a number, one of {NAMES}, an "
                    f"array of the sample's shape or a callable. Got {type(spec).__name__}.")


def resolve_baseline(spec: object, x: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """The baseline sample for ``x`` (same shape and dtype as ``x``, layout ``layout``)."""
    if isinstance(spec, numbers.Real):
        spec = Constant(float(spec))
    elif isinstance(spec, str):
        spec = {"mean": ChannelMean(), "blur": Blur(), "noise": Noise()}[spec]
    if isinstance(spec, (Constant, ChannelMean, Blur, Noise)):
        out = layout.from_chw_array(spec(layout.to_chw_array(x.astype(np.float64)), rng))
    elif isinstance(spec, np.ndarray):
        out = spec
    else:
        out = np.asarray(spec(x))
    if out.shape != x.shape:
        raise ValueError(f"baseline has shape {out.shape} but the sample has shape {x.shape}; "
                         f"a baseline array must match the sample exactly.")
    out = out.astype(x.dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError("baseline contains NaN or infinite values.")
    return out
