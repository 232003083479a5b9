"""Mean score drop over the perturbations that cover each pixel (occlusion)."""

from __future__ import annotations

import numpy as np

from .base import weighted_mask_sum


class ScoreDrop:
    """Attribution of u = mean over perturbations n covering u of ``f(x) - f(x_n)``.

    "Covering" is weighted by how much of u a perturbation removes, ``1 - mask``; for
    binary windows this is Captum's Occlusion. Pixels no perturbation touches get 0.

    Parameters
    ----------
    backend : array backend of the model
    reference : ndarray, shape (T,)
        Scores of the unperturbed input for the selected targets.
    """

    chunk_type = None

    def __init__(self, backend, reference: np.ndarray) -> None:
        self.backend = backend
        self.reference = np.asarray(reference, dtype=np.float64)
        self._drop = None
        self._cover = None
        self._shape: tuple[int, ...] = ()

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        removed = 1.0 - masks
        drop = weighted_mask_sum(self.backend, self.reference[None, :] - scores, removed)
        cover = self.backend.cast(removed.reshape(removed.shape[0], -1).sum(0), np.float64)
        self._drop = drop if self._drop is None else self._drop + drop
        self._cover = cover if self._cover is None else self._cover + cover
        self._shape = tuple(masks.shape[1:])

    def finalize(self) -> np.ndarray:
        """Attributions ``(T, *mask_shape)``."""
        drop, cover = self.backend.to_numpy(self._drop), self.backend.to_numpy(self._cover)
        out = np.divide(drop, cover, out=np.zeros_like(drop), where=cover > 0)
        return out.reshape(len(drop), *self._shape)
