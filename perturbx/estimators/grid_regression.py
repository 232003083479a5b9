"""RISE with a regression control variate: a linear surrogate of the score whose RISE map is exact.

A RISE mask is a binary grid ``c`` (G cells, each kept with probability ``p``) upsampled
and shifted: ``M(u) = sum_j W_j(u; s) c_j`` with interpolation weights ``W`` that depend
only on the random shift ``s``. For any surrogate ``g`` of the score,

    E[f M(u)] / p = E[g M(u)] / p + E[(f - g) M(u)] / p,

and if the first term is known exactly, only the residual ``f - g`` is estimated from the
model's masks. Two linear surrogates have an exact first term:

* ``features="blocks"`` (default): ``g = b0 + sum_k b_k Mbar_k``, ``Mbar_k`` the mean of the
  mask over block ``k`` of a ``(gh + 1) x (gw + 1)`` partition of the image, i.e. the
  mask itself, where the model sees it, at about the grid's resolution. Since
  ``E[M(v) M(u)] = p^2 + p (1 - p) K(v, u)`` with ``K(v, u) = E_s[sum_j W_j(v; s) W_j(u; s)]``,
  which factorises over the two axes (the shifts along them are independent), the map is
  ``b0 + p sum_k b_k + (1 - p) sum_k b_k (A_k K)(u)``, ``A_k`` block k's average;
* ``features="cells"``: ``g = b0 + b . c``, linear in the grid cells, whose map is
  ``sum_j Wbar_j(u) (b0 + b_j (1 - p) + p sum_k b_k)`` with ``Wbar_j = E_s[W_j]``. It does
  not see where the shift put each cell, and explains less of the score.

For scores that saturate (probabilities near 0 or 1) a linear surrogate leaves a large
residual; ``link="isotonic"`` (what ``RISE(control_variate="regression")`` uses) fits a
monotone function ``h`` of the linear surrogate ``eta`` to the scores: the map of ``eta`` stays
exact and that of ``h(eta) - eta`` is a Monte Carlo average over masks drawn without the
model, summed per shift so that no mask is materialised.

Where the score is far from linear in the mask the residual stays large and the estimate
is about as good as the mean-score control variate's that both contain (``b = 0``); the
masks each needs on three classifiers are in ``benchmarks/results/queries_models.md``.

The surrogate is fitted (ridge least squares) on the first ``n_fit`` masks, whose chunks
are kept until then; from there on each chunk's residual is folded into a
:class:`~perturbx.estimators.MaskAverage` with the mean control variate, so memory does not
grow with the number of masks and the masks after the fit give an unbiased estimate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from perturbx.samplers.random_grid import GridChunk, RandomGridSampler, interpolation_matrix

from .isotonic import IsotonicFit
from .mask_average import MaskAverage

#: ridge penalty of the surrogate's coefficients, relative to the number of masks
RIDGE = 1e-3
#: the surrogates :class:`GridRegression` can fit
FEATURES = ("blocks", "cells")
#: links of the surrogate: the linear score itself, or a monotone function of it fitted to the scores
LINKS = ("linear", "isotonic")
#: masks (drawn without the model, fixed seed) that estimate the map of an isotonic link's remainder
N_FREE, FREE_SEED = 16384, 20_20


def _apply_links(links: list | None, eta: np.ndarray) -> np.ndarray:
    """The surrogate's scores ``(n, T)`` from its linear scores ``eta`` ``(n, T)`` (per-target links)."""
    if links is None:
        return eta
    return np.stack([link.predict(eta[:, t]) for t, link in enumerate(links)], axis=1)


def _block_average(n: int, blocks: int) -> np.ndarray:
    """``(blocks, n)``: row k averages the pixels of block k of ``n`` pixels cut in ``blocks`` near-equal runs."""
    edges = np.linspace(0, n, blocks + 1).round().astype(int)
    out = np.zeros((blocks, n))
    for k in range(blocks):
        out[k, edges[k]:edges[k + 1]] = 1.0 / max(edges[k + 1] - edges[k], 1)
    return out


def _split(chunk: GridChunk, k: int) -> tuple[GridChunk, GridChunk]:
    """The chunk's first ``k`` masks and the rest."""
    return (GridChunk(chunk.grids[:k], chunk.shifts[:k], chunk.upsampler),
            GridChunk(chunk.grids[k:], chunk.shifts[k:], chunk.upsampler))


