"""The target interface: what scalar(s) of a model's output an explanation explains.

An adapter returns the model's raw output for a batch of ``n`` rows: an array ``(n, ...)``,
a dict of such arrays (named outputs of an ONNX model or a model server), or a list of ``n``
per-row dicts (torchvision's detection format). A :class:`Target` turns it into the
scalars ``(n, T)`` that the estimator folds, one column per thing explained.

A target is *bound* once per explanation, to the output of the unperturbed input
(:meth:`Target.bind`): that is where ``Class()`` finds the top class, ``Detection()`` the
detections to explain and every target checks that the output has the form it reads.
The bound target is what the engine applies to every perturbed batch and what the
:class:`~perturbx.Explanation` keeps as ``target``.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Outputs = Any  # ndarray (n, ...), dict name -> ndarray (n, ...), or list of n dicts


@dataclass(frozen=True)
class BindInfo:
    """What a target may check its output against.

    Attributes
    ----------
    hw : (H, W)
        Spatial size of the explained sample, in pixels.
    model : str
        How error messages name the model ("the model behind Callable").
    """

    hw: tuple[int, int]
    model: str = "the model"


class Target(ABC):
    """Turns a model's raw output for a batch into scalars ``(n, T)``.

    Subclasses implement :meth:`scores` (numpy) and, when the scalars are a
    differentiable torch expression of the output, :meth:`torch_scores` with
    ``differentiable = True`` (gradient methods and autograd mask optimisation need it).
    """

    #: True when :meth:`torch_scores` is a differentiable torch expression of the output
    differentiable = False
    #: True when an explanation of this target has no target axis (one class, one box ...)
    single = True

    @property
    def bound(self) -> bool:
        """Whether the target can score outputs as it is (bound, or needing no binding: ``Class(3)``)."""
        return True

    def bind(self, output: Outputs, info: BindInfo) -> Target:
        """This target resolved against the output of the unperturbed input (a batch of one row).

        Returns a target whose :meth:`scores` can be applied to any batch of outputs; the
        default is the target itself. Raises ValueError or TypeError naming ``target``
        when the output does not have the form the target reads.
        """
        return self

    @abstractmethod
    def scores(self, outputs: Outputs) -> np.ndarray:
        """Scalars ``(n, T)`` of a batch of raw outputs (numpy)."""

    def torch_scores(self, outputs):
        """Scalars ``(n, T)`` of a batch of torch outputs, differentiable (gradient methods)."""
        raise TypeError(f"target={self!r} is not a differentiable function of a torch model's output, so "
                        f"gradient methods and autograd optimisation cannot use it; use a black-box method "
                        f"(RISE, Occlusion, ...) or optimizer='zeroth_order'.")

    @property
    def n_outputs(self) -> int:
        """Number of scalars ``T`` (known once bound)."""
        return len(self.labels)

    @property
    @abstractmethod
    def labels(self) -> np.ndarray:
        """One int per scalar (T,): the class, output index or channel; the detected label for a box."""

    @property
    def names(self) -> list[str]:
        """One short display name per scalar (T,)."""
        return [f"output {int(v)}" for v in self.labels]

    def subset(self, index: int) -> Target:
        """The bound target of scalar ``index`` alone (``single``)."""
        return Column(self, index)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (for reports, run indexes and repr)."""
        return {"kind": type(self).__name__, "labels": [int(v) for v in self.labels]}


class Column(Target):
    """Scalar ``index`` of a bound target with several scalars (what :meth:`Target.subset` gives by default)."""

    def __init__(self, parent: Target, index: int) -> None:
        if not 0 <= int(index) < parent.n_outputs:
            raise ValueError(f"Column {index} of {parent!r} does not exist: it has {parent.n_outputs} scalars.")
        self.parent, self.index = parent, int(index)
        self.differentiable = parent.differentiable

    @property
    def bound(self) -> bool:
        return self.parent.bound

    def scores(self, outputs: Outputs) -> np.ndarray:
        return np.asarray(self.parent.scores(outputs))[:, [self.index]]

    def torch_scores(self, outputs):
        return self.parent.torch_scores(outputs)[:, self.index:self.index + 1]

    @property
    def labels(self) -> np.ndarray:
        return self.parent.labels[[self.index]]

    @property
    def names(self) -> list[str]:
        return [self.parent.names[self.index]]

    def describe(self) -> dict[str, Any]:
        return {**self.parent.describe(), "column": self.index}

    def __repr__(self) -> str:
        return f"{self.parent!r}[{self.index}]"


