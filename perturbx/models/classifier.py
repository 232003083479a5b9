"""The demo classifier and the ResNet-18-shaped network (optional dependency: torch).

* :class:`DemoCNN` -- a tiny CNN for the synthetic shapes of
  :func:`perturbx.datasets.make_shapes`; :func:`train_demo_model` trains it in
  well under a minute on a 2-core CPU (idle machine) and :func:`load_demo_model` caches the trained weights.
* :func:`resnet18_shaped` -- a randomly initialised network with the shape and
  the module names of torchvision's ResNet-18 (without needing torchvision),
  for benchmarks and for methods that hook named layers (Grad-CAM on
  ``"layer4"``).

Everything here is re-exported by :mod:`perturbx.models`; import it from there.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

import os
import time
from pathlib import Path

import numpy as np

from perturbx.datasets import CLASS_NAMES, make_shapes

from . import _cache

__all__ = [
    "DEMO_RECIPE_VERSION",
    "DEMO_TEST_SEED",
    "DEMO_TRAIN_SEED",
    "DemoCNN",
    "DemoEmbedding",
    "demo_embedding",
    "load_demo_model",
    "resnet18_shaped",
    "train_demo_model",
]

#: Seed of the training images of the demo model.
DEMO_TRAIN_SEED: int = 20240
#: Seed of the held-out images: ``make_shapes(n, random_state=DEMO_TEST_SEED)``.
DEMO_TEST_SEED: int = 90417
#: Version of the training recipe; part of the cache file name, so a changed
#: recipe never loads stale weights.
DEMO_RECIPE_VERSION: str = "2"

_N_TEST = 500


class DemoCNN(nn.Module):
    """Small fully convolutional classifier for 64x64 shape images.

    Four conv + BatchNorm + ReLU stages (16-32-64-64 channels; the first two
    with stride 2, a 2x2 max pooling before the last) give an 8x8 map of local
    features; the head is a global max pooling and a linear layer. About 10 M
    multiply-adds per image, i.e. well under a millisecond per image on a CPU
    at batch size 64.

    The global *max*-pooled head makes every class score depend only on the
    strongest local evidence -- which :func:`train_demo_model` teaches to be
    the object -- so occluding the object lowers the score of its class while
    occluding background leaves it nearly unchanged: the model localises well,
    which makes it a good subject for perturbation explanations.

    Parameters
    ----------
    n_classes : int, default 4
        Number of output logits.

    Attributes
    ----------
    features : torch.nn.Sequential
        Convolutional trunk, ``(N, 3, 64, 64) -> (N, 64, 8, 8)``; its last
        module (``features[-1]``, a ReLU) is a natural Grad-CAM target layer.
    classifier : torch.nn.Sequential
        ``AdaptiveMaxPool2d(1)``, ``Flatten`` and ``Linear(64, n_classes)``.

    Notes
    -----
    Input: float tensor of shape ``(N, 3, H, W)`` with values in ``[0, 1]``
    (``H = W = 64`` as trained; other sizes run thanks to the global pooling).
    Output: logits of shape ``(N, n_classes)``. All ReLUs are separate,
    non-inplace modules.
    """

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, kernel_size: int = 3,
                  stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, kernel_size, stride=stride,
                          padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(
            *stage(3, 16, kernel_size=5, stride=2),  # 64 -> 32
            *stage(16, 32, stride=2),  # 32 -> 16
            *stage(32, 64),
            nn.MaxPool2d(2),  # 16 -> 8
            *stage(64, 64),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(64, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, 3, H, W)`` in ``[0, 1]`` to logits ``(N, n_classes)``."""
        return self.classifier(self.features(x))


@torch.no_grad()
def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray,
              batch_size: int = 250) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = torch.from_numpy(images[start:start + batch_size])
        pred = model(x).argmax(dim=1).numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(labels)


def _background_cutout(
    x: torch.Tensor, masks: np.ndarray, rng: np.random.Generator, p: float = 0.5
) -> torch.Tensor:
    """Paste one filled rectangle on the background of some images.

    With probability ``p`` per image, a rectangle of 8-20 pixels per side that
    does not touch the object (``masks``, shape ``(N, H, W)``) is filled with
    black (70 %) or the image's mean colour (30 %). The label is unchanged, so
    the model learns that such patches -- the typical occlusion baselines --
    are not evidence for any class (in particular not for "square"). The
    object itself is never covered, so occluding it still lowers its score.
    Returns a new tensor of the shape of ``x``, ``(N, 3, H, W)``.
    """
    x = x.clone()
    height, width = x.shape[-2:]
    for j in range(x.shape[0]):
        if rng.random() >= p:
            continue
        for _ in range(4):  # a few tries to find a spot off the object
            h, w = rng.integers(8, 21, size=2)
            r = int(rng.integers(0, height - h + 1))
            c = int(rng.integers(0, width - w + 1))
            if not masks[j, r:r + h, c:c + w].any():
                if rng.random() < 0.7:
                    x[j, :, r:r + h, c:c + w] = 0.0
                else:
                    x[j, :, r:r + h, c:c + w] = x[j].mean(dim=(1, 2), keepdim=True)
                break
    return x


