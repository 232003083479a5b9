"""Sliding-window occlusion (Zeiler & Fergus 2014), as in Captum's Occlusion."""

from __future__ import annotations

from perturbx import engine
from perturbx._utils import check_int_tuple
from perturbx.estimators import ScoreDrop
from perturbx.samplers import SlidingWindowSampler

from .base import Context, PerturbationExplainer


class Occlusion(PerturbationExplainer):
    """Replace a sliding window by the baseline and record how much the score drops.

    The attribution of a pixel is the mean, over the windows that cover it, of
    ``f(x) - f(x with the window replaced)``. Windows start every ``stride`` pixels;
    when the stride does not divide the image, the last window is cropped at the
    border (Captum's convention), so every pixel is covered.

    Parameters
    ----------
    window : int or (h, w) or (c, h, w), default (16, 16)
        Window size in pixels. A 2-tuple covers all channels; a 3-tuple also slides
        over channels and gives per-channel attributions (kept as
        ``Explanation.channel_attributions``; ``attributions`` is their sum over channels).
    stride : int or tuple, default (8, 8)
        Step between windows, same length as ``window``; at most the window size.
    baseline : float, str, array or callable, default 0.0
        What occluded pixels become; see :mod:`perturbx.baselines`.
    random_state : int, Generator or None
        Only used by a ``"noise"`` baseline.
    progress : bool or None
        Progress bar; None shows it on a terminal only.
    max_queries : int, optional
        Refuse to run when ``1 + number of windows`` exceeds it.

    Notes
    -----
    Queries: ``1 + prod(ceil((size - window) / stride) + 1)`` over the window's axes.
    """

    def __init__(self, window=(16, 16), stride=(8, 8), *, baseline=0.0, random_state=None,
                 progress: bool | None = None, max_queries: int | None = None) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries)
        self.window = check_int_tuple(window, "window", "Occlusion", lengths=(2, 3))
        self.stride = check_int_tuple(stride, "stride", "Occlusion", lengths=(len(self.window),))

    def _plan(self, ctx: Context) -> engine.Plan:
        shape = ctx.chw if len(self.window) == 3 else ctx.chw[1:]
        for axis, size, win, step in zip(("channel", "height", "width")[-len(shape):], shape,
                                         self.window, self.stride, strict=True):
            if win > size:
                raise ValueError(f"Occlusion window {self.window} is larger than the sample along its "
                                 f"{axis} axis ({win} > {size}, sample (C, H, W) = {ctx.chw}); use a "
                                 f"smaller window.")
            if step > win and size > win:
                raise ValueError(f"Occlusion stride {self.stride} is larger than the window {self.window} "
                                 f"along the {axis} axis, which would leave pixels unexplained; use a "
                                 f"stride <= window.")
        sampler = SlidingWindowSampler(shape, self.window, self.stride)
        return engine.Plan(sampler, ctx.blend_renderer(), ScoreDrop(ctx.adapter.backend, ctx.reference))
