"""Layer and channel attribution: gradient x activation and conductance (Dhamdhere et al. 2018) of a named layer.

:class:`LayerGradientXActivation` and :class:`LayerConductance` attribute a target to
every unit ``(c, i, j)`` of a layer's output; summed over a channel's positions they say
which feature maps carry the decision (``extras["channel_scores"]``). :class:`NeuronConductance`
attributes one unit's share of the target to the input pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice, check_int, check_random_state
from perturbx.baselines import check_baseline, resolve_baseline

from ._hooks import resolve_layer
from ._session import Session, run_gradients
from .base import GradientExplainer, PixelGradient
from .gradcam import UPSAMPLE_MODES, check_layer
from .integrated_gradients import quadrature

#: path rules a conductance accepts (Captum's names); both trapezoid names put the points at linspace(0, 1)
PATH_METHODS = ("riemann_trapezoid", "gausslegendre")


class _LayerMethod(GradientExplainer):
    """Attributions ``(T, C, h, w)`` of a layer's units; the map is their channel sum, upsampled to ``(H, W)``."""

    def __init__(self, layer: str | None, upsample: str) -> None:
        owner = type(self).__name__
        self.layer = check_layer(layer, owner)
        self.upsample = check_choice(upsample, "upsample", owner, UPSAMPLE_MODES)

    def _resolve(self, session: Session) -> tuple[torch.nn.Module, str]:
        name, module = resolve_layer(session.module, self.layer, type(self).__name__)
        session.memo["layer"] = name
        return module, name

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        size = session.layout.spatial_shape(session.x.shape)
        summed = raw.detach().sum(dim=1, keepdim=True)
        up = torch.nn.functional.interpolate(summed, size=size, mode=self.upsample)[:, 0]
        return up.to("cpu", torch.float64).numpy()

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        scores = raw.detach().to("cpu", torch.float64).sum(dim=(2, 3)).numpy()
        return {"layer": session.memo["layer"], "channel_scores": scores,
                "channel_ranking": np.argsort(-scores, axis=1, kind="stable")}


class LayerGradientXActivation(_LayerMethod):
    """Gradient of the target times the activation, for every unit of a layer: ``A * d f_t / d A``.

    Equals Captum's ``LayerGradientXActivation(model, layer).attribute(x, target=t)``.
    Summed over a channel it is the first-order estimate of what the channel contributes
    (``extras["channel_scores"]``, ``(T, C)``; ``extras["channel_ranking"]`` orders the
    channels from the largest contribution down).

    Parameters
    ----------
    layer : str or None, default None
        Module name as in ``model.named_modules()``; None takes the last ``torch.nn.Conv2d``.
        Its output must be ``(N, C, h, w)``.
    upsample : {"nearest", "bilinear"}, default "nearest"
        How the channel sum ``(h, w)`` becomes the map ``(H, W)``.

    Notes
    -----
    Queries: one forward row per target. ``extras``: ``raw`` ``(T, C, h, w)``, ``layer``,
    ``channel_scores``, ``channel_ranking``.
    """

    def __init__(self, layer: str | None = None, *, upsample: str = "nearest") -> None:
        super().__init__(layer, upsample)

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        module, name = self._resolve(session)
        n_targets = session.n_targets
        parts: list[torch.Tensor] = []
        rows = torch.arange(len(xs) * n_targets, device=xs.device)
        run_gradients(session, len(rows), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets,
                      lambda chunk: parts.append(chunk.act * chunk.grad), layer=(module, name))
        out = torch.cat(parts)
        return out.view(len(xs), n_targets, *out.shape[1:])


