"""Adapter for a fitted scikit-learn classifier or regressor over flattened images."""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_choice, check_sample_shape

from .base import Adapter

METHODS = ("predict_proba", "decision_function", "predict")


class SKLearn(Adapter):
    """Wrap a fitted scikit-learn estimator (or pipeline) that takes flat feature rows.

    Parameters
    ----------
    estimator : fitted estimator
        Anything with the method named by ``method``; it receives ``(N, prod(sample_shape))``.
    sample_shape : tuple of int
        Shape of one sample before flattening, e.g. ``(8, 8)`` for the digits set.
    input_layout : {"CHW", "HWC", "HW"}, optional
        Layout of ``sample_shape``; defaults to "HW" for 2-D shapes and "HWC" for 3-D.
    method : {"predict_proba", "decision_function", "predict"}, default "predict_proba"
        Which method gives the scores; 1-D outputs (binary decision_function, regressors)
        become one column.
    batch_size : int, default 256
    """

    def __init__(self, estimator, *, sample_shape: tuple[int, ...], input_layout: str | None = None,
                 method: str = "predict_proba", batch_size: int = 256) -> None:
        if input_layout is None:
            n_axes = int(np.size(sample_shape)) if np.ndim(sample_shape) == 1 else 0
            input_layout = {2: "HW", 3: "HWC"}.get(n_axes, "HW")
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self.method = check_choice(method, "method", "SKLearn", METHODS)
        if not hasattr(estimator, method):
            raise TypeError(f"{type(estimator).__name__} has no method {method!r}; choose one of "
                            f"{[m for m in METHODS if hasattr(estimator, m)]}.")
        self.estimator = estimator
        self._sample_shape = check_sample_shape(sample_shape, self.layout, "SKLearn")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._sample_shape

    def _forward(self, batch: np.ndarray) -> object:
        out = np.asarray(getattr(self.estimator, self.method)(batch.reshape(len(batch), -1)))
        return out[:, None] if out.ndim == 1 else out
