"""Baseline distributions for the methods that average over references (DeepLIFT-SHAP, GradientSHAP)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from perturbx.baselines import check_baseline, resolve_baseline

from ._session import Session

#: a distribution of 8 noise images (the sample's channel means and standard deviations)
DEFAULT_DISTRIBUTION = ("noise",) * 8


def check_distribution(spec: object, owner: str) -> object:
    """Validate a ``baselines=`` argument at construction time (shapes are checked against the sample later).

    Accepted: an array ``(B, *sample_shape)`` of baseline samples, or a sequence of
    :mod:`perturbx.baselines` specs (numbers, ``"mean"``, ``"blur"``, ``"noise"``, arrays of
    the sample's shape, callables), each resolved once per explained sample.
    """
    if isinstance(spec, np.ndarray):
        if spec.ndim < 2 or len(spec) < 1 or not np.issubdtype(spec.dtype, np.number):
            raise ValueError(f"The 'baselines' parameter of {owner} must be a numeric array (B, *sample_shape) "
                             f"with B >= 1, or a sequence of baseline specs. Got an array of shape {spec.shape} "
                             f"and dtype {spec.dtype}.")
        if not np.all(np.isfinite(spec)):
            raise ValueError(f"The 'baselines' parameter of {owner} contains NaN or infinite values.")
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)) and len(spec) > 0:
        return tuple(check_baseline(s, owner) for s in spec)
    raise TypeError(f"The 'baselines' parameter of {owner} must be an array (B, *sample_shape) of baseline samples "
                    f"or a non-empty sequence of baseline specs such as (0.0, 'blur', 'noise'). Got {spec!r}. "
                    f"For a single baseline use the method's one-baseline form (DeepLIFT, IntegratedGradients).")


def resolve_distribution(spec: object, session: Session, rng: np.random.Generator, owner: str) -> torch.Tensor:
    """The baselines ``(B, *sample_shape)`` for the session's sample, float32 on its device."""
    x = session.x
    if isinstance(spec, np.ndarray):
        if spec.shape[1:] != x.shape:
            raise ValueError(f"The 'baselines' parameter of {owner} holds samples of shape {spec.shape[1:]} but "
                             f"the sample has shape {x.shape}; pass an array (B, *{x.shape}).")
        arr = spec.astype(np.float32)
    else:
        arr = np.stack([resolve_baseline(s, x, session.layout, rng) for s in spec])
    return torch.as_tensor(arr, dtype=torch.float32, device=session.xt.device)
