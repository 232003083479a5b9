"""The error estimate every amortised explanation carries, calibrated on held-out images.

Without spending queries, an explanation knows two things about itself: the spread of its
values, ``s = ||phi - mean(phi)||``, and how far the network's raw values were from
summing to ``f(x) - f(baseline)`` before the efficiency normalisation, the *gap* ``g``.
On the images it was trained for the network predicts that sum well; on an image unlike
them (another kind of picture, a class it never saw) it does not, and its values are
unreliable too. The calibration models the squared distance to the Shapley values as

    ||phi - shapley||^2  ~  a^2 s^2 + b^2 g^2

with ``a, b >= 0`` fitted (non-negative least squares) to the distances measured on the
validation images: ``||phi - phi_KernelSHAP||^2 - ||se_KernelSHAP||^2`` (KernelSHAP's own
variance, from its jackknife standard errors, taken out). The estimated relative error
is ``sqrt(a^2 + b^2 g^2 / s^2)``, in the units of :func:`perturbx.engine.relative_error`.
It is an estimate from a handful of images, not a bound; ``verify=n`` measures the error
of one explanation instead (:func:`perturbx.amortized.game.residual_values`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import nnls

__all__ = ["Calibration"]


@dataclass(frozen=True)
class Calibration:
    """Coefficients of the error model and how it fared on the images it was fitted on.

    Attributes
    ----------
    a, b : float
        ``||phi - shapley||^2 ~ a^2 s^2 + b^2 g^2``.
    n_images : int
        Validation images it was fitted on.
    measured : float
        Root mean squared relative error measured on them (against KernelSHAP, its variance removed).
    predicted : float
        The same, as the model predicts it.
    """

    a: float
    b: float
    n_images: int
    measured: float
    predicted: float

    @classmethod
    def fit(cls, values: np.ndarray, gaps: np.ndarray, reference: np.ndarray, errors: np.ndarray) -> Calibration:
        """Fit on validation images.

        Parameters
        ----------
        values : ndarray (n, M)
            The explainer's values of the validated target of each image.
        gaps : ndarray (n,)
            Their efficiency gaps (raw sum minus ``f(x) - f(baseline)``).
        reference, errors : ndarray (n, M)
            KernelSHAP's values and standard errors for the same target.
        """
        spread2 = ((values - values.mean(1, keepdims=True)) ** 2).sum(1)
        dist2 = np.maximum(((values - reference) ** 2).sum(1) - np.nan_to_num(errors ** 2).sum(1), 0.0)
        design = np.column_stack([spread2, np.asarray(gaps, dtype=np.float64) ** 2])
        norm = np.maximum(design.max(0), 1e-300)
        coef, _ = nnls(design / norm, dist2)
        a2, b2 = coef / norm
        ok = spread2 > 0
        measured = float(np.sqrt(np.mean(dist2[ok] / spread2[ok]))) if ok.any() else float("nan")
        predicted = float(np.sqrt(np.mean((design[ok] @ [a2, b2]) / spread2[ok]))) if ok.any() else float("nan")
        return cls(float(np.sqrt(a2)), float(np.sqrt(b2)), len(values), measured, predicted)

    def relative_error(self, values: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """Estimated relative error ``(T,)`` of values ``(T, M)`` with efficiency gaps ``(T,)`` (inf for a flat map
        with a gap)."""
        spread2 = ((values - values.mean(-1, keepdims=True)) ** 2).sum(-1)
        dist2 = self.a ** 2 * spread2 + self.b ** 2 * np.asarray(gaps, dtype=np.float64) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.sqrt(dist2 / spread2)
        return np.where(spread2 > 0, out, np.where(dist2 > 0, np.inf, 0.0))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(float(d["a"]), float(d["b"]), int(d["n_images"]), float(d["measured"]), float(d["predicted"]))