class _ShiftSums:
    """Masks grouped by their shift, for ``sum_n (v_n - vbar) M_n / ((n - 1) p) + vbar`` without materialising one.

    Masks that share a shift share their interpolation, so the value-weighted grids are summed per
    shift (one segmented reduction over the masks sorted by shift) and each sum is upsampled once;
    memory and time do not grow with the masks times the image size. The grouping depends on the
    masks only, so it is built once and reused for any values.
    """

    def __init__(self, chunks: list[GridChunk]) -> None:
        self.upsampler = up = chunks[0].upsampler
        keys = np.concatenate([c.shifts[:, 0] * up.cell[1] + c.shifts[:, 1] for c in chunks])
        self.order = np.argsort(keys, kind="stable")
        #: (n, G) the grids in shift order, and the shifts present with where each one's run starts
        self.grids = np.concatenate([c.grids for c in chunks]).reshape(len(keys), -1)[self.order]  # 0/1 float32
        self.keys, self.starts = np.unique(keys[self.order], return_index=True)
        self.ones = np.add.reduceat(self.grids, self.starts, axis=0, dtype=np.float64)  # (shifts present, G)

    def average(self, values: np.ndarray, p: float) -> np.ndarray:
        """The centred mask average ``(T, H * W)`` of per-mask ``values`` ``(n, T)`` (in the chunks' order)."""
        up, (n, t) = self.upsampler, values.shape
        mean = values.mean(axis=0)
        weighted = np.add.reduceat(values[self.order][:, :, None] * self.grids[:, None, :], self.starts, axis=0)
        sums = np.zeros((up.cell[0] * up.cell[1], t, self.grids.shape[1]))
        sums[self.keys] = (weighted - mean[None, :, None] * self.ones[:, None, :]) / (max(n - 1, 1) * p)
        return _upsample_shift_sums(sums.reshape(len(sums), t, *up.grid), up).reshape(t, -1) + mean[:, None]


@lru_cache(maxsize=4)
def _free_masks(spatial: tuple[int, int], grid: tuple[int, int], p_keep: float, features: str):
    """The ``N_FREE`` masks drawn without the model (fixed seed) for an isotonic link's remainder, grouped by
    shift, and the surrogate's features ``(N_FREE, F)`` of each: the same for every image of this size, so
    kept (about 12 MB at a 7x7 grid) instead of drawn again per explanation; built in chunks, so that the
    transient memory stays small."""
    sampler = RandomGridSampler(spatial, N_FREE, grid, p_keep, np.random.default_rng(FREE_SEED))
    chunks = list(sampler.chunks(1024))  # masks do not depend on the chunk size
    basis = (_Blocks if features == "blocks" else _Cells)(chunks[0].upsampler)
    return _ShiftSums(chunks), np.concatenate([basis.features(c) for c in chunks])


def _upsample_shift_sums(sums: np.ndarray, up) -> np.ndarray:
    """``sum_k R_y(dy_k) S_k R_x(dx_k)^T`` ``(T, H, W)`` of per-shift grid sums ``S`` ``(ch cw, T, gh, gw)``.

    The shifts along x are one matrix product per shift along y (their crops of the x
    interpolation side by side): ``ch`` products instead of ``ch cw`` small einsums, whose
    path search alone took most of a fit's time at 224 px (1,024 shifts).
    """
    (h, w), (ch, cw), (gh, gw) = up.spatial, up.cell, up.grid
    ry, rx = up._host
    t = sums.shape[1]
    right = np.stack([rx[dx:dx + w] for dx in range(cw)]).transpose(0, 2, 1).reshape(cw * gw, w)
    by_dy = sums.reshape(ch, cw, t, gh, gw).transpose(0, 2, 3, 1, 4).reshape(ch, t * gh, cw * gw)
    out = np.zeros((t, h, w))
    for dy in range(ch):
        out += np.einsum("ya,taw->tyw", ry[dy:dy + h], (by_dy[dy] @ right).reshape(t, gh, w))
    return out


class _Axis:
    """One image axis of the block surrogate: per-shift block projections and the shift-averaged kernel."""

    def __init__(self, n: int, grid: int, cell: int, blocks: int) -> None:
        up = interpolation_matrix(grid, (grid + 1) * cell)  # ((grid + 1) cell, grid)
        crops = [up[s:s + n] for s in range(cell)]  # the (n, grid) interpolation of each shift
        average = _block_average(n, blocks)  # (blocks, n)
        #: (cell, blocks, grid): block means of the interpolation, per shift
        self.project = np.stack([average @ c for c in crops])
        #: (blocks, n): block averages of K, the shift-averaged sum_j W_j(v) W_j(u) along this axis, as
        #: (average c) c^T per shift: no (n, n) matrix per shift (at 224 px, 32 of them were 26 MB at once)
        self.kernel = np.mean([p @ c.T for p, c in zip(self.project, crops, strict=True)], axis=0)


