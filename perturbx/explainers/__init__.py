"""Black-box explainers: each is a choice of sampler, renderer and estimator."""

from .base import Context, PerturbationExplainer
from .occlusion import Occlusion
from .rise import RISE

__all__ = ["RISE", "Context", "Occlusion", "PerturbationExplainer"]