def check_scores(out: object, n_rows: int, model: str) -> np.ndarray:
    """A classifier's output as validated scores ``(n_rows, n_classes)`` float64.

    Raises TypeError for something that is not an array of numbers and ValueError for a
    wrong shape or NaN/inf values, naming the model.
    """
    try:
        scores = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{_cap(model)} returned {type(out).__name__}, which is not an array of numbers; "
                        f"it must return scores of shape (n, n_classes), or pass a target that reads its "
                        f"output (perturbx.targets).") from exc
    if scores.ndim != 2:
        hint = (" If it returns one score per row, reshape it to (n, 1) or use target=perturbx.targets.Output()."
                if scores.ndim == 1 else " For other outputs pass a target from perturbx.targets "
                "(Output, Region, Detection, Similarity).")
        raise ValueError(f"{_cap(model)} returned an array of shape {scores.shape} for {n_rows} inputs; "
                         f"expected a 2-D array (n_rows, n_classes).{hint}")
    if scores.shape[0] != n_rows:
        raise ValueError(f"{_cap(model)} returned {scores.shape[0]} rows for a batch of {n_rows} inputs; it "
                         f"must return one row of scores per input row.")
    if scores.shape[1] < 1:
        raise ValueError(f"{_cap(model)} returned zero classes (shape {scores.shape}).")
    _check_finite(scores, n_rows, model, "scores")
    return scores


def evaluate(target: Target, outputs: Outputs, n_rows: int, model: str = "the model") -> np.ndarray:
    """``target.scores(outputs)`` validated: float64 ``(n_rows, T)``, finite."""
    try:
        values = target.scores(outputs)
    except (ValueError, TypeError):
        raise
    except Exception as exc:
        raise ValueError(f"target={target!r} failed on the output of {model}: {type(exc).__name__}: "
                         f"{exc}") from exc
    return check_target_values(values, n_rows, target.n_outputs, target)


def check_target_values(values: object, n_rows: int, n_outputs: int | None, target: object) -> np.ndarray:
    """Validate what a target computed: ``(n_rows, T)`` finite floats (a 1-D result is one column)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"target={target!r} returned {type(values).__name__}, not an array of numbers; a "
                        f"target must return scalars of shape (n_rows, T).") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_rows or (n_outputs is not None and arr.shape[1] != n_outputs):
        want = f"({n_rows}, {n_outputs})" if n_outputs is not None else f"({n_rows}, T)"
        raise ValueError(f"target={target!r} returned shape {np.shape(values)} for a batch of {n_rows} rows; "
                         f"expected {want}: one row per input row, one column per scalar explained.")
    _check_finite(arr, n_rows, f"target={target!r}", "values")
    return arr


def _check_finite(values: np.ndarray, n_rows: int, who: str, what: str) -> None:
    if not np.all(np.isfinite(values)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{_cap(who)} returned {bad} NaN or infinite {what} for a batch of {n_rows} inputs; "
                         f"attributions would be meaningless.")


def _cap(text: str) -> str:
    """A sentence start: "the model ..." -> "The model ..."; "target=..." stays as written."""
    return "The" + text[3:] if text.startswith("the ") else text


# -- helpers shared by the target kinds ------------------------------------------------------------------
def pick_output(outputs: Outputs, name: str | None, target: object) -> np.ndarray:
    """The array a target reads: ``outputs`` itself, or ``outputs[name]`` for named outputs."""
    if isinstance(outputs, Mapping):
        if name is None:
            if len(outputs) != 1:
                raise ValueError(f"target={target!r} reads one array but the model returns named outputs "
                                 f"{sorted(outputs)}; pass output=<name> to the target.")
            name = next(iter(outputs))
        if name not in outputs:
            raise ValueError(f"target={target!r} reads output {name!r} but the model returns outputs "
                             f"{sorted(outputs)}.")
        return outputs[name]
    if isinstance(outputs, list):
        raise TypeError(f"target={target!r} reads an array but the model returns a list of "
                        f"{type(outputs[0]).__name__ if outputs else 'items'} per row (a detector's format?); "
                        f"use perturbx.targets.Detection, or a callable target.")
    if name is not None:
        raise ValueError(f"target={target!r} reads output {name!r} but the model returns one unnamed array; "
                         f"leave output=None.")
    return outputs


def index_list(value: object, name: str, owner: str, *, allow_none: bool = True) -> tuple[list[int] | None, bool]:
    """``value`` as a list of non-negative ints and whether it was a single int (None passes)."""
    if value is None and allow_none:
        return None, True
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values, single = [int(value)], True
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"The {name!r} of {owner} must be an int or a non-empty sequence of ints. "
                            f"Got {value!r}.")
        values, single = [int(v) for v in arr], False
    else:
        raise TypeError(f"The {name!r} of {owner} must be an int or a sequence of ints"
                        f"{' or None' if allow_none else ''}. Got {type(value).__name__}.")
    if min(values) < 0:
        raise ValueError(f"The {name!r} of {owner} must be >= 0. Got {value!r}.")
    return values, single


def torch_module():
    """The torch module (already imported by whoever passes tensors)."""
    import torch

    return torch
