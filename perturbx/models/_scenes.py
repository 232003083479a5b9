"""What the two scene models share: data seeds, the conv block and the training loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from perturbx.datasets import SceneDataset

#: Seed of the training scenes of the demo detector and segmenter.
SCENE_TRAIN_SEED: int = 31337
#: Seed of their held-out scenes: ``make_scenes(n, random_state=SCENE_TEST_SEED)``.
SCENE_TEST_SEED: int = 72001


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 3, *, stride: int = 1,
                 dilation: int = 1) -> list[nn.Module]:
    """Conv (same padding, no bias) + BatchNorm + a non-inplace ReLU, as a list of modules."""
    return [
        nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                  dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class Trunk(nn.Module):
    """Stride-4 feature trunk of the scene models, with stride-8 context.

    ``stem``: a 5x5 stride-2 convolution (16 channels) and two 3x3 ones, the
    first with stride 2 (``width`` channels); ``context``: a stride-2 stage and
    two more (one dilated) with ``2 * width`` channels, upsampled and added to
    a 1x1 lateral projection of the stem; ``neck``: a 3x3 stage with
    ``out_channels``. :meth:`forward` returns the stride-2 map of the stem's
    first stage ``(N, 16, H/2, W/2)`` and the fused stride-4 map
    ``(N, out_channels, H/4, W/4)``.
    """

    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *conv_bn_relu(3, 16, 5, stride=2),
            *conv_bn_relu(16, width, stride=2),
            *conv_bn_relu(width, width),
        )
        self.context = nn.Sequential(
            *conv_bn_relu(width, 2 * width, stride=2),
            *conv_bn_relu(2 * width, 2 * width),
            *conv_bn_relu(2 * width, 2 * width, dilation=2),
        )
        self.lateral = nn.Conv2d(width, 2 * width, 1)
        self.neck = nn.Sequential(*conv_bn_relu(2 * width, out_channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(half, quarter)``: feature maps at strides 2 and 4 (see the class notes)."""
        half = self.stem[:3](x)
        fine = self.stem[3:](half)
        coarse = nn.functional.interpolate(self.context(fine), size=fine.shape[-2:], mode="nearest")
        return half, self.neck(self.lateral(fine) + coarse)


def check_input(x: torch.Tensor, multiple: int, name: str) -> None:
    """Raise ValueError unless ``x`` is ``(N, 3, H, W)`` with ``H`` and ``W`` multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} expects images of shape (N, 3, H, W); got shape {tuple(x.shape)}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(f"{name} expects a height and width divisible by {multiple}; got "
                         f"{tuple(x.shape[-2:])}; pad or resize the images")


def union_masks(scenes: SceneDataset) -> np.ndarray:
    """``(n, H, W)`` bool: the pixels of any object of each scene."""
    return scenes.segmentation > 0


def fit(
    model: nn.Module,
    n_samples: int,
    step_loss: Callable[[np.ndarray, bool, bool], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    random_state: int,
    batch_size: int = 32,
    verbose: bool = False,
) -> None:
    """Train ``model`` in place with AdamW and a one-cycle schedule, on the CPU.

    Parameters
    ----------
    model : torch.nn.Module
        Freshly built model; left in eval mode.
    n_samples : int
        Number of training items.
    step_loss : callable
        ``step_loss(idx, flip_x, flip_y)`` returns the loss of the batch of
        items ``idx`` (int array), flipped left-right and/or upside-down.
    epochs, lr, random_state, batch_size, verbose
        Passes over the data, peak learning rate, seed of the shuffling and
        flips (a forked torch RNG: the global one is left alone), batch size
        and whether to print the loss per epoch.
    """
    steps_per_epoch = (n_samples + batch_size - 1) // batch_size
    gen = torch.Generator().manual_seed(random_state)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.2)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n_samples, generator=gen).numpy()
        total = 0.0
        for start in range(0, n_samples, batch_size):
            idx = perm[start:start + batch_size]
            flip_x, flip_y = (torch.rand(2, generator=gen) < 0.5).tolist()
            opt.zero_grad(set_to_none=True)
            loss = step_loss(idx, flip_x, flip_y)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / n_samples:.4f} "
                  f"({time.perf_counter() - t0:.1f} s)")
    model.eval()


def flip_images(x: torch.Tensor, flip_x: bool, flip_y: bool) -> torch.Tensor:
    """Flip a batch ``(N, C, H, W)`` left-right and/or upside-down."""
    dims = [d for d, flip in ((-1, flip_x), (-2, flip_y)) if flip]
    return x.flip(dims) if dims else x
