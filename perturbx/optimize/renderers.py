"""Differentiable perturbations: a mask ``(n, H, W)`` in [0, 1] -> a model batch, in torch.

1 keeps the input, 0 applies the full perturbation. Both renderers build the batch in the
model's layout on the model's device; they are used with autograd (gradients flow to the
mask) and without (the zeroth-order optimiser renders under ``torch.no_grad`` and hands
the batch, as numpy for a numpy adapter, to ``adapter.predict_batch``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from perturbx._utils import Layout

from .masks import _torch


def blur(x: np.ndarray, layout: Layout, sigma: float, mode: str = "reflect") -> np.ndarray:
    """Gaussian blur of every channel of one sample.

    ``sigma`` in pixels; the kernel is truncated at ``ceil(4 sigma)`` pixels (as TorchRay's
    ``imsmooth``); ``mode`` is scipy's edge handling (``"constant"`` pads with zeros, as
    TorchRay does).
    """
    chw = layout.to_chw_array(x.astype(np.float64))
    if sigma > 0:
        chw = gaussian_filter(chw, sigma=(0, sigma, sigma), mode=mode, cval=0.0,
                              radius=(0, math.ceil(4 * sigma), math.ceil(4 * sigma)))
    return layout.from_chw_array(chw).astype(x.dtype)


class BlendPerturbation:
    """``base + m * (x - base)``: blend to one perturbed image (a blur, a constant, ...).

    Parameters
    ----------
    x, base : ndarray, shape ``sample_shape``
        Input and fully perturbed input, in the model's layout.
    layout : Layout
    device : torch device
    """

    def __init__(self, x: np.ndarray, base: np.ndarray, layout: Layout, device) -> None:
        torch = _torch()
        self.layout = layout
        self._base = torch.as_tensor(base[None], dtype=torch.float32, device=device)
        self._delta = torch.as_tensor((x - base)[None], dtype=torch.float32, device=device)

    def __call__(self, masks):
        """Batch ``(n, *sample_shape)`` for masks ``(n, H, W)``."""
        return self._base + self.layout.expand_masks(masks) * self._delta


class BlurPyramid:
    """TorchRay's perturbation pyramid: the mask value picks a blur level, linearly interpolated.

    Level ``l`` of ``L`` is the input blurred with ``sigma_max * (1 - l / (L - 1))``, so a
    mask value of 0 is the strongest blur and 1 the input; values in between interpolate
    linearly between the two neighbouring levels (differentiable almost everywhere).

    Parameters
    ----------
    x : ndarray, shape ``sample_shape``
    layout : Layout
    sigma_max : float
        Strongest blur in pixels (20 at 224 px in TorchRay).
    n_levels : int, default 8
    device : torch device
    mode : {"reflect", "constant"}, default "reflect"
        Edge handling of the blur; TorchRay pads with zeros ("constant"), which darkens
        a band along the border of every blurred level.
    """

    def __init__(self, x: np.ndarray, layout: Layout, sigma_max: float, n_levels: int = 8, device=None,
                 mode: str = "reflect") -> None:
        torch = _torch()
        self.layout, self.n_levels = layout, int(n_levels)
        sigmas = sigma_max * (1.0 - np.linspace(0.0, 1.0, self.n_levels))
        levels = np.stack([blur(x, layout, s, mode) for s in sigmas])
        self._levels = torch.as_tensor(levels, dtype=torch.float32, device=device)   # (L, *sample_shape)

    def __call__(self, masks):
        """Batch ``(n, *sample_shape)`` for masks ``(n, H, W)``."""
        torch = _torch()
        pos = self.layout.expand_masks(masks.clamp(0.0, 1.0) * (self.n_levels - 1))   # broadcasts to a sample
        shape = (masks.shape[0], *self._levels.shape[1:])
        low = pos.detach().floor().clamp(max=self.n_levels - 2).long().expand(shape)
        frac = pos - low                                     # gradient flows through the fraction only
        levels = self._levels[None].expand(shape[0], *self._levels.shape)
        y0 = torch.gather(levels, 1, low[:, None])[:, 0]
        y1 = torch.gather(levels, 1, low[:, None] + 1)[:, 0]
        return y0 + frac * (y1 - y0)
