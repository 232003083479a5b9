"""perturbx as a service: an MLServer runtime that answers Open Inference Protocol requests with explanations.

Beside a deployed predictor (KServe, Seldon, MLServer, Triton), the explainer receives the
predictor's own V2 request, queries the predictor as a black box (``perturbx.adapters.Remote``,
or a local model through any adapter) and answers with the attribution maps:

- :mod:`~perturbx.serving.config`: the configuration in model-settings.json (method, its
  parameters, target rule, predictor, limits);
- :mod:`~perturbx.serving.service`: the explanations with their bounds (query budget,
  deadline, concurrency, response cache), without the server;
- :mod:`~perturbx.serving.protocol`: V2 requests and responses;
- :mod:`~perturbx.serving.runtime`: :class:`PerturbxRuntime`, the MLServer runtime
  (``pip install 'perturbx[serve]'``);
- :mod:`~perturbx.serving.launcher`: ``perturbx serve CONFIG``;
- :mod:`~perturbx.serving.client`: building a request and reading an answer.

``import perturbx.serving`` does not import MLServer; ``PerturbxRuntime`` does, on first use.
"""

from __future__ import annotations

from typing import Any

from .config import Limits, ServingConfig
from .errors import ConfigError, DeadlineError, ServingError
from .service import Answer, ExplanationService, RequestOptions

__all__ = ["Answer", "ConfigError", "DeadlineError", "ExplanationService", "Limits", "PerturbxRuntime",
           "RequestOptions", "ServingConfig", "ServingError"]


def __getattr__(name: str) -> Any:
    if name == "PerturbxRuntime":
        from .runtime import PerturbxRuntime

        return PerturbxRuntime
    raise AttributeError(f"module 'perturbx.serving' has no attribute {name!r}")
