"""Which window positions coarse-to-fine occlusion queries, level by level, and how it fills the rest.

The windows of plain occlusion start on a grid of ``(ny, nx)`` positions (one window size,
one stride). Level k of a :class:`NodeGrid` holds the positions whose grid index is a
multiple of ``step_k`` along each axis (plus the last index, so that the border is a
node); steps shrink by a factor per level down to 1, where every position is a node.
A position never queried takes the bilinear interpolation of the drops at the corners
of the finest level's cell around it whose corners were all queried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def axis_nodes(n: int, step: int) -> np.ndarray:
    """Grid indices ``0, step, 2 step, ...`` along an axis of ``n`` positions, and ``n - 1``."""
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def interpolation_matrix(n: int, nodes: np.ndarray) -> np.ndarray:
    """Weights ``(n, len(nodes))`` of piecewise-linear interpolation from ``nodes`` to ``0 .. n-1``."""
    if len(nodes) == 1:
        return np.ones((n, 1))
    t = np.arange(n)
    k = np.clip(np.searchsorted(nodes, t, side="right") - 1, 0, len(nodes) - 2)
    frac = (t - nodes[k]) / (nodes[k + 1] - nodes[k])
    out = np.zeros((n, len(nodes)))
    out[t, k] = 1.0 - frac
    out[t, k + 1] += frac
    return out


def parent_cells(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Index of the coarse cell (interval between nodes) holding each fine cell, one axis."""
    if len(coarse) == 1 or len(fine) == 1:
        return np.zeros(max(len(fine) - 1, 1), dtype=np.int64)
    return np.clip(np.searchsorted(coarse, fine[:-1], side="right") - 1, 0, len(coarse) - 2)


def cell_members(n: int, nodes: np.ndarray) -> np.ndarray:
    """Bool ``(n_cells, n)``: grid index i lies in cell c (the closed interval between two nodes)."""
    if len(nodes) == 1:
        return np.ones((1, n), dtype=bool)
    t = np.arange(n)
    return (t[None, :] >= nodes[:-1, None]) & (t[None, :] <= nodes[1:, None])


@dataclass(frozen=True)
class NodeGrid:
    """Nested node sets over a ``shape`` = (ny, nx) grid of window positions, coarsest first.

    Attributes
    ----------
    shape : (ny, nx)
    steps : tuple of int
        Node spacing in grid positions per level, decreasing to 1.
    """

    shape: tuple[int, int]
    steps: tuple[int, ...]

    @classmethod
    def build(cls, shape: tuple[int, int], coarsest_step: int, factor: int) -> NodeGrid:
        """Levels with steps ``coarsest_step, coarsest_step / factor, ..., 1`` (a power of ``factor``)."""
        n_levels = round(math.log(coarsest_step, factor)) + 1
        return cls(tuple(shape), tuple(factor ** k for k in reversed(range(n_levels))))

    def nodes(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        return tuple(axis_nodes(n, self.steps[level]) for n in self.shape)  # type: ignore[return-value]

    def node_mask(self, level: int) -> np.ndarray:
        """Bool ``shape``: the positions that are nodes of ``level``."""
        out = np.zeros(self.shape, dtype=bool)
        out[np.ix_(*self.nodes(level))] = True
        return out

    def cell_shape(self, level: int) -> tuple[int, int]:
        """Cells (intervals between nodes, one per axis of a single node) of ``level``: (cy, cx)."""
        return tuple(max(len(idx) - 1, 1) for idx in self.nodes(level))  # type: ignore[return-value]

    def corner_scores(self, level: int, values: np.ndarray) -> np.ndarray:
        """Largest ``values`` ``(T, ny, nx)`` over each cell's four corners, max over T: ``(cy, cx)``."""
        iy, ix = self.nodes(level)
        v = values[:, iy][:, :, ix].max(axis=0)
        if len(iy) > 1:
            v = np.maximum(v[:-1], v[1:])
        if len(ix) > 1:
            v = np.maximum(v[:, :-1], v[:, 1:])
        return v

    def refine(self, level: int, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next level's nodes inside the chosen ``cells`` (bool (cy, cx)) and the next level's cells there.

        Returns
        -------
        positions : bool ``shape``
            Nodes of ``level + 1`` lying in (the closed box of) a chosen cell.
        sub_cells : bool (cy', cx')
            The cells of ``level + 1`` that lie inside a chosen cell.
        """
        coarse, fine = self.nodes(level), self.nodes(level + 1)
        my, mx = (cell_members(n, c).astype(np.int64) for n, c in zip(self.shape, coarse, strict=True))
        box = (my.T @ cells.astype(np.int64) @ mx) > 0
        py, px = (parent_cells(f, c) for f, c in zip(fine, coarse, strict=True))
        return box & self.node_mask(level + 1), cells[np.ix_(py, px)]

    def interpolate(self, drops: np.ndarray, queried: np.ndarray) -> np.ndarray:
        """Fill the positions never queried, ``(T, ny, nx)``; queried positions keep their drop.

        Level by level, the nodes of the level that were not queried take the estimate of
        the level before, and the level's nodes are interpolated bilinearly over the grid
        (exact for a drop that is bilinear within each cell). The coarsest level's nodes
        must all have been queried.
        """
        est = None
        for level in range(len(self.steps)):
            iy, ix = self.nodes(level)
            values = drops[:, iy][:, :, ix]
            if est is not None:
                values = np.where(queried[np.ix_(iy, ix)], values, est[:, iy][:, :, ix])
            ay, ax = (interpolation_matrix(n, idx) for n, idx in zip(self.shape, (iy, ix), strict=True))
            est = np.einsum("ya,tab,xb->tyx", ay, values, ax)
        return np.where(queried, drops, est)
