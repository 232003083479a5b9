"""perturbx: fast perturbation-based explanations for any model.

Black-box explainers (:class:`Occlusion`, :class:`RISE`, :class:`LIME`, :class:`KernelSHAP`,
:class:`MeaningfulPerturbation`, :class:`ExtremalPerturbation`, ...) talk to a model only through an
adapter from :mod:`perturbx.adapters`, take one numpy sample and return an
:class:`Explanation`. PyTorch is never imported by ``import perturbx``.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import adapters, baselines, metrics
from .compare import Comparison, compare
from .dataset_runs import DatasetResults, WorkerModel, explain_dataset
from .engine import QueryBudgetError
from .explainers import RISE, Occlusion, PerturbationExplainer
from .explainers.coarse_to_fine import CoarseToFineOcclusion
from .explainers.extremal import ExtremalPerturbation
from .explainers.kernel_shap import KernelSHAP
from .explainers.lime import LIME
from .explainers.meaningful import MeaningfulPerturbation
from .explainers.shapley_sampling import ShapleySampling
from .explanation import Explanation

__version__ = "0.1.0"

__all__ = [
    "LIME",
    "RISE",
    "CoarseToFineOcclusion",
    "Comparison",
    "DatasetResults",
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
]

_LAZY = ("datasets", "models", "gradients", "registry")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'perturbx' has no attribute {name!r}")
