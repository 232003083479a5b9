"""What every black-box explainer shares: validation, the reference query, the engine run."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx import engine
from perturbx._utils import Configurable, Layout, check_float, check_int, check_random_state, normalise_targets
from perturbx.adapters import Adapter, as_adapter
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.explanation import Explanation
from perturbx.renderers import BlendRenderer


@dataclass
class Context:
    """Everything a method needs to plan one explanation.

    Attributes
    ----------
    x, baseline : ndarray, shape ``sample_shape``
        Input and baseline in the model's layout (float, finite).
    adapter : Adapter
    layout : Layout
    chw : (C, H, W) of the sample
    targets : ndarray of int (T,)
    reference : ndarray (T,)
        Scores of the unperturbed input for ``targets``.
    rng : numpy Generator
    """

    x: np.ndarray
    baseline: np.ndarray
    adapter: Adapter
    layout: Layout
    chw: tuple[int, int, int]
    targets: np.ndarray
    reference: np.ndarray
    rng: np.random.Generator

    def blend_renderer(self) -> BlendRenderer:
        return BlendRenderer(self.x, self.baseline, self.layout, self.adapter.backend, self.adapter.dtype)


class PerturbationExplainer(Configurable, ABC):
    """Base of the black-box explainers; a method only says how to :meth:`_plan` a run.

    Subclasses store their keyword parameters in ``__init__`` (validated there) and call
    ``super().__init__(baseline=..., random_state=..., progress=..., max_queries=...)``;
    sampling methods whose estimator has ``standard_error`` also pass ``tolerance=``
    (and ``min_queries=``) and then stop early once converged (:class:`engine.Stopping`).
    A method that needs more than one engine run overrides :meth:`_estimate`.
    """

    #: display name of the method
    method = "perturbation"

    def __init__(self, *, baseline: object = 0.0, random_state: object = None,
                 progress: bool | None = None, max_queries: int | None = None,
                 tolerance: float | None = None, min_queries: int = 100) -> None:
        owner = type(self).__name__
        self.baseline = check_baseline(baseline, owner)
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state
        self.progress = progress
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", owner, minimum=2)
        self.tolerance = None if tolerance is None else check_float(
            tolerance, "tolerance", owner, low=0.0, high=float("inf"), low_open=True, high_open=True)
        self.min_queries = check_int(min_queries, "min_queries", owner, minimum=1)

    def _stopping(self) -> engine.Stopping | None:
        """The early-stopping rule of this explainer (None: run every perturbation)."""
        tolerance = getattr(self, "tolerance", None)
        return None if tolerance is None else engine.Stopping(tolerance, self.min_queries)

    def _estimate(self, ctx: Context, budget: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions ``(T, ...)`` and extras, from one engine run of :meth:`_plan`."""
        plan = self._plan(ctx)
        result = engine.run(plan, ctx.adapter, ctx.targets, budget=budget, progress=self.progress,
                            desc=type(self).__name__, stopping=self._stopping())
        maps = plan.estimator.finalize()
        extras = self._extras(ctx, plan)
        extras.update(result.extras())
        return maps, extras

    @abstractmethod
    def _plan(self, ctx: Context) -> engine.Plan:
        """Sampler, renderer and estimator for one explanation."""

    def _extras(self, ctx: Context, plan: engine.Plan) -> dict[str, Any]:
        """Method-specific results for :attr:`Explanation.extras`."""
        return {}

    def explain(self, model: object, x: np.ndarray, target: int | list[int] | None = None) -> Explanation:
        """Explain the model's score(s) for one sample.

        Parameters
        ----------
        model : Adapter or callable or torch.nn.Module
            A :mod:`perturbx.adapters` adapter, or a bare model wrapped with defaults.
        x : ndarray
            One sample in the adapter's ``input_layout``, without a batch axis.
        target : int, sequence of int or None
            Class(es) to explain; None explains the model's top class for ``x``.

        Returns
        -------
        Explanation
            ``attributions`` of shape (H, W) for None or an int, (T, H, W) for a sequence.
        """
        start = time.perf_counter()
        adapter = as_adapter(model)
        x = adapter.check_sample(x)
        queries_before = adapter.n_queries
        scores = adapter.predict_batch(adapter.backend.asarray(x[None], adapter.dtype))[0]
        targets, single = normalise_targets(target, len(scores), int(np.argmax(scores)))
        rng = check_random_state(self.random_state)
        baseline = resolve_baseline(self.baseline, x, adapter.layout, rng)
        ctx = Context(x, baseline, adapter, adapter.layout, adapter.layout.to_chw(x.shape),
                      targets, scores[targets], rng)
        budget = None if self.max_queries is None else self.max_queries - 1
        maps, extras = self._estimate(ctx, budget)
        if maps.ndim == 4:  # per-channel attributions: keep them, report their sum
            extras["channel_attributions"] = maps[0] if single else maps
            maps = maps.sum(axis=1)
        return Explanation(
            attributions=maps[0] if single else maps, targets=targets,
            n_queries=adapter.n_queries - queries_before, seconds=time.perf_counter() - start,
            method=type(self).__name__, params=self.get_params(), scores=scores[targets],
            input=x, input_layout=adapter.layout.name, extras=extras)
