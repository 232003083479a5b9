"""The torch side of :mod:`perturbx.metrics.trust`: the shifted model of input invariance, the map's gradient.

Imported by the metrics only when a test needs PyTorch, so ``import perturbx.metrics``
stays free of torch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from perturbx.adapters import Torch

from ._session import Session
from .gradcam import GradCAM
from .gradient_shap import GradientSHAP
from .integrated_gradients import IntegratedGradients
from .saliency import InputXGradient, Saliency
from .smoothgrad import SmoothGrad

#: explainers whose map is a differentiable function of the input (their own gradients kept)
DIFFERENTIABLE = (Saliency, InputXGradient, IntegratedGradients, GradientSHAP, GradCAM)


# --- input invariance: the shifted model ------------------------------------------------------------

class PaddedWith(nn.Module):
    """A zero-padded convolution that pads with ``value`` instead (so ``conv`` sees ``x + c`` as it saw ``x``)."""

    def __init__(self, conv: nn.Conv2d, value: torch.Tensor) -> None:
        super().__init__()
        self.pad = tuple(p for p in reversed(conv.padding) for _ in range(2))
        conv.padding = (0,) * len(conv.padding)
        self.conv = conv
        self.register_buffer("value", value.to(conv.weight.dtype).view(1, -1, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(z - self.value, self.pad) + self.value)


def first_layer(module: nn.Module, x: np.ndarray) -> tuple[str, nn.Module]:
    """Name and module of the first ``Conv2d``/``Linear`` called, checked to read the input (or it flattened)."""
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = [m.register_forward_pre_hook(lambda m, inputs, name=n: calls.append((name, m, inputs[0])))
               for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    device = next(module.parameters()).device
    xt = torch.as_tensor(x[None], dtype=torch.float32, device=device)
    try:
        with torch.no_grad():
            module(xt)
    finally:
        for h in handles:
            h.remove()
    if calls:
        name, layer, seen = calls[0]
        if isinstance(layer, nn.Conv2d):
            reads_input = seen is xt
        else:
            reads_input = seen.shape == (1, xt.numel()) and torch.equal(seen.reshape(xt.shape), xt)
        if reads_input and name:
            return name, layer
    seen_as = f"{calls[0][0]!r}, which does not read the input itself" if calls else "not a Conv2d or Linear"
    raise ValueError(f"The 'model' argument of input_invariance must apply an nn.Conv2d to the input, or an "
                     f"nn.Linear to the flattened input, before anything else (inside a container such as "
                     f"nn.Sequential): that layer's bias absorbs the shift. This model's first layer is {seen_as}.")


def shifted_module(module: nn.Module, x: np.ndarray, shift: np.ndarray) -> nn.Module:
    """A deep copy of ``module`` that computes ``module(z - shift)`` for ``z``, the shift absorbed by the first layer.

    ``shift`` broadcasts against one sample; for a convolution it must be per channel
    (``(C, 1, 1)`` or a number).
    """
    name, layer = first_layer(module, x)
    device = layer.weight.device
    new = copy.deepcopy(layer)
    weight = new.weight.detach().to(torch.float64)
    conv = isinstance(new, nn.Conv2d)
    if conv:
        if isinstance(new.padding, str) or new.groups != 1:
            raise ValueError(f"input_invariance needs a first convolution with numeric padding and groups=1; "
                             f"{name!r} has padding={new.padding!r}, groups={new.groups}.")
        full = np.broadcast_to(shift, x.shape)
        if not np.all(full == full[:, :1, :1]):
            raise ValueError("The 'shift' argument of input_invariance varies over pixels, which the bias of the "
                             "first convolution cannot absorb; pass a number or one value per channel.")
        c = torch.as_tensor(full[:, 0, 0].copy(), device=device)
        absorbed = (weight.sum(dim=(2, 3)) * c).sum(dim=1)
    else:
        c = torch.as_tensor(np.broadcast_to(shift, x.shape).reshape(-1).copy(), device=device)
        absorbed = weight @ c
    old_bias = new.bias.detach().to(torch.float64) if new.bias is not None else torch.zeros_like(absorbed)
    new.bias = nn.Parameter((old_bias - absorbed).to(new.weight.dtype))
    padded = conv and new.padding_mode == "zeros" and any(new.padding)
    replacement = PaddedWith(new, c) if padded else new
    copied = copy.deepcopy(module)
    parent, _, child = name.rpartition(".")
    setattr(dict(copied.named_modules())[parent] if parent else copied, child, replacement)
    return copied.eval()


# --- fragility: the gradient of the map ---------------------------------------------------------------

def supports_attack(explainer: object, adapter: object) -> bool:
    """Whether :func:`map_gradient` can differentiate ``explainer``'s map on ``adapter``."""
    if not isinstance(adapter, Torch):
        return False
    if isinstance(explainer, SmoothGrad):
        explainer = explainer.base
    return isinstance(explainer, DIFFERENTIABLE)


