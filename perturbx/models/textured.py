"""A confident classifier of small shapes on strongly textured backgrounds (optional dependency: torch).

The third built-in classifier, with score statistics unlike the demo CNN's: its images
(:func:`perturbx.datasets.make_shapes` with ``texture="strong"`` and smaller objects,
:data:`TEXTURED_DATA`) put a 12-20 px object (the demo's are 14-26 px) on high-contrast
gratings and speckle, and it is trained on twice the images for a saturated model: its
class probabilities are close to 1 (measured below), where
the gradient of a probability vanishes. Explanation methods that were tuned on the demo
CNN can be checked here on a model they were not tuned on. :func:`load_textured_model`
trains it once and caches the weights like the demo CNN (measured: 0.98 held-out
accuracy, the true class's probability above 0.99 on 69 % of the 500 held-out images,
70 of the first 100 correct and above 0.99; 703 s of training on one CPU thread of a
loaded machine).
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

import os
import time
from types import MappingProxyType

import numpy as np

from perturbx.datasets import CLASS_NAMES, ShapesDataset, make_shapes

from . import _cache
from .classifier import DemoCNN, _accuracy, _background_cutout

__all__ = [
    "TEXTURED_DATA",
    "TEXTURED_RECIPE_VERSION",
    "TEXTURED_TEST_SEED",
    "TEXTURED_TRAIN_SEED",
    "TexturedCNN",
    "load_textured_model",
    "textured_shapes",
    "train_textured_model",
]

#: Seed of the training images of the textured model.
TEXTURED_TRAIN_SEED: int = 51101
#: Seed of its held-out images: ``textured_shapes(n)``.
TEXTURED_TEST_SEED: int = 61927
#: The task's options of :func:`perturbx.datasets.make_shapes`.
TEXTURED_DATA = MappingProxyType({"texture": "strong", "object_size": (12.0, 20.0)})
#: Version of the training recipe; part of the cache file name.
TEXTURED_RECIPE_VERSION: str = "1"

_N_TEST = 500
_LR = 6e-3  # peak learning rate of the one-cycle schedule


def textured_shapes(n: int, *, random_state: int | np.random.Generator | None = TEXTURED_TEST_SEED,
                    size: int = 64) -> ShapesDataset:
    """``n`` images of the textured model's task: ``make_shapes(n, **TEXTURED_DATA)``.

    Parameters
    ----------
    n : int
        Number of images, ``n >= 1``.
    random_state : int, Generator or None, default TEXTURED_TEST_SEED
        The default gives the held-out images the model's accuracy is measured on.
    size : int, default 64
        Image side in pixels (the model is trained at 64).

    Returns
    -------
    ShapesDataset
        Images ``(n, 3, size, size)`` float32 in [0, 1], labels ``(n,)``, object masks
        ``(n, size, size)``.
    """
    return make_shapes(n, size=size, random_state=random_state, **TEXTURED_DATA)


class TexturedCNN(DemoCNN):
    """The :class:`~perturbx.models.DemoCNN` architecture, for the textured task.

    Four conv + BatchNorm + ReLU stages and a global max-pooled linear head (see
    :class:`~perturbx.models.DemoCNN`); trained by :func:`train_textured_model` on
    :func:`textured_shapes`. The same architecture as the demo CNN on purpose: what
    differs is the data (small objects on high-contrast texture) and the confidence of
    the scores, so a method that works on one and not the other is sensitive to score
    statistics, not to an architecture.

    Parameters
    ----------
    n_classes : int, default 4
        Number of output logits.

    Notes
    -----
    Input: float ``(N, 3, H, W)`` in [0, 1] (64 x 64 as trained). Output: logits
    ``(N, n_classes)``.
    """


def _augment(x: torch.Tensor, masks: np.ndarray, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
    """Background cutout (as the demo CNN's) and random flips of a batch ``(N, 3, H, W)``."""
    x = _background_cutout(x, masks, rng)
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-2)
    return x


def train_textured_model(
    *,
    n_train: int = 6000,
    epochs: int = 14,
    random_state: int = 0,
    verbose: bool = False,
) -> tuple[TexturedCNN, float]:
    """Train a :class:`TexturedCNN` on ``textured_shapes(n_train, random_state=TEXTURED_TRAIN_SEED)``.

    The demo CNN's recipe (AdamW, a one-cycle schedule, random flips and background
    cutout, plain cross-entropy) with twice the images and a higher peak learning rate
    (6e-3): small objects on texture take the network several epochs to find, and
    without label smoothing it ends confident. The global torch random state is left
    untouched; the result is deterministic given ``random_state`` on a given machine and
    thread count.

    Parameters
    ----------
    n_train : int, default 6000
        Number of training images.
    epochs : int, default 14
        Passes over them.
    random_state : int, default 0
        Seeds the initialisation, the shuffling and the augmentation.
    verbose : bool, default False
        Print the loss per epoch and the held-out accuracy.

    Returns
    -------
    model : TexturedCNN
        Trained, in eval mode, on the CPU.
    accuracy : float
        Accuracy on the 500 held-out images ``textured_shapes(500)``.

    Raises
    ------
    ValueError
        If ``n_train`` or ``epochs`` is smaller than 1.
    """
    for name, value in (("n_train", n_train), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"The '{name}' parameter of train_textured_model must be an int >= 1. "
                             f"Got {value!r} instead.")
    t0 = time.perf_counter()
    train = textured_shapes(n_train, random_state=TEXTURED_TRAIN_SEED)
    test = textured_shapes(_N_TEST)
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    batch_size = 64
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    aug_rng = np.random.default_rng(random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        gen = torch.Generator().manual_seed(random_state)
        model = TexturedCNN(n_classes=len(CLASS_NAMES))
        opt = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=_LR, total_steps=steps, pct_start=0.2)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(n_train, generator=gen)
            total = 0.0
            for start in range(0, n_train, batch_size):
                idx = perm[start:start + batch_size]
                x = _augment(x_all[idx], train.masks[idx.numpy()], aug_rng, gen)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y_all[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {total / n_train:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.eval()
    acc = _accuracy(model, test.images, test.labels)
    if verbose:
        print(f"held-out accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s total)")
    return model, acc


def load_textured_model(*, cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> TexturedCNN:
    """The trained :class:`TexturedCNN`, trained by :func:`train_textured_model` on first use and cached.

    Cached as ``cache_dir / "textured_cnn_v<version>.pt"`` with the rules of
    :func:`perturbx.models.load_demo_model` (``cache_dir=None``: ``$PERTURBX_CACHE`` or
    ``~/.cache/perturbx``; atomic writes; a missing, unreadable or stale file is retrained).

    Parameters
    ----------
    cache_dir : str, os.PathLike or None, default None
        Cache directory.
    retrain : bool, default False
        Train afresh and overwrite the cache.

    Returns
    -------
    TexturedCNN
        In eval mode on the CPU; the held-out accuracy is ``model.demo_accuracy``.
    """

    def train() -> tuple[TexturedCNN, dict]:
        model, acc = train_textured_model()
        return model, {"accuracy": float(acc), "n_classes": len(CLASS_NAMES)}

    model, blob = _cache.load_or_train(
        _cache.cache_file(cache_dir, "textured_cnn", TEXTURED_RECIPE_VERSION), TEXTURED_RECIPE_VERSION,
        retrain=retrain, build=lambda blob: TexturedCNN(n_classes=int(blob["n_classes"])), train=train)
    model.demo_accuracy = float(blob["accuracy"])
    return model
