"""Targets that read one array: class scores, any single output, any callable."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import BindInfo, Outputs, Target, check_scores, pick_output, torch_module


def _class_indices(index: object) -> tuple[list[int] | None, bool]:
    """``index`` of :class:`Class` as a list of ints (None: the top class) and whether it was one int."""
    if index is None:
        return None, True
    if isinstance(index, numbers.Integral) and not isinstance(index, bool):
        return [int(index)], True
    if isinstance(index, (Sequence, np.ndarray)) and not isinstance(index, (str, bytes)):
        arr = np.asarray(index)
        if arr.ndim == 1 and arr.size and np.issubdtype(arr.dtype, np.integer):
            return [int(v) for v in arr], False
    raise TypeError(f"target must be None, an int or a non-empty sequence of ints (class indices), or a target "
                    f"from perturbx.targets. Got {index!r}.")


#: what a :class:`Class` target reads of the class scores
CLASS_SCORES = ("output", "log_odds")


class Class(Target):
    """The score of one or more classes of a classifier's output ``(n, n_classes)``.

    Also for multi-label models (one sigmoid per label): the score of each label asked for.

    Parameters
    ----------
    index : int, sequence of int or None
        Class index(es); None: the class with the highest score for the unperturbed input.
        An int or None gives an explanation without a target axis.
    output : str, optional
        For a model with named outputs (ONNX, a model server): which one holds the scores.
    score : {"output", "log_odds"}, default "output"
        ``"output"``: the class's entry as the model returns it. ``"log_odds"``: the class's
        softmax log-odds ``log p_c - log sum_{k != c} p_k``, computed from probabilities
        (an output whose rows are non-negative and sum to 1, decided on the unperturbed
        input) without forming ``1 - p_c``, else from logits as ``z_c - logsumexp_{k != c} z_k``
        (the same quantity). Unlike a probability it does not saturate: a class predicted
        with probability 0.9999999 still has a score that moves, which mask optimisation needs.
    """

    differentiable = True

    def __init__(self, index: int | Sequence[int] | None = None, *, output: str | None = None,
                 score: str = "output") -> None:
        self.index, self.single = _class_indices(index)
        if score not in CLASS_SCORES:
            raise ValueError(f"The 'score' of Class must be one of {CLASS_SCORES}. Got {score!r}.")
        self.output, self.score = output, score
        #: set by bind: number of classes, and for "log_odds" whether the output is probabilities
        self.n_classes: int | None = None
        self.probabilities: bool | None = None

    def bind(self, output: Outputs, info: BindInfo) -> Class:
        scores = check_scores(pick_output(output, self.output, self), 1, info.model)[0]
        index = [int(np.argmax(scores))] if self.index is None else self.index
        bad = [i for i in index if not 0 <= i < len(scores)]
        if bad:
            raise ValueError(f"target {bad} is out of range: the model returns {len(scores)} classes, so "
                             f"targets must be in [0, {len(scores) - 1}].")
        if self.score == "log_odds" and len(scores) < 2:
            raise ValueError(f"target={self!r} needs at least two classes for log-odds; the model returns one.")
        bound = Class(index if not self.single else index[0], output=self.output, score=self.score)
        bound.single, bound.n_classes = self.single, len(scores)
        bound.probabilities = bool(scores.min() >= 0 and abs(scores.sum() - 1.0) < 1e-3)
        return bound

    @property
    def bound(self) -> bool:
        return self.index is not None and (self.score == "output" or self.probabilities is not None)

    @property
    def chance_log_odds(self) -> float:
        """The log-odds of a class at chance level, ``log(1 / (C - 1))`` (bound targets)."""
        if self.n_classes is None:
            raise RuntimeError("Class must be bound to the model's output first (Target.bind).")
        return -float(np.log(self.n_classes - 1))

    def _bound_index(self) -> list[int]:
        if self.index is None:
            raise RuntimeError("Class(None) must be bound to the model's output first (Target.bind).")
        return self.index

    def select(self, scores: np.ndarray) -> np.ndarray:
        """The target's scalars ``(n, T)`` from validated class scores ``(n, n_classes)`` (float64)."""
        index = self._bound_index()
        if self.score == "output":
            return scores[:, index]
        if not self.bound:
            raise RuntimeError("Class(score='log_odds') must be bound to the model's output first (Target.bind).")
        out = np.empty((len(scores), len(index)))
        for t, c in enumerate(index):
            others = np.delete(scores, c, axis=1)
            if self.probabilities:
                tiny = np.finfo(np.float64).tiny
                out[:, t] = np.log(np.maximum(scores[:, c], tiny)) - np.log(np.maximum(others.sum(axis=1), tiny))
            else:
                top = others.max(axis=1)
                out[:, t] = scores[:, c] - top - np.log(np.exp(others - top[:, None]).sum(axis=1))
        return out

    def scores(self, outputs: Outputs) -> np.ndarray:
        return self.select(check_scores(pick_output(outputs, self.output, self), _rows(outputs), "the model"))

    def torch_scores(self, outputs):
        torch = torch_module()
        out = pick_output(outputs, self.output, self)
        if out.ndim != 2:
            raise ValueError(f"target={self!r} needs scores of shape (n, n_classes); the torch module "
                             f"returned shape {tuple(out.shape)}.")
        index = self._bound_index()
        if self.score == "output":
            return out.index_select(1, torch.as_tensor(index, device=out.device))
        columns = []
        for c in index:
            keep = torch.ones(out.shape[1], dtype=torch.bool, device=out.device)
            keep[c] = False
            others = out[:, keep]
            if self.probabilities:
                tiny = torch.finfo(out.dtype).tiny
                columns.append(out[:, c].clamp_min(tiny).log() - others.sum(dim=1).clamp_min(tiny).log())
            else:
                columns.append(out[:, c] - torch.logsumexp(others, dim=1))
        return torch.stack(columns, dim=1)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._bound_index(), dtype=np.int64)

    @property
    def names(self) -> list[str]:
        suffix = "" if self.score == "output" else " (log-odds)"
        return [f"class {i}{suffix}" for i in self._bound_index()]

    def subset(self, index: int) -> Class:
        one = Class(self._bound_index()[index], output=self.output, score=self.score)
        one.n_classes, one.probabilities = self.n_classes, self.probabilities
        return one

    def describe(self) -> dict:
        return {"kind": "Class", "labels": self.labels.tolist(), "score": self.score}

    def __repr__(self) -> str:
        index = None if self.index is None else (self.index[0] if self.single else self.index)
        extra = "" if self.output is None else f", output={self.output!r}"
        extra += "" if self.score == "output" else f", score={self.score!r}"
        return f"Class({index!r}{extra})"


