"""What every gradient explainer shares: the adapter check, targets, the Explanation."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from perturbx._utils import Configurable, check_choice
from perturbx.explanation import Explanation

from ._reduce import REDUCTIONS, reduce_channels
from ._session import Session, run_gradients, torch_adapter


class GradientExplainer(Configurable, ABC):
    """Base of the gradient explainers; a method says how to :meth:`_attribute` a batch of samples.

    Subclasses validate and store their parameters in ``__init__``. The result of
    ``explain`` keeps the unreduced attributions as ``extras["raw"]``.
    """

    @abstractmethod
    def _attribute(self, session: Session, xs: torch.Tensor, first_is_x: bool) -> torch.Tensor:
        """Attributions ``(S, T, *attr_shape)`` of samples ``xs`` ``(S, *sample_shape)`` for every target.

        ``first_is_x``: ``xs[0]`` is the unperturbed sample, so its forward pass may resolve
        the targets. ``attr_shape`` is the sample's shape for pixel methods, the layer's
        ``(h, w)`` for class activation maps.
        """

    @abstractmethod
    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        """Maps ``(T, H, W)`` (float64) from the raw attributions ``(T, *attr_shape)`` of ``x``."""

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        """Method-specific facts for :attr:`Explanation.extras`."""
        return {}

    def explain(self, model: object, x: np.ndarray, target: int | list[int] | None = None) -> Explanation:
        """Explain the model's score(s) for one sample.

        Parameters
        ----------
        model : perturbx.adapters.Torch or torch.nn.Module
            Gradients run on the adapter's device; a bare module is wrapped as ``Torch(module)``.
        x : ndarray
            One sample in the adapter's ``input_layout``, without a batch axis.
        target : int, sequence of int or None
            Class(es) to explain; None explains the model's top class for ``x``.

        Returns
        -------
        Explanation
            ``attributions`` (H, W) for None or an int, (T, H, W) for a sequence;
            ``extras["raw"]`` the unreduced attributions with a target axis, as float64.
        """
        start = time.perf_counter()
        adapter = torch_adapter(model, type(self).__name__)
        x = adapter.check_sample(x)
        before = adapter.n_queries
        with torch.inference_mode(False), torch.enable_grad():
            session = Session(adapter, x, target)
            raw = self._attribute(session, session.xt[None], first_is_x=True)[0]
            extras = self._extras(session, raw)
            maps = self._finish(session, raw)
        extras = {"raw": raw.detach().to("cpu", torch.float64).numpy(), **extras}
        return Explanation(
            attributions=maps[0] if session.single else maps, targets=session.targets,
            n_queries=adapter.n_queries - before, seconds=time.perf_counter() - start,
            method=type(self).__name__, params=self.get_params(), scores=session.scores[session.targets],
            input=x, input_layout=adapter.layout.name, extras=extras)


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

    def _attribute(self, session: Session, xs: torch.Tensor, first_is_x: bool) -> torch.Tensor:
        n_targets = session.n_targets
        out = torch.empty((len(xs) * n_targets, *xs.shape[1:]), dtype=torch.float32, device=xs.device)

        def consume(chunk) -> None:
            out[chunk.lo:chunk.hi] = self._combine(chunk.rows, chunk.grad)

        rows = torch.arange(len(out), device=xs.device)
        run_gradients(session, len(out), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets,
                      consume, first_is_x=first_is_x, relu_rule=type(self).relu_rule)
        return out.view(len(xs), n_targets, *xs.shape[1:])

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return reduce_channels(raw.detach().to("cpu", torch.float64).numpy(), session.layout, self.reduction)
