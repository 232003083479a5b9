"""Score-weighted average of masks (RISE)."""

from __future__ import annotations

import numpy as np

from .base import weighted_mask_sum


class MaskAverage:
    """Monte-Carlo estimate of ``E[f(x ⊙ M) M] / E[M]`` (RISE, Petsiuk et al. 2018).

    The saliency of pixel u for target t is ``sum_n f_t(x_n) M_n(u) / (N * p_keep)``
    where ``p_keep = E[M(u)]``.

    Parameters
    ----------
    backend : array backend of the model
    p_keep : float
        Expected mask value, the normaliser.
    """

    def __init__(self, backend, p_keep: float) -> None:
        self.backend, self.p_keep = backend, p_keep
        self._sum = None
        self._count = 0
        self._shape: tuple[int, ...] = ()

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        part = weighted_mask_sum(self.backend, scores, masks)
        self._sum = part if self._sum is None else self._sum + part
        self._count += int(masks.shape[0])
        self._shape = tuple(masks.shape[1:])

    def finalize(self) -> np.ndarray:
        """Saliency ``(T, *mask_shape)``."""
        total = self.backend.to_numpy(self._sum)
        return (total / (self._count * self.p_keep)).reshape(len(total), *self._shape)
