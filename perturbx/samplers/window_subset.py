"""A chosen subset of sliding-window positions (coarse-to-fine occlusion)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .sliding_window import WindowChunk


class WindowSubsetSampler:
    """Windows of one size at explicitly given start offsets, in the given order.

    The chunks are the same :class:`~perturbx.samplers.sliding_window.WindowChunk` as
    :class:`~perturbx.samplers.SlidingWindowSampler` yields, so a subset of a sliding
    window's positions is rendered and folded exactly as the full grid would be.

    Parameters
    ----------
    shape : (H, W) or (C, H, W)
        Axes the windows lie on.
    window : tuple of int, same length as ``shape``
    starts : array of int, shape (n, len(shape))
        Start offset of each window; a window reaching past the border is cropped there.
    """

    chunk_type = WindowChunk

    def __init__(self, shape: tuple[int, ...], window: tuple[int, ...], starts: np.ndarray) -> None:
        self.shape, self.window = tuple(shape), tuple(window)
        starts = np.asarray(starts, dtype=np.int64).reshape(-1, len(self.shape))
        if len(self.window) != len(self.shape):
            raise ValueError(f"WindowSubsetSampler needs a window with one size per axis of shape {self.shape}. "
                             f"Got window {self.window}.")
        if ((starts < 0) | (starts >= np.asarray(self.shape))).any():
            raise ValueError(f"WindowSubsetSampler start offsets must lie inside shape {self.shape}.")
        self.starts = starts
        self.n_total = len(starts)

    def chunks(self, chunk_size: int) -> Iterator[WindowChunk]:
        for i in range(0, self.n_total, chunk_size):
            yield WindowChunk(self.starts[i:i + chunk_size], self.window, self.shape)
