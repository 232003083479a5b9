"""Coarse-to-fine occlusion, in the spirit of Hierarchical Perturbation (Cooper et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx import engine
from perturbx._utils import check_choice, check_float, check_int, check_int_tuple
from perturbx.estimators.score_drop import ScoreDrop
from perturbx.estimators.window_drops import WindowDrops
from perturbx.samplers.sliding_window import window_starts
from perturbx.samplers.window_nodes import NodeGrid
from perturbx.samplers.window_subset import WindowSubsetSampler

from .base import Context, PerturbationExplainer

REFINE_RULES = ("range", "top", "all")
FILLS = ("scaled", "coarse", "zero")
COARSEN = ("stride", "window")
#: coarsen="stride", n_levels=None: the coarsest spacing of queried windows is at most this many windows
MAX_COARSE_SPACING = 1.5


@dataclass(frozen=True)
class Level:
    """One level of the pyramid: a window sliding with a stride over an (H, W) image.

    Attributes
    ----------
    window, stride : (h, w) in pixels
    starts : pair of int arrays (ny,), (nx,)
        Window start offsets along the height and width, as :class:`~perturbx.Occlusion` places them.
    cover : pair of bool arrays (ny, H), (nx, W)
        ``cover[0][i, y]``: the i-th window row covers pixel row y (likewise for columns).
    """

    window: tuple[int, int]
    stride: tuple[int, int]
    starts: tuple[np.ndarray, np.ndarray]
    cover: tuple[np.ndarray, np.ndarray]

    @classmethod
    def build(cls, hw: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> Level:
        starts = tuple(window_starts(n, w, s) for n, w, s in zip(hw, window, stride, strict=True))
        cover = tuple((np.arange(n)[None, :] >= s[:, None]) & (np.arange(n)[None, :] < s[:, None] + w)
                      for n, w, s in zip(hw, window, starts, strict=True))
        return cls(window, stride, starts, cover)  # type: ignore[arg-type]

    @property
    def grid_shape(self) -> tuple[int, int]:
        return len(self.starts[0]), len(self.starts[1])

    def covering_count(self, chosen: np.ndarray) -> np.ndarray:
        """Number of ``chosen`` windows (bool (ny, nx)) covering each pixel, (H, W)."""
        cy, cx = (c.astype(np.int64) for c in self.cover)
        return cy.T @ chosen.astype(np.int64) @ cx

    def pixel_map(self, drops: np.ndarray) -> np.ndarray:
        """Plain occlusion's map ``(T, H, W)`` from the drop of every window ``(T, ny, nx)``.

        The mean over the windows covering each pixel, as :class:`~perturbx.estimators.ScoreDrop`
        folds it for binary windows.
        """
        cy, cx = (c.astype(np.float64) for c in self.cover)
        count = self.covering_count(np.ones(self.grid_shape, dtype=bool))
        return np.einsum("ay,tab,bx->tyx", cy, drops, cx) / np.maximum(count, 1)

    def touching(self, pixels: np.ndarray) -> np.ndarray:
        """Windows (bool (ny, nx)) that overlap any of ``pixels`` (bool (H, W))."""
        cy, cx = (c.astype(np.int64) for c in self.cover)
        return (cy @ pixels.astype(np.int64) @ cx.T) > 0

    def start_offsets(self, chosen: np.ndarray) -> np.ndarray:
        """(n, 2) start offsets of the ``chosen`` windows in raster order."""
        iy, ix = np.nonzero(chosen)
        return np.stack([self.starts[0][iy], self.starts[1][ix]], axis=1)


def pyramid(hw: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], factor: int,
            n_levels: int | None, owner: str = "CoarseToFineOcclusion") -> list[Level]:
    """Levels from coarsest to finest: level k from the end has window and stride ``* factor**k``.

    ``n_levels=None`` takes as many levels as keep at least two window positions along
    every axis at the coarsest one (window < image size); at least the finest level.
    """
    for axis, size, win, step in zip(("height", "width"), hw, window, stride, strict=True):
        if win > size:
            raise ValueError(f"{owner} window {window} is larger than the image along its {axis} "
                             f"({win} > {size}); use a smaller window.")
        if step > win:
            raise ValueError(f"{owner} stride {stride} is larger than the window {window} along the {axis}, "
                             f"which would leave pixels unexplained; use a stride <= window.")
    if n_levels is None:
        n_levels = 1
        while all(w * factor ** n_levels < n for w, n in zip(window, hw, strict=True)):
            n_levels += 1
    coarsest = tuple(w * factor ** (n_levels - 1) for w in window)
    if any(w > n for w, n in zip(coarsest, hw, strict=True)):
        raise ValueError(f"{owner} with n_levels={n_levels} and factor={factor} needs a coarsest window "
                         f"{coarsest} larger than the image {hw}; lower n_levels or pass n_levels=None.")
    return [Level.build(hw, tuple(w * factor ** k for w in window), tuple(s * factor ** k for s in stride))
            for k in reversed(range(n_levels))]


def select_pixels(maps: np.ndarray, candidates: np.ndarray, refine: str, threshold: float) -> np.ndarray:
    """Pixels to refine (bool (H, W)): the union over targets of each target's selection.

    Parameters
    ----------
    maps : ndarray (T, H, W)
        Current map of every target.
    candidates : bool ndarray (H, W)
        Pixels whose value comes from the level just evaluated; only these may be refined.
    refine : {"range", "top", "all"}
        ``"range"``: candidates whose value exceeds ``min + threshold * (max - min)`` of the
        target's whole current map (``threshold=0.5`` is HiPe's mid-range; a constant map
        selects nothing); ``"top"``: the ``threshold`` fraction of the candidates with the
        largest values (rounded up); ``"all"``: every candidate.
    threshold : float
        See ``refine``; unused by ``"all"``.
    """
    if refine == "all" or not candidates.any():
        return candidates.copy()
    selected = np.zeros_like(candidates)
    for amap in maps:
        if refine == "range":
            selected |= candidates & (amap > amap.min() + threshold * (amap.max() - amap.min()))
        else:
            selected |= top_share(amap, candidates, threshold)
    return selected


def top_share(values: np.ndarray, candidates: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of the ``candidates`` (bool, shape of ``values``) with the largest ``values``, rounded up."""
    idx = np.flatnonzero(candidates)
    keep = idx[np.argsort(-values.ravel()[idx], kind="stable")[:math.ceil(share * len(idx))]]
    out = np.zeros(candidates.shape, dtype=bool)
    out.ravel()[keep] = True
    return out


