"""Integrated gradients (Sundararajan et al. 2017) with Captum's quadrature rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice, check_int, check_random_state
from perturbx.baselines import check_baseline, resolve_baseline

from ._session import Session, run_gradients
from .base import PixelGradient

METHODS = ("gausslegendre", "riemann_trapezoid", "trapezoid")


def quadrature(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Weights and path positions ``alpha`` in [0, 1] of a quadrature rule with ``n_steps`` nodes.

    ``"gausslegendre"`` and ``"riemann_trapezoid"`` are built exactly as Captum builds them.
    Captum's trapezoid weights are ``1/n`` (halved at both ends) on ``n`` evenly spaced
    nodes, so they sum to ``(n - 1) / n``; ``"trapezoid"`` is the composite trapezoid
    rule on the same nodes (weights ``1/(n - 1)``, halved at both ends), which sum to 1.
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    width = 1 / n_steps if method == "riemann_trapezoid" else 1 / (n_steps - 1)
    steps = [width] * n_steps
    steps[0] /= 2
    steps[-1] /= 2
    return steps, torch.linspace(0, 1, n_steps).tolist()


class IntegratedGradients(PixelGradient):
    """Average gradient along the straight path from a baseline to the input, times ``x - baseline``.

    ``attr_i = (x_i - b_i) * sum_k w_k * d f_t / d x_i (b + alpha_k (x - b))``, as in
    Captum's ``IntegratedGradients`` with the same ``method``, ``n_steps`` and baseline.
    By completeness, the attributions of a target sum to ``f_t(x) - f_t(b)`` up to the
    quadrature error, reported as ``extras["completeness_gap"]``.

    Parameters
    ----------
    n_steps : int, default 50
        Points on the path (rows per target); >= 2 for the trapezoid rules.
    method : {"gausslegendre", "riemann_trapezoid", "trapezoid"}, default "gausslegendre"
        Quadrature rule. ``"gausslegendre"`` (Captum's default) is the most accurate.
        ``"riemann_trapezoid"`` is Captum's rule of that name, kept for comparisons: its
        weights sum to ``(n_steps - 1) / n_steps``, so attributions come out that much too
        small (a completeness gap of about ``(f(x) - f(b)) / n_steps``). ``"trapezoid"`` is
        the composite trapezoid rule on the same points (not in Captum).
    baseline : float, {"mean", "blur", "noise"}, array or callable, default 0.0
        The path's start; see :mod:`perturbx.baselines`.
    internal_batch_size : int, optional
        Path rows per forward/backward pass; defaults to the adapter's ``batch_size``.
        Only memory and speed depend on it.
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
        Channel reduction; ``"sum"`` keeps completeness for the map.
    random_state : int, Generator or None
        Only used by a ``"noise"`` baseline.

    Notes
    -----
    Queries: ``n_steps`` rows per target, plus one row for ``f(x)`` and one for ``f(b)``.
    ``extras``: ``raw`` ``(T, *sample_shape)``, ``completeness_gap`` ``(T,)`` =
    ``sum(attributions) - (f(x) - f(b))`` (Captum's convergence delta), ``score_difference``
    ``(T,)`` = ``f(x) - f(b)``, ``baseline`` (the resolved baseline sample).
    """

    def __init__(self, n_steps: int = 50, method: str = "gausslegendre", baseline: object = 0.0, *,
                 internal_batch_size: int | None = None, reduction: str = "sum",
                 random_state: int | np.random.Generator | None = None) -> None:
        super().__init__(reduction=reduction)
        self.method = check_choice(method, "method", "IntegratedGradients", METHODS)
        self.n_steps = check_int(n_steps, "n_steps", "IntegratedGradients",
                                 minimum=1 if method == "gausslegendre" else 2)
        self.baseline = check_baseline(baseline, "IntegratedGradients")
        self.internal_batch_size = (None if internal_batch_size is None else
                                    check_int(internal_batch_size, "internal_batch_size", "IntegratedGradients"))
        check_random_state(random_state, owner="The 'random_state' parameter of IntegratedGradients")
        self.random_state = random_state

    def _baseline(self, session: Session) -> torch.Tensor:
        key = f"baseline:{id(self)}"
        if key not in session.memo:
            b = resolve_baseline(self.baseline, session.x, session.layout, check_random_state(self.random_state))
            session.memo[key] = torch.as_tensor(b, dtype=torch.float32, device=session.xt.device)
        return session.memo[key]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        base = self._baseline(session)
        steps, alphas = quadrature(self.method, self.n_steps)
        dev = xs.device
        step_t = torch.tensor(steps, dtype=torch.float32, device=dev)
        alpha_t = torch.tensor(alphas, dtype=torch.float32, device=dev)
        n, n_targets = self.n_steps, session.n_targets
        total = torch.zeros((len(xs) * n_targets, xs[0].numel()), dtype=torch.float32, device=dev)
        row_ids = torch.arange(len(xs) * n_targets * n, device=dev)   # row = (sample, target, step)

        def make_rows(lo: int, hi: int) -> torch.Tensor:
            r = row_ids[lo:hi]
            alpha = alpha_t[r % n].view(-1, *([1] * base.ndim))
            return base + alpha * (xs[r // (n_targets * n)] - base)

        def consume(chunk) -> None:
            r = row_ids[chunk.lo:chunk.hi]
            total.index_add_(0, r // n, chunk.grad.reshape(len(r), -1) * step_t[r % n][:, None])

        run_gradients(session, len(row_ids), make_rows, (row_ids // n) % n_targets, consume,
                      batch_size=self.internal_batch_size)
        total = total.view(len(xs), n_targets, *xs.shape[1:])
        return total * (xs - base)[:, None]

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        base = self._baseline(session)
        f_base = session.values_of(base[None])[0]
        difference = session.reference - f_base
        sums = raw.detach().to("cpu", torch.float64).reshape(len(raw), -1).sum(dim=1).numpy()
        return {"completeness_gap": sums - difference, "score_difference": difference,
                "baseline": base.to("cpu").numpy()}
