"""RISE masks: random low-resolution binary grids, upsampled bilinearly and shifted.

Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation of
Black-box Models". Each mask is a ``grid_size`` binary grid with cells kept with
probability ``p_keep``, bilinearly upsampled to ``(grid_size + 1) * cell`` pixels
(``cell = ceil(H / grid_size)``) and cropped at a random shift in ``[0, cell)``.

The upsampling is separable, so a mask is ``Ry[dy] @ G @ Rx[dx].T`` with small
interpolation matrices; masks are built per chunk on the model's device from the
seeded grids, and no full-size mask outlives its chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into [0, n) by mirroring about the edge samples (d c b | a b c d | c b a)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear-interpolation matrix ``(n_out, n_in)`` resizing an axis of ``n_in`` samples.

    Pixel centres are aligned (``x_in = (x_out + 0.5) * n_in / n_out - 0.5``) and samples
    outside are mirrored, which is what ``skimage.transform.resize(order=1,
    mode="reflect", anti_aliasing=False)`` (the reference RISE code) does.
    """
    c = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(c).astype(int)
    w = c - i0
    rows = np.arange(n_out)
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (rows, _mirror(i0, n_in)), 1.0 - w)
    np.add.at(mat, (rows, _mirror(i0 + 1, n_in)), w)
    return mat


class _Upsampler:
    """Interpolation matrices for one image size, cached per backend."""

    def __init__(self, spatial: tuple[int, int], grid: tuple[int, int]) -> None:
        self.spatial, self.grid = spatial, grid
        self.cell = tuple(math.ceil(n / g) for n, g in zip(spatial, grid, strict=True))
        self._host = [interpolation_matrix(g, (g + 1) * c)
                      for g, c in zip(grid, self.cell, strict=True)]
        self._cache: dict[tuple[str, str, str], tuple] = {}

    def mean_cell_weights(self) -> np.ndarray:
        """``(G, H * W)``: each grid cell's interpolation weight at every pixel, averaged over the random shifts.

        A mask is ``M(u) = sum_j W_j(u; s) c_j`` for grid cells ``c`` and a shift ``s`` uniform
        on ``[0, cell)`` along each axis, independent of ``c``; this is ``E_s[W_j(u; s)]``.
        """
        (h, w), (ch, cw) = self.spatial, self.cell
        ry, rx = self._host  # ((gh + 1) ch, gh), ((gw + 1) cw, gw)
        y_bar = np.mean([ry[dy:dy + h] for dy in range(ch)], axis=0)  # (H, gh)
        x_bar = np.mean([rx[dx:dx + w] for dx in range(cw)], axis=0)  # (W, gw)
        return np.einsum("ya,xb->abyx", y_bar, x_bar).reshape(-1, h * w)

    def matrices(self, backend, dtype):
        key = (backend.name, str(backend.device), np.dtype(dtype).name)
        if key not in self._cache:
            self._cache[key] = tuple(backend.asarray(m, dtype) for m in self._host)
        return self._cache[key]


@dataclass(frozen=True)
class GridChunk:
    """``grids`` (n, gh, gw) of 0/1 and crop ``shifts`` (n, 2) for RISE masks."""

    grids: np.ndarray
    shifts: np.ndarray
    upsampler: _Upsampler

    @property
    def size(self) -> int:
        return len(self.grids)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """``(H, W)``: the shape of one mask (the engine gives :meth:`materialize` pooled memory of it)."""
        return tuple(self.upsampler.spatial)

    def materialize(self, backend, dtype, out=None):
        """Smooth keep-masks ``(n, H, W)`` with values in [0, 1], written into ``out`` when given."""
        up_y, up_x = self.upsampler.matrices(backend, dtype)
        h, w = self.upsampler.spatial
        rows = backend.asarray(self.shifts[:, :1] + np.arange(h), np.int64)  # (n, H)
        cols = backend.asarray(self.shifts[:, 1:] + np.arange(w), np.int64)  # (n, W)
        grids = backend.asarray(self.grids, dtype)
        return backend.bmm(backend.bmm(up_y[rows], grids), up_x[cols].swapaxes(1, 2), out=out)


class RandomGridSampler:
    """``n_masks`` RISE masks for an image of size ``spatial``, drawn from ``rng``.

    Grids and shifts come from two independent child streams, so the masks do not
    depend on the chunk size (the model's batch size).
    """

    chunk_type = GridChunk

    def __init__(self, spatial: tuple[int, int], n_masks: int, grid_size: tuple[int, int],
                 p_keep: float, rng: np.random.Generator) -> None:
        self.n_total, self.p_keep = n_masks, p_keep
        self.upsampler = _Upsampler(tuple(spatial), tuple(grid_size))
        self._grid_rng, self._shift_rng = rng.spawn(2)

    def chunks(self, chunk_size: int) -> Iterator[GridChunk]:
        gh, gw = self.upsampler.grid
        ch, cw = self.upsampler.cell
        for start in range(0, self.n_total, chunk_size):
            n = min(chunk_size, self.n_total - start)
            grids = (self._grid_rng.random((n, gh, gw)) < self.p_keep).astype(np.float32)
            # uniform doubles consume the stream one value each, whatever the chunking
            shifts = np.floor(self._shift_rng.random((n, 2)) * (ch, cw)).astype(np.int64)
            yield GridChunk(grids, shifts, self.upsampler)