@contextmanager
def softplus_relus(module: nn.Module, beta: float) -> Iterator[None]:
    """Every ``nn.ReLU`` computes ``softplus(x, beta)`` inside the block (a ReLU's second derivative is zero)."""
    handles = []
    for sub in module.modules():
        if isinstance(sub, nn.ReLU):
            pending: list[torch.Tensor] = []
            handles.append(sub.register_forward_pre_hook(
                lambda _m, inputs, pending=pending: pending.append(inputs[0]) or (inputs[0].clone(),)))
            handles.append(sub.register_forward_hook(
                lambda _m, _i, _o, pending=pending: F.softplus(pending.pop(), beta=beta)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def torch_map(explainer: object, session: Session, raw: torch.Tensor) -> torch.Tensor:
    """The explainer's maps ``(T, H, W)`` from raw attributions, kept differentiable."""
    if isinstance(explainer, SmoothGrad):
        return torch_map(explainer.base, session, raw)
    if isinstance(explainer, GradCAM):
        return explainer._upsample(session, raw)
    if session.layout.name == "HW":
        return raw.abs() if explainer.reduction in ("abs_sum", "max_abs", "l2") else raw
    axis = 1 + session.layout.name.index("C")
    return {"sum": lambda a: a.sum(dim=axis), "abs_sum": lambda a: a.abs().sum(dim=axis),
            "max_abs": lambda a: a.abs().amax(dim=axis), "l2": lambda a: a.pow(2).sum(dim=axis).sqrt(),
            "mean": lambda a: a.mean(dim=axis)}[explainer.reduction](raw)


def map_gradient(explainer: object, adapter: Torch, x: np.ndarray, first: object, top: np.ndarray,
                 absolute: bool, beta: float) -> np.ndarray:
    """Gradient with respect to ``x`` of the share of the map's mass on the pixels ``top`` (Ghorbani's top-k loss).

    The map is the explainer's for the first target of ``first`` (the original
    explanation), computed on the model with its ReLUs smoothed; the model's forward rows
    are counted in ``adapter.n_queries``.
    """
    with torch.inference_mode(False), torch.enable_grad(), softplus_relus(adapter.module, beta):
        session = Session(adapter, x, first.target, np.atleast_1d(first.scores))
        session.create_graph = True
        xt = session.xt.clone().requires_grad_(True)
        raw = explainer._attribute(session, xt[None])[0]
        m = torch_map(explainer, session, raw)[0]
        m = m.abs() if absolute else m
        share = m.flatten()[torch.as_tensor(top, device=m.device)].sum() / (m.abs().sum() + 1e-12)
        grad = torch.autograd.grad(share, xt, allow_unused=True)[0] if share.requires_grad else None
    if grad is None:                     # the map does not depend on the input (the gradient of a linear model)
        return np.zeros(x.shape)
    return grad.detach().to("cpu", torch.float64).numpy()
