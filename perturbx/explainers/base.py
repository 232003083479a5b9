"""What every black-box explainer shares: baselines, seeds, stopping, the engine run."""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx import engine
from perturbx._utils import Layout, check_float, check_int, check_random_state
from perturbx.adapters import Adapter
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.explainer import Explainer, Request
from perturbx.explanation import Explanation
from perturbx.renderers import BlendRenderer
from perturbx.targets import Target


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
    target : Target
        The bound target (:mod:`perturbx.targets`); the engine folds its ``T`` scalars.
    reference : ndarray (T,)
        The target's scalars for the unperturbed input.
    rng : numpy Generator
    """

    x: np.ndarray
    baseline: np.ndarray
    adapter: Adapter
    layout: Layout
    chw: tuple[int, int, int]
    target: Target
    reference: np.ndarray
    rng: np.random.Generator

    @property
    def n_targets(self) -> int:
        """Number of scalars explained, ``T``."""
        return len(self.reference)

    def blend_renderer(self) -> BlendRenderer:
        return BlendRenderer(self.x, self.baseline, self.layout, self.adapter.backend, self.adapter.dtype)


class PerturbationExplainer(Explainer):
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
        with engine.host_math():  # samplers' setup is host linear algebra too (no model call)
            plan = self._plan(ctx)
        result = engine.run(plan, ctx.adapter, ctx.target, budget=budget, progress=self.progress,
                            desc=type(self).__name__, stopping=self._stopping())
        with engine.host_math():
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

    def _context(self, request: Request) -> Context:
        """The request with its baseline resolved (a "noise" baseline draws from the request's stream)."""
        adapter, x = request.adapter, request.x
        baseline = resolve_baseline(self.baseline, x, adapter.layout, request.rng)
        return Context(x, baseline, adapter, adapter.layout, adapter.layout.to_chw(x.shape), request.target,
                       request.reference, request.rng)

    def _explain(self, request: Request) -> tuple[np.ndarray, dict[str, Any]]:
        """Resolve the baseline, then :meth:`_estimate` (one engine run of :meth:`_plan` by default)."""
        return self._estimate(self._context(request), request.budget)

    def _shares_batches(self) -> bool:
        """Methods made of one engine run (those that do not override :meth:`_estimate`) pack samples together."""
        return type(self)._estimate is PerturbationExplainer._estimate

    def _explain_many(self, adapter: Adapter, xs: list[np.ndarray], targets: list[object]) -> list[Explanation]:
        """One :func:`perturbx.engine.run_many` over every sample's plan: the same maps as one explain each."""
        start, before = time.perf_counter(), adapter.n_queries
        requests = self._requests(adapter, xs, targets)
        contexts = [self._context(r) for r in requests]
        with engine.host_math():
            plans = [self._plan(c) for c in contexts]
        results = engine.run_many(plans, adapter, [c.target for c in contexts], budgets=[r.budget for r in requests],
                                  progress=self.progress, desc=type(self).__name__, stopping=self._stopping())
        elapsed, total = time.perf_counter() - start, max(adapter.n_queries - before, 1)
        out = []
        for request, ctx, plan, result in zip(requests, contexts, plans, results, strict=True):
            with engine.host_math():
                maps = plan.estimator.finalize()  # before the extras, which read the finished estimator
                extras = self._extras(ctx, plan)
            extras.update(result.extras())
            n = 1 + result.n_queries
            out.append(self._explanation(request, maps, extras, n, elapsed * n / total))
        return out
