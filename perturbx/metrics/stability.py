"""Relative stability of explanations (Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik & Lakkaraju 2022).

How much does the map change, relative to itself, per unit of relative change of

- the input (:func:`relative_input_stability`, RIS),
- an internal representation of a torch model (:func:`relative_representation_stability`, RRS),
- the model's output (:func:`relative_output_stability`, ROS)?

Each is the maximum over ``n_samples`` perturbed inputs ``x' = x + u``, ``u`` uniform in the
L-infinity ball of ``radius``, of

``||(e_x - e_x') / e_x||_2 / max(||d||_2, eps_min)`` with ``d`` = ``(x - x') / x`` (RIS),
``(L_x - L_x') / L_x`` (RRS) or ``h(x) - h(x')`` (ROS),

where a zero in a denominator is replaced by ``eps_min`` element-wise (as Quantus does).
By default only perturbations that keep the model's top class count (the paper's
definition; ``keep_prediction=False`` counts all). Lower is better.

The perturbed inputs' outputs (ROS, the top-class check) are queried in batches through
the adapter; the explainer batches its own queries. Quantus 0.6 draws its default noise
from ``[0.02, 0.2]`` (only positive shifts); here it is symmetric.
"""

from __future__ import annotations

import numpy as np

from perturbx import engine

from ._common import check_real, torch_module_of
from .robustness import _start, explain_perturbed, perturbed_inputs

__all__ = ["relative_input_stability", "relative_output_stability", "relative_representation_stability",
           "relative_stability"]


def _relative(delta: np.ndarray, ref: np.ndarray, eps: float) -> np.ndarray:
    ref = np.asarray(ref, dtype=np.float64)
    return delta / (ref + (ref == 0) * eps)


def relative_stability(e0: np.ndarray, es: np.ndarray, d0: np.ndarray, ds: np.ndarray, *, relative_denominator: bool,
                       eps_min: float = 1e-6) -> np.ndarray:
    """The ratio per perturbation ``(n,)``: map change over the change of ``d`` (input, representation or output).

    Parameters
    ----------
    e0 : ndarray (H, W), es : ndarray (n, H, W)
        The map of ``x`` and of each perturbed input.
    d0 : ndarray (...), ds : ndarray (n, ...)
        What the denominator compares: the input, a representation or the output.
    relative_denominator : bool
        Divide the change of ``d`` by ``d0`` element-wise (RIS, RRS) or not (ROS).
    eps_min : float
    """
    n = len(es)
    num = np.linalg.norm(_relative(np.asarray(e0, np.float64)[None] - es, np.asarray(e0)[None], eps_min)
                         .reshape(n, -1), axis=1)
    delta = np.asarray(d0, np.float64)[None] - np.asarray(ds, np.float64)
    if relative_denominator:
        delta = _relative(delta, np.asarray(d0)[None], eps_min)
    den = np.linalg.norm(delta.reshape(n, -1), axis=1)
    return num / np.maximum(den, eps_min)


def _perturb(model, explainer, x, target, radius, n_samples, random_state, reference, owner):
    radius = check_real(radius, "radius", owner)
    adapter, x, a0, target, n, rng = _start(model, explainer, x, target, n_samples, random_state, reference, owner)
    return adapter, x, a0, target, perturbed_inputs(x, (rng.uniform(-radius, radius, size=x.shape) for _ in range(n)))


def _outputs(adapter, batch: np.ndarray) -> np.ndarray:
    """A classifier's scores ``(n, C)`` for a numpy batch, in calls of ``batch_size`` rows."""
    return engine.predict_in_batches(adapter, adapter.backend.asarray(batch, adapter.dtype))


def _finish(adapter, explainer, x, target, xs, a0, d0, ds, relative_denominator, eps_min, keep_prediction, owner):
    eps_min = check_real(eps_min, "eps_min", owner)
    keep = np.ones(len(xs), dtype=bool)
    if keep_prediction:
        scores = _outputs(adapter, np.concatenate([x[None], xs]))
        keep = scores[1:].argmax(axis=1) == scores[0].argmax()
    if not keep.any():
        return float("nan")
    maps = explain_perturbed(adapter, explainer, xs[keep], target, owner, a0.shape)
    ds = ds[keep] if ds is not None else None
    return float(relative_stability(a0, maps, d0, ds, relative_denominator=relative_denominator,
                                    eps_min=eps_min).max())


