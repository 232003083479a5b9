"""What every gradient explainer shares: the adapter check, targets, the Explanation."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice
from perturbx.adapters import Torch
from perturbx.explainer import Explainer, Request
from perturbx.targets import Target

from ._reduce import REDUCTIONS, reduce_channels
from ._session import Session, run_gradients, torch_adapter


class GradientExplainer(Explainer):
    """Base of the gradient explainers; a method says how to :meth:`_attribute` a batch of samples.

    Subclasses validate and store their parameters in ``__init__``. The result of
    ``explain`` keeps the unreduced attributions as ``extras["raw"]``. Targets must be
    differentiable torch expressions of the module's output (:class:`~perturbx.targets.Class`,
    :class:`~perturbx.targets.Output`, :class:`~perturbx.targets.Region`,
    :class:`~perturbx.targets.Similarity`); others are refused before any query.
    """

    @abstractmethod
    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        """Attributions ``(S, T, *attr_shape)`` of samples ``xs`` ``(S, *sample_shape)`` for every target scalar.

        ``attr_shape`` is the sample's shape for pixel methods, the layer's ``(h, w)`` for
        class activation maps.
        """

    @abstractmethod
    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        """Maps ``(T, H, W)`` (float64) from the raw attributions ``(T, *attr_shape)`` of ``x``."""

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        """Method-specific facts for :attr:`Explanation.extras`."""
        return {}

    def _adapter(self, model: object) -> Torch:
        return torch_adapter(model, type(self).__name__)

    def _check_target(self, target: Target) -> None:
        if not target.differentiable:
            raise TypeError(f"{type(self).__name__} differentiates the target, but target={target!r} is not a "
                            f"differentiable torch expression of the model's output. Gradient methods take "
                            f"Class, Output, Region and Similarity targets (or Function(fn, differentiable="
                            f"True)); use a black-box method such as perturbx.RISE or perturbx.DRISE for others.")

    def _explain(self, request: Request) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions of ``x`` from batched backward passes; ``extras["raw"]`` keeps them unreduced (float64)."""
        with torch.inference_mode(False), torch.enable_grad():
            session = Session(request.adapter, request.x, request.target, request.reference)
            raw = self._attribute(session, session.xt[None])[0]
            extras = self._extras(session, raw)
            maps = self._finish(session, raw)
        return maps, {"raw": raw.detach().to("cpu", torch.float64).numpy(), **extras}


class PixelGradient(GradientExplainer):
    """A method whose attributions have the sample's shape: a function of each row and its gradient.

    Rows are one copy of each sample per target, differentiated in batches of the
    adapter's ``batch_size`` rows. Subclasses set :attr:`relu_rule` to rewrite ReLU
    gradients and override :meth:`_combine`.
    """

    #: rewrites ReLU gradients while differentiating (guided backprop, deconvnet); None: plain gradients
    relu_rule = None

    def __init__(self, *, reduction: str = "sum") -> None:
        self.reduction = check_choice(reduction, "reduction", type(self).__name__, tuple(REDUCTIONS))

    def _combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Attributions of a chunk from its rows and their gradients (both ``(n, *sample_shape)``)."""
        return grad

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        n_targets = session.n_targets
        out = torch.empty((len(xs) * n_targets, *xs.shape[1:]), dtype=torch.float32, device=xs.device)

        def consume(chunk) -> None:
            out[chunk.lo:chunk.hi] = self._combine(chunk.rows, chunk.grad)

        rows = torch.arange(len(out), device=xs.device)
        run_gradients(session, len(out), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets,
                      consume, relu_rule=type(self).relu_rule)
        return out.view(len(xs), n_targets, *xs.shape[1:])

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return reduce_channels(raw.detach().to("cpu", torch.float64).numpy(), session.layout, self.reduction)
