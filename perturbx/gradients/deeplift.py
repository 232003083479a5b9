"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017) and DeepLIFT-SHAP over a baseline distribution."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice, check_float, check_random_state
from perturbx.baselines import check_baseline, resolve_baseline

from ._baselines import DEFAULT_DISTRIBUTION, check_distribution, resolve_distribution
from ._rescale import rescale_hooks
from ._session import Session, run_gradients
from .base import PixelGradient

MAXPOOL_RULES = ("gradient", "rescale")


def _check_eps(eps: object, owner: str) -> float:
    return check_float(eps, "eps", owner, low=0.0, high=np.inf, high_open=True)


def deeplift_multipliers(session: Session, xs: torch.Tensor, refs: torch.Tensor, eps: float,
                         maxpool: str = "gradient") -> torch.Tensor:
    """DeepLIFT multipliers ``(S, T, R, *sample_shape)`` of samples ``xs`` (S, ...) and references ``refs`` (R, ...).

    One item per (sample, target, reference); its forward rows are the sample and the
    reference, so ``2 S T R`` rows are counted as queries.
    """
    n_s, n_t, n_r = len(xs), session.n_targets, len(refs)
    items = torch.arange(n_s * n_t * n_r, device=xs.device)        # item = (sample, target, reference)
    out = torch.empty((len(items), *xs.shape[1:]), dtype=torch.float32, device=xs.device)

    def make_rows(lo: int, hi: int) -> torch.Tensor:
        i = items[lo:hi]
        return torch.cat([xs[i // (n_t * n_r)], refs[i % n_r]])

    def consume(chunk) -> None:
        out[chunk.lo:chunk.hi] = chunk.grad[:chunk.hi - chunk.lo]

    run_gradients(session, len(items), make_rows, (items // n_r) % n_t, consume,
                  hooks=partial(rescale_hooks, session.module, eps, maxpool), rows_per_item=2)
    return out.view(n_s, n_t, n_r, *xs.shape[1:])


class DeepLIFT(PixelGradient):
    """DeepLIFT, Rescale rule: ``(x - r) * m``, with multipliers ``m`` propagated by the Rescale rule.

    Equals Captum's ``DeepLift(model).attribute(x, baselines=r, target=t)`` (``eps`` as
    Captum's). For networks of linear layers and the supported nonlinearities the
    attributions of a target sum to ``f_t(x) - f_t(r)`` (completeness).

    Parameters
    ----------
    baseline : float, {"mean", "blur", "noise"}, array or callable, default 0.0
        The reference input ``r``; see :mod:`perturbx.baselines`.
    eps : float, default 1e-10
        Below this input difference a nonlinearity keeps its gradient (Captum's ``eps``).
    maxpool : {"gradient", "rescale"}, default "gradient"
        The rule of max-pooling modules (see Notes).
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
        Channel reduction; ``"sum"`` keeps completeness for the map.
    random_state : int, Generator or None
        Only used by a ``"noise"`` baseline.

    Notes
    -----
    Which modules get which rule: ``nn.ReLU``, ``nn.ELU``, ``nn.LeakyReLU``, ``nn.Sigmoid``,
    ``nn.Tanh`` and ``nn.Softplus`` modules get the Rescale multiplier
    ``(f(x) - f(r)) / (x - r)`` (their ordinary gradient where ``|x - r| < eps``). Linear
    operations (convolutions, linear layers, batch norm in eval mode, additions, average
    pooling, reshapes) need no rule: their multipliers are their gradients.

    Max-pooling: by default (``maxpool="gradient"``) an ``nn.MaxPool1d/2d/3d`` module passes
    its gradient, routing the multiplier to the input's maximum (the DeepLIFT authors'
    default, ``MaxPoolDeepLiftMode.gradient``). This is also what Captum computes for a
    max-pooling module that directly follows a hooked nonlinearity (``ReLU -> MaxPool2d``, as
    in the demo CNN and ResNets): Captum's ReLU hook reads the gradient that arrives before
    the max-pooling hook rewrites it, so its max-pooling rule has no effect there, and the two
    implementations agree. ``maxpool="rescale"`` applies Captum's max-pooling rule
    (the differences of the input's and the reference's maxima, routed back through both
    pooling indices, divided by ``x - r``), composed with the neighbouring rules as the chain
    rule of multipliers says; it makes a pooling layer with non-overlapping windows exactly
    complete. It differs from Captum wherever Captum's rule does take effect (a max-pooling
    module not preceded by a hooked nonlinearity), because Captum's max-pooling hook reads the
    gradient of the following layer before that layer's rule has rewritten it.

    What is **not** seen keeps its ordinary gradient, exactly as in Captum: a
    ``torch.nn.functional.relu`` (or ``torch.relu``) call, a functional ``max_pool2d``,
    ``nn.AdaptiveMaxPool2d``, ``nn.Softmax`` and any other nonlinearity. There the result is
    a gradient-times-difference approximation and completeness (``sum(attributions) = f(x) -
    f(r)``) no longer holds: ``extras["completeness_gap"]`` shows by how much. Build models
    with ``nn.ReLU`` modules (any ``inplace``; a module may be used several times) for exact
    DeepLIFT.

    Queries: two forward rows per target (the input and the reference, in one batch, as in
    Captum), plus one row for ``f(r)``. ``extras``: ``raw`` ``(T, *sample_shape)``,
    ``completeness_gap`` ``(T,)`` = ``sum(attributions) - (f(x) - f(r))`` (Captum's
    convergence delta), ``score_difference`` ``(T,)`` and ``baseline``.
    """

    def __init__(self, baseline: object = 0.0, *, eps: float = 1e-10, maxpool: str = "gradient",
                 reduction: str = "sum", random_state: int | np.random.Generator | None = None) -> None:
        super().__init__(reduction=reduction)
        self.baseline = check_baseline(baseline, "DeepLIFT")
        self.eps = _check_eps(eps, "DeepLIFT")
        self.maxpool = check_choice(maxpool, "maxpool", "DeepLIFT", MAXPOOL_RULES)
        check_random_state(random_state, owner="The 'random_state' parameter of DeepLIFT")
        self.random_state = random_state

    def _references(self, session: Session) -> torch.Tensor:
        """The references ``(R, *sample_shape)`` of this call (resolved once)."""
        key = f"references:{id(self)}"
        if key not in session.memo:
            b = resolve_baseline(self.baseline, session.x, session.layout, check_random_state(self.random_state))
            session.memo[key] = torch.as_tensor(b, dtype=torch.float32, device=session.xt.device)[None]
        return session.memo[key]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        refs = self._references(session)
        m = deeplift_multipliers(session, xs, refs, self.eps, self.maxpool)            # (S, T, R, ...)
        return ((xs[:, None, None] - refs[None, None]) * m).mean(dim=2)

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        refs = self._references(session)
        f_refs = session.values_of(refs).mean(axis=0)
        difference = session.reference - f_refs
        sums = raw.detach().to("cpu", torch.float64).reshape(len(raw), -1).sum(dim=1).numpy()
        extra = {"completeness_gap": sums - difference, "score_difference": difference}
        extra["baseline" if len(refs) == 1 else "baselines"] = refs[0 if len(refs) == 1 else slice(None)].cpu().numpy()
        return extra


class DeepLIFTSHAP(DeepLIFT):
    """DeepLIFT averaged over a distribution of references: ``mean_j (x - r_j) * m_j`` (Lundberg & Lee 2017).

    Equals Captum's ``DeepLiftShap(model).attribute(x, baselines=R, target=t)`` for the
    same references ``R``. Its attributions sum to ``f_t(x) - mean_j f_t(r_j)`` for the
    networks where DeepLIFT is complete.

    Parameters
    ----------
    baselines : array (B, *sample_shape) or sequence of baseline specs, default 8 x "noise"
        The reference distribution: samples (e.g. training images), or specs of
        :mod:`perturbx.baselines` resolved for each explained sample (``("noise",) * 8``:
        eight noise images with the sample's channel means and deviations).
    eps : float, default 1e-10
    maxpool : {"gradient", "rescale"}, default "gradient"
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
    random_state : int, Generator or None
        Seeds the ``"noise"`` specs.

    Notes
    -----
    Module rules, and what happens with functional relu and max-pooling: as in :class:`DeepLIFT`.
    Queries: ``2 B`` rows per target plus ``B`` rows for ``f(r_j)``. ``extras``: ``raw``,
    ``completeness_gap`` (against ``f(x) - mean_j f(r_j)``), ``score_difference``,
    ``baselines`` ``(B, *sample_shape)``.
    """

    def __init__(self, baselines: object = DEFAULT_DISTRIBUTION, *, eps: float = 1e-10, maxpool: str = "gradient",
                 reduction: str = "sum", random_state: int | np.random.Generator | None = None) -> None:
        PixelGradient.__init__(self, reduction=reduction)
        self.baselines = check_distribution(baselines, "DeepLIFTSHAP")
        self.eps = _check_eps(eps, "DeepLIFTSHAP")
        self.maxpool = check_choice(maxpool, "maxpool", "DeepLIFTSHAP", MAXPOOL_RULES)
        check_random_state(random_state, owner="The 'random_state' parameter of DeepLIFTSHAP")
        self.random_state = random_state

    def _references(self, session: Session) -> torch.Tensor:
        key = f"references:{id(self)}"
        if key not in session.memo:
            session.memo[key] = resolve_distribution(self.baselines, session, check_random_state(self.random_state),
                                                     "DeepLIFTSHAP")
        return session.memo[key]
