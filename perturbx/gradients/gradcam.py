"""Class activation maps: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice

from ._hooks import resolve_layer
from ._session import Session, run_gradients
from .base import GradientExplainer

UPSAMPLE_MODES = ("nearest", "bilinear")


def check_layer(layer: object, owner: str) -> str | None:
    """Validate a ``layer=`` argument: a module name or None (resolved against the model later)."""
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"The 'layer' parameter of {owner} must be a module name (str) such as 'layer4', "
                        f"or None for the last Conv2d. Got {type(layer).__name__}.")
    return layer


class GradCAM(GradientExplainer):
    """Weighted sum of a convolutional layer's channels, weights = spatial mean of their gradients.

    ``cam = relu(sum_c w_c A_c)`` with ``w_c = mean_ij d f_t / d A_cij``, computed at the
    layer's resolution ``(h, w)`` and upsampled to the input's ``(H, W)``: Captum's
    ``LayerGradCam(model, layer).attribute(x, t, relu_attributions=relu)`` followed by
    ``LayerAttribution.interpolate(cam, (H, W), interpolate_mode=upsample)``.

    Parameters
    ----------
    layer : str or None, default None
        Name of the module whose output is explained, as in ``model.named_modules()``
        (``"layer4"``, ``"layer4.1.conv2"``); None takes the last ``torch.nn.Conv2d``.
        Its output must be ``(N, C, h, w)``.
    relu : bool, default True
        Keep only the positive part of the map (the paper's choice; Captum's
        ``relu_attributions`` defaults to False).
    upsample : {"nearest", "bilinear"}, default "nearest"
        ``torch.nn.functional.interpolate`` mode to the input size; "nearest" is
        Captum's default, "bilinear" gives smoother maps.

    Notes
    -----
    Queries: one forward row per target. ``extras``: ``raw`` the maps at the layer's
    resolution ``(T, h, w)``; ``layer`` the name of the explained layer.
    """

    def __init__(self, layer: str | None = None, *, relu: bool = True, upsample: str = "nearest") -> None:
        owner = type(self).__name__
        if not isinstance(relu, bool):
            raise TypeError(f"The 'relu' parameter of {owner} must be True or False. Got {relu!r} instead.")
        self.layer = check_layer(layer, owner)
        self.relu = relu
        self.upsample = check_choice(upsample, "upsample", owner, UPSAMPLE_MODES)

    def _weights(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(n, C, 1, 1)`` from activations and gradients ``(n, C, h, w)``."""
        return grad.mean(dim=(2, 3), keepdim=True)

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        name, layer = resolve_layer(session.module, self.layer, type(self).__name__)
        session.memo["layer"] = name
        n_targets = session.n_targets
        maps: list[torch.Tensor] = []

        def consume(chunk) -> None:
            cam = (self._weights(chunk.act, chunk.grad) * chunk.act).sum(dim=1)
            maps.append(torch.relu(cam) if self.relu else cam)

        rows = torch.arange(len(xs) * n_targets, device=xs.device)
        run_gradients(session, len(rows), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets,
                      consume, layer=(layer, name))
        cams = torch.cat(maps)
        return cams.view(len(xs), n_targets, *cams.shape[1:])

    def _upsample(self, session: Session, cams: torch.Tensor) -> torch.Tensor:
        """Maps ``(n, h, w)`` resized to the sample's ``(H, W)``."""
        size = session.layout.spatial_shape(session.x.shape)
        return torch.nn.functional.interpolate(cams[:, None], size=size, mode=self.upsample)[:, 0]

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return self._upsample(session, raw).detach().to("cpu", torch.float64).numpy()

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        return {"layer": session.memo["layer"]}


class GradCAMpp(GradCAM):
    """Grad-CAM++: channel weights from positive gradients, weighted per location.

    ``w_c = sum_ij relu(g_cij) * a_cij`` with
    ``a_cij = g_cij^2 / (2 g_cij^2 + sum_kl A_ckl * g_cij^3)`` (0 where ``g_cij = 0``), where
    ``g = d f_t / d A`` is the gradient of the score itself: the closed form of the paper
    for an exponential of the score, as ``pytorch-grad-cam`` computes it (with the same
    ``1e-6`` in the denominator). Parameters as :class:`GradCAM`; Captum has no counterpart.
    """

    #: added to the denominator of the location weights
    eps = 1e-6

    def _weights(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2 = grad.pow(2)
        denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g2 * grad + self.eps
        alpha = torch.where(grad != 0, g2 / denom, torch.zeros_like(grad))
        return (torch.relu(grad) * alpha).sum(dim=(2, 3), keepdim=True)
