"""Small PyTorch models for demos and tests (optional dependency: torch).

* :class:`DemoCNN` -- a tiny CNN for the synthetic shapes of
  :func:`perturbx.datasets.make_shapes`; :func:`train_demo_model` trains it and
  :func:`load_demo_model` caches the trained weights; :func:`demo_embedding`
  gives its pooled feature vector ``(N, 64)``.
* :class:`DemoDetector` -- a tiny single-stage detector for the multi-object
  scenes of :func:`perturbx.datasets.make_scenes`, returning a fixed number of
  proposals ``(N, K, 4 + 1 + C)`` (box, objectness, class probabilities: the
  D-RISE layout); :func:`train_demo_detector`, :func:`load_demo_detector`.
* :class:`DemoSegmenter` -- a small encoder-decoder for the same scenes,
  returning logits ``(N, 1 + C, H, W)`` (channel 0 background);
  :func:`train_demo_segmenter`, :func:`load_demo_segmenter`.
* :class:`TexturedCNN` -- a confident classifier (the demo CNN's architecture, probabilities
  near 1) of small shapes on strongly textured backgrounds (:func:`textured_shapes`),
  a model with other score statistics than the demo CNN's; :func:`train_textured_model`,
  :func:`load_textured_model`.
* :func:`resnet18_shaped` -- a randomly initialised network with the shape and
  the module names of torchvision's ResNet-18 (without needing torchvision).
* :func:`resnet50_shaped` -- the same for torchvision's ResNet-50 (``benchmarks/gpu.sh``).
* :func:`vgg_shaped` -- a VGG-11-shaped network (optionally with batch norm) for the LRP
  comparisons with zennit.
* :class:`TinyViT` -- a small vision transformer; :func:`train_demo_vit`, :func:`load_demo_vit`
  (attention rollout and token Grad-CAM).

The trained models are cached with the same rules (``cache_dir`` or
``$PERTURBX_CACHE`` or ``~/.cache/perturbx``, the recipe version in the file
name, atomic writes, ``torch.load(weights_only=True)``).

This package is never imported by ``perturbx`` itself; import it explicitly.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

from ._scenes import SCENE_TEST_SEED, SCENE_TRAIN_SEED

# The private names of the former module perturbx/models.py stay importable from here (F401).
from .classifier import (  # noqa: F401
    _N_TEST,
    DEMO_RECIPE_VERSION,
    DEMO_TEST_SEED,
    DEMO_TRAIN_SEED,
    DemoCNN,
    DemoEmbedding,
    _accuracy,
    _background_cutout,
    _BasicBlock,
    _cache_path,
    _default_cache_dir,
    _ResNet18Shaped,
    demo_embedding,
    load_demo_model,
    resnet18_shaped,
    train_demo_model,
)
from .detector import DETECTOR_RECIPE_VERSION, DemoDetector, load_demo_detector, train_demo_detector
from .resnet50 import resnet50_shaped
from .segmenter import SEGMENTER_RECIPE_VERSION, DemoSegmenter, load_demo_segmenter, train_demo_segmenter
from .textured import (
    TEXTURED_DATA,
    TEXTURED_RECIPE_VERSION,
    TEXTURED_TEST_SEED,
    TEXTURED_TRAIN_SEED,
    TexturedCNN,
    load_textured_model,
    textured_shapes,
    train_textured_model,
)
from .vgg import VGG11_CONFIG, vgg_shaped
from .vit import VIT_RECIPE_VERSION, TinyViT, demo_vit, load_demo_vit, train_demo_vit

__all__ = [
    "DEMO_RECIPE_VERSION",
    "DEMO_TEST_SEED",
    "DEMO_TRAIN_SEED",
    "DETECTOR_RECIPE_VERSION",
    "SCENE_TEST_SEED",
    "SCENE_TRAIN_SEED",
    "SEGMENTER_RECIPE_VERSION",
    "TEXTURED_DATA",
    "TEXTURED_RECIPE_VERSION",
    "TEXTURED_TEST_SEED",
    "TEXTURED_TRAIN_SEED",
    "VGG11_CONFIG",
    "VIT_RECIPE_VERSION",
    "DemoCNN",
    "DemoDetector",
    "DemoEmbedding",
    "DemoSegmenter",
    "TexturedCNN",
    "TinyViT",
    "demo_embedding",
    "demo_vit",
    "load_demo_detector",
    "load_demo_model",
    "load_demo_segmenter",
    "load_demo_vit",
    "load_textured_model",
    "resnet18_shaped",
    "resnet50_shaped",
    "textured_shapes",
    "train_demo_detector",
    "train_demo_model",
    "train_demo_segmenter",
    "train_demo_vit",
    "train_textured_model",
    "vgg_shaped",
]