class _PathMethod:
    """Parameters shared by the conductances: path points, baseline, batch size."""

    def _init_path(self, n_steps: int, method: str, baseline: object, internal_batch_size: int | None,
                   random_state: object) -> None:
        owner = type(self).__name__
        self.n_steps = check_int(n_steps, "n_steps", owner)
        self.method = check_choice(method, "method", owner, PATH_METHODS)
        self.baseline = check_baseline(baseline, owner)
        self.internal_batch_size = (None if internal_batch_size is None else
                                    check_int(internal_batch_size, "internal_batch_size", owner))
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state

    def _baseline(self, session: Session) -> torch.Tensor:
        key = f"baseline:{id(self)}"
        if key not in session.memo:
            b = resolve_baseline(self.baseline, session.x, session.layout, check_random_state(self.random_state))
            session.memo[key] = torch.as_tensor(b, dtype=torch.float32, device=session.xt.device)
        return session.memo[key]

    def _gap(self, session: Session, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Completeness: ``totals (T,) - (f(x) - f(b))`` and the difference itself."""
        difference = session.reference - session.values_of(self._baseline(session)[None])[0]
        return {"completeness_gap": totals - difference, "score_difference": difference}


class LayerConductance(_PathMethod, _LayerMethod):
    """Conductance of every unit of a layer (Dhamdhere et al. 2018): its share of integrated gradients.

    ``cond_u = sum_k d f_t / d A_u (p_k) * (A_u(p_{k+1}) - A_u(p_k))`` over points ``p_k =
    b + alpha_k (x - b)``, ``k = 0 .. n_steps``, of the straight path from the baseline: the
    path integral of the target's gradient along the unit's own change. Over all units of a
    layer that every path to the output crosses it sums to ``f_t(x) - f_t(b)`` (up to the
    discretisation). Equals Captum's ``LayerConductance(model, layer).attribute(x,
    baselines=b, target=t, n_steps=n_steps, method=method)``.

    Parameters
    ----------
    layer : str or None, default None
        As in :class:`LayerGradientXActivation`.
    n_steps : int, default 50
        Path segments (``n_steps + 1`` points, rows per target).
    method : {"riemann_trapezoid", "gausslegendre"}, default "riemann_trapezoid"
        Where the points lie: evenly from ``b`` to ``x`` (the default: the segments tile the
        whole path, so the sum is exactly the layer's path integral of a piecewise-linear
        approximation), or at Gauss-Legendre nodes (Captum's default, which leaves out the
        two end segments).
    baseline : float, {"mean", "blur", "noise"}, array or callable, default 0.0
    internal_batch_size : int, optional
        Path rows per forward/backward pass; defaults to the adapter's ``batch_size``.
    upsample : {"nearest", "bilinear"}, default "nearest"
    random_state : int, Generator or None
        Only used by a ``"noise"`` baseline.

    Notes
    -----
    Queries: ``n_steps + 1`` rows per target, plus ``f(x)`` and ``f(b)``. ``extras``: ``raw``
    ``(T, C, h, w)``, ``layer``, ``channel_scores`` ``(T, C)`` (the conductance of each
    feature map), ``channel_ranking``, ``completeness_gap`` ``(T,)`` = ``sum(raw) - (f(x) -
    f(b))``, ``score_difference``.
    """

    def __init__(self, layer: str | None = None, n_steps: int = 50, method: str = "riemann_trapezoid",
                 baseline: object = 0.0, *, internal_batch_size: int | None = None, upsample: str = "nearest",
                 random_state: int | np.random.Generator | None = None) -> None:
        _LayerMethod.__init__(self, layer, upsample)
        self._init_path(n_steps, method, baseline, internal_batch_size, random_state)

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        module, name = self._resolve(session)
        base = self._baseline(session)
        _, alphas = quadrature(self.method, self.n_steps + 1)
        alpha_t = torch.tensor(alphas, dtype=torch.float32, device=xs.device)
        n_points, n_targets = self.n_steps + 1, session.n_targets
        rows = torch.arange(len(xs) * n_targets * n_points, device=xs.device)   # row = (sample, target, point)
        state: dict[str, Any] = {"total": None, "carry": None}

        def make_rows(lo: int, hi: int) -> torch.Tensor:
            r = rows[lo:hi]
            alpha = alpha_t[r % n_points].view(-1, *([1] * base.ndim))
            return base + alpha * (xs[r // (n_targets * n_points)] - base)

        def consume(chunk) -> None:
            r, act, grad = rows[chunk.lo:chunk.hi], chunk.act, chunk.grad
            if state["total"] is None:
                state["total"] = torch.zeros((len(xs) * n_targets, *act.shape[1:]), dtype=act.dtype, device=act.device)
            total, k, item = state["total"], r % n_points, r // n_points
            previous = torch.cat([state["carry"] if state["carry"] is not None else grad[:1], grad[:-1]])
            later, earlier = k >= 1, k < n_points - 1
            total.index_add_(0, item[later], previous[later] * act[later])      # g_{k-1} * A_k
            total.index_add_(0, item[earlier], -grad[earlier] * act[earlier])   # - g_k * A_k
            state["carry"] = grad[-1:]

        run_gradients(session, len(rows), make_rows, (rows // n_points) % n_targets, consume,
                      layer=(module, name), batch_size=self.internal_batch_size)
        total = state["total"]
        return total.view(len(xs), n_targets, *total.shape[1:])

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        totals = raw.detach().to("cpu", torch.float64).reshape(len(raw), -1).sum(dim=1).numpy()
        return {**super()._extras(session, raw), **self._gap(session, totals)}


def _check_neuron(neuron: object, owner: str) -> tuple[int, ...]:
    items = (neuron,) if isinstance(neuron, (int, np.integer)) and not isinstance(neuron, bool) else neuron
    if not isinstance(items, tuple) or not items or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in items):
        raise TypeError(f"The 'neuron' parameter of {owner} must be a non-negative int or a tuple of them indexing "
                        f"the layer's output without the batch axis, e.g. (channel, row, column). Got {neuron!r}.")
    return tuple(int(i) for i in items)


class NeuronConductance(_PathMethod, PixelGradient):
    """How each input pixel contributes to the target through one unit of a layer (Dhamdhere et al. 2018).

    ``attr_i = (x_i - b_i) sum_k w_k * d f_t / d y (p_k) * d y / d x_i (p_k)`` for the unit
    ``y = A[neuron]`` and path points ``p_k = b + alpha_k (x - b)`` with the weights of
    ``method``: integrated gradients restricted to the paths through ``y``; over the input
    it sums to the unit's conductance. Equals Captum's ``NeuronConductance(model,
    layer).attribute(x, neuron_selector=neuron, baselines=b, target=t, n_steps=n_steps,
    method=method)``.

    Parameters
    ----------
    layer : str
        Module name as in ``model.named_modules()`` (any output shape).
    neuron : int or tuple of int
        Index of the unit in the layer's output without the batch axis, e.g.
        ``(channel, row, column)`` for a convolution, ``(j,)`` for a linear layer.
    n_steps : int, default 50
    method : {"riemann_trapezoid", "gausslegendre"}, default "riemann_trapezoid"
        Quadrature rule, as in :class:`IntegratedGradients` (Captum's default here).
    baseline : float, {"mean", "blur", "noise"}, array or callable, default 0.0
    internal_batch_size : int, optional
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
    random_state : int, Generator or None

    Notes
    -----
    Queries: ``n_steps`` rows per target (one forward and two backward passes each), plus
    ``f(x)``. ``extras``: ``raw`` ``(T, *sample_shape)``, ``layer``, ``neuron``.
    """

    def __init__(self, layer: str, neuron: int | tuple[int, ...], n_steps: int = 50,
                 method: str = "riemann_trapezoid", baseline: object = 0.0, *,
                 internal_batch_size: int | None = None, reduction: str = "sum",
                 random_state: int | np.random.Generator | None = None) -> None:
        PixelGradient.__init__(self, reduction=reduction)
        if not isinstance(layer, str):
            raise TypeError(f"The 'layer' parameter of NeuronConductance must be a module name (str) such as "
                            f"'layer4.1.conv2'. Got {type(layer).__name__}.")
        self.layer = layer
        self.neuron = _check_neuron(neuron, "NeuronConductance")
        self._init_path(n_steps, method, baseline, internal_batch_size, random_state)

    def _select(self, act: torch.Tensor) -> torch.Tensor:
        """The unit's value ``(n,)`` in each row of a layer output ``(n, ...)``."""
        shape = tuple(act.shape[1:])
        if len(self.neuron) != len(shape) or any(i >= s for i, s in zip(self.neuron, shape, strict=True)):
            raise ValueError(f"The 'neuron' parameter of NeuronConductance is {self.neuron}, but layer "
                             f"{self.layer!r} returns units of shape {shape} (without the batch axis); pass an "
                             f"index with {len(shape)} entries inside that shape.")
        return act[(slice(None), *self.neuron)]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        name, module = resolve_layer(session.module, self.layer, "NeuronConductance")
        base = self._baseline(session)
        steps, alphas = quadrature(self.method, self.n_steps)
        dev = xs.device
        step_t, alpha_t = (torch.tensor(v, dtype=torch.float32, device=dev) for v in (steps, alphas))
        n, n_targets = self.n_steps, session.n_targets
        total = torch.zeros((len(xs) * n_targets, *xs.shape[1:]), dtype=torch.float32, device=dev)
        rows = torch.arange(len(xs) * n_targets * n, device=dev)

        def make_rows(lo: int, hi: int) -> torch.Tensor:
            r = rows[lo:hi]
            return base + alpha_t[r % n].view(-1, *([1] * base.ndim)) * (xs[r // (n_targets * n)] - base)

        def consume(chunk) -> None:
            r = rows[chunk.lo:chunk.hi]
            scale = (self._select(chunk.grad) * step_t[r % n]).view(-1, *([1] * base.ndim))
            total.index_add_(0, r // n, chunk.neuron_grad * scale)

        run_gradients(session, len(rows), make_rows, (rows // n) % n_targets, consume, layer=(module, name),
                      neuron=self._select, batch_size=self.internal_batch_size, spatial_layer=False)
        return total.view(len(xs), n_targets, *xs.shape[1:]) * (xs - base)[:, None]

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        return {"layer": self.layer, "neuron": self.neuron}
