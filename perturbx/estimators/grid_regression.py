"""RISE with a regression control variate: a linear surrogate of the score on the mask's grid cells.

A RISE mask is a binary grid ``c`` (G cells, each kept with probability ``p``) upsampled
and shifted: ``M(u) = sum_j W_j(u; s) c_j`` with interpolation weights ``W`` that depend
only on the random shift ``s``. For any surrogate ``g(c)`` of the score,

    E[f M(u)] / p = E[g M(u)] / p + E[(f - g) M(u)] / p.

For a linear ``g(c) = b0 + b . c`` the first term is known exactly,
``sum_j Wbar_j(u) (b0 + b_j (1 - p) + p sum_k b_k)`` with ``Wbar_j = E_s[W_j]`` (the
shift is independent of the grid and uniform on its cell), so only the residual
``f - g`` is estimated from the model's masks. Where the score is close to additive in
the grid's cells (the random-weight ResNet of the benchmarks) the residual is a small
fraction of the score's spread and the map needs many times fewer masks; where it is not
the estimate is no worse than the mean-score control variate it contains (``b = 0``).

The surrogate is fitted (ridge least squares) on the first ``n_fit`` masks, whose grids
and shifts are kept until then; from there on each chunk's residual is folded into a
:class:`~perturbx.estimators.MaskAverage` with the mean control variate, so memory does
not grow with the number of masks and masks after the fit give an unbiased estimate.
"""

from __future__ import annotations

import numpy as np

from perturbx.samplers.random_grid import GridChunk

from .mask_average import MaskAverage

#: ridge penalty of the surrogate's cell coefficients, relative to the number of masks
RIDGE = 1e-3


class GridRegression:
    """Streaming RISE estimate with a linear surrogate of the score on the grid cells as control variate.

    Parameters
    ----------
    backend : array backend of the model
    p_keep : float
        Probability that a grid cell keeps the input.
    n_fit : int, default 512
        Masks the surrogate is fitted on (at least ``4 G`` are used for a grid of ``G``
        cells); the fit happens earlier when :meth:`standard_error` or :meth:`finalize`
        is called first.
    track_error : bool, default False
        Keep what :meth:`standard_error` needs.
    """

    chunk_type = GridChunk

    def __init__(self, backend, p_keep: float, *, n_fit: int = 512, track_error: bool = False) -> None:
        self.backend, self.p_keep, self.n_fit = backend, float(p_keep), int(n_fit)
        self.residual = MaskAverage(backend, p_keep, control_variate=True, track_error=track_error)
        self._kept: list[tuple[GridChunk, np.ndarray]] = []  # chunks and scores before the fit
        self._n_kept = 0
        self.coef: np.ndarray | None = None  # (1 + G, T): intercept and cell coefficients, once fitted
        self._surrogate_map: np.ndarray | None = None

    def update(self, chunk: GridChunk, masks, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if self.coef is None:
            self._kept.append((chunk, scores))
            self._n_kept += chunk.size
            if self._n_kept >= max(self.n_fit, 4 * chunk.grids[0].size):
                self._fit()
            return
        self.residual.update(chunk, masks, scores - self._predict(chunk))

    def _predict(self, chunk: GridChunk) -> np.ndarray:
        """The surrogate's scores ``(n, T)`` of a chunk's grids."""
        cells = chunk.grids.reshape(chunk.size, -1).astype(np.float64)
        return self.coef[0] + cells @ self.coef[1:]

    def _fit(self) -> None:
        """Fit the surrogate on the kept masks, then fold their residuals (their masks rebuilt from the grids)."""
        chunks = [c for c, _ in self._kept]
        cells = np.concatenate([c.grids.reshape(c.size, -1) for c in chunks]).astype(np.float64)
        scores = np.concatenate([s for _, s in self._kept])
        n, g = cells.shape
        design = np.hstack([np.ones((n, 1)), cells])
        penalty = RIDGE * n * np.eye(g + 1)
        penalty[0, 0] = 0.0
        self.coef = np.linalg.solve(design.T @ design + penalty, design.T @ scores)
        self._surrogate_map = self._exact_map(chunks[0].upsampler)
        for chunk, s in self._kept:
            masks = chunk.materialize(self.backend, np.float32)
            self.residual.update(chunk, masks, s - self._predict(chunk))
        self._kept, self._n_kept = [], 0

    def _exact_map(self, upsampler) -> np.ndarray:
        """``E[g M(u)] / p`` of the linear surrogate, ``(T, H * W)``."""
        p, b0, b = self.p_keep, self.coef[0], self.coef[1:]  # (T,), (G, T)
        per_cell = b0[None, :] + b * (1.0 - p) + p * b.sum(axis=0, keepdims=True)  # (G, T)
        return per_cell.T @ upsampler.mean_cell_weights()

    def _ensure_fitted(self) -> None:
        if self.coef is None:
            if not self._kept:
                raise ValueError("GridRegression has seen no masks yet; a run needs at least one model batch "
                                 "of masks.")
            self._fit()

    def finalize(self) -> np.ndarray:
        """Saliency ``(T, H, W)``: the surrogate's exact map plus the residual's estimate."""
        self._ensure_fitted()
        residual = self.residual.finalize()
        return self._surrogate_map.reshape(residual.shape) + residual

    def standard_error(self, centred: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Estimate ``(T, D)`` and its standard error ``(T, D)``: the residual's (the surrogate's map is exact)."""
        self._ensure_fitted()
        estimate, error = self.residual.standard_error(centred)
        return estimate + self._surrogate_map, error
