"""perturbx: fast perturbation-based explanations for any model.

Black-box explainers (:class:`Occlusion`, :class:`RISE`) talk to a model only through an
adapter from :mod:`perturbx.adapters`, take one numpy sample and return an
:class:`Explanation`. PyTorch is never imported by ``import perturbx``.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import adapters, baselines
from .dataset_runs import DatasetResults, WorkerModel, explain_dataset
from .engine import QueryBudgetError
from .explainers import RISE, Occlusion, PerturbationExplainer
from .explanation import Explanation

__version__ = "0.1.0"

__all__ = ["RISE", "DatasetResults", "Explanation", "Occlusion", "PerturbationExplainer", "QueryBudgetError",
           "WorkerModel", "adapters", "baselines", "datasets", "explain_dataset"]

_LAZY = ("datasets", "models", "gradients")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'perturbx' has no attribute {name!r}")
