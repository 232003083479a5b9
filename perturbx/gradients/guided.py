"""Modified ReLU gradients: guided backpropagation, deconvnet, guided Grad-CAM."""

from __future__ import annotations

import torch

from perturbx._utils import check_choice

from ._hooks import deconv_rule, guided_rule
from ._session import Session
from .base import PixelGradient
from .gradcam import UPSAMPLE_MODES, GradCAM, check_layer


class GuidedBackprop(PixelGradient):
    """Gradient in which every ``nn.ReLU`` passes only positive gradients (Springenberg et al. 2015).

    Equals Captum's ``GuidedBackprop``. ReLUs must be ``torch.nn.ReLU`` modules (a
    ``torch.nn.functional.relu`` call keeps its ordinary gradient, as in Captum); the
    hooks are removed after each call, also when the model raises.

    Parameters
    ----------
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"

    Notes
    -----
    Queries: one forward row per target.
    """

    relu_rule = staticmethod(guided_rule)

    def __init__(self, *, reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)


class Deconvnet(PixelGradient):
    """Every ``nn.ReLU`` passes the positive part of its output gradient (Zeiler & Fergus 2014).

    Equals Captum's ``Deconvolution``; same ReLU caveat as :class:`GuidedBackprop`.

    Parameters
    ----------
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
    """

    relu_rule = staticmethod(deconv_rule)

    def __init__(self, *, reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)


class GuidedGradCAM(PixelGradient):
    """Guided backpropagation times the upsampled Grad-CAM map (Selvaraju et al. 2017).

    Equals Captum's ``GuidedGradCam(model, layer).attribute(x, t, interpolate_mode=upsample)``:
    the Grad-CAM map (with ReLU) is upsampled to ``(H, W)`` and multiplies every channel
    of the guided gradient.

    Parameters
    ----------
    layer : str or None, default None
        As in :class:`GradCAM`; None takes the last ``torch.nn.Conv2d``.
    upsample : {"nearest", "bilinear"}, default "nearest"
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"

    Notes
    -----
    Queries: two forward rows per target (one plain backward pass for the map, one guided).
    ``extras``: ``raw`` ``(T, *sample_shape)``, ``layer``, ``cam`` the layer-resolution maps ``(T, h, w)``.
    """

    def __init__(self, layer: str | None = None, *, upsample: str = "nearest", reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)
        self.layer = check_layer(layer, "GuidedGradCAM")
        self.upsample = check_choice(upsample, "upsample", "GuidedGradCAM", UPSAMPLE_MODES)
        self._cam = GradCAM(layer, relu=True, upsample=upsample)

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        cams = self._cam._attribute(session, xs)                     # (S, T, h, w)
        session.memo["cam"] = cams
        guided = GuidedBackprop()._attribute(session, xs)      # (S, T, *sample_shape)
        up = self._cam._upsample(session, cams.reshape(-1, *cams.shape[2:]))    # (S*T, H, W)
        flat = guided.reshape(-1, *guided.shape[2:]) * session.layout.expand_masks(up)
        return flat.view(guided.shape)

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, object]:
        cam = session.memo["cam"][0].detach().to("cpu", torch.float64).numpy()
        return {"layer": session.memo["layer"], "cam": cam}