class _Blocks:
    """The block-mean surrogate's features and exact map for one upsampler."""

    def __init__(self, upsampler) -> None:
        (h, w), (gh, gw), (ch, cw) = upsampler.spatial, upsampler.grid, upsampler.cell
        self.y, self.x = _Axis(h, gh, ch, gh + 1), _Axis(w, gw, cw, gw + 1)
        self.n_features = (gh + 1) * (gw + 1)

    def features(self, chunk: GridChunk) -> np.ndarray:
        """Block means ``(n, (gh + 1) (gw + 1))`` of the chunk's masks, from its grids and shifts."""
        py, px = self.y.project[chunk.shifts[:, 0]], self.x.project[chunk.shifts[:, 1]]
        means = py @ chunk.grids.astype(np.float64) @ px.transpose(0, 2, 1)  # (n, a, b); batched products
        return means.reshape(chunk.size, -1)

    def exact_map(self, coef: np.ndarray, p: float) -> np.ndarray:
        """``E[g M(u)] / p`` of the surrogate with coefficients ``(1 + B, T)``, ``(T, H * W)``."""
        b0, b = coef[0], coef[1:]
        blocks = b.T.reshape(len(b0), self.y.kernel.shape[0], self.x.kernel.shape[0])  # (T, by, bx)
        spatial = np.einsum("ay,tab,bx->tyx", self.y.kernel, blocks, self.x.kernel).reshape(len(b0), -1)
        return (b0 + p * b.sum(axis=0))[:, None] + (1.0 - p) * spatial


class _Cells:
    """The grid-cell surrogate's features and exact map for one upsampler."""

    def __init__(self, upsampler) -> None:
        self.weights = upsampler.mean_cell_weights()  # (G, H * W)
        self.n_features = len(self.weights)

    @staticmethod
    def features(chunk: GridChunk) -> np.ndarray:
        return chunk.grids.reshape(chunk.size, -1).astype(np.float64)

    def exact_map(self, coef: np.ndarray, p: float) -> np.ndarray:
        b0, b = coef[0], coef[1:]  # (T,), (G, T)
        per_cell = b0[None, :] + b * (1.0 - p) + p * b.sum(axis=0, keepdims=True)  # (G, T)
        return per_cell.T @ self.weights


