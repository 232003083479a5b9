"""Samplers: seeded, lazy sources of perturbation masks (see :mod:`perturbx.samplers.base`)."""

from .base import MaskChunk, Sampler
from .random_grid import RandomGridSampler
from .sliding_window import SlidingWindowSampler
from .window_subset import WindowSubsetSampler

__all__ = ["MaskChunk", "RandomGridSampler", "Sampler", "SlidingWindowSampler", "WindowSubsetSampler"]
