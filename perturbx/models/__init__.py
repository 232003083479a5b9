"""Small PyTorch models for demos and tests (optional dependency: torch).

* :class:`DemoCNN` -- a tiny CNN for the synthetic shapes of
  :func:`perturbx.datasets.make_shapes`; :func:`train_demo_model` trains it and
  :func:`load_demo_model` caches the trained weights; :func:`demo_embedding`
  gives its pooled feature vector.
* :func:`resnet18_shaped` -- a randomly initialised network with the shape and
  the module names of torchvision's ResNet-18 (without needing torchvision).

This package is never imported by ``perturbx`` itself; import it explicitly.
"""

from __future__ import annotations

# classifier.py raises an ImportError that says what to install when torch is missing. The
# private names of the former module perturbx/models.py stay importable from here (F401).
from .classifier import (  # noqa: F401
    _N_TEST,
    DEMO_RECIPE_VERSION,
    DEMO_TEST_SEED,
    DEMO_TRAIN_SEED,
    DemoCNN,
    _accuracy,
    _background_cutout,
    _BasicBlock,
    _cache_path,
    _default_cache_dir,
    _ResNet18Shaped,
    load_demo_model,
    resnet18_shaped,
    train_demo_model,
)

__all__ = [
    "DEMO_RECIPE_VERSION",
    "DEMO_TEST_SEED",
    "DEMO_TRAIN_SEED",
    "DemoCNN",
    "load_demo_model",
    "resnet18_shaped",
    "train_demo_model",
]
