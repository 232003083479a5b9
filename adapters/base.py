"""The adapter interface: how perturbx talks to a model.

An adapter owns batching, the device (through its array backend), the input layout
and the validation of what the model returns. Explainers only ever call
:meth:`Adapter.predict_batch` with a batch already built on the adapter's backend,
of at most ``batch_size`` rows, and get back a validated ``(n, n_classes)`` numpy
array of scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from perturbx._utils import Layout, check_int, check_sample
from perturbx.backend import NUMPY, Array


class Adapter(ABC):
    """Base class of every model adapter.

    Parameters
    ----------
    batch_size : int
        Rows per model call. Perturbations are generated, rendered and scored in
        chunks of this size, so it also bounds perturbation memory.
    input_layout : {"CHW", "HWC", "HW"}
        Layout of one sample as the model takes it.
    """

    #: float dtype of the batches the model receives
    dtype = np.float32

    def __init__(self, *, batch_size: int = 64, input_layout: str = "CHW") -> None:
        self.batch_size = check_int(batch_size, "batch_size", type(self).__name__)
        self.layout = Layout(input_layout)
        self.input_layout = input_layout
        #: number of rows (samples) the model has evaluated through this adapter
        self.n_queries = 0

    @property
    def backend(self):
        """The array backend on which batches for this model are built."""
        return NUMPY

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Expected shape of one sample, or None when the model does not say."""
        return None

    @abstractmethod
    def _forward(self, batch: Array) -> object:
        """Run the model on a backend batch of at most ``batch_size`` rows."""

    def check_sample(self, x: object) -> np.ndarray:
        """Validate one sample for this model; returns it as a float array."""
        return check_sample(x, self.layout, self.sample_shape, dtype=self.dtype)

    def predict_batch(self, batch: Array) -> np.ndarray:
        """Scores for a backend batch ``(n, *sample_shape)``, ``n <= batch_size``.

        Returns
        -------
        ndarray, shape (n, n_classes), float64
        """
        n = int(batch.shape[0])
        out = self._forward(batch)
        self.n_queries += n
        return self._check_scores(out, n)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores for a numpy batch ``(N, *sample_shape)`` of any size, in chunks.

        Returns
        -------
        ndarray, shape (N, n_classes), float64
        """
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != self.layout.ndim + 1:
            raise ValueError(f"predict takes a batch of layout 'N{self.layout.name}' with "
                             f"{self.layout.ndim + 1} axes. Got shape {x.shape}.")
        parts = [self.predict_batch(self.backend.asarray(x[i:i + self.batch_size], self.dtype))
                 for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts, axis=0)

    __call__ = predict

    def _check_scores(self, out: object, n_rows: int) -> np.ndarray:
        name = type(self).__name__
        try:
            scores = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"The model behind {name} returned {type(out).__name__}, which is not "
                            f"an array of numbers; it must return scores of shape (n, n_classes).") from exc
        if scores.ndim != 2:
            hint = (" If it returns one score per row, reshape it to (n, 1)." if scores.ndim == 1 else "")
            raise ValueError(f"The model behind {name} returned an array of shape {scores.shape} for "
                             f"{n_rows} inputs; expected a 2-D array (n_rows, n_classes).{hint}")
        if scores.shape[0] != n_rows:
            raise ValueError(f"The model behind {name} returned {scores.shape[0]} rows for a batch of "
                             f"{n_rows} inputs; it must return one row of scores per input row.")
        if scores.shape[1] < 1:
            raise ValueError(f"The model behind {name} returned zero classes (shape {scores.shape}).")
        if not np.all(np.isfinite(scores)):
            bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
            raise ValueError(f"The model behind {name} returned {bad} NaN or infinite scores for a "
                             f"batch of {n_rows} inputs; attributions would be meaningless.")
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, input_layout={self.input_layout!r})"
