"""White-box gradient attributions for PyTorch models, behind the explainer interface.

Every class here is configured in ``__init__`` and run with
``.explain(model, x, target=None)`` on a :class:`perturbx.adapters.Torch` adapter (a bare
``torch.nn.Module`` is wrapped with default settings), like the black-box explainers,
and returns a :class:`perturbx.Explanation`. Each method is checked against its Captum
counterpart in ``tests/test_gradients*.py``.

=================================  ==========================================  ====================================
class                              what it computes                            counterpart it equals
=================================  ==========================================  ====================================
:class:`Saliency`                  ``|d f_t / d x|`` (or the signed gradient)  Captum ``Saliency``
:class:`InputXGradient`            ``x * d f_t / d x``                         Captum ``InputXGradient``
:class:`IntegratedGradients`       path integral from a baseline               Captum ``IntegratedGradients``
:class:`SmoothGrad`                any of these, averaged over noisy copies    Captum ``NoiseTunnel``
:class:`GradCAM`                   class activation map of a conv layer        Captum ``LayerGradCam`` + upsampling
:class:`GradCAMpp`                 Grad-CAM++ channel weights                  (none; tested by hand)
:class:`GuidedBackprop`            gradient with ReLU gradients clipped at 0   Captum ``GuidedBackprop``
:class:`Deconvnet`                 ReLU passes the clipped output gradient     Captum ``Deconvolution``
:class:`GuidedGradCAM`             guided backprop times the upsampled CAM     Captum ``GuidedGradCam``
:class:`DeepLIFT`                  Rescale-rule multipliers times ``x - r``    Captum ``DeepLift``
:class:`DeepLIFTSHAP`              DeepLIFT averaged over references           Captum ``DeepLiftShap``
:class:`GradientSHAP`              IG at random path points and references     Captum ``GradientShap``
:class:`ExpectedGradients`         GradientSHAP without input noise            Captum ``GradientShap(stdevs=0)``
:class:`LRP`                       relevance by layer rules and composites     zennit composites
:class:`LayerGradientXActivation`  ``A * d f_t / d A`` for a layer's units     Captum ``LayerGradientXActivation``
:class:`LayerConductance`          conductance of a layer's units              Captum ``LayerConductance``
:class:`NeuronConductance`         input attribution through one unit          Captum ``NeuronConductance``
:class:`CAM`                       class weights times GAP features            Grad-CAM without ReLU, scaled
:class:`AttentionRollout`          attention flow to the class token (ViT)     (none; tested by hand)
:class:`TokenGradCAM`              Grad-CAM on a transformer's patch tokens    (none; tested by hand)
=================================  ==========================================  ====================================

The layer methods report ``extras["channel_scores"]`` ``(T, C)``: which feature maps carry
the decision. :mod:`perturbx.metrics.trust` tests any of them (input invariance, fragility,
class sensitivity).

Importing this module needs PyTorch (``pip install 'perturbx[torch]'``); ``import
perturbx`` alone never imports it.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("perturbx.gradients needs PyTorch: pip install 'perturbx[torch]' "
                      "(gradient methods differentiate the model, which only works for torch modules).") from exc

from .attention import AttentionRollout, TokenGradCAM
from .base import GradientExplainer
from .cam import CAM
from .deeplift import DeepLIFT, DeepLIFTSHAP
from .gradcam import GradCAM, GradCAMpp
from .gradient_shap import ExpectedGradients, GradientSHAP
from .guided import Deconvnet, GuidedBackprop, GuidedGradCAM
from .integrated_gradients import IntegratedGradients
from .layer import LayerConductance, LayerGradientXActivation, NeuronConductance
from .lrp import LRP
from .saliency import InputXGradient, Saliency
from .smoothgrad import SmoothGrad

__all__ = ["CAM", "LRP", "AttentionRollout", "Deconvnet", "DeepLIFT", "DeepLIFTSHAP", "ExpectedGradients", "GradCAM",
           "GradCAMpp", "GradientExplainer", "GradientSHAP", "GuidedBackprop", "GuidedGradCAM", "InputXGradient",
           "IntegratedGradients", "LayerConductance", "LayerGradientXActivation", "NeuronConductance", "Saliency",
           "SmoothGrad", "TokenGradCAM"]
