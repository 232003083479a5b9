"""Score-weighted average of masks (RISE), with an optional control variate and standard error."""

from __future__ import annotations

import numpy as np

from .base import weighted_mask_sum


class MaskAverage:
    """Monte-Carlo estimate of ``E[f(x ⊙ M) M] / E[M]`` (RISE, Petsiuk et al. 2018).

    The plain saliency of pixel u for target t is ``S(u) = sum_n f_n M_n(u) / (N p)``,
    ``f_n`` the model's score for mask n and ``p = p_keep = E[M(u)]``.

    With ``control_variate=True`` the mask value itself, whose mean ``p`` is known, is the
    control variate: since ``E[f M(u)] = Cov(f, M(u)) + p E[f]``, the estimate is

        ``S(u) = sum_n (f_n - f_bar) M_n(u) / ((N - 1) p) + f_bar``

    (the unbiased sample covariance over ``p``, plus the mean score ``f_bar``). It has the
    same expectation as the plain one but not its largest noise term, ``f_bar (M_bar(u) - p) / p``,
    and a model whose score never changes gets an exactly constant map with zero error.

    Scores are accumulated relative to the first score seen (per target), which leaves both
    estimates unchanged and keeps the second moments free of cancellation.

    Parameters
    ----------
    backend : array backend of the model
    p_keep : float
        Expected mask value, the normaliser.
    control_variate : bool, default False
        Use the control-variate estimate above.
    track_error : bool, default False
        Also accumulate the second moments that :meth:`standard_error` needs (one more
        matrix product per chunk).
    """

    chunk_type = None

    def __init__(self, backend, p_keep: float, *, control_variate: bool = False, track_error: bool = False) -> None:
        self.backend, self.p_keep = backend, p_keep
        self.control_variate, self.track_error = control_variate, track_error
        self._sum = None  # sum_n f_n M_n (T, D) on the backend: plain, without tracking
        self._count = 0
        self._shape: tuple[int, ...] = ()
        self._shift: np.ndarray | None = None  # (T,) first scores
        self._moments: dict[str, object] = {}

    def _add(self, key: str, value) -> None:
        self._moments[key] = value if key not in self._moments else self._moments[key] + value

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        self._shape = tuple(masks.shape[1:])
        if not (self.control_variate or self.track_error):
            part = weighted_mask_sum(self.backend, scores, masks)
            self._sum = part if self._sum is None else self._sum + part
            self._count += int(masks.shape[0])
            return
        if self._shift is None:
            self._shift = np.asarray(scores[0], dtype=np.float64)
        g = np.asarray(scores, dtype=np.float64) - self._shift  # (n, T)
        n = len(g)
        ones = np.ones((n, 1))
        flat = masks.reshape(n, -1)
        weights = [g, ones]
        if self.track_error:
            m = np.asarray(self.backend.to_numpy(flat.mean(1)), dtype=np.float64)[:, None]  # (n, 1) mask means
            weights += [g * g * m, g * m, m]
            powers = np.concatenate([ones, g, g * g], axis=1)  # (n, 1 + 2T)
            self._add("m_sum", powers.T @ m[:, 0])
            self._add("m2_sum", powers.T @ (m[:, 0] ** 2))
            self._add("mask2", weighted_mask_sum(self.backend, powers, masks * masks))
        part = weighted_mask_sum(self.backend, np.concatenate(weights, axis=1), masks)
        self._add("g_sum", g.sum(axis=0))
        self._add("mask1", part)
        self._count += n

    def finalize(self) -> np.ndarray:
        """Saliency ``(T, *mask_shape)``."""
        return self._estimate().reshape(-1, *self._shape)

    def _estimate(self) -> np.ndarray:
        """Saliency ``(T, D)``, float64."""
        n, p = self._count, self.p_keep
        if n == 0:
            raise ValueError("MaskAverage has seen no masks yet; a run needs at least one model batch of masks "
                             "(with max_queries: at least the adapter's batch_size + 1).")
        if self._sum is not None:
            return self.backend.to_numpy(self._sum) / (n * p)
        mask1 = self.backend.to_numpy(self._moments["mask1"])
        t = len(self._shift)
        g_m, m_sum = mask1[:t], mask1[t]  # sum g M (T, D), sum M (D,)
        g_mean = self._moments["g_sum"] / n
        if not self.control_variate:
            return (g_m + self._shift[:, None] * m_sum) / (n * p)
        if n == 1:
            return np.broadcast_to(self._shift[:, None], g_m.shape).copy()
        return (g_m - g_mean[:, None] * m_sum) / ((n - 1) * p) + (self._shift + g_mean)[:, None]

    def standard_error(self, centred: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Current estimate ``(T, D)`` and its standard error ``(T, D)`` (needs ``track_error``).

        The error comes from the per-mask contributions ``Z_n(u) = (f_n - c) M_n(u) / p``
        (``c = 0`` for the plain estimate, the mean score for the control variate), whose
        sample variance over the N masks, divided by N, is the variance of the Monte-Carlo
        mean. With ``centred=True`` (default) it is the error of the map relative to its own
        spatial mean, i.e. of ``S(u) - mean_v S(v)``, with ``Z_n(u) - mean_v Z_n(v)`` in place
        of ``Z_n(u)``: a noise that shifts the whole map (that of ``f_bar``) is left out, as
        :func:`perturbx.engine.relative_error` leaves out the map's mean. Infinite with
        fewer than two masks.
        """
        if not self.track_error:
            raise ValueError("standard_error() needs MaskAverage(track_error=True); build the estimator with it.")
        estimate, n, p = self._estimate(), self._count, self.p_keep
        if n < 2:
            return estimate, np.full_like(estimate, np.inf)
        t = len(self._shift)
        mo = {k: (self.backend.to_numpy(v) if k.startswith("mask") else v) for k, v in self._moments.items()}
        # the residual factor r_n = f_n - c = g_n - b, with b per target
        b = mo["g_sum"] / n if self.control_variate else -self._shift
        mask1, mask2 = mo["mask1"], mo["mask2"]
        g_m, m_sum = mask1[:t], mask1[t]
        g2m_m, gm_m, m_m = mask1[t + 1:2 * t + 1], mask1[2 * t + 1:3 * t + 1], mask1[3 * t + 1]
        m2, gm2, g2m2 = mask2[0], mask2[1:t + 1], mask2[t + 1:]
        bc = b[:, None]
        # sum_n r_n M_n and sum_n r_n^2 M_n^2, per target and pixel
        first = g_m - bc * m_sum
        second = g2m2 - 2 * bc * gm2 + bc ** 2 * m2
        if centred:  # M_n(u) -> M_n(u) - m_n
            ms, m2s = mo["m_sum"], mo["m2_sum"]  # [sum m, sum g m, sum g^2 m], likewise for m^2
            r_m = ms[1:t + 1] - b * ms[0]  # sum r m (T,)
            r2_mm = m2s[t + 1:] - 2 * b * m2s[1:t + 1] + b ** 2 * m2s[0]  # sum r^2 m^2 (T,)
            r2_m_mask = g2m_m - 2 * bc * gm_m + bc ** 2 * m_m  # sum r^2 m M (T, D)
            first = first - r_m[:, None]
            second = second - 2 * r2_m_mask + r2_mm[:, None]
        variance = np.maximum(second - first ** 2 / n, 0.0) / (n - 1)
        return estimate, np.sqrt(variance / n) / p
