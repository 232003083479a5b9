"""Mask parametrisations: a low-resolution parameter grid -> smooth full-size masks.

Both are differentiable torch functions of their parameters, used as they are by the
autograd optimiser and, for the zeroth-order optimiser, to turn perturbed parameters into
masks (and to differentiate the regularisers exactly).

* :class:`UpsampledMask` (Fong & Vedaldi 2017): a ``(h, w)`` grid bilinearly upsampled
  to the image (``align_corners=True``, as ``torch.nn.UpsamplingBilinear2d`` in the
  paper's PyTorch re-implementations).
* :class:`SmoothMaxMask` (Fong, Patrick & Vedaldi 2019): parameters on a lattice of
  ``step`` pixels; the mask at a pixel is a smooth maximum (softmax pooling, coldness 20)
  over the neighbouring lattice points of their value times a kernel of the distance,
  ``exp(-2 max(d / sigma - 1/2, 0)^2)``, clamped to [0, 1]. Same construction as
  TorchRay's ``MaskGenerator``, with the lattice anchored on the image (no margin).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an optional dependency
        raise ImportError("perturbx's mask optimisation needs PyTorch for its mask algebra (the model "
                          "itself can be any black box): pip install 'perturbx[torch]'") from exc
    return torch


class MaskParametrisation(Protocol):
    """Maps parameters ``(n, *shape_in)`` to masks ``(n, H, W)`` in [0, 1] (torch, differentiable)."""

    shape_in: tuple[int, int]
    shape_out: tuple[int, int]

    def __call__(self, params):
        """Masks for ``params``."""


class UpsampledMask:
    """A ``shape_in`` grid bilinearly upsampled to ``shape_out``, clamped to [0, 1].

    Parameters
    ----------
    shape_out : (H, W)
        Image size in pixels.
    shape_in : (h, w)
        Parameter grid (28 x 28 in the paper at 224 px; the grid is a fraction of the
        image, so it does not change with the image size).
    """

    def __init__(self, shape_out: tuple[int, int], shape_in: tuple[int, int]) -> None:
        self.shape_out = (int(shape_out[0]), int(shape_out[1]))
        self.shape_in = (int(shape_in[0]), int(shape_in[1]))

    def __call__(self, params):
        """Masks ``(n, H, W)`` for parameters ``(n, h, w)``."""
        F = _torch().nn.functional
        up = F.interpolate(params[:, None], size=self.shape_out, mode="bilinear", align_corners=True)
        return up[:, 0].clamp(0.0, 1.0)


class SmoothMaxMask:
    """Smooth max-convolution masks of Fong, Patrick & Vedaldi (2019).

    Parameters
    ----------
    shape_out : (H, W)
        Image size in pixels.
    step : int
        Lattice spacing in pixels (7 at 224 px in the paper); the parameter grid is
        ``(ceil(H / step), ceil(W / step))``, lattice point ``(i, j)`` at pixel
        ``(step * i, step * j)``; points beyond the grid count as 0 (as in TorchRay).
    sigma : float
        Kernel size in pixels (21 at 224 px); the kernel is 1 up to ``sigma / 2`` and
        decays like a Gaussian beyond.
    coldness : float, default 20
        Temperature of the softmax pooling (TorchRay's value); larger is closer to a max.
    device : torch device, optional
    """

    def __init__(self, shape_out: tuple[int, int], step: int, sigma: float, *, coldness: float = 20.0,
                 device=None) -> None:
        torch = _torch()
        self.shape_out = (int(shape_out[0]), int(shape_out[1]))
        self.step, self.sigma, self.coldness = int(step), float(sigma), float(coldness)
        self.radius = 1 + math.ceil(self.sigma / self.step)
        self.shape_in = tuple(math.ceil(n / self.step) for n in self.shape_out)
        k, st = (2 * self.radius + 1) ** 2, self.step
        self._weight = torch.as_tensor(self._kernel().reshape(1, k, st, st, 1, 1), dtype=torch.float32, device=device)

    def _kernel(self) -> np.ndarray:
        """Kernel weights ``(K, step, step)`` of the ``K = (2r + 1)^2`` lattice neighbours of a pixel.

        Neighbour ``k = ky (2r + 1) + kx`` of pixel ``(y, x)`` is the lattice point
        ``(y // step + ky - r, x // step + kx - r)`` (the order of
        ``torch.nn.functional.unfold``); its weight depends only on the pixel's position in
        its lattice cell, ``(y % step, x % step)``.
        """
        r, st = self.radius, self.step
        yy, xx = np.meshgrid(np.arange(st), np.arange(st), indexing="ij")
        offsets = np.arange(-r, r + 1)
        dy = yy[None, None] - st * offsets[:, None, None, None]   # (2r+1, 1, step, step)
        dx = xx[None, None] - st * offsets[None, :, None, None]   # (1, 2r+1, step, step)
        weight = np.exp(-2.0 * np.maximum(np.sqrt(dy ** 2 + dx ** 2) / self.sigma - 0.5, 0.0) ** 2)
        return weight.reshape((2 * r + 1) ** 2, st, st)

    def __call__(self, params):
        """Masks ``(n, H, W)`` for parameters ``(n, h, w)``."""
        torch = _torch()
        (H, W), r, st, n = self.shape_out, self.radius, self.step, params.shape[0]
        h, w = params.shape[1:]
        # the K neighbours of every lattice cell (zero beyond the lattice): (n, K, 1, 1, h, w), times the kernel
        # at each of the cell's step x step pixels; the lattice axes stay innermost (contiguous), which keeps the
        # broadcasts and reductions vectorised when the step is small
        cells = torch.nn.functional.unfold(params.clamp(max=1.0)[:, None], 2 * r + 1, padding=r)
        pooled = _softmax_pool().apply(cells.reshape(n, -1, 1, 1, h, w), self._weight.to(params.dtype),
                                       self.coldness)                                   # (n, step, step, h, w)
        return pooled.permute(0, 3, 1, 4, 2).reshape(n, h * st, w * st)[:, :H, :W].clamp(0.0, 1.0)


_SOFTMAX_POOL = None


def _softmax_pool():
    """``torch.autograd.Function`` of the pooling, built once (torch is imported lazily)."""
    global _SOFTMAX_POOL
    if _SOFTMAX_POOL is None:
        torch = _torch()

        class SoftmaxPool(torch.autograd.Function):
            """``sum_k v_k exp(c v_k) / sum_k exp(c v_k)`` over ``v = cells * weight``, axis 1.

            ``cells`` ``(n, K, 1, 1, h, w)``, ``weight`` ``(1, K, step, step, 1, 1)``. Written
            out (forward and backward) because it is most of the cost of an extremal step:
            autograd's version makes about twice as many passes over the values. Values
            are at most 1 (parameters are clamped, weights <= 1), so ``exp(c v)`` needs no
            max shift.
            """

            @staticmethod
            def forward(ctx, cells, weight, coldness):
                values = cells * weight
                e = torch.exp(values * coldness)
                z = e.sum(dim=1)
                out = (values * e).sum(dim=1).div_(z)
                ctx.save_for_backward(weight, values, e, z, out)
                ctx.coldness = coldness
                return out

            @staticmethod
            def backward(ctx, grad):
                weight, values, e, z, out = ctx.saved_tensors
                # d out / d v_k = e_k (1 + c (v_k - out)) / z
                t = values.sub(out[:, None]).mul_(ctx.coldness).add_(1.0).mul_(e).mul_((grad / z)[:, None])
                g_cells = t.mul_(weight).sum(dim=(2, 3), keepdim=True)
                return g_cells, None, None

        _SOFTMAX_POOL = SoftmaxPool
    return _SOFTMAX_POOL