def train_demo_model(
    *,
    n_train: int = 3000,
    epochs: int = 12,
    random_state: int = 0,
    verbose: bool = False,
) -> tuple[DemoCNN, float]:
    """Train a :class:`DemoCNN` on synthetic shapes, on the CPU.

    Trains on ``make_shapes(n_train, random_state=DEMO_TRAIN_SEED)`` with
    AdamW, a one-cycle learning-rate schedule, random flips and background
    cutout (filled rectangles pasted next to -- never on -- the object, so
    that occlusion patches are not mistaken for evidence), then measures the
    accuracy on 500 held-out images
    ``make_shapes(500, random_state=DEMO_TEST_SEED)``. Takes a few tens of
    seconds on two CPU cores with the defaults, using torch's current number
    of threads. The global torch random state is left untouched (a forked RNG
    is used); the result is deterministic given ``random_state`` on a given
    machine and thread count.

    Parameters
    ----------
    n_train : int, default 3000
        Number of training images.
    epochs : int, default 12
        Passes over the training images.
    random_state : int, default 0
        Seeds the weight initialisation, the shuffling and the augmentation
        (the training and held-out images themselves use the fixed seeds
        ``DEMO_TRAIN_SEED`` and ``DEMO_TEST_SEED``).
    verbose : bool, default False
        Print the loss per epoch and the final accuracy.

    Returns
    -------
    model : DemoCNN
        The trained model, in eval mode, on the CPU.
    accuracy : float
        Held-out accuracy in ``[0, 1]`` (about 0.99 with the defaults).

    Raises
    ------
    ValueError
        If ``n_train`` or ``epochs`` is smaller than 1.
    """
    if n_train < 1 or epochs < 1:
        raise ValueError(
            f"n_train and epochs must be >= 1; got n_train={n_train}, epochs={epochs}"
        )
    t0 = time.perf_counter()
    train = make_shapes(n_train, random_state=DEMO_TRAIN_SEED)
    test = make_shapes(_N_TEST, random_state=DEMO_TEST_SEED)
    x_all = torch.from_numpy(train.images)
    y_all = torch.from_numpy(train.labels)
    batch_size = 64
    steps_per_epoch = (n_train + batch_size - 1) // batch_size
    aug_rng = np.random.default_rng(random_state)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        gen = torch.Generator().manual_seed(random_state)
        model = DemoCNN(n_classes=len(CLASS_NAMES))
        opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=4e-3, total_steps=epochs * steps_per_epoch, pct_start=0.2
        )
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(n_train, generator=gen)
            total = 0.0
            for start in range(0, n_train, batch_size):
                idx = perm[start:start + batch_size]
                x = _background_cutout(x_all[idx], train.masks[idx.numpy()], aug_rng)
                y = y_all[idx]
                # Flips keep every label (each shape is flip-invariant up to
                # a rotation, and rotations are random anyway).
                if torch.rand((), generator=gen) < 0.5:
                    x = x.flip(-1)
                if torch.rand((), generator=gen) < 0.5:
                    x = x.flip(-2)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {total / n_train:.4f} "
                      f"({time.perf_counter() - t0:.1f} s)")
    model.eval()
    acc = _accuracy(model, test.images, test.labels)
    if verbose:
        print(f"held-out accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s total)")
    return model, acc


def _default_cache_dir() -> Path:
    return _cache.default_cache_dir()


def _cache_path(cache_dir: str | os.PathLike | None) -> Path:
    return _cache.cache_file(cache_dir, "demo_cnn", DEMO_RECIPE_VERSION)


def load_demo_model(
    *,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
) -> DemoCNN:
    """Return the trained demo :class:`DemoCNN`, training it on first use.

    The weights are cached in ``cache_dir / "demo_cnn_v<version>.pt"`` (a
    dictionary with the ``state_dict`` plus metadata: held-out ``accuracy``
    and recipe ``version``), written atomically so concurrent processes never
    see a partial file, and read with ``torch.load(..., weights_only=True)``.
    A missing, unreadable or mismatching cache file is (re)built by
    :func:`train_demo_model` (about half a minute on a CPU).

    Parameters
    ----------
    cache_dir : str, os.PathLike or None, default None
        Cache directory; ``None`` uses the environment variable
        ``PERTURBX_CACHE`` if set, else ``~/.cache/perturbx``. Created if
        needed.
    retrain : bool, default False
        Train afresh and overwrite the cache even if it is valid.

    Returns
    -------
    DemoCNN
        The model in eval mode on the CPU (parameters require grad, as usual).
        Its held-out accuracy is available as ``model.demo_accuracy``.
    """

    def train() -> tuple[DemoCNN, dict]:
        model, acc = train_demo_model()  # looked up at call time: tests replace it
        return model, {"accuracy": float(acc), "n_classes": len(CLASS_NAMES)}

    model, blob = _cache.load_or_train(
        _cache_path(cache_dir), DEMO_RECIPE_VERSION, retrain=retrain,
        build=lambda blob: DemoCNN(n_classes=int(blob["n_classes"])), train=train,
    )
    model.demo_accuracy = float(blob["accuracy"])
    return model