def relative_input_stability(model: object, explainer: object, x: np.ndarray, target: object = None, *,
                             radius: float = 0.02, n_samples: int = 10, eps_min: float = 1e-6,
                             keep_prediction: bool = True, random_state: object = 0, reference: object = None) -> float:
    """RIS: ``max ||(e_x - e_x')/e_x|| / max(||(x - x')/x||, eps_min)`` over perturbations that keep the class.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        A classifier when ``keep_prediction`` (its top class is compared).
    explainer : object with ``explain(model, x, target)``
    x : ndarray
        One sample in the adapter's layout.
    target : optional
        Default: the target of the unperturbed explanation.
    radius : float, default 0.02
        Half-width of the uniform noise, in the units of ``x``.
    n_samples : int, default 10
    eps_min : float, default 1e-6
    keep_prediction : bool, default True
        Count only perturbations after which the model's top class is unchanged.
    random_state : int, Generator or None, default 0
    reference : Explanation, optional
        The explanation of ``x`` if already computed.

    Returns
    -------
    float
        Lower is better; NaN when every perturbation changed the prediction.
    """
    owner = "relative_input_stability"
    adapter, x, a0, target, xs = _perturb(model, explainer, x, target, radius, n_samples, random_state, reference,
                                          owner)
    return _finish(adapter, explainer, x, target, xs, a0, x, xs, True, eps_min, keep_prediction, owner)


def relative_output_stability(model: object, explainer: object, x: np.ndarray, target: object = None, *,
                              radius: float = 0.02, n_samples: int = 10, eps_min: float = 1e-6,
                              keep_prediction: bool = True, random_state: object = 0,
                              reference: object = None) -> float:
    """ROS: ``max ||(e_x - e_x')/e_x|| / max(||h(x) - h(x')||, eps_min)``, ``h`` the model's output.

    ``h`` is what the adapter returns (logits for ``Torch(..., output="logits")``, as in the
    paper). Parameters are those of :func:`relative_input_stability`; the outputs of all
    perturbed inputs are queried in batches.
    """
    owner = "relative_output_stability"
    adapter, x, a0, target, xs = _perturb(model, explainer, x, target, radius, n_samples, random_state, reference,
                                          owner)
    outputs = _outputs(adapter, np.concatenate([x[None], xs]))
    return _finish(adapter, explainer, x, target, xs, a0, outputs[0], outputs[1:], False, eps_min, keep_prediction,
                   owner)


def _representations(module, layer: str | None, batch: np.ndarray, adapter) -> np.ndarray:
    """Flattened input of ``layer`` (default: of the last module with parameters) for a batch, ``(n, D)``."""
    import torch

    named = dict(module.named_modules())
    if layer is None:
        layer = [n for n, m in named.items() if any(True for _ in m.parameters(recurse=False))][-1]
    if layer not in named:
        raise ValueError(f"The 'layer' argument of relative_representation_stability is {layer!r}, which is not a "
                         f"module of the model; its modules are {[n for n in named if n]}.")
    seen: list[torch.Tensor] = []
    handle = named[layer].register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().flatten(1)))
    try:
        with torch.no_grad():
            engine.predict_in_batches(adapter, adapter.backend.asarray(batch, adapter.dtype))
    finally:
        handle.remove()
    return torch.cat(seen).to("cpu", torch.float64).numpy()


def relative_representation_stability(model: object, explainer: object, x: np.ndarray, target: object = None, *,
                                      layer: str | None = None, radius: float = 0.02, n_samples: int = 10,
                                      eps_min: float = 1e-6, keep_prediction: bool = True, random_state: object = 0,
                                      reference: object = None) -> float:
    """RRS: ``max ||(e_x - e_x')/e_x|| / max(||(L_x - L_x')/L_x||, eps_min)``, ``L`` a layer's representation.

    Parameters
    ----------
    model : torch.nn.Module or perturbx.adapters.Torch
        Needs a torch model: the representation is read with a forward hook. A remote,
        ONNX or plain-function model raises a TypeError naming ``model``.
    layer : str, optional
        Name (``named_modules``) of the layer whose *input* is the representation; default
        the last module with parameters (its input is the penultimate representation).
    Other parameters are those of :func:`relative_input_stability`.
    """
    owner = "relative_representation_stability"
    module = torch_module_of(model, "model", owner)
    adapter, x, a0, target, xs = _perturb(model, explainer, x, target, radius, n_samples, random_state, reference,
                                          owner)
    reps = _representations(module, layer, np.concatenate([x[None], xs]), adapter)
    return _finish(adapter, explainer, x, target, xs, a0, reps[0], reps[1:], True, eps_min, keep_prediction, owner)
