"""Robustness of generated images to the random transformations they were optimised under."""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_int, check_random_state
from perturbx.adapters import as_adapter
from perturbx.optimize.optimizers import score_torch_batch

from ._torch import torch
from .objectives import probabilities
from .transforms import Transforms


def _to_chw(images: np.ndarray, layout: str) -> np.ndarray:
    if layout == "HWC":
        return np.moveaxis(images, -1, 1)
    if layout == "HW":
        return images[:, None]
    return images


def _from_chw(images, layout: str):
    if layout == "HWC":
        return images.permute(0, 2, 3, 1)
    if layout == "HW":
        return images[:, 0]
    return images


def transformed_probabilities(model: object, images: np.ndarray, transforms: Transforms, *, n_draws: int = 32,
                              random_state: object = None) -> np.ndarray:
    """Class probabilities of every image under ``n_draws`` random transformations each.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    images : ndarray, shape (N, *sample_shape)
        Images in the adapter's layout (e.g. ``Visualization.images.reshape(-1, *shape)``).
    transforms : Transforms
        The transformations to draw from (e.g. ``Transforms.standard(64)``).
    n_draws : int, default 32
        Transformations per image.
    random_state : int, numpy Generator or None

    Returns
    -------
    ndarray, shape (N, n_draws, n_classes)
        The softmax of the model's scores (or the scores when they already are a
        distribution). ``N * n_draws`` model queries, in batches of the adapter's size.
    """
    adapter = as_adapter(model)
    if not isinstance(transforms, Transforms):
        raise TypeError(f"The 'transforms' parameter of transformed_probabilities must be a "
                        f"perturbx.visualize.Transforms. Got {type(transforms).__name__} instead.")
    n_draws = check_int(n_draws, "n_draws", "transformed_probabilities")
    rng = check_random_state(random_state)
    arr = np.asarray(images, dtype=np.float32)
    layout = adapter.layout.name
    if arr.ndim != adapter.layout.ndim + 1:
        raise ValueError(f"The 'images' parameter of transformed_probabilities must be a batch (N, *sample_shape) "
                         f"in the adapter's layout {layout!r}. Got shape {arr.shape}.")
    chw = torch.as_tensor(_to_chw(arr, layout))
    batch = chw.repeat_interleave(n_draws, dim=0)
    seen = _from_chw(transforms(batch, rng), layout)
    scores = torch.as_tensor(score_torch_batch(adapter, seen.contiguous()))
    return probabilities(scores).numpy().reshape(len(arr), n_draws, -1)
