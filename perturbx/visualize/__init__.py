"""Feature visualisation, class models, pre-images and representations (needs PyTorch).

What a vision model looks *for*: images generated to excite a class, a channel, a neuron
or a direction of a layer (Simonyan et al. 2014; Olah et al. 2017), images whose
representation at a layer matches a given image's (pre-images, Mahendran & Vedaldi
2015/2016), and maps of a layer's representation of a data set (t-SNE, PCA, meta-SNE).

* :class:`FeatureVisualization` runs by autograd through a ``perturbx.adapters.Torch``
  model, and by antithetic NES on the image parameters through any other adapter (class
  and image objectives only, queries counted and capped by ``max_queries``).
* Objectives (:mod:`.objectives`) compose by ``+``, ``-`` and scalar ``*``.
* Parameterisations: :class:`Pixels`, :class:`Fourier` (decorrelated, Olah et al. 2017),
  :class:`DeepImagePrior` (Ulyanov et al. 2018).
* :class:`Transforms`: random pad, jitter, scale and rotation at every step;
  :func:`transformed_probabilities` checks a result's robustness to them.
* :class:`PreImage`: invert a layer's representation, with total-variation and
  alpha-norm regularisers.
* :func:`layer_activations`, :func:`embed`, :func:`representation`,
  :func:`meta_sne` (:mod:`.representations`).
* Figures (:mod:`.figures`, matplotlib imported on use): a grid per class or channel,
  as a Figure or PNG bytes.

``import perturbx`` never imports this package; importing it needs PyTorch
(``pip install 'perturbx[torch]'``).
"""

from __future__ import annotations

from ._layers import layer_names
from ._torch import torch as _torch  # noqa: F401  (raises the install hint first)
from .figures import grid, to_png
from .objectives import (
    AlphaNorm,
    Channel,
    ClassLogit,
    ClassProbability,
    Context,
    Direction,
    Diversity,
    Match,
    Neuron,
    Objective,
    TotalVariation,
)
from .param import DeepImagePrior, Fourier, Pixels
from .preimage import PreImage
from .representations import MetaSNE, Representation, embed, layer_activations, meta_sne, representation
from .result import PreImageResult, Visualization
from .robustness import transformed_probabilities
from .transforms import Transforms, affine_warp
from .visualizer import FeatureVisualization, channel_visualizations, class_models

__all__ = [
    "AlphaNorm",
    "Channel",
    "ClassLogit",
    "ClassProbability",
    "Context",
    "DeepImagePrior",
    "Direction",
    "Diversity",
    "FeatureVisualization",
    "Fourier",
    "Match",
    "MetaSNE",
    "Neuron",
    "Objective",
    "Pixels",
    "PreImage",
    "PreImageResult",
    "Representation",
    "TotalVariation",
    "Transforms",
    "Visualization",
    "affine_warp",
    "channel_visualizations",
    "class_models",
    "embed",
    "grid",
    "layer_activations",
    "layer_names",
    "meta_sne",
    "representation",
    "to_png",
    "transformed_probabilities",
]
