"""White-box gradient attributions for PyTorch models, behind the explainer interface.

Every class here is configured in ``__init__`` and run with
``.explain(model, x, target=None)`` on a :class:`perturbx.adapters.Torch` adapter (a bare
``torch.nn.Module`` is wrapped with default settings), like the black-box explainers,
and returns a :class:`perturbx.Explanation`. Each method is checked against its Captum
counterpart in ``tests/test_gradients*.py``.

==========================  ============================================  ==========================
class                       what it computes                              Captum counterpart
==========================  ============================================  ==========================
:class:`Saliency`           ``|d f_t / d x|`` (or the signed gradient)    ``Saliency``
:class:`InputXGradient`     ``x * d f_t / d x``                           ``InputXGradient``
:class:`IntegratedGradients` path integral from a baseline                ``IntegratedGradients``
:class:`SmoothGrad`         any of these, averaged over noisy copies      ``NoiseTunnel``
:class:`GradCAM`            class activation map of a conv layer          ``LayerGradCam`` + upsampling
:class:`GradCAMpp`          Grad-CAM++ channel weights                    (none; tested by hand)
:class:`GuidedBackprop`     gradient with ReLU gradients clipped at 0     ``GuidedBackprop``
:class:`Deconvnet`          ReLU passes the clipped output gradient       ``Deconvolution``
:class:`GuidedGradCAM`      guided backprop times the upsampled CAM       ``GuidedGradCam``
==========================  ============================================  ==========================

Importing this module needs PyTorch (``pip install 'perturbx[torch]'``); ``import
perturbx`` alone never imports it.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("perturbx.gradients needs PyTorch: pip install 'perturbx[torch]' "
                      "(gradient methods differentiate the model, which only works for torch modules).") from exc

from .base import GradientExplainer
from .gradcam import GradCAM, GradCAMpp
from .guided import Deconvnet, GuidedBackprop, GuidedGradCAM
from .integrated_gradients import IntegratedGradients
from .saliency import InputXGradient, Saliency
from .smoothgrad import SmoothGrad

__all__ = ["Deconvnet", "GradCAM", "GradCAMpp", "GradientExplainer", "GuidedBackprop", "GuidedGradCAM",
           "InputXGradient", "IntegratedGradients", "Saliency", "SmoothGrad"]
