"""Class activation mapping (Zhou et al. 2016) for networks that end in global average pooling and a linear layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbx._utils import check_choice
from perturbx.targets import Class, Target

from ._session import Session
from .base import GradientExplainer
from .gradcam import UPSAMPLE_MODES

#: modules that can be the global average pooling in front of the classifier
POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


@contextmanager
def _record_calls(module: nn.Module) -> Iterator[list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]]:
    """Every call of a pooling or linear submodule during the block: (name, module, input, output)."""
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    handles = []
    for name, sub in module.named_modules():
        if isinstance(sub, (*POOL_TYPES, nn.Linear)):
            handles.append(sub.register_forward_hook(
                lambda m, inputs, out, name=name: calls.append((name, m, inputs[0], out))))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def gap_linear_head(module: nn.Module, rows: torch.Tensor) -> tuple[dict[str, str], torch.Tensor, torch.Tensor]:
    """Find the GAP + linear head of ``module`` by running ``rows`` through it.

    Returns
    -------
    names : {"pool": str, "linear": str}
    features : Tensor (n, C, h, w)
        The feature maps that the global average pooling reduces.
    weight : Tensor (n_classes, C)
        The linear layer's weight.

    Raises
    ------
    ValueError
        The model's output is not ``Linear(GAP(A))`` (up to a flatten).
    """
    with _record_calls(module) as calls, torch.no_grad():
        output = module(rows)
    what = _head_problem(calls, output)
    if what is not None:
        raise ValueError(f"The 'model' argument of CAM must be a network whose output is a linear layer applied to "
                         f"globally average-pooled feature maps (nn.AdaptiveAvgPool2d(1) or an nn.AvgPool2d over "
                         f"the whole map, then flatten and nn.Linear, as in ResNets); {type(module).__name__} "
                         f"{what}. For other networks use GradCAM, which needs only a convolutional layer.")
    (lin_name, linear, _, _), (pool_name, _, features, _) = calls[-1], calls[-2]
    return {"pool": pool_name, "linear": lin_name}, features, linear.weight.detach()


def _head_problem(calls: list, output: object) -> str | None:
    """Why the recorded calls are not a GAP + linear head (None when they are)."""
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        return "does not return class scores (N, n_classes)"
    if not calls or not isinstance(calls[-1][1], nn.Linear) or not torch.equal(calls[-1][3], output):
        return "does not end in an nn.Linear module whose output is the model's output"
    lin_in = calls[-1][2]
    if len(calls) < 2 or not isinstance(calls[-2][1], POOL_TYPES):
        return "has no average-pooling module right before its last linear layer"
    _, _, features, pooled = calls[-2]
    if features.ndim != 4 or pooled.shape[2:] != (1, 1):
        return f"pools to {tuple(pooled.shape[1:])} before its linear layer, not to (C, 1, 1)"
    if pooled.flatten(1).shape != lin_in.shape or not torch.equal(pooled.flatten(1), lin_in):
        return "changes the pooled features before its linear layer"
    if not torch.allclose(pooled.flatten(1), features.mean(dim=(2, 3)), rtol=1e-4, atol=1e-6):
        return "pools with a window that does not cover the whole feature map"
    return None


class CAM(GradientExplainer):
    """``cam_t = sum_c w_tc A_c``: the class's linear weights times the last feature maps (Zhou et al. 2016).

    For networks whose class scores are ``f_t = sum_c w_tc mean_ij A_cij + b_t`` (global
    average pooling, then one linear layer), found by running the sample once. No gradient
    is taken; for such networks Grad-CAM without ReLU on the pooled layer equals ``cam /
    (h w)``, a positive multiple. Only class targets have such weights.

    Parameters
    ----------
    relu : bool, default False
        Keep only the positive part (the paper shows the map as is).
    upsample : {"nearest", "bilinear"}, default "nearest"
        How the map ``(h, w)`` becomes ``(H, W)``.

    Notes
    -----
    Queries: one forward row (besides the reference query). ``extras``: ``raw`` the maps at
    the feature resolution ``(T, h, w)``; ``layer`` the pooling module's name (the maps are
    its input), ``linear`` the classifier's name.
    """

    def __init__(self, *, relu: bool = False, upsample: str = "nearest") -> None:
        if not isinstance(relu, bool):
            raise TypeError(f"The 'relu' parameter of CAM must be True or False. Got {relu!r} instead.")
        self.relu = relu
        self.upsample = check_choice(upsample, "upsample", "CAM", UPSAMPLE_MODES)

    def _check_target(self, target: Target) -> None:
        if not isinstance(target, Class):
            raise TypeError(f"CAM weighs feature maps by a class's weights in the last linear layer, so it explains "
                            f"class targets only (None, an int, a list of ints or perturbx.targets.Class). Got "
                            f"target={target!r}; use GradCAM for other targets.")

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        names, features, weight = gap_linear_head(session.module, xs)
        session.adapter.n_queries += len(xs)
        session.memo["head"] = names
        labels = torch.as_tensor(np.asarray(session.target.labels), device=weight.device)
        cams = torch.einsum("tc,schw->sthw", weight[labels], features)
        return torch.relu(cams) if self.relu else cams

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        size = session.layout.spatial_shape(session.x.shape)
        up = torch.nn.functional.interpolate(raw.detach()[:, None], size=size, mode=self.upsample)[:, 0]
        return up.to("cpu", torch.float64).numpy()

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        return {"layer": session.memo["head"]["pool"], "linear": session.memo["head"]["linear"]}
