"""perturbx: fast perturbation-based explanations for any model.

Black-box explainers (:class:`Occlusion`, :class:`RISE`, :class:`DRISE`, :class:`LIME`,
:class:`KernelSHAP`, :class:`MeaningfulPerturbation`, :class:`ExtremalPerturbation`, ...) talk to a
model only through an adapter from :mod:`perturbx.adapters`, take one numpy sample and a target
from :mod:`perturbx.targets` (a class, a detection, a region, an embedding similarity, any output)
and return an :class:`Explanation`. PyTorch is never imported by ``import perturbx``.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import adapters, baselines, metrics, targets
from .compare import Comparison, compare
from .dataset_runs import DatasetResults, WorkerModel, explain_dataset
from .errors import QueryBudgetError
from .explainer import Explainer
from .explainers import RISE, Occlusion, PerturbationExplainer
from .explainers.coarse_to_fine import CoarseToFineOcclusion
from .explainers.drise import DRISE
from .explainers.extremal import ExtremalPerturbation
from .explainers.kernel_shap import KernelSHAP
from .explainers.lime import LIME
from .explainers.meaningful import MeaningfulPerturbation
from .explainers.shapley_sampling import ShapleySampling
from .explanation import Explanation

__version__ = "0.1.0"

__all__ = [
    "DRISE",
    "LIME",
    "RISE",
    "Amortized",
    "CoarseToFineOcclusion",
    "Comparison",
    "DatasetResults",
    "Explainer",
    "Explanation",
    "ExtremalPerturbation",
    "KernelSHAP",
    "MeaningfulPerturbation",
    "Occlusion",
    "PerturbationExplainer",
    "QueryBudgetError",
    "ShapleySampling",
    "WorkerModel",
    "adapters",
    "baselines",
    "compare",
    "datasets",
    "explain_dataset",
    "metrics",
    "registry",
    "targets",
]

_LAZY = ("datasets", "models", "gradients", "registry", "amortized")
#: classes exported lazily (their modules import torch): name -> module
_LAZY_CLASSES = {"Amortized": "amortized"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_CLASSES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_CLASSES[name]}"), name)
    raise AttributeError(f"module 'perturbx' has no attribute {name!r}")
