"""Amortised explanations (FastSHAP): train an explainer network once, then one forward pass per map.

:class:`Amortized` learns, for one black-box model (any adapter, a model server
included), the Shapley values of a grid of patches for every class at once; an
explanation then costs two model queries and one forward pass of a small U-Net. Needs
PyTorch (``pip install 'perturbx[torch]'``); ``import perturbx`` does not import it,
``perturbx.Amortized`` does.

Modules: :mod:`~perturbx.amortized.game` (players, Shapley kernel, efficiency
normalisation, the residual check of ``verify``), :mod:`~perturbx.amortized.network` (the
U-Net), :mod:`~perturbx.amortized.data` (training images, queries),
:mod:`~perturbx.amortized.train` (the loop), :mod:`~perturbx.amortized.fitting` (stages,
budget, checkpoints), :mod:`~perturbx.amortized.calibration` (the error estimate),
:mod:`~perturbx.amortized.identity` (what an explainer is for),
:mod:`~perturbx.amortized.checkpoint` (files).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.Amortized needs PyTorch: pip install 'perturbx[torch]'") from e

from .explainer import Amortized

__all__ = ["Amortized"]
