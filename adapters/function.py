"""Adapter for a plain Python function over numpy batches."""

from __future__ import annotations

from collections.abc import Callable as CallableT

import numpy as np

from perturbx._utils import check_sample_shape

from .base import Adapter


class Callable(Adapter):
    """Wrap ``fn(batch) -> scores``.

    Parameters
    ----------
    fn : callable
        Takes a float32 numpy batch ``(N, *sample_shape)`` and returns scores
        ``(N, n_classes)`` (anything ``numpy.asarray`` accepts).
    batch_size : int, default 64
        Largest N passed to ``fn`` in one call.
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
        Layout of one sample.
    sample_shape : tuple of int, optional
        Shape ``fn`` expects for one sample; when given, inputs of another shape are
        rejected before any call. Without it, a sample whose shape looks like the other
        channel order (``(224, 224, 3)`` for "CHW") is refused; declaring the shape says
        that it is meant.
    """

    def __init__(self, fn: CallableT[[np.ndarray], object], *, batch_size: int = 64,
                 input_layout: str = "CHW", sample_shape: tuple[int, ...] | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"Callable adapter needs a callable fn(batch) -> scores. Got {type(fn).__name__}.")
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self.fn = fn
        self._sample_shape = None if sample_shape is None else check_sample_shape(sample_shape, self.layout,
                                                                                  "Callable")

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self._sample_shape

    def _forward(self, batch: np.ndarray) -> object:
        return self.fn(batch)