class CoarseToFineOcclusion(PerturbationExplainer):
    """Occlusion that queries few windows first and more only where the score responded.

    Two ways to be coarse first (``coarsen``), both ending at plain occlusion's windows
    (``window``, ``stride``) where they refine, and both equal to
    ``Occlusion(window, stride)`` when every level is refined everywhere:

    * ``"stride"`` (default): every level occludes the finest window, at positions spaced
      ``factor**k`` times the stride (level 0 the sparsest); a level queries the next level's
      positions only inside the cells (between four queried neighbours) it refines. A
      window never queried takes the bilinear interpolation of its neighbours' score drops
      (within the finest cell around it whose corners were queried), and the map is plain
      occlusion's mean drop over the windows covering each pixel. It never makes more
      queries than plain occlusion: every level's windows are the finest level's.
    * ``"window"`` (Hierarchical Perturbation, Cooper et al. 2022): level k from the end
      occludes windows and strides ``factor**k`` times larger over the whole image (level 0)
      or around the pixels selected for refinement; a pixel keeps the value of the finest
      level whose every window covering it was queried, scaled by ``fill``. The coarse
      levels are extra queries (up to about a third more than plain occlusion when
      everything is refined).

    **Refinement.** With ``refine="range"`` (default), ``coarsen="stride"`` refines a cell
    when the absolute drop at one of its corners is at least ``threshold`` times the largest
    absolute drop queried so far; ``coarsen="window"`` refines a pixel of the level just
    evaluated when its value exceeds ``min + threshold * (max - min)`` of the current map
    (HiPe's rule is ``threshold=0.5``, the mid-range). ``refine="top"`` refines the
    ``threshold`` fraction of the candidates (cells, pixels) with the largest values;
    ``"all"`` every candidate. With several targets, the union of every target's selection
    is refined. The default 0.1 was chosen by measurement (``benchmarks/results/coarse_to_fine.md``).

    Parameters
    ----------
    window : int or (h, w), default (16, 16)
        Finest window in pixels (spatial: each window covers all channels).
    stride : int or (h, w), default (8, 8)
        Finest stride; at most the window. Borders as in :class:`~perturbx.Occlusion`.
    coarsen : {"stride", "window"}, default "stride"
        What is coarse at the coarse levels, see above.
    factor : int, default 2
        Spacing (``"stride"``) or window and stride (``"window"``) grow by this factor per level.
    n_levels : int or None, default None
        Number of levels (1 is plain occlusion). None: for ``"stride"``, as many as keep the
        coarsest spacing of queried windows at most 1.5 windows (gaps between them at most
        half a window); for ``"window"``, as many as keep at least two windows along every
        axis at the coarsest level.
    refine : {"range", "top", "all"}, default "range"
        Refinement rule, see above.
    threshold : float in [0, 1), default 0.1
        Fraction of the largest drop / of the map's range (``"range"``) or of the candidates
        (``"top"``, then in (0, 1]).
    fill : {"scaled", "coarse", "zero"}, default "scaled"
        ``coarsen="window"`` only: value of pixels not refined down to the finest level:
        ``"scaled"``, the coarse map times ``area(window) / area(coarse window)`` (a large window
        removes more evidence than a small one); ``"coarse"``, the coarse map; ``"zero"``, 0.
    baseline : float, str, array or callable, default 0.0
        What occluded pixels become; see :mod:`perturbx.baselines`.
    random_state : int, Generator or None
        Only used by a ``"noise"`` baseline.
    progress : bool or None
        Progress bar per level; None shows it on a terminal only.
    max_queries : int, optional
        Query cap, never exceeded. The coarsest level must fit (else
        :class:`~perturbx.engine.QueryBudgetError` before any perturbed query); a finer level
        whose selected windows do not all fit is not run: refinement stops there
        (``extras["budget_exhausted"]`` is True) and the map keeps the levels done.

    Notes
    -----
    ``Explanation.extras``: ``levels`` (one dict per level, coarsest first: ``window``,
    ``stride`` (for ``"stride"``, the spacing of the level's positions in pixels),
    ``n_windows`` queried at that level, ``n_windows_full`` of the level's full grid) and
    ``budget_exhausted``. ``coarsen="stride"`` adds ``queried`` (bool (ny, nx), plain
    occlusion's window grid) and ``window_drops`` (T, ny, nx: queried or interpolated);
    ``coarsen="window"`` adds ``level_map`` (H, W) int, the level each pixel's value comes
    from, and ``pixels`` per level.
    """

    def __init__(self, window=(16, 16), stride=(8, 8), *, coarsen: str = "stride", factor: int = 2,
                 n_levels: int | None = None, refine: str = "range", threshold: float = 0.1,
                 fill: str = "scaled", baseline=0.0, random_state=None, progress: bool | None = None,
                 max_queries: int | None = None) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries)
        owner = type(self).__name__
        self.window = check_int_tuple(window, "window", owner, lengths=(2,))
        self.stride = check_int_tuple(stride, "stride", owner, lengths=(2,))
        self.coarsen = check_choice(coarsen, "coarsen", owner, COARSEN)
        self.factor = check_int(factor, "factor", owner, minimum=2)
        self.n_levels = None if n_levels is None else check_int(n_levels, "n_levels", owner, minimum=1)
        self.refine = check_choice(refine, "refine", owner, REFINE_RULES)
        top = self.refine == "top"
        self.threshold = check_float(threshold, "threshold", owner, low=0.0, high=1.0, low_open=top, high_open=not top)
        self.fill = check_choice(fill, "fill", owner, FILLS)

    def _plan(self, ctx: Context) -> engine.Plan:
        """The coarsest level: its windows over the whole image."""
        if self.coarsen == "stride":
            finest, grid = self._node_grid(ctx)
            return self._subset_plan(ctx, finest, grid.node_mask(0), WindowDrops(ctx.reference))
        level = self._levels(ctx)[0]
        return self._subset_plan(ctx, level, np.ones(level.grid_shape, dtype=bool),
                                 ScoreDrop(ctx.adapter.backend, ctx.reference))

    def _levels(self, ctx: Context) -> list[Level]:
        return pyramid(ctx.chw[1:], self.window, self.stride, self.factor, self.n_levels, type(self).__name__)

    def _node_grid(self, ctx: Context) -> tuple[Level, NodeGrid]:
        """Plain occlusion's windows and the levels of positions queried (``coarsen="stride"``)."""
        finest = pyramid(ctx.chw[1:], self.window, self.stride, self.factor, 1, type(self).__name__)[0]
        if self.n_levels is not None:
            return finest, NodeGrid.build(finest.grid_shape, self.factor ** (self.n_levels - 1), self.factor)
        step, widest = 1, max(finest.grid_shape) - 1
        while step < widest and all(step * self.factor * s <= MAX_COARSE_SPACING * w
                                    for s, w in zip(self.stride, self.window, strict=True)):
            step *= self.factor
        return finest, NodeGrid.build(finest.grid_shape, step, self.factor)

    def _subset_plan(self, ctx: Context, level: Level, chosen: np.ndarray, estimator) -> engine.Plan:
        sampler = WindowSubsetSampler(ctx.chw[1:], level.window, level.start_offsets(chosen))
        return engine.Plan(sampler, ctx.blend_renderer(), estimator)

    def _estimate(self, ctx: Context, budget: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        if self.coarsen == "stride":
            return self._estimate_by_stride(ctx, budget)
        return self._estimate_by_window(ctx, budget)

    def _run_level(self, ctx: Context, plan: engine.Plan, k: int, budget: int | None, used: int) -> None:
        engine.run(plan, ctx.adapter, ctx.target, budget=None if budget is None else budget - used,
                   progress=self.progress, desc=f"{type(self).__name__} level {k}")

    def _estimate_by_stride(self, ctx: Context, budget: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        finest, grid = self._node_grid(ctx)
        drops = np.zeros((ctx.n_targets, *finest.grid_shape))
        queried = np.zeros(finest.grid_shape, dtype=bool)
        chosen, cells = grid.node_mask(0), None
        reports, exhausted, used = [], False, 0
        for k in range(len(grid.steps)):
            n = int(chosen.sum())
            if k > 0 and budget is not None and used + n > budget:
                exhausted = True
                break
            plan = self._subset_plan(ctx, finest, chosen, WindowDrops(ctx.reference))
            self._run_level(ctx, plan, k, budget, used)
            used += n
            drops[:, chosen] = plan.estimator.finalize().T
            queried |= chosen
            reports.append({"n_windows": n, "n_windows_full": int(grid.node_mask(k).sum())})
            if k + 1 == len(grid.steps):
                break
            candidates = np.ones(grid.cell_shape(k), dtype=bool) if cells is None else cells
            chosen, cells = grid.refine(k, candidates & self._select_cells(grid, k, drops, queried, candidates))
            chosen &= ~queried
            if not chosen.any():
                break
        reports += [{"n_windows": 0, "n_windows_full": int(grid.node_mask(k).sum())}
                    for k in range(len(reports), len(grid.steps))]
        for step, report in zip(grid.steps, reports, strict=True):
            report.update(window=finest.window, stride=tuple(step * s for s in finest.stride))
        estimate = grid.interpolate(drops, queried)
        return finest.pixel_map(estimate), {"levels": reports, "queried": queried, "window_drops": estimate,
                                            "budget_exhausted": exhausted}

    def _select_cells(self, grid: NodeGrid, k: int, drops: np.ndarray, queried: np.ndarray,
                      candidates: np.ndarray) -> np.ndarray:
        """Cells of level ``k`` to refine (bool (cy, cx)) under the refinement rule."""
        if self.refine == "all":
            return np.ones_like(candidates)
        largest = np.abs(drops[:, queried]).max(axis=1)                       # (T,)
        scaled = np.abs(drops) / np.where(largest > 0, largest, np.inf)[:, None, None]
        score = grid.corner_scores(k, scaled)
        if self.refine == "range":
            return (score >= self.threshold) & (score > 0)
        return top_share(score, candidates, self.threshold)

    def _estimate_by_window(self, ctx: Context, budget: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        levels = self._levels(ctx)
        maps = np.zeros((ctx.n_targets, *ctx.chw[1:]))
        level_map = np.zeros(ctx.chw[1:], dtype=np.int64)
        chosen = np.ones(levels[0].grid_shape, dtype=bool)
        reports, exhausted, used = [], False, 0
        for k, level in enumerate(levels):
            n = int(chosen.sum())
            if k > 0 and budget is not None and used + n > budget:
                exhausted = True
                break
            plan = self._subset_plan(ctx, level, chosen, ScoreDrop(ctx.adapter.backend, ctx.reference))
            self._run_level(ctx, plan, k, budget, used)
            used += n
            complete = level.covering_count(chosen) == level.covering_count(np.ones_like(chosen))
            maps[:, complete] = plan.estimator.finalize()[:, complete]
            level_map[complete] = k
            reports.append({"window": level.window, "stride": level.stride, "n_windows": n,
                            "n_windows_full": int(chosen.size)})
            if k + 1 < len(levels):
                chosen = levels[k + 1].touching(select_pixels(maps, level_map == k, self.refine, self.threshold))
                if not chosen.any():
                    break
        reports += [{"window": level.window, "stride": level.stride, "n_windows": 0,
                     "n_windows_full": int(np.prod(level.grid_shape))} for level in levels[len(reports):]]
        for k, report in enumerate(reports):
            report["pixels"] = int((level_map == k).sum())
        return self._fill(maps, level_map, levels), {"levels": reports, "level_map": level_map,
                                                     "budget_exhausted": exhausted}

    def _fill(self, maps: np.ndarray, level_map: np.ndarray, levels: list[Level]) -> np.ndarray:
        """Apply ``fill`` to the pixels whose value comes from a coarser level than the finest."""
        if self.fill == "coarse":
            return maps
        area = np.array([np.prod(level.window) for level in levels], dtype=np.float64)
        scale = area[-1] / area if self.fill == "scaled" else (np.arange(len(levels)) == len(levels) - 1) * 1.0
        return maps * scale[level_map]
