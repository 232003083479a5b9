"""Sliding windows over the image (occlusion)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of a window sliding over one axis of length ``size``.

    As in Captum's Occlusion: ``ceil((size - window) / stride) + 1`` positions, the last
    window cropped at the border when the stride does not divide ``size - window``, so
    every index is covered.
    """
    return np.arange(math.ceil((size - window) / stride) + 1) * stride


@dataclass(frozen=True)
class WindowChunk:
    """Windows at ``starts`` (n, k) over an array of ``shape`` (k axes)."""

    starts: np.ndarray
    window: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.starts)

    @property
    def mask_shape(self) -> tuple[int, ...]:
        """The shape of one mask (the engine gives :meth:`materialize` pooled memory of it)."""
        return tuple(self.shape)

    def materialize(self, backend, dtype, out=None):
        """Keep-masks: 0 inside each window, 1 elsewhere; ``(n, *shape)``, written into ``out`` when given.

        The mask is ``1 - prod_axis inside_axis`` (outer product of per-axis 0/1 indicators); the
        last product and the subtraction are one pass over the full-size masks (exact: 0/1 values).
        """
        k = len(self.shape)
        factors = []
        for axis, (length, win) in enumerate(zip(self.shape, self.window, strict=True)):
            ar = backend.arange(length)
            lo = backend.asarray(self.starts[:, axis, None], dtype=np.int64)
            inside = backend.cast((ar >= lo) & (ar < lo + win), dtype)  # (n, length)
            factors.append(inside[(slice(None),) + (None,) * axis + (slice(None),) + (None,) * (k - axis - 1)])
        occluded = factors[0]
        for f in factors[1:-1]:
            occluded = occluded * f
        if k == 1:
            keep = 1.0 - occluded
            if out is None:
                return keep
            out[...] = keep
            return out
        if hasattr(occluded, "addcmul"):  # torch: 1 - occluded * last in one kernel
            one = occluded.new_ones(())
            if out is None:
                return one.addcmul(occluded, factors[-1], value=-1)
            import torch

            return torch.addcmul(one, occluded, factors[-1], value=-1, out=out)
        keep = np.multiply(occluded, factors[-1], out=out)
        return np.subtract(1.0, keep, out=keep)


class SlidingWindowSampler:
    """Every position of a window sliding with a stride over ``shape``.

    Parameters
    ----------
    shape : (H, W) or (C, H, W)
        Axes the window slides over.
    window, stride : tuple of int, same length as ``shape``
    """

    chunk_type = WindowChunk

    def __init__(self, shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.shape, self.window, self.stride = tuple(shape), tuple(window), tuple(stride)
        axes = [window_starts(n, w, s) for n, w, s in zip(self.shape, self.window, self.stride, strict=True)]
        grid = np.meshgrid(*axes, indexing="ij")
        self.starts = np.stack([g.ravel() for g in grid], axis=1)
        self.n_total = len(self.starts)

    def chunks(self, chunk_size: int) -> Iterator[WindowChunk]:
        for i in range(0, self.n_total, chunk_size):
            yield WindowChunk(self.starts[i:i + chunk_size], self.window, self.shape)
