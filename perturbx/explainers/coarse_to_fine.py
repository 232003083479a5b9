"""Coarse-to-fine occlusion, in the spirit of Hierarchical Perturbation (Cooper et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx import engine
from perturbx._utils import check_choice, check_float, check_int, check_int_tuple
from perturbx.estimators.score_drop import ScoreDrop
from perturbx.samplers.sliding_window import window_starts
from perturbx.samplers.window_subset import WindowSubsetSampler

from .base import Context, PerturbationExplainer

REFINE_RULES = ("range", "top", "all")
FILLS = ("scaled", "coarse", "zero")


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
            idx = np.flatnonzero(candidates)
            keep = idx[np.argsort(-amap.ravel()[idx], kind="stable")[:math.ceil(threshold * len(idx))]]
            selected.ravel()[keep] = True
    return selected


class CoarseToFineOcclusion(PerturbationExplainer):
    """Occlude large windows first, then smaller ones only where the response was large.

    Level 0 slides the coarsest window over the whole image; each next level divides
    window and stride by ``factor`` and evaluates only the windows that overlap the pixels
    selected for refinement at the level before; the last level uses ``window`` and
    ``stride``. Every level is one engine run of plain occlusion over its windows.

    **The map.** Let ``O_k`` be plain occlusion at level k (mean score drop over the level-k
    windows covering a pixel, as :class:`~perturbx.Occlusion` and Captum define it) and
    ``k(u)`` the finest level at which *every* window covering pixel u was evaluated (level 0
    covers the whole image). Where ``k(u)`` is the finest level the map is ``O_finest(u)``,
    exactly ``Occlusion(window, stride)``'s value. Elsewhere (``fill``):

    * ``"scaled"`` (default): ``O_k(u) * area(window) / area(window at level k)``, the share of
      a finest window if the coarse window's drop were spread evenly over its area (a large
      window removes more evidence than a small one, so its raw drop overstates the fine map);
    * ``"coarse"``: ``O_k(u)`` itself;
    * ``"zero"``: 0 (the pixel was judged not worth refining).

    Levels are not summed (unlike HiPe), so with ``refine="all"`` every window of every
    level is evaluated and the map equals ``Occlusion(window, stride)``.

    **Refinement.** Only pixels that carry the level just evaluated are candidates. With
    ``refine="range"`` (default) a candidate is refined when its value exceeds
    ``min + threshold * (max - min)`` of the target's current map (HiPe's rule is
    ``threshold=0.5``, the mid-range; the default 0.1 was chosen by measurement, see
    ``benchmarks/results/coarse_to_fine.md``); ``refine="top"`` refines the ``threshold``
    fraction of the candidates with the largest values. With several targets the union of
    every target's selection is refined, and every target's map uses all windows evaluated.
    A selected pixel is refined by evaluating every next-level window that overlaps it.

    Parameters
    ----------
    window : int or (h, w), default (16, 16)
        Finest window in pixels (spatial: each window covers all channels).
    stride : int or (h, w), default (8, 8)
        Finest stride; at most the window. Borders as in :class:`~perturbx.Occlusion`.
    factor : int, default 2
        Window and stride grow by this factor per coarser level.
    n_levels : int or None, default None
        Number of levels; None takes as many as keep at least two windows along every axis
        at the coarsest level (1 is plain occlusion).
    refine : {"range", "top", "all"}, default "range"
        Refinement rule, see above.
    threshold : float in [0, 1), default 0.1
        Fraction of the map's range (``"range"``) or of the candidates (``"top"``, then in (0, 1]).
    fill : {"scaled", "coarse", "zero"}, default "scaled"
        Value of pixels not refined down to the finest level, see above.
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
    ``stride``, ``n_windows`` evaluated = queries of that level, ``n_windows_full`` of the
    full grid, ``pixels`` whose value comes from that level), ``level_map`` (H, W) int (the
    level each pixel's value comes from) and ``budget_exhausted``.
    """

    def __init__(self, window=(16, 16), stride=(8, 8), *, factor: int = 2, n_levels: int | None = None,
                 refine: str = "range", threshold: float = 0.1, fill: str = "scaled", baseline=0.0,
                 random_state=None, progress: bool | None = None, max_queries: int | None = None) -> None:
        super().__init__(baseline=baseline, random_state=random_state, progress=progress,
                         max_queries=max_queries)
        owner = type(self).__name__
        self.window = check_int_tuple(window, "window", owner, lengths=(2,))
        self.stride = check_int_tuple(stride, "stride", owner, lengths=(2,))
        self.factor = check_int(factor, "factor", owner, minimum=2)
        self.n_levels = None if n_levels is None else check_int(n_levels, "n_levels", owner, minimum=1)
        self.refine = check_choice(refine, "refine", owner, REFINE_RULES)
        top = self.refine == "top"
        self.threshold = check_float(threshold, "threshold", owner, low=0.0, high=1.0, low_open=top, high_open=not top)
        self.fill = check_choice(fill, "fill", owner, FILLS)

    def _plan(self, ctx: Context) -> engine.Plan:
        """The coarsest level: plain occlusion over its full grid."""
        level = self._levels(ctx)[0]
        return self._level_plan(ctx, level, np.ones(level.grid_shape, dtype=bool))

    def _levels(self, ctx: Context) -> list[Level]:
        return pyramid(ctx.chw[1:], self.window, self.stride, self.factor, self.n_levels, type(self).__name__)

    def _level_plan(self, ctx: Context, level: Level, chosen: np.ndarray) -> engine.Plan:
        sampler = WindowSubsetSampler(ctx.chw[1:], level.window, level.start_offsets(chosen))
        return engine.Plan(sampler, ctx.blend_renderer(), ScoreDrop(ctx.adapter.backend, ctx.reference))

    def _estimate(self, ctx: Context, budget: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        levels = self._levels(ctx)
        maps = np.zeros((len(ctx.targets), *ctx.chw[1:]))
        level_map = np.zeros(ctx.chw[1:], dtype=np.int64)
        chosen = np.ones(levels[0].grid_shape, dtype=bool)
        reports, exhausted, used = [], False, 0
        for k, level in enumerate(levels):
            n = int(chosen.sum())
            if k > 0 and budget is not None and used + n > budget:
                exhausted = True
                break
            plan = self._level_plan(ctx, level, chosen)
            engine.run(plan, ctx.adapter, ctx.targets, budget=None if budget is None else budget - used,
                       progress=self.progress, desc=f"{type(self).__name__} level {k} (window {level.window})")
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
