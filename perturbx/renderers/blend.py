"""Blend each pixel between the input and a baseline by the mask value."""

from __future__ import annotations

import numpy as np

from perturbx._utils import Layout


class BlendRenderer:
    """``baseline + mask * (x - baseline)``, computed on the backend in the model's layout.

    Parameters
    ----------
    x, baseline : ndarray, shape ``sample_shape``
        Input and baseline, in the model's layout.
    layout : Layout
    backend : NumpyBackend or TorchBackend
    dtype : numpy dtype of the batch
    """

    def __init__(self, x: np.ndarray, baseline: np.ndarray, layout: Layout, backend, dtype) -> None:
        self.layout = layout
        self._base = backend.asarray(baseline[None], dtype)
        self._delta = backend.asarray((x - baseline)[None], dtype)

    def render(self, masks):
        """Batch ``(n, *sample_shape)`` for keep-masks ``(n, H, W)`` or ``(n, C, H, W)``."""
        return self._base + self.layout.expand_masks(masks) * self._delta
