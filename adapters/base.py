"""The adapter interface: how perturbx talks to a model.

An adapter owns batching, the device (through its array backend), the input layout
and the conversion of what the model returns to numpy. Explainers call it with a batch
already built on the adapter's backend, of at most ``batch_size`` rows:
:meth:`Adapter.predict_raw` gives the model's output as it is (an array ``(n, ...)``, a dict
of arrays, or a list of per-row dicts), :meth:`Adapter.predict_target` the scalars ``(n, T)``
of a bound :mod:`perturbx.targets` target, and :meth:`Adapter.predict_batch` a classifier's
validated scores ``(n, n_classes)``. Every row counts in :attr:`Adapter.n_queries`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import numpy as np

from perturbx._utils import Layout, check_int, check_sample
from perturbx.backend import NUMPY, Array
from perturbx.targets import Class, Target, check_scores, evaluate


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
    #: render the next perturbed chunk in a background thread while the model scores this one (worth it when
    #: the model's time is spent elsewhere: a server, another process, a GPU's queue)
    overlap_rendering = False
    #: :meth:`submit_targets` returns before the model has answered (a GPU's queue): the engine then sends the
    #: next model batch before it reads this one's scores, so the device never waits for the host
    asynchronous = False

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
        """Validate one sample for this model; returns it as a float array.

        Raw uint8/uint16 pixels are refused (never rescaled), and without a declared
        :attr:`sample_shape` a 3-axis sample that looks like the other channel order is
        refused (:func:`perturbx._utils.check_sample`).
        """
        return check_sample(x, self.layout, self.sample_shape, dtype=self.dtype)

    def predict_raw(self, batch: Array) -> object:
        """The model's output for a backend batch ``(n, *sample_shape)``, ``n <= batch_size``, as numpy.

        Returns
        -------
        ndarray (n, ...), dict of str -> ndarray (n, ...), or list of n dicts of ndarrays
            Numbers as float64 arrays; the structure the model returns is kept.
        """
        n = int(batch.shape[0])
        out = self._forward(batch)
        self.n_queries += n
        return self._check_rows(to_numpy_output(out), n)

    def predict_batch(self, batch: Array) -> np.ndarray:
        """A classifier's scores for a backend batch ``(n, *sample_shape)``, ``n <= batch_size``.

        Returns
        -------
        ndarray, shape (n, n_classes), float64
        """
        n = int(batch.shape[0])
        out = self._forward(batch)
        self.n_queries += n
        return self._check_scores(out, n)

    def predict_target(self, batch: Array, target: Target) -> np.ndarray:
        """Scalars ``(n, T)`` float64 of a bound ``target`` for a backend batch of at most ``batch_size`` rows."""
        if isinstance(target, Class) and target.output is None:
            return target.select(self.predict_batch(batch))
        return evaluate(target, self.predict_raw(batch), int(batch.shape[0]), self._model_name())

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

    def predict_targets(self, batch: Array, parts: list[tuple[Target, int]]) -> list[np.ndarray]:
        """One model call for rows of several explanations: ``parts`` lists (bound target, rows) in order.

        Returns the scalars ``(rows, T)`` of each part, computed from that part's rows of the
        output (the engine packs the perturbations of several images into one batch).
        """
        if len(parts) == 1:
            return [self.predict_target(batch, parts[0][0])]
        if classes_only(parts):
            return select_parts(self.predict_batch(batch), parts)
        return evaluate_parts(self.predict_raw(batch), parts, self._model_name())

    def submit_targets(self, batch: Array, parts: list[tuple[Target, int]]) -> Callable[[], list[np.ndarray]]:
        """:meth:`predict_targets`, split in two: send the batch now, read its scalars when the result is called.

        Adapters with :attr:`asynchronous` start the model here and return at once; here the model
        answers before this returns. The batch's memory must stay untouched until the result is called.
        """
        values = self.predict_targets(batch, parts)
        return lambda: values

    def _model_name(self) -> str:
        return f"the model behind {type(self).__name__}"

    def _check_scores(self, out: object, n_rows: int) -> np.ndarray:
        return check_scores(to_numpy_output(out), n_rows, self._model_name())

    def _check_rows(self, out: object, n_rows: int) -> object:
        """``out`` (numpy structure) when it has one entry per input row; else a ValueError naming the model."""
        if isinstance(out, Mapping):
            counts = {k: (len(v) if np.ndim(v) else None) for k, v in out.items()}
        elif isinstance(out, list):
            counts = {"list": len(out)}
        else:
            counts = {"output": len(out) if np.ndim(out) else None}
        bad = {k: c for k, c in counts.items() if c != n_rows}
        if bad:
            seen = ", ".join(f"{c} rows" + ("" if k in ("output", "list") else f" in output {k!r}")
                             for k, c in bad.items())
            raise ValueError(f"{self._model_name()[0].upper()}{self._model_name()[1:]} returned {seen} for a batch "
                             f"of {n_rows} inputs; every output must have one entry per input row.")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, input_layout={self.input_layout!r})"


def classes_only(parts: list[tuple[Target, int]]) -> bool:
    """Whether every part's target reads classes of the model's one score array (no named output)."""
    return all(isinstance(t, Class) and t.output is None for t, _ in parts)


def select_parts(scores: np.ndarray, parts: list[tuple[Class, int]]) -> list[np.ndarray]:
    """Each part's classes ``(rows, T)`` from the scores ``(n, n_classes)`` of a batch of consecutive parts."""
    bounds = np.cumsum([0] + [n for _, n in parts])
    return [t.select(scores[lo:hi]) for (t, _), lo, hi in zip(parts, bounds[:-1], bounds[1:], strict=True)]


def evaluate_parts(raw: object, parts: list[tuple[Target, int]], model: str) -> list[np.ndarray]:
    """Each part's scalars ``(rows, T)`` from consecutive rows of one raw output."""
    values, lo = [], 0
    for target, n in parts:
        values.append(evaluate(target, slice_rows(raw, lo, lo + n), n, model))
        lo += n
    return values


def slice_rows(out: object, lo: int, hi: int) -> object:
    """Rows ``lo:hi`` of a model's output (an array, a dict of arrays or a list of per-row items)."""
    if isinstance(out, Mapping):
        return {k: v[lo:hi] for k, v in out.items()}
    return out[lo:hi]


def to_numpy_output(out: object) -> object:
    """A model's output as numpy: tensors and array-likes become float64 arrays, dicts and lists keep their shape.

    A list or tuple of numbers (or of equally long lists) is one array; a list of dicts
    (one per row, torchvision's detection format) stays a list; a tuple of arrays becomes
    a dict with keys "0", "1", ...
    """
    if isinstance(out, Mapping):
        return {str(k): _array(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)) and out and all(isinstance(o, Mapping) for o in out):
        return [{str(k): _array(v) for k, v in o.items()} for o in out]
    if isinstance(out, tuple) and out and all(hasattr(o, "shape") for o in out):
        return {str(i): _array(o) for i, o in enumerate(out)}
    return _array(out)


def _array(value: object) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: leave autograd and the device
        value = value.detach().to("cpu").numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The model returned {type(value).__name__}, which is not an array of numbers, a dict "
                        f"of arrays or a list of per-row dicts.") from exc
