"""The cooperative game behind the explanations, on a fixed grid of players (numpy only).

Players are the cells of a ``rows x cols`` grid over the image
(:class:`perturbx.segmentation.Grid`); a coalition ``z`` (M,) of 0/1 keeps the cells it
names and replaces the others by the baseline, and the game is the target's scalars for
that image, ``v(z)`` (T,). The Shapley values solve KernelSHAP's regression

    minimise  E_{z ~ p} (v(z) - v(0) - z . phi)^2   subject to  sum(phi) = v(1) - v(0)

where ``p`` is the Shapley kernel as a distribution over the coalitions of sizes 1 .. M-1
(a size ``s`` with probability proportional to ``1 / (s (M - s))``, then a uniform subset
of that size). The explainer is trained on that objective with coalitions drawn from
``p`` in complementary pairs (FastSHAP), and :func:`residual_values` uses the same
characterisation to estimate, from a few fresh coalitions, how far given values are from
the Shapley values.
"""

from __future__ import annotations

import numpy as np

from perturbx.segmentation import Grid

__all__ = ["grid_segments", "kernel_moments", "normalise", "residual_values", "sample_coalitions", "size_probs"]


def grid_segments(hw: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The players as a segment map ``(H, W)`` of int64 labels ``0 .. rows*cols - 1`` (row-major cells)."""
    return np.asarray(Grid(grid)(np.empty(hw)), dtype=np.int64)


def size_probs(m: int) -> np.ndarray:
    """Probability of each coalition size ``s = 0 .. M`` under the Shapley kernel (0 at both ends), shape (M+1,)."""
    p = np.zeros(m + 1)
    s = np.arange(1, m)
    p[1:m] = 1.0 / (s * (m - s))
    return p / p.sum()


def sample_coalitions(rng: np.random.Generator, n_pairs: int, m: int) -> np.ndarray:
    """``2 n_pairs`` coalitions (2 n_pairs, M) uint8 from the Shapley kernel: each followed by its complement."""
    sizes = rng.choice(m + 1, size=n_pairs, p=size_probs(m))
    order = np.argsort(rng.random((n_pairs, m)), axis=1)
    first = (np.argsort(order, axis=1) < sizes[:, None]).astype(np.uint8)  # a uniform subset of each size
    out = np.empty((2 * n_pairs, m), dtype=np.uint8)
    out[0::2], out[1::2] = first, 1 - first
    return out


def normalise(raw, delta):
    """Additive efficiency normalisation: ``raw + (delta - sum(raw)) / M``, so the values sum to ``delta``.

    Works on numpy arrays and torch tensors alike.

    Parameters
    ----------
    raw : array (..., T, M)
        Values before normalisation.
    delta : array (..., T)
        ``v(1) - v(0)`` of each target.
    """
    m = raw.shape[-1]
    return raw + ((delta - raw.sum(-1)) / m)[..., None]


def kernel_moments(m: int) -> tuple[float, float]:
    """``E[z_i]`` and ``E[z_i z_j]`` (i != j) under the Shapley kernel distribution of M players.

    ``E[z z^T] = (e1 - e2) I + e2 11^T``; on vectors summing to zero it is ``(e1 - e2) I``.
    """
    p = size_probs(m)
    s = np.arange(m + 1)
    e1 = float((p * s).sum() / m)
    e2 = float((p * s * (s - 1)).sum() / (m * (m - 1))) if m > 1 else 0.0
    return e1, e2


def residual_values(z: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased estimate of ``shapley(v) - phi`` from the residual game on kernel-drawn pairs.

    For values ``phi`` that already sum to ``v(1) - v(0)``, the residual game
    ``r(z) = v(z) - v(0) - z . phi`` has Shapley values ``delta = shapley(v) - phi`` (the
    Shapley value is linear and ``phi`` is that of the additive game ``z . phi``), and
    ``r(1) = r(0) = 0``. KernelSHAP's regression then gives
    ``delta = (b - mean(b)) / (e1 - e2)`` with ``b = E_p[z r(z)]`` (Covert & Lee 2021's
    unbiased KernelSHAP for a game with zero total), so averaging ``z r(z)`` over drawn
    coalitions estimates ``delta`` without bias, with any number of them.

    Parameters
    ----------
    z : ndarray (2K, M)
        K complementary pairs (rows ``2k`` and ``2k + 1``) drawn by :func:`sample_coalitions`.
    residual : ndarray (2K, T)
        ``r(z)`` of each row and target.

    Returns
    -------
    delta : ndarray (T, M)
        The estimate of ``shapley(v) - phi``.
    squared : ndarray (T, M)
        Unbiased estimate of each ``(shapley(v) - phi)_j^2`` (a U-statistic over the K pairs,
        NaN for one pair); summed over the players, of ``||shapley(v) - phi||^2``. An entry can
        come out negative when the error is within the noise.
    """
    z = np.asarray(z, dtype=np.float64)
    residual = np.asarray(residual, dtype=np.float64)
    k, m = len(z) // 2, z.shape[1]
    e1, e2 = kernel_moments(m)
    rows = z[:, None, :] * residual[:, :, None]                   # (2K, T, M)
    pairs = (rows[0::2] + rows[1::2]) / 2                          # (K, T, M): one draw each, same mean
    pairs = (pairs - pairs.mean(axis=-1, keepdims=True)) / (e1 - e2)
    delta = pairs.mean(axis=0)
    if k < 2:
        return delta, np.full(delta.shape, np.nan)
    total = pairs.sum(axis=0)
    squared = (total ** 2 - (pairs ** 2).sum(axis=0)) / (k * (k - 1))
    return delta, squared
