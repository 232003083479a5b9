"""What an amortised explainer was trained for, stored with it and checked at every explanation.

An explainer network has learnt one game: one model's output, read by one kind of
target, on samples of one shape, with one grid of players and one baseline. Explaining
anything else would return confident-looking maps of another game, so each of these is
stored (:class:`Identity`) and compared before any query where it can be (sample shape,
layout, target) and right after the reference query where it cannot (the number of
classes the model returns, the class a ``target=None`` picks).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from perturbx.baselines import Blur, ChannelMean, Constant
from perturbx.targets import Class, Target

__all__ = ["Identity", "baseline_description", "baseline_spec", "check_amortizable_baseline", "target_spec"]

OWNER = "Amortized"


def check_amortizable_baseline(spec: object) -> object:
    """A baseline ``Amortized`` can store and reproduce: a number, "mean", "blur", an array, or
    :class:`~perturbx.baselines.Constant`, :class:`~perturbx.baselines.ChannelMean`,
    :class:`~perturbx.baselines.Blur`."""
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        if not np.isfinite(spec):
            raise ValueError(f"The 'baseline' parameter of {OWNER} must be finite. Got {spec!r}.")
        return float(spec)
    if isinstance(spec, str) and spec in ("mean", "blur"):
        return spec
    if isinstance(spec, (Constant, ChannelMean, Blur)):
        return spec
    if isinstance(spec, np.ndarray):
        if not np.all(np.isfinite(spec)):
            raise ValueError(f"The 'baseline' array of {OWNER} contains NaN or infinite values.")
        return spec
    why = ("a fresh noise image at every explanation is another game than the one the network learnt"
           if (isinstance(spec, str) and spec == "noise") or type(spec).__name__ == "Noise"
           else "it has to be stored with the explainer and reproduced exactly")
    raise ValueError(f"The 'baseline' parameter of {OWNER} must be a number, 'mean', 'blur' or an array of the "
                     f"sample's shape ({why}). Got {spec!r}.")


def baseline_description(spec: object) -> dict[str, Any]:
    """A plain-data description of an amortizable baseline (an array is stored beside it)."""
    if isinstance(spec, float):
        return {"kind": "constant", "value": spec}
    if isinstance(spec, Constant):
        return {"kind": "constant", "value": float(spec.value)}
    if isinstance(spec, str):
        return {"kind": spec}
    if isinstance(spec, ChannelMean):
        return {"kind": "channel_mean"}
    if isinstance(spec, Blur):
        return {"kind": "blur", "sigma": spec.sigma}
    return {"kind": "array", "shape": list(np.shape(spec))}


def baseline_spec(description: dict[str, Any], array: np.ndarray | None) -> object:
    """The ``baseline=`` spec a description stands for (inverse of :func:`baseline_description`)."""
    kind = description["kind"]
    if kind == "constant":
        return float(description["value"])
    if kind == "mean":
        return "mean"
    if kind == "channel_mean":
        return ChannelMean()
    if kind == "blur":
        return "blur" if description.get("sigma") is None else Blur(float(description["sigma"]))
    if kind == "array" and array is not None:
        return array
    raise ValueError(f"Unknown baseline description {description!r} in an {OWNER} checkpoint.")


def target_spec(target: object) -> tuple[list[int] | None, str, str | None]:
    """``target=`` of ``Amortized``: (class indices or None for every class, score, named output)."""
    if target is None:
        return None, "output", None
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = [int(target)]
    if isinstance(target, Class):
        index = target.index
        return (None if index is None else [int(i) for i in index]), target.score, target.output
    if isinstance(target, (list, tuple, np.ndarray)):
        arr = np.asarray(target)
        if arr.ndim == 1 and arr.size and np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0:
            return [int(v) for v in arr], "output", None
    raise ValueError(f"The 'target' parameter of {OWNER} must be None (every class), a class index, a list of "
                     f"class indices or a perturbx.targets.Class. Got {target!r}.")


@dataclass(frozen=True)
class Identity:
    """The model, data and game an explainer network was trained for.

    Attributes
    ----------
    sample_shape : tuple of int
        One sample's shape in ``layout``.
    layout : str
        The adapter's ``input_layout``.
    n_classes : int
        Width of the model's class output.
    labels : tuple of int
        The classes explained (the network's T output channels, in order).
    score, output : str, str or None
        The :class:`~perturbx.targets.Class` reading (``"output"`` or ``"log_odds"``; named output).
    players : (rows, cols)
        The grid of players.
    baseline : dict
        :func:`baseline_description` of the baseline.
    model : str
        The adapter's class name (for messages).
    probabilities : bool or None
        For ``score="log_odds"``: whether the model's output is probabilities (decided on the
        first validation image, as :meth:`perturbx.targets.Class.bind` does); None otherwise.
    """

    sample_shape: tuple[int, ...]
    layout: str
    n_classes: int
    labels: tuple[int, ...]
    score: str
    output: str | None
    players: tuple[int, int]
    baseline: dict
    model: str
    probabilities: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sample_shape"], out["labels"], out["players"] = (list(self.sample_shape), list(self.labels),
                                                                list(self.players))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Identity:
        return cls(tuple(int(v) for v in d["sample_shape"]), str(d["layout"]), int(d["n_classes"]),
                   tuple(int(v) for v in d["labels"]), str(d["score"]), d["output"],
                   (int(d["players"][0]), int(d["players"][1])), dict(d["baseline"]), str(d["model"]),
                   None if d.get("probabilities") is None else bool(d["probabilities"]))

    def trained_target(self) -> Class:
        """The :class:`~perturbx.targets.Class` of every trained label (bound: scores ``(n, T)``)."""
        target = Class(list(self.labels), output=self.output, score=self.score)
        target.n_classes, target.probabilities = self.n_classes, self.probabilities
        return target

    def describe(self) -> str:
        return (f"samples of shape {self.sample_shape} ({self.layout!r}), a model returning {self.n_classes} "
                f"classes, classes {list(self.labels)} read as {self.score!r}, {self.players[0]} x "
                f"{self.players[1]} players, baseline {self.baseline}")

    def check_sample(self, x: np.ndarray, layout: str) -> None:
        """Refuse, before any query, a sample or adapter of another shape or layout."""
        if layout != self.layout or tuple(x.shape) != self.sample_shape:
            raise ValueError(f"This {OWNER} explainer was trained for samples of shape {self.sample_shape} in "
                             f"layout {self.layout!r}; got x of shape {tuple(x.shape)} through an adapter with "
                             f"input_layout={layout!r}. Explain samples of the trained shape, or train an "
                             f"explainer for this input (Amortized(...).fit(model, images of this shape)).")

    def check_target(self, target: Target) -> None:
        """Refuse, before any query, a target the network was not trained for."""
        if not isinstance(target, Class):
            raise ValueError(f"This {OWNER} explainer was trained to explain class scores (classes "
                             f"{list(self.labels)}); target={target!r} is a {type(target).__name__}. Train an "
                             f"explainer for it, or use a sampling method (KernelSHAP) for this target.")
        if target.score != self.score or target.output != self.output:
            raise ValueError(f"This {OWNER} explainer was trained for Class(score={self.score!r}, "
                             f"output={self.output!r}); got target={target!r}. Pass a target with that score "
                             f"and output, or train an explainer for this one.")
        missing = [] if target.index is None else [i for i in target.index if i not in self.labels]
        if missing:
            raise ValueError(f"This {OWNER} explainer was trained for classes {list(self.labels)}; target "
                             f"class(es) {missing} were not among them. Explain one of the trained classes, or "
                             f"train with target=None (every class).")

    def check_bound(self, bound: Class) -> list[int]:
        """After the reference query: the model's class count and the classes picked; their output channels."""
        if bound.n_classes != self.n_classes:
            raise ValueError(f"This {OWNER} explainer was trained on a model returning {self.n_classes} classes; "
                             f"this model returns {bound.n_classes}. It is another model: train an explainer "
                             f"for it.")
        picked = [int(i) for i in bound.labels]
        missing = [i for i in picked if i not in self.labels]
        if missing:
            raise ValueError(f"The model's top class for this x is {missing[0]}, which this {OWNER} explainer was "
                             f"not trained for (classes {list(self.labels)}); pass target= one of those, or "
                             f"train with target=None (every class).")
        return [self.labels.index(i) for i in picked]
