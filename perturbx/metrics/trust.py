"""Tests of trust for attribution methods: input invariance, fragility, class sensitivity.

- :func:`input_invariance` (Kindermans et al. 2019, "The (Un)reliability of Saliency
  Methods"): a second model computes the same function of ``x + c`` as the first of
  ``x``, the shift absorbed by the first layer's bias; a method that explains the model
  should give both the same map.
- :func:`fragility` (Ghorbani, Abid & Zou 2019, "Interpretation of Neural Networks is
  Fragile"): the largest change of the map (top-k intersection, rank correlation) under
  small perturbations of the input that keep the predicted class; random sign
  perturbations for any method, an iterative attack on the map for differentiable ones.
- :func:`class_sensitivity` (the "lack of class specificity" of guided backpropagation and
  deconvnet, Nie et al. 2018; Adebayo et al. 2018): the rank correlation between the maps
  of the most and the least likely class.

Every function takes any object with ``explain(model, x, target)`` (black-box, optimisation
and gradient explainers alike). The specs at the end make them compare-report columns.
PyTorch is imported only by the functions that need it (input invariance, the attack).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perturbx._utils import check_int, check_random_state
from perturbx.adapters import Adapter, as_adapter

from ._common import as_map, target_label
from .sanity import spearman
from .specs import Case, MetricSpec

__all__ = ["ATTACKS", "DIRECTIONS", "TRUST_SPECS", "ClassSensitivity", "ClassSensitivityResult", "Fragility",
           "FragilityResult", "InputInvariance", "InvarianceResult", "class_sensitivity", "fragility",
           "input_invariance", "shifted_model", "top_k_overlap"]

ATTACKS = ("random", "iterative")

#: +1 when higher is better, -1 when lower is better, for the columns of the specs below
DIRECTIONS: dict[str, int] = {
    "input_invariance": +1, "input_invariance_error": -1, "fragility_topk": +1, "fragility_spearman": +1,
    "fragility_topk_attack": +1, "fragility_spearman_attack": +1, "class_sensitivity": -1,
}


def _explainer(explainer: object, owner: str) -> object:
    if not callable(getattr(explainer, "explain", None)):
        raise TypeError(f"The 'explainer' argument of {owner} must have an explain(model, x, target) method. "
                        f"Got {type(explainer).__name__}.")
    return explainer


# --- input invariance -----------------------------------------------------------------------------

@dataclass
class InvarianceResult:
    """Outcome of :func:`input_invariance`.

    Attributes
    ----------
    passed : bool
        ``error <= tolerance``.
    error : float
        ``max |a_shifted - a| / max |a|``: the largest change of the map relative to its
        largest value (0 for identical maps; ``inf`` when the original map is all zeros
        and the other is not).
    shift : ndarray
        The shift ``c`` (as given, float64).
    maps : ndarray (2, H, W)
        The map of the original model for ``x`` and of the shifted model for ``x + c``.
    target : int or Target
    """

    passed: bool
    error: float
    shift: np.ndarray
    maps: np.ndarray
    target: Any


def _torch_parts(model: object, owner: str):
    """(module, adapter) of a torch model given as an ``nn.Module`` or a ``perturbx.adapters.Torch`` adapter."""
    import torch

    from perturbx.adapters import Torch

    if isinstance(model, Torch):
        return model.module, model
    if isinstance(model, torch.nn.Module):
        return model, Torch(model)
    raise TypeError(f"The 'model' argument of {owner} must be a torch.nn.Module or a perturbx.adapters.Torch "
                    f"adapter: the test builds a second model whose first layer absorbs the shift. "
                    f"Got {type(model).__name__}.")


def _shift_array(shift: object, x: np.ndarray) -> np.ndarray:
    """The shift as an array that broadcasts against one sample (``(C,)`` becomes ``(C, 1, 1)`` for CHW)."""
    try:
        c = np.asarray(shift, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The 'shift' argument of input_invariance must be a number or an array. "
                        f"Got {shift!r}.") from exc
    if not np.all(np.isfinite(c)):
        raise ValueError(f"The 'shift' argument of input_invariance must be finite. Got {shift!r}.")
    if c.ndim == 1 and x.ndim == 3:
        c = c[:, None, None]
    try:
        np.broadcast_to(c, x.shape)
    except ValueError as exc:
        raise ValueError(f"The 'shift' argument of input_invariance must be a number, one value per channel "
                         f"({x.shape[0]},) or an array of the sample's shape {x.shape}. Got shape {c.shape}.") from exc
    return c


def shifted_model(model: object, x: np.ndarray, shift: object = -1.0):
    """A copy of a torch model that computes ``f(z - c)`` for ``z``, the shift ``c`` absorbed by its first layer.

    The first layer (an ``nn.Conv2d`` on the input, or an ``nn.Linear`` on the flattened
    input) gets the bias ``b - W c``; a zero-padded convolution pads with ``c`` instead of
    0, so the copy equals the original on ``x + c`` everywhere, borders included, and its
    first layer still reads the shifted input itself.

    Parameters
    ----------
    model : torch.nn.Module or perturbx.adapters.Torch
    x : ndarray
        A sample in the model's layout (finds the first layer and checks shapes).
    shift : float, array (C,) or array of the sample's shape, default -1.0
        Per-pixel shifts only with a linear first layer (a convolution's bias is per channel).

    Returns
    -------
    torch.nn.Module, or a perturbx.adapters.Torch with the same settings for an adapter
    """
    from perturbx.adapters import Torch
    from perturbx.gradients._trust import shifted_module

    module, adapter = _torch_parts(model, "input_invariance")
    x = adapter.check_sample(x)
    c = _shift_array(shift, x)
    copied = shifted_module(module, x, c)
    if isinstance(model, Torch):
        return Torch(copied, device=model.device, batch_size=model.batch_size, input_layout=model.input_layout,
                     output=model.output)
    return copied


def input_invariance(model: object, explainer: object, x: np.ndarray, target: object = None, *,
                     shift: object = -1.0, tolerance: float = 1e-3) -> InvarianceResult:
    """Input invariance (Kindermans et al. 2019): the same map for ``f(x)`` and ``g(x + c)``, ``g(z) = f(z - c)``.

    ``g`` is :func:`shifted_model`: a copy whose first layer's bias absorbs the shift, so
    both models compute the same function and have the same gradients; only what the
    first layer reads differs. The paper's result: the gradient (saliency), guided
    backpropagation, Grad-CAM and methods whose baseline moves with the input (a blurred
    or mean baseline) pass; gradient x input, integrated gradients and DeepLIFT with a
    zero baseline, LRP and occlusion with a constant fill fail.

    Parameters
    ----------
    model : torch.nn.Module or perturbx.adapters.Torch
    explainer : object with ``explain(model, x, target)``
        Run once on each model (a sampling method should have an int ``random_state``).
    x : ndarray
        One sample in the model's layout.
    target : optional
        Default: the first map's target (the top class).
    shift : float, array (C,) or array of the sample's shape, default -1.0
        ``c``; -1 maps images in [0, 1] to [-1, 0], as in the paper's MNIST experiment.
    tolerance : float, default 1e-3
        Largest relative change of the map that still passes (float rounding in the
        shifted bias changes maps by about 1e-6).

    Returns
    -------
    InvarianceResult
    """
    owner = "input_invariance"
    _explainer(explainer, owner)
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not tolerance >= 0:
        raise ValueError(f"The 'tolerance' argument of {owner} must be a number >= 0. Got {tolerance!r}.")
    _, adapter = _torch_parts(model, owner)
    x = adapter.check_sample(x)
    other = shifted_model(adapter, x, shift)
    c = _shift_array(shift, x)
    first = explainer.explain(adapter, x, target)
    a0, bound = as_map(first, None, owner)
    a1, _ = as_map(explainer.explain(other, (x + c).astype(x.dtype), bound), a0.shape, owner)
    scale = float(np.abs(a0).max())
    diff = float(np.abs(a1 - a0).max())
    error = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return InvarianceResult(error <= tolerance, error, np.asarray(shift, dtype=np.float64), np.stack([a0, a1]),
                            target_label(bound) if bound is not None else None)


# --- fragility ------------------------------------------------------------------------------------

def _k(top_k: object, n_pixels: int, owner: str) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Real):
        raise TypeError(f"The 'top_k' argument of {owner} must be an int (pixels) or a fraction in (0, 1). "
                        f"Got {top_k!r}.")
    if isinstance(top_k, numbers.Integral):
        if not 1 <= top_k <= n_pixels:
            raise ValueError(f"The 'top_k' argument of {owner} must be in [1, {n_pixels}] pixels. Got {top_k}.")
        return int(top_k)
    if not 0 < top_k < 1:
        raise ValueError(f"The 'top_k' argument of {owner} as a fraction must be in (0, 1). Got {top_k!r}.")
    return max(1, round(top_k * n_pixels))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the ``k`` largest entries of ``a`` that are also among the ``k`` largest of ``b`` (ties by index)."""
    top_a = np.argsort(-np.ravel(a), kind="stable")[:k]
    top_b = np.argsort(-np.ravel(b), kind="stable")[:k]
    return len(np.intersect1d(top_a, top_b)) / k


@dataclass
class FragilityResult:
    """Outcome of :func:`fragility`: the worst perturbation found that keeps the predicted class.

    Attributes
    ----------
    attack : {"random", "iterative"}
    epsilon : float
        L-infinity radius of the perturbations.
    k : int
        Pixels in the top-k sets.
    topk_intersection : float
        Smallest share of the original top-k pixels still in the top k (1: unchanged; NaN
        when no perturbation kept the class).
    spearman : float
        Smallest Spearman rank correlation with the original map (NaN as above).
    n_tried, n_kept : int
        Perturbations tried, and those that kept the predicted class.
    perturbation : ndarray or None
        The perturbation with the smallest top-k intersection (sample-shaped).
    maps : ndarray (2, H, W) or None
        The original map and the map under that perturbation.
    history : list of float
        Top-k intersection of each kept perturbation, in the order tried.
    """

    attack: str
    epsilon: float
    k: int
    topk_intersection: float
    spearman: float
    n_tried: int
    n_kept: int
    perturbation: np.ndarray | None = None
    maps: np.ndarray | None = None
    history: list[float] = field(default_factory=list)


class _Worst:
    """The running worst perturbation of a fragility run."""

    def __init__(self, a0: np.ndarray, k: int, absolute: bool) -> None:
        self.a0, self.k, self.absolute = a0, k, absolute
        self.topk, self.rho, self.delta, self.map = np.nan, np.nan, None, None
        self.history: list[float] = []

    def score(self, a: np.ndarray, delta: np.ndarray) -> None:
        ref, cur = (np.abs(self.a0), np.abs(a)) if self.absolute else (self.a0, a)
        inter = top_k_overlap(ref, cur, self.k)
        rho = spearman(ref, cur)
        rho = 1.0 if np.isnan(rho) and np.array_equal(ref, cur) else (0.0 if np.isnan(rho) else rho)
        self.history.append(inter)
        if np.isnan(self.topk) or inter < self.topk:
            self.topk, self.delta, self.map = inter, delta, a
        self.rho = rho if np.isnan(self.rho) else min(self.rho, rho)


def _predicted(adapter: Adapter, x: np.ndarray) -> int:
    return int(np.argmax(adapter.predict(x[None])[0]))


def fragility(model: object, explainer: object, x: np.ndarray, target: object = None, *,
              epsilon: float = 8 / 255, attack: str = "random", n_perturbations: int = 10, n_steps: int = 10,
              step_size: float | None = None, top_k: float = 0.05, absolute: bool = True,
              clip: tuple[float, float] | None = None, smoothing: float = 10.0,
              random_state: object = 0) -> FragilityResult:
    """Fragility of an explanation (Ghorbani et al. 2019) under perturbations that keep the predicted class.

    The map of ``x + delta`` is compared with the map of ``x`` for perturbations
    ``||delta||_inf <= epsilon`` that leave the model's top class unchanged (the target
    stays that of the original map); the result is the worst top-k intersection and the
    worst Spearman correlation found.

    * ``attack="random"`` (any explainer): ``n_perturbations`` random sign perturbations
      ``epsilon * sign(u)``.
    * ``attack="iterative"`` (gradient explainers whose map is a differentiable function of
      the input: saliency, gradient x input, integrated gradients, SmoothGrad, GradientSHAP,
      Grad-CAM, Grad-CAM++): Ghorbani's top-k attack, ``n_steps`` signed-gradient steps
      that lower the share of the map's mass on the original top-k pixels, each projected
      back to the ball (and ``clip``); the gradient of the map is taken with every
      ``nn.ReLU`` replaced by ``softplus(beta=smoothing)`` (the second derivative of a ReLU
      network is zero), and every step is scored with the explainer's true map.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        A torch model (``nn.Module`` or ``perturbx.adapters.Torch``) for the iterative attack.
    explainer : object with ``explain(model, x, target)``
    x : ndarray
        One sample in the adapter's layout.
    target : optional
        Default: the original map's target (the top class).
    epsilon : float, default 8/255
        L-infinity radius, in the units of ``x`` (Ghorbani et al.'s 8 of 255 grey levels).
    attack : {"random", "iterative"}, default "random"
    n_perturbations : int, default 10
        Random perturbations (``attack="random"``).
    n_steps : int, default 10
        Attack steps (``attack="iterative"``).
    step_size : float, optional
        Attack step; default ``epsilon / 4``.
    top_k : int or float, default 0.05
        Pixels in the top-k sets: a count, or a fraction of the pixels.
    absolute : bool, default True
        Rank pixels by the absolute value of the map (the paper's saliency magnitude).
    clip : (low, high), optional
        Valid input range; perturbed inputs are clipped into it.
    smoothing : float, default 10.0
        ``beta`` of the softplus used for the attack's gradient.
    random_state : int, Generator or None, default 0
        Seeds the random perturbations.

    Returns
    -------
    FragilityResult
        ``topk_intersection`` and ``spearman`` near 1 mean a robust map.
    """
    owner = "fragility"
    _explainer(explainer, owner)
    attack = _check_attack(attack)
    eps = _positive(epsilon, "epsilon", owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    first = explainer.explain(adapter, x, target)
    a0, bound = as_map(first, None, owner)
    k = _k(top_k, a0.size, owner)
    label = _predicted(adapter, x)
    worst = _Worst(a0, k, bool(absolute))
    if attack == "random":
        tried = check_int(n_perturbations, "n_perturbations", owner)
        kept = sum(_try(adapter, explainer, x, (eps * rng.choice([-1.0, 1.0], size=x.shape)).astype(x.dtype),
                        clip, bound, label, worst) for _ in range(tried))
    else:
        steps = check_int(n_steps, "n_steps", owner)
        size = eps / 4 if step_size is None else _positive(step_size, "step_size", owner)
        tried, kept = _attack(adapter, explainer, x, first, bound, label, worst, eps, steps, size, clip,
                              _positive(smoothing, "smoothing", owner))
    maps = None if worst.map is None else np.stack([a0, worst.map])
    return FragilityResult(attack, eps, k, worst.topk, worst.rho, tried, kept, worst.delta, maps, worst.history)


def _check_attack(attack: object) -> str:
    if attack not in ATTACKS:
        raise ValueError(f"The 'attack' argument of fragility must be one of {ATTACKS}. Got {attack!r}.")
    return attack


def _positive(value: object, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or not np.isfinite(value):
        raise ValueError(f"The '{name}' argument of {owner} must be a finite number > 0. Got {value!r}.")
    return float(value)


def _perturbed(x: np.ndarray, delta: np.ndarray, clip) -> np.ndarray:
    out = x + delta
    return (np.clip(out, *clip) if clip is not None else out).astype(x.dtype)


def _try(adapter, explainer, x, delta, clip, bound, label, worst: _Worst) -> bool:
    """Score one perturbation if it keeps the predicted class; True when it did."""
    moved = _perturbed(x, delta, clip)
    if _predicted(adapter, moved) != label:
        return False
    a, _ = as_map(explainer.explain(adapter, moved, bound), worst.a0.shape, "fragility")
    worst.score(a, moved - x)
    return True


def _attack(adapter, explainer, x, first, bound, label, worst: _Worst, eps, steps, size, clip, beta):
    """Ghorbani's top-k attack with the gradient of a smoothed, differentiable map."""
    from perturbx.gradients._trust import map_gradient, supports_attack

    if not supports_attack(explainer, adapter):
        raise TypeError(f"attack='iterative' differentiates the map itself, which needs a perturbx.gradients "
                        f"explainer with a differentiable map (Saliency, InputXGradient, IntegratedGradients, "
                        f"SmoothGrad, GradientSHAP, GradCAM, GradCAMpp) and a perturbx.adapters.Torch model. "
                        f"Got {type(explainer).__name__} on {type(adapter).__name__}; use attack='random'.")
    top = np.argsort(-np.ravel(np.abs(worst.a0) if worst.absolute else worst.a0), kind="stable")[:worst.k]
    delta = np.zeros_like(x)
    tried = kept = 0
    for _ in range(steps):
        grad = map_gradient(explainer, adapter, _perturbed(x, delta, clip), first, top, worst.absolute, beta)
        delta = np.clip(delta - size * np.sign(grad), -eps, eps).astype(x.dtype)
        tried += 1
        kept += _try(adapter, explainer, x, delta, clip, bound, label, worst)
    return tried, kept


# --- class sensitivity ----------------------------------------------------------------------------

@dataclass
class ClassSensitivityResult:
    """Outcome of :func:`class_sensitivity`.

    Attributes
    ----------
    correlation : float
        Spearman rank correlation of the two maps (1: the same map whatever the class).
    top_class, bottom_class : int
        The most and the least likely class.
    maps : ndarray (2, H, W)
    """

    correlation: float
    top_class: int
    bottom_class: int
    maps: np.ndarray


def class_sensitivity(model: object, explainer: object, x: np.ndarray, *,
                      absolute: bool = False) -> ClassSensitivityResult:
    """Rank correlation between the maps of the most and the least likely class (the model's scores for ``x``).

    Near 1: the method shows the same map whatever the class (not class specific, the
    failure of guided backpropagation and deconvnet); near 0 or below: class-specific maps.

    Each class is explained in its own call. When one map is constant (e.g. Grad-CAM's
    ReLU zeroes the whole map of a class the input argues against) the maps share no
    ranking and the correlation is 0; when both are constant and equal it is 1.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        A classifier (scores ``(N, n_classes)``, at least two classes).
    explainer : object with ``explain(model, x, target)``
    x : ndarray
    absolute : bool, default False
        Correlate absolute values of the maps.
    """
    owner = "class_sensitivity"
    _explainer(explainer, owner)
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    scores = adapter.predict(x[None])[0]
    if scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"The 'model' argument of {owner} must return class scores with at least two classes. "
                         f"Got scores of shape {scores.shape}.")
    top, bottom = int(np.argmax(scores)), int(np.argmin(scores))
    a_top, _ = as_map(explainer.explain(adapter, x, top), None, owner)
    a_bottom, _ = as_map(explainer.explain(adapter, x, bottom), a_top.shape, owner)
    rho = spearman(a_top, a_bottom, absolute=absolute)
    if np.isnan(rho):
        rho = 1.0 if np.array_equal(a_top, a_bottom) else 0.0
    return ClassSensitivityResult(float(rho), top, bottom, np.stack([a_top, a_bottom]))


# --- specs for compare ----------------------------------------------------------------------------

def _nan_if_not_torch(case: Case) -> bool:
    from perturbx.adapters import Torch

    return not isinstance(case.adapter, Torch)


def _attackable(case: Case) -> bool:
    """A differentiable gradient explainer on a torch model (importing nothing when torch is absent)."""
    if _nan_if_not_torch(case):
        return False
    from perturbx.gradients._trust import supports_attack

    return supports_attack(case.explainer, case.adapter)


@dataclass
class InputInvariance(MetricSpec):
    """1 when the map is the same for the model and its shifted copy (:func:`input_invariance`), else 0.

    ``input_invariance_error`` is the relative change of the map. Torch models only (NaN otherwise).
    """

    shift: float = -1.0
    tolerance: float = 1e-3
    name = "input_invariance"
    columns = ("input_invariance", "input_invariance_error")
    group = "robustness"
    guide = ("1 when the map is the same for the model and a copy computing the same function on inputs shifted by "
             "-1 (the shift in the first layer's bias), else 0; the error is the map's relative change (lower).")

    def __call__(self, case: Case) -> dict[str, float]:
        if _nan_if_not_torch(case):
            return dict.fromkeys(self.columns, float("nan"))
        r = input_invariance(case.adapter, case.explainer, case.x, case.target, shift=self.shift,
                             tolerance=self.tolerance)
        return {"input_invariance": float(r.passed), "input_invariance_error": r.error}


@dataclass
class Fragility(MetricSpec):
    """Worst top-k intersection and Spearman correlation under random sign perturbations and, for
    differentiable gradient methods on torch models, under the iterative attack (NaN otherwise)."""

    epsilon: float = 8 / 255
    n_perturbations: int = 8
    n_steps: int = 8
    top_k: float = 0.05
    random_state: int = 0
    name = "fragility"
    columns = ("fragility_topk", "fragility_spearman", "fragility_topk_attack", "fragility_spearman_attack")
    group = "robustness"
    guide = ("Worst share of the top-5% pixels kept, and worst rank correlation, when the input moves by 8/255 "
             "without changing the class: random signs, then an attack on the map (differentiable methods); higher.")

    def __call__(self, case: Case) -> dict[str, float]:
        r = fragility(case.adapter, case.explainer, case.x, case.target, epsilon=self.epsilon, attack="random",
                      n_perturbations=self.n_perturbations, top_k=self.top_k, random_state=self.random_state)
        out = {"fragility_topk": r.topk_intersection, "fragility_spearman": r.spearman,
               "fragility_topk_attack": float("nan"), "fragility_spearman_attack": float("nan")}
        if _attackable(case):
            a = fragility(case.adapter, case.explainer, case.x, case.target, epsilon=self.epsilon,
                          attack="iterative", n_steps=self.n_steps, top_k=self.top_k)
            out.update(fragility_topk_attack=a.topk_intersection, fragility_spearman_attack=a.spearman)
        return out


@dataclass
class ClassSensitivity(MetricSpec):
    """Spearman correlation of the maps of the most and least likely class (lower is better)."""

    absolute: bool = False
    name = "class_sensitivity"
    columns = ("class_sensitivity",)
    group = "randomisation"
    guide = ("Rank correlation of the maps of the most and the least likely class; near 1: the map ignores the "
             "class (guided backprop), lower is better.")

    def __call__(self, case: Case) -> dict[str, float]:
        result = class_sensitivity(case.adapter, case.explainer, case.x, absolute=self.absolute)
        return {"class_sensitivity": result.correlation}


#: the specs of this module, for :data:`perturbx.metrics.specs.SPECS`
TRUST_SPECS: tuple[type[MetricSpec], ...] = (InputInvariance, Fragility, ClassSensitivity)
