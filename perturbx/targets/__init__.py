"""Targets: which scalar(s) of a model's output an explanation explains.

The adapter returns the model's raw output for a batch; a target turns it into the
scalars ``(n, T)`` that an estimator folds (``sampler -> renderer -> adapter -> target ->
estimator``). ``target=`` of every ``explain`` takes one of these, or the classifier
shorthands: None (the top class), an int or a list of ints (those classes).

=====================  =====================================================  =============
target                 explains                                               output read
=====================  =====================================================  =============
:class:`Class`         class scores (also multi-label sigmoid outputs)        (n, C)
:class:`Output`        any entry of each row: a regression, one score         (n, ...)
:class:`Region`        a segmentation model's mean score over pixel region    (n, C, h, w)
:class:`Similarity`    an embedding's similarity to a reference embedding     (n, D)
:class:`Detection`     D-RISE's match to a detected (or given) box            detections
:class:`Function`      any ``fn(outputs) -> (n, T)``                           anything
=====================  =====================================================  =============

Detector outputs may be a fixed-size array ``(n, K, D)``, a dict of batched arrays
(named outputs of ``ONNX`` or ``Remote``) or a list of per-image dicts (torchvision's
format); see :func:`~perturbx.targets.detection.parse_detections`. This module never
imports torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .base import BindInfo, Column, Target, check_scores, check_target_values, evaluate
from .basic import Class, Function, Output
from .dense import Region
from .detection import Detection, Detections, parse_detections
from .similarity import Similarity

__all__ = ["BindInfo", "Class", "Column", "Detection", "Detections", "Function", "Output", "Region", "Similarity",
           "Target", "as_target", "bind", "check_scores", "check_target_values", "evaluate", "parse_detections"]


def as_target(target: object) -> Target:
    """``target`` as a :class:`Target`: None, an int or a sequence of ints are :class:`Class`; a callable is
    :class:`Function`."""
    if isinstance(target, Target):
        return target
    if target is None or (isinstance(target, numbers.Integral) and not isinstance(target, bool)):
        return Class(target)
    if isinstance(target, (Sequence, np.ndarray)) and not isinstance(target, (str, bytes)):
        return Class(target)
    if callable(target):
        return Function(target)
    raise TypeError(f"target must be None, an int or a sequence of ints (class indices), a target from "
                    f"perturbx.targets (Class, Output, Region, Similarity, Detection) or a callable "
                    f"fn(outputs) -> (n, T). Got {type(target).__name__}.")


def bind(target: object, output: object, info: BindInfo) -> tuple[Target, np.ndarray]:
    """Resolve ``target`` against the unperturbed input's output; returns it bound and its scalars ``(T,)``."""
    bound = as_target(target).bind(output, info)
    return bound, evaluate(bound, output, 1, info.model)[0]
