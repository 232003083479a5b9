"""A small semantic-segmentation network for the scenes of :func:`perturbx.datasets.make_scenes`.

:class:`DemoSegmenter` is an encoder-decoder of our own definition that labels
every pixel as background or one of the shape classes;
:func:`train_demo_segmenter` trains it on the CPU and :func:`load_demo_segmenter`
caches the weights like :func:`perturbx.models.load_demo_model`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from perturbx.datasets import CLASS_NAMES, SceneDataset, make_scenes

from . import _cache
from ._scenes import SCENE_TEST_SEED, SCENE_TRAIN_SEED, Trunk, check_input, conv_bn_relu, fit, flip_images
from .classifier import _background_cutout

__all__ = ["SEGMENTER_RECIPE_VERSION", "DemoSegmenter", "load_demo_segmenter", "train_demo_segmenter"]

#: Version of the segmenter's training recipe; part of its cache file name.
SEGMENTER_RECIPE_VERSION: str = "1"

_N_TEST = 200


class DemoSegmenter(nn.Module):
    """Small encoder-decoder returning per-pixel class logits.

    The class of a pixel depends on the shape of the whole object, its
    outline only on the pixels near it; the network splits the two. The
    encoder is the scene models' trunk (as in :class:`DemoDetector`: stride-4
    features with stride-8 context), on which a 1x1 head gives class logits
    at stride 4. The decoder upsamples the trunk's features bilinearly to
    stride 2, adds the trunk's stride-2 map, appends each cell's 2x2 input
    pixels (space to depth) and applies two conv + BatchNorm + ReLU stages; a
    3x3 head with pixel shuffle gives background and object logits for each
    of the cell's 4 pixels (no convolution runs at full size, the slow part
    on a CPU). The output is ``[bg, obj + log softmax(classes)]`` with the
    class log-probabilities upsampled bilinearly: its softmax is
    ``P(background)`` and ``P(object) * P(class)``. About 25 M multiply-adds
    per 64x64 image.

    Parameters
    ----------
    n_classes : int, default 4
        Number of object classes ``C``; the output has ``1 + C`` channels.
    width : int, default 32
        Channels of the trunk at stride 4 (as for :class:`DemoDetector`).

    Notes
    -----
    Input: float tensor ``(N, 3, H, W)`` with values in ``[0, 1]``, ``H`` and
    ``W`` multiples of 4 (64x64 as trained). Output: logits
    ``(N, 1 + C, H, W)``; channel 0 is the background and channel ``1 + c``
    class ``c``, so ``argmax(dim=1)`` is a label map like
    :attr:`perturbx.datasets.SceneDataset.segmentation`. Deterministic in eval
    mode; all ReLUs are separate, non-inplace modules.
    """

    #: Input height and width must be multiples of this.
    multiple: int = 4

    def __init__(self, n_classes: int = 4, width: int = 32) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.trunk = Trunk(width, width)
        self.class_head = nn.Conv2d(width, self.n_classes, 1)
        self.up4 = nn.Sequential(*conv_bn_relu(width, 16))  # stride 4, added to the stem's stride-2 map
        # stride 2, on the sum above and the 2x2 block of input pixels of each cell (space to depth)
        self.up2 = nn.Sequential(*conv_bn_relu(16 + 12, 16), *conv_bn_relu(16, 16))
        # background and object logits of each pixel of a 2x2 block from its stride-2 cell
        self.object_head = nn.Sequential(nn.Conv2d(16, 2 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 1 + C, H, W)`` of images ``(N, 3, H, W)`` in ``[0, 1]``."""
        check_input(x, self.multiple, "DemoSegmenter")
        half, quarter = self.trunk(x)
        d = torch.cat([_up(self.up4(quarter), half) + half, nn.functional.pixel_unshuffle(x, 2)], dim=1)
        obj = self.object_head(self.up2(d))
        classes = nn.functional.log_softmax(_up(self.class_head(quarter), x), dim=1)
        return torch.cat([obj[:, :1], obj[:, 1:] + classes], dim=1)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def confusion(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """Confusion matrix ``(n_labels, n_labels)`` int64, ``[truth, predicted]`` pixel counts."""
    idx = truth.astype(np.int64).ravel() * n_labels + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


@torch.no_grad()
def _scores(model: DemoSegmenter, scenes: SceneDataset, batch_size: int = 100) -> dict[str, float]:
    """Pixel accuracy, per-class IoU (dataset-wide) and their mean over the object classes."""
    was_training = model.training
    model.eval()
    truth = scenes.segmentation
    n_labels = 1 + model.n_classes
    conf = np.zeros((n_labels, n_labels), dtype=np.int64)
    for start in range(0, len(scenes), batch_size):
        pred = model(torch.from_numpy(scenes.images[start:start + batch_size])).argmax(dim=1).numpy()
        conf += confusion(pred, truth[start:start + batch_size], n_labels)
    model.train(was_training)
    tp = np.diag(conf)
    iou = tp / np.maximum(conf.sum(axis=0) + conf.sum(axis=1) - tp, 1)
    scores = {"pixel_accuracy": float(tp.sum() / conf.sum()), "mean_iou": float(iou[1:].mean())}
    scores.update({f"iou_{name}": float(v) for name, v in zip(("background", *CLASS_NAMES), iou, strict=False)})
    return scores


def train_demo_segmenter(
    *,
    n_train: int = 1500,
    epochs: int = 10,
    random_state: int = 0,
    verbose: bool = False,
) -> tuple[DemoSegmenter, dict[str, float]]:
    """Train a :class:`DemoSegmenter` on synthetic scenes, on the CPU.

    Trains on ``make_scenes(n_train, random_state=SCENE_TRAIN_SEED)`` with a
    per-pixel cross-entropy, AdamW, a one-cycle schedule, random flips and
    background cutout (as for :func:`perturbx.models.train_demo_model`), then
    scores it on 200 held-out scenes ``make_scenes(200, random_state=SCENE_TEST_SEED)``.
    Uses torch's current number of threads; the global torch random state is
    left untouched. Deterministic given ``random_state`` on a given machine
    and thread count.

    Parameters
    ----------
    n_train : int, default 1500
        Number of training scenes.
    epochs : int, default 10
        Passes over the training scenes.
    random_state : int, default 0
        Seeds the weight initialisation, the shuffling and the augmentation.
    verbose : bool, default False
        Print the loss per epoch and the held-out scores.

    Returns
    -------
    model : DemoSegmenter
        The trained model, in eval mode, on the CPU.
    scores : dict
        ``"pixel_accuracy"``, ``"mean_iou"`` (over the object classes),
        ``"iou_<name>"`` per label (background and each class; intersection
        and union summed over the held-out set) and ``"seconds"`` of training.

    Raises
    ------
    ValueError
        If ``n_train`` or ``epochs`` is smaller than 1.
    """
    if n_train < 1 or epochs < 1:
        raise ValueError(f"n_train and epochs must be >= 1; got n_train={n_train}, epochs={epochs}")
    t0 = time.perf_counter()
    train = make_scenes(n_train, random_state=SCENE_TRAIN_SEED)
    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.segmentation)
    masks = train.segmentation > 0
    aug_rng = np.random.default_rng(random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model = DemoSegmenter(n_classes=len(CLASS_NAMES))

        def step_loss(idx: np.ndarray, flip_x: bool, flip_y: bool) -> torch.Tensor:
            x = flip_images(_background_cutout(x_all[idx], masks[idx], aug_rng), flip_x, flip_y)
            y = flip_images(y_all[idx], flip_x, flip_y)
            logits = model(x)
            # Objects cover about a tenth of the pixels: a second term, the class given "object"
            # averaged over the object pixels alone, gives the shape classes their weight without
            # pushing the outline outwards.
            loss = nn.functional.cross_entropy(logits, y)
            return loss + nn.functional.cross_entropy(logits[:, 1:], y - 1, ignore_index=-1)

        fit(model, n_train, step_loss, epochs=epochs, lr=4e-3, batch_size=16, random_state=random_state,
            verbose=verbose)
    seconds = time.perf_counter() - t0
    scores = _scores(model, make_scenes(_N_TEST, random_state=SCENE_TEST_SEED))
    if verbose:
        print(f"held-out pixel accuracy {scores['pixel_accuracy']:.4f}, mean IoU {scores['mean_iou']:.4f} "
              f"(trained in {seconds:.1f} s)")
    return model, {**scores, "seconds": seconds}


def _cache_path(cache_dir: str | os.PathLike | None) -> Path:
    return _cache.cache_file(cache_dir, "demo_segmenter", SEGMENTER_RECIPE_VERSION)


def load_demo_segmenter(
    *,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
) -> DemoSegmenter:
    """Return the trained :class:`DemoSegmenter`, training it on first use.

    Cached as ``cache_dir / "demo_segmenter_v<version>.pt"`` with the same
    rules as :func:`perturbx.models.load_demo_model`: written atomically, read
    with ``torch.load(..., weights_only=True)``, rebuilt (with a
    ``RuntimeWarning``) when missing, unreadable or of another recipe version.

    Parameters
    ----------
    cache_dir : str, os.PathLike or None, default None
        Cache directory; ``None`` uses ``$PERTURBX_CACHE`` if set, else
        ``~/.cache/perturbx``. Created if needed.
    retrain : bool, default False
        Train afresh and overwrite the cache even if it is valid.

    Returns
    -------
    DemoSegmenter
        In eval mode on the CPU; its held-out scores (the dictionary of
        :func:`train_demo_segmenter`) are available as ``model.demo_scores``.
    """

    def train() -> tuple[DemoSegmenter, dict]:
        model, scores = train_demo_segmenter()
        return model, {"scores": scores, "n_classes": model.n_classes}

    model, blob = _cache.load_or_train(
        _cache_path(cache_dir), SEGMENTER_RECIPE_VERSION, retrain=retrain, train=train,
        build=lambda blob: DemoSegmenter(int(blob["n_classes"])),
    )
    model.demo_scores = {k: float(v) for k, v in blob["scores"].items()}
    return model
