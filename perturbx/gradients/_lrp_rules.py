"""LRP rules: how a layer ``z = layer(a; W, b)`` hands the relevance of its outputs to its inputs.

Every rule is a recipe of zennit's ``BasicHook`` form: a few modified copies of the layer
(inputs and parameters clamped or shifted), the upper relevance divided by a stabilised
denominator made of their outputs, a vector-Jacobian product through each copy, and a sum
of the products with the modified inputs. The numbers follow zennit 0.5 exactly (same
stabiliser ``z + eps * sign(z)`` with ``sign(0) = 1``, same treatment of biases).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: ``layer(input, weight, bias) -> output`` of one linear unit (a convolution or a linear layer)
LayerFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)``, with ``sign(0) = +1`` (zennit's stabiliser)."""
    return z + ((z == 0).to(z) + z.sign()) * eps


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def _check_number(value: object, name: str, owner: str) -> float:
    """A finite number >= 0."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not np.isfinite(value):
        raise TypeError(f"The '{name}' parameter of {owner} must be a finite number. Got {value!r}.")
    if value < 0:
        raise ValueError(f"The '{name}' parameter of {owner} must be >= 0. Got {value!r}.")
    return float(value)


def _check_bound(value: object, name: str) -> None:
    """A finite number or array (the bounds of ZBox)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if isinstance(value, bool) or arr is None or not np.all(np.isfinite(arr)):
        raise TypeError(f"The '{name}' parameter of ZBox must be a finite number or array of the input's bounds "
                        f"(broadcasting against one sample, e.g. (C, 1, 1)). Got {value!r}.")


def _backward(layer: LayerFn, terms: Sequence[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
              mapper: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> list[torch.Tensor]:
    """``inp_k * J_k^T s_k`` for every term ``(inp_k, W_k, b_k)``, ``s = mapper(outputs)``."""
    leaves = [inp.detach().requires_grad_(True) for inp, _, _ in terms]
    with torch.enable_grad():
        outs = [layer(leaf, w, b) for leaf, (_, w, b) in zip(leaves, terms, strict=True)]
        grads = torch.autograd.grad(outs, leaves, grad_outputs=mapper(outs))
    return [leaf.detach() * g for leaf, g in zip(leaves, grads, strict=True)]


class Rule:
    """An LRP rule for linear units: ``relevance(layer, a, W, b, R_out) -> R_in``."""

    def relevance(self, layer: LayerFn, a: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  upper: torch.Tensor, *, use_bias: bool = True) -> torch.Tensor:
        """Relevance of the unit's input ``a`` from the relevance ``upper`` of its output.

        ``use_bias=False`` computes every term as if the bias were zero (zennit's
        ``zero_params="bias"``); relevance is then conserved up to the stabiliser.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_i = a_i sum_j w_ij R_j / (z_j + eps sign z_j)``; ``epsilon=0`` is LRP-0."""

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        _check_number(self.epsilon, "epsilon", "Epsilon")

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        (r,) = _backward(layer, [(a, weight, b)], lambda outs: [upper / stabilize(outs[0], self.epsilon)])
        return r


@dataclass(frozen=True)
class ZPlus(Rule):
    """z+ (alpha=1, beta=0): only positive contributions ``a_i^+ w_ij^+ + a_i^- w_ij^-`` share the relevance."""

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        _check_number(self.stabilizer, "stabilizer", "ZPlus")

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        terms = [(a.clamp(min=0), _pos(weight), _pos(b)), (a.clamp(max=0), _neg(weight), None)]
        parts = _backward(layer, terms, lambda outs: [upper / stabilize(outs[0] + outs[1], self.stabilizer)] * 2)
        return parts[0] + parts[1]


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """Alpha-beta (Bach et al. 2015): ``alpha`` times the positive minus ``beta`` times the negative shares.

    ``alpha - beta`` must be 1 (relevance is conserved); (2, 1) and (1, 0) are the usual choices.
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        _check_number(self.alpha, "alpha", "AlphaBeta")
        _check_number(self.beta, "beta", "AlphaBeta")
        _check_number(self.stabilizer, "stabilizer", "AlphaBeta")
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"The 'alpha' and 'beta' parameters of AlphaBeta must differ by exactly 1 (alpha - beta = "
                             f"1 conserves relevance). Got alpha={self.alpha!r}, beta={self.beta!r}.")

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        terms = [(a_pos, _pos(weight), _pos(b)), (a_neg, _neg(weight), None),
                 (a_pos, _neg(weight), _neg(b)), (a_neg, _pos(weight), None)]

        def mapper(outs):
            pos = upper / stabilize(outs[0] + outs[1], self.stabilizer)
            neg = upper / stabilize(outs[2] + outs[3], self.stabilizer)
            return [pos, pos, neg, neg]

        p = _backward(layer, terms, mapper)
        return self.alpha * (p[0] + p[1]) - self.beta * (p[2] + p[3])


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised gamma rule (Montavon et al. 2019; Andeol et al. 2021): contributions that agree with the
    neuron's sign are amplified by ``1 + gamma``."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        _check_number(self.gamma, "gamma", "Gamma")
        _check_number(self.stabilizer, "stabilizer", "Gamma")

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        g = self.gamma

        def mod(t, part):
            return None if t is None else t + g * part(t)

        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        terms = [(a_pos, mod(weight, _pos), mod(b, _pos)), (a_neg, mod(weight, _neg), None),
                 (a_pos, mod(weight, _neg), mod(b, _neg)), (a_neg, mod(weight, _pos), None)]
        with torch.no_grad():
            z = layer(a, weight, bias)       # the neuron's sign: the true output, with its bias

        def mapper(outs):
            pos = (z > 0).to(upper) * upper / stabilize(outs[0] + outs[1], self.stabilizer)
            neg = (z < 0).to(upper) * upper / stabilize(outs[2] + outs[3], self.stabilizer)
            return [pos, pos, neg, neg]

        p = _backward(layer, terms, mapper)
        return p[0] + p[1] + p[2] + p[3]


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B (Montavon et al. 2017) for the first layer of inputs bounded by ``[low, high]``.

    ``low`` and ``high`` are numbers or arrays that broadcast against one sample
    (``(C, 1, 1)`` for per-channel bounds of normalised images).
    """

    low: object = 0.0
    high: object = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        _check_number(self.stabilizer, "stabilizer", "ZBox")
        _check_bound(self.low, "low")
        _check_bound(self.high, "high")
        if np.any(np.asarray(self.low, dtype=np.float64) > np.asarray(self.high, dtype=np.float64)):
            raise ValueError(f"The 'low' parameter of ZBox must not exceed 'high'. Got low={self.low!r}, "
                             f"high={self.high!r}.")

    def _bound(self, value: object, a: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=a.device).expand(a.shape[1:]).expand(a.shape)

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        low, high = self._bound(self.low, a), self._bound(self.high, a)
        terms = [(a, weight, b), (low, _pos(weight), _pos(b)), (high, _neg(weight), _neg(b))]
        p = _backward(layer, terms,
                      lambda outs: [upper / stabilize(outs[0] - outs[1] - outs[2], self.stabilizer)] * 3)
        return p[0] - p[1] - p[2]


@dataclass(frozen=True)
class Norm(Rule):
    """Proportional sharing without parameters (average pooling, sums): ``R_i = a_i dz/da_i R / z``."""

    stabilizer: float = 1e-6

    def relevance(self, layer, a, weight, bias, upper, *, use_bias=True):
        b = bias if use_bias else None
        (r,) = _backward(layer, [(a, weight, b)], lambda outs: [upper / stabilize(outs[0], self.stabilizer)])
        return r
