"""Plain input gradients: Saliency (Simonyan et al. 2014) and Input x Gradient (Shrikumar et al. 2016)."""

from __future__ import annotations

import torch

from .base import PixelGradient


class Saliency(PixelGradient):
    """Gradient of the target score with respect to the input, as in Captum's ``Saliency``.

    Parameters
    ----------
    abs : bool, default True
        Take the absolute value of the gradient (Captum's default); False keeps its sign.
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
        How per-channel values become one value per pixel (see
        :data:`perturbx.gradients._reduce.REDUCTIONS`); ``"max_abs"`` is the original
        paper's choice. ``extras["raw"]`` keeps the per-channel gradients ``(T, *sample_shape)``.

    Notes
    -----
    Queries: one forward row per target (one batched backward pass).
    """

    def __init__(self, abs: bool = True, *, reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)
        if not isinstance(abs, bool):
            raise TypeError(f"The 'abs' parameter of Saliency must be True or False. Got {abs!r} instead.")
        self.abs = abs

    def _combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs() if self.abs else grad


class InputXGradient(PixelGradient):
    """Input times its gradient, ``x * d f_t / d x``, as in Captum's ``InputXGradient``.

    Parameters
    ----------
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
        Channel reduction; ``extras["raw"]`` keeps the per-channel products ``(T, *sample_shape)``.

    Notes
    -----
    Queries: one forward row per target.
    """

    def __init__(self, *, reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)

    def _combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return rows * grad