class Output(Target):
    """One or more entries of each row's output: a regression, a score, any single number.

    Parameters
    ----------
    index : int, tuple of int, sequence of those, or None
        Entry of a row's output: an int is a position in the flattened row, a tuple an
        index into the row's shape. A list gives several scalars. None: the row's only entry
        (a regressor returning ``(n,)`` or ``(n, 1)``).
    output : str, optional
        For a model with named outputs: which one to read.
    """

    differentiable = True

    def __init__(self, index: object = None, *, output: str | None = None) -> None:
        self.single = index is None or isinstance(index, (numbers.Integral, tuple))
        items = [index] if self.single else list(index)  # type: ignore[arg-type]
        for item in items:
            ok = item is None or (isinstance(item, numbers.Integral) and not isinstance(item, bool)) or (
                isinstance(item, tuple) and all(isinstance(i, numbers.Integral) for i in item))
            if not ok or (not self.single and item is None):
                raise TypeError(f"The 'index' of Output must be None, an int, a tuple of ints or a list of "
                                f"those. Got {index!r}.")
        self.index = index
        self._flat: list[int] | None = None
        self._items = items
        self.output = output

    def bind(self, output: Outputs, info: BindInfo) -> Output:
        row_shape = np.shape(pick_output(output, self.output, self))[1:]
        size = int(np.prod(row_shape)) if row_shape else 1
        flat = []
        for item in self._items:
            if item is None:
                if size != 1:
                    raise ValueError(f"target={self!r} reads a row's only output, but the model returns rows of "
                                     f"shape {row_shape}; pass index= to say which entry.")
                flat.append(0)
            elif isinstance(item, tuple):
                if len(item) != len(row_shape) or any(not 0 <= i < s for i, s in zip(item, row_shape, strict=False)):
                    raise ValueError(f"target={self!r}: index {item} does not address rows of shape {row_shape}.")
                flat.append(int(np.ravel_multi_index(item, row_shape)))
            else:
                if not 0 <= int(item) < size:
                    raise ValueError(f"target={self!r}: index {item} is out of range for rows of {size} "
                                     f"values (shape {row_shape}).")
                flat.append(int(item))
        bound = Output(self.index, output=self.output)
        bound._flat = flat
        return bound

    @property
    def bound(self) -> bool:
        return self._flat is not None

    def _flat_index(self) -> list[int]:
        if self._flat is None:
            raise RuntimeError("Output must be bound to the model's output first (Target.bind).")
        return self._flat

    def scores(self, outputs: Outputs) -> np.ndarray:
        arr = np.asarray(pick_output(outputs, self.output, self), dtype=np.float64)
        return arr.reshape(len(arr), -1)[:, self._flat_index()]

    def torch_scores(self, outputs):
        out = pick_output(outputs, self.output, self)
        index = torch_module().as_tensor(self._flat_index(), device=out.device)
        return out.reshape(len(out), -1).index_select(1, index)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._flat_index(), dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [f"output {item}" if item is not None else "output" for item in self._items]

    def subset(self, index: int) -> Output:
        bound = Output(self._items[index], output=self.output)
        bound._flat = [self._flat_index()[index]]
        return bound

    def __repr__(self) -> str:
        extra = "" if self.output is None else f", output={self.output!r}"
        return f"Output({self.index!r}{extra})"


