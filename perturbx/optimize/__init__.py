"""Mask optimisation: the machinery behind MeaningfulPerturbation and ExtremalPerturbation.

``masks`` (low-resolution parameters -> smooth masks), ``renderers`` (masks -> perturbed
batches, differentiable), ``objectives`` (games, area, smoothness), ``optimizers``
(:class:`Autograd` for ``adapters.Torch`` models, :class:`ZerothOrder` for any adapter)
and ``base`` (what the two explainers share). Everything here needs PyTorch for the mask
algebra; the model itself can be any black box. Nothing is imported by ``import perturbx``.
"""

from .masks import SmoothMaxMask, UpsampledMask
from .objectives import area_ranking, area_reference, game_loss, l1_area, total_variation
from .optimizers import SGD, Adam, Autograd, MaskProblem, OptimResult, ZerothOrder
from .renderers import BlendPerturbation, BlurPyramid, blur

__all__ = ["SGD", "Adam", "Autograd", "BlendPerturbation", "BlurPyramid", "MaskProblem", "OptimResult",
           "SmoothMaxMask", "UpsampledMask", "ZerothOrder", "area_ranking", "area_reference", "blur", "game_loss",
           "l1_area", "total_variation"]