class GridRegression:
    """Streaming RISE estimate with a linear surrogate of the score as control variate.

    The surrogate is fitted on exactly the first ``n_fit`` masks (a chunk that crosses
    that count is split, so the map does not depend on the batch size) and kept from then on;
    an estimate asked for before (:meth:`finalize` on a smaller run, :meth:`standard_error`
    at an early-stopping check) fits it provisionally on the masks seen so far, which does
    not change what later masks are folded with. With fewer masks than twice the
    surrogate's coefficients the fit is not attempted and the estimate is the mean
    control variate's (:class:`~perturbx.estimators.MaskAverage`).

    Parameters
    ----------
    backend : array backend of the model
    p_keep : float
        Probability that a grid cell keeps the input.
    n_fit : int, default 512
        Masks the surrogate is fitted on (at least four per coefficient are used).
    features : {"blocks", "cells"}, default "blocks"
        The surrogate: linear in the mask's block means or in the grid cells (module notes).
    link : {"linear", "isotonic"}, default "linear"
        ``"isotonic"``: the surrogate is ``h(eta)``, ``eta`` the linear surrogate and ``h``
        the monotone function of it that best fits the scores
        (:class:`~perturbx.estimators.isotonic.IsotonicFit`: scikit-learn's
        ``IsotonicRegression`` without its import), for scores that saturate (probabilities).
        The map of ``eta`` stays exact; that of ``h(eta) - eta`` is a Monte Carlo estimate over
        ``N_FREE`` masks drawn without the model (fixed seed; no queries, none of
        them materialised).
    track_error : bool, default False
        Keep what :meth:`standard_error` needs.
    """

    chunk_type = GridChunk

    def __init__(self, backend, p_keep: float, *, n_fit: int = 512, features: str = "blocks",
                 link: str = "linear", track_error: bool = False) -> None:
        for name, value, allowed in (("features", features, FEATURES), ("link", link, LINKS)):
            if value not in allowed:
                raise ValueError(f"The '{name}' parameter of GridRegression must be one of {allowed}. "
                                 f"Got {value!r} instead.")
        self.link = link
        self.backend, self.p_keep, self.n_fit, self.features = backend, float(p_keep), int(n_fit), features
        self.track_error = track_error
        self.residual = self._residual_estimator()
        self._kept: list[tuple[GridChunk, np.ndarray]] = []  # chunks and scores before the fit
        self._n_kept = 0
        self._basis: _Blocks | _Cells | None = None
        self.coef: np.ndarray | None = None  # (1 + F, T): intercept and feature coefficients, once fitted
        self._links: list | None = None  # per target: the fitted isotonic link, or None (linear)
        self._surrogate_map: np.ndarray | None = None

    def _residual_estimator(self) -> MaskAverage:
        return MaskAverage(self.backend, self.p_keep, control_variate=True, track_error=self.track_error)

    def update(self, chunk: GridChunk, masks, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if self._basis is None:
            self._basis = (_Blocks if self.features == "blocks" else _Cells)(chunk.upsampler)
        if self.coef is None:
            need = max(self.n_fit, 4 * (1 + self._basis.n_features)) - self._n_kept
            if chunk.size > need:  # fit on exactly the first masks, whatever the chunk size
                head, tail = _split(chunk, need)
                self.update(head, masks[:need], scores[:need])
                self.update(tail, masks[need:], scores[need:])
                return
            self._kept.append((chunk, scores))
            self._n_kept += chunk.size
            if chunk.size == need:
                self.coef, self._links, self._surrogate_map = self._fit()
                self._fold_kept(self.residual)
                self._kept, self._n_kept = [], 0
            return
        self.residual.update(chunk, masks, scores - self._predict(chunk, self.coef, self._links))

    def _predict(self, chunk: GridChunk, coef: np.ndarray, links: list | None) -> np.ndarray:
        """The surrogate's scores ``(n, T)`` of a chunk's masks."""
        return _apply_links(links, coef[0] + self._basis.features(chunk) @ coef[1:])

    def _fit(self) -> tuple[np.ndarray, list | None, np.ndarray]:
        """Coefficients ``(1 + F, T)`` and links fitted on the kept masks, and their surrogate's map ``(T, H * W)``.

        Fewer than ``2 (1 + F)`` kept masks: no fit, all coefficients zero (the mean control variate).
        """
        scores = np.concatenate([s for _, s in self._kept])
        n, k = len(scores), self._basis.n_features
        if n < 2 * (k + 1):
            coef = np.zeros((k + 1, scores.shape[1]))
            return coef, None, np.zeros((scores.shape[1], 1))
        design = np.hstack([np.ones((n, 1)), np.concatenate([self._basis.features(c) for c, _ in self._kept])])
        penalty = RIDGE * n * np.eye(k + 1)
        penalty[0, 0] = 0.0
        coef = np.linalg.solve(design.T @ design + penalty, design.T @ scores)
        surrogate_map = self._basis.exact_map(coef, self.p_keep)
        if self.link == "linear":
            return coef, None, surrogate_map
        eta = design @ coef
        links = [IsotonicFit.fit(eta[:, t], scores[:, t]) for t in range(len(coef[0]))]
        return coef, links, surrogate_map + self._remainder_map(coef, links, self._kept[0][0].upsampler)

    def _remainder_map(self, coef: np.ndarray, links: list, upsampler) -> np.ndarray:
        """Monte Carlo map ``(T, H * W)`` of ``h(eta) - eta`` over ``N_FREE`` masks drawn without the model."""
        masks, features = _free_masks(upsampler.spatial, upsampler.grid, self.p_keep, self.features)
        eta = coef[0] + features @ coef[1:]
        return masks.average(_apply_links(links, eta) - eta, self.p_keep)

    def _fold_kept(self, residual: MaskAverage, coef: np.ndarray | None = None, links: list | None = None) -> None:
        """Fold the kept masks' residuals into ``residual`` (their masks rebuilt from the grids)."""
        if coef is None:
            coef, links = self.coef, self._links
        for chunk, s in self._kept:
            masks = chunk.materialize(self.backend, np.float32)
            residual.update(chunk, masks, s - self._predict(chunk, coef, links))

    def _current(self) -> tuple[MaskAverage, np.ndarray]:
        """The residual estimator and the surrogate's map: the fitted ones, or a provisional fit on the kept masks."""
        if self.coef is not None:
            return self.residual, self._surrogate_map
        if not self._kept:
            raise ValueError("GridRegression has seen no masks yet; a run needs at least one model batch "
                             "of masks.")
        coef, links, surrogate_map = self._fit()
        residual = self._residual_estimator()
        self._fold_kept(residual, coef, links)
        return residual, surrogate_map

    def finalize(self) -> np.ndarray:
        """Saliency ``(T, H, W)``: the surrogate's exact map plus the residual's estimate."""
        residual, surrogate_map = self._current()
        estimate = residual.finalize()
        return (surrogate_map + estimate.reshape(len(estimate), -1)).reshape(estimate.shape)

    def standard_error(self, centred: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Estimate ``(T, D)`` and its standard error ``(T, D)``: the residual's (the surrogate's map is exact)."""
        residual, surrogate_map = self._current()
        estimate, error = residual.standard_error(centred)
        return estimate + surrogate_map, error