class DemoEmbedding(nn.Module):
    """The globally max-pooled feature vector of a :class:`DemoCNN`.

    Shares the trunk and the pooling of the classifier it is built from (no
    copy of the weights): ``model.classifier[-1](embedding(x))`` equals
    ``model(x)``.

    Parameters
    ----------
    model : DemoCNN
        The classifier whose features to expose.

    Notes
    -----
    Input: float tensor ``(N, 3, H, W)`` in ``[0, 1]``. Output: ``(N, D)``
    with ``D = 64``, the input of the classifier's final linear layer.
    """

    def __init__(self, model: DemoCNN) -> None:
        super().__init__()
        self.features = model.features
        self.pool = model.classifier[:-1]  # AdaptiveMaxPool2d(1), Flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(N, D)`` of images ``(N, 3, H, W)``."""
        return self.pool(self.features(x))


def demo_embedding(model: DemoCNN | None = None) -> DemoEmbedding:
    """The demo CNN's max-pooled feature vector as a module, for similarity targets.

    Parameters
    ----------
    model : DemoCNN or None, default None
        The classifier to take the features of; ``None`` uses
        :func:`load_demo_model` (trained and cached on first use).

    Returns
    -------
    DemoEmbedding
        Maps images ``(N, 3, H, W)`` to vectors ``(N, 64)``; shares the
        model's modules and is in the model's train/eval mode (eval for the
        loaded demo model).

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`DemoCNN`.
    """
    if model is None:
        model = load_demo_model()
    if not isinstance(model, DemoCNN):
        raise TypeError(f"model must be a DemoCNN (or None for the cached demo model); got "
                        f"{type(model).__name__}; build other embeddings as a torch.nn.Module directly")
    embedding = DemoEmbedding(model)
    embedding.training = model.training  # its modules are the model's: their modes stay as they are
    return embedding


class _BasicBlock(nn.Module):
    """ResNet basic block with torchvision's attribute names.

    Two 3x3 convolutions with BatchNorm; ``relu`` is used after the first and
    a separate, non-inplace ``relu2`` after the residual addition, so that
    per-module hooks (e.g. guided backprop) see each activation exactly once.
    """

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class _ResNetShaped(nn.Module):
    """torchvision's ResNet layout: the stem here, the stages from the subclass, then :meth:`_head`.

    Modules are made in torchvision's order (stem, stages, pooling, ``fc``, then its
    initialisation), so a seeded network gets the same weights as when each subclass made
    them itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def _head(self, c_in: int, n_classes: int) -> None:
        """Global average pooling and ``fc``, then torchvision's initialisation of every layer."""
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _seeded_eval(build, random_state: int | None) -> nn.Module:
    """``build()`` in eval mode; with ``random_state``, under a forked, seeded torch RNG (global state untouched)."""
    if random_state is None:
        return build().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        return build().eval()


class _ResNet18Shaped(_ResNetShaped):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(_BasicBlock(64, 64), _BasicBlock(64, 64))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256))
        self.layer4 = nn.Sequential(_BasicBlock(256, 512, 2), _BasicBlock(512, 512))
        self._head(512, n_classes)


def resnet18_shaped(n_classes: int = 1000, *, random_state: int | None = None) -> nn.Module:
    """A randomly initialised network shaped like torchvision's ResNet-18.

    Our own definition (no torchvision needed): BasicBlocks in layers
    ``[2, 2, 2, 2]`` with 64-128-256-512 channels, about 11.7 M parameters
    for 1000 classes, and torchvision's attribute names (``conv1``, ``bn1``,
    ``relu``, ``maxpool``, ``layer1`` ... ``layer4``, ``avgpool``, ``fc``;
    blocks have ``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``,
    ``downsample`` and additionally ``relu2``), so hooks on e.g. ``"layer4"``
    work as with the real thing. All ReLUs are non-inplace and no ReLU module
    is used twice in a forward pass. Meant for speed benchmarks and plumbing
    tests: the weights are random, not pretrained.

    Parameters
    ----------
    n_classes : int, default 1000
        Number of output logits.
    random_state : int or None, default None
        If given, seeds the initialisation (via a forked torch RNG, leaving
        the global torch random state untouched); ``None`` uses the global
        torch RNG.

    Returns
    -------
    torch.nn.Module
        In eval mode. Input ``(N, 3, 224, 224)`` (any size >= 32 works),
        output logits ``(N, n_classes)``.
    """
    return _seeded_eval(lambda: _ResNet18Shaped(n_classes), random_state)