class Function(Target):
    """Any function of the model's output: ``fn(outputs) -> (n, T)`` (or ``(n,)`` for one scalar).

    Parameters
    ----------
    fn : callable
        Receives the raw output of a batch exactly as the adapter returns it (an array, a
        dict of arrays or a list of per-row dicts; numpy) and returns one row of scalars
        per input row.
    differentiable : bool, default False
        True when ``fn`` is also a differentiable torch expression of a torch module's
        output (then gradient methods may use it).
    name : str, optional
        Display name.
    """

    def __init__(self, fn: Callable[[Any], Any], *, differentiable: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"target must be None, an int, a sequence of ints, a target from perturbx.targets "
                            f"or a callable fn(outputs) -> (n, T). Got {type(fn).__name__}.")
        self.fn, self.differentiable, self.name = fn, bool(differentiable), name
        self._n: int | None = None

    def bind(self, output: Outputs, info: BindInfo) -> Function:
        from .base import check_target_values

        values = check_target_values(self.fn(output), 1, None, self)
        bound = Function(self.fn, differentiable=self.differentiable, name=self.name)
        bound._n = values.shape[1]
        bound.single = values.shape[1] == 1
        return bound

    @property
    def bound(self) -> bool:
        return self._n is not None

    def scores(self, outputs: Outputs) -> np.ndarray:
        return self.fn(outputs)

    def torch_scores(self, outputs):
        if not self.differentiable:
            return super().torch_scores(outputs)
        out = self.fn(outputs)
        return out[:, None] if out.ndim == 1 else out

    @property
    def labels(self) -> np.ndarray:
        if self._n is None:
            raise RuntimeError("Function must be bound to the model's output first (Target.bind).")
        return np.arange(self._n, dtype=np.int64)

    @property
    def names(self) -> list[str]:
        base = self.name or getattr(self.fn, "__name__", "fn")
        return [base] if self.n_outputs == 1 else [f"{base}[{i}]" for i in range(self.n_outputs)]

    def __repr__(self) -> str:
        return f"Function({self.name or getattr(self.fn, '__name__', type(self.fn).__name__)})"


def _rows(outputs: Outputs) -> int:
    if isinstance(outputs, dict):
        return len(next(iter(outputs.values())))
    return len(outputs)
