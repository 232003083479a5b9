"""A VGG-shaped network of our own definition (optional dependency: torch).

:func:`vgg_shaped` builds torchvision's VGG layout (``features`` of 3x3 convolutions,
ReLUs and 2x2 max pooling, an adaptive average pooling, a ``classifier`` of linear layers
with ReLU and dropout) without torchvision, with configurable widths so that tests and
benchmarks can use small copies. The weights are random, not pretrained.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

from collections.abc import Sequence

__all__ = ["VGG11_CONFIG", "vgg_shaped"]

#: VGG-11 ("A"): output channels of each 3x3 convolution, "M" for a 2x2 max pooling
VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class _VGGShaped(nn.Module):
    def __init__(self, config: Sequence[int | str], n_classes: int, batch_norm: bool, pool: int,
                 hidden: int, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU())
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool * pool, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, n_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.normal_(m.bias, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, (1.0 / m.in_features) ** 0.5)
                nn.init.normal_(m.bias, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg_shaped(n_classes: int = 1000, *, width: float = 1.0, batch_norm: bool = False,
               config: Sequence[int | str] = VGG11_CONFIG, pool: int = 7, hidden: int = 4096,
               in_channels: int = 3, random_state: int | None = None) -> nn.Module:
    """A randomly initialised network shaped like torchvision's VGG (VGG-11 by default).

    Same module names as torchvision (``features.<i>``, ``avgpool``, ``classifier.<i>``),
    every ReLU a separate non-inplace module, max pooling as ``nn.MaxPool2d`` modules, so
    that module hooks (LRP, DeepLIFT, guided backpropagation) see every nonlinearity.
    With ``batch_norm=True`` each convolution is followed by a ``BatchNorm2d`` with random,
    non-trivial running statistics (a test subject for batch-norm merging).

    Parameters
    ----------
    n_classes : int, default 1000
    width : float, default 1.0
        Multiplies every convolution's channels (and ``hidden``): 1/8 gives a network that
        runs in milliseconds on a CPU.
    batch_norm : bool, default False
    config : sequence of int or "M", default :data:`VGG11_CONFIG`
    pool : int, default 7
        Output size of the adaptive average pooling in front of the classifier.
    hidden : int, default 4096
        Width of the two hidden linear layers (before ``width`` is applied).
    in_channels : int, default 3
    random_state : int or None, default None
        Seeds the initialisation through a forked torch RNG (the global state is left
        untouched); None uses the global torch RNG.

    Returns
    -------
    torch.nn.Module
        In eval mode (dropout off). Input ``(N, in_channels, H, W)`` with ``H, W`` at least
        ``2 ** (number of "M")``; output logits ``(N, n_classes)``.
    """
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"The 'n_classes' parameter of vgg_shaped must be an int >= 1. Got {n_classes!r}.")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"The 'width' parameter of vgg_shaped must be a number > 0. Got {width!r}.")
    scaled = [item if item == "M" else max(1, round(int(item) * width)) for item in config]
    args = (scaled, n_classes, bool(batch_norm), int(pool), max(1, round(hidden * width)), int(in_channels))
    if random_state is None:
        return _VGGShaped(*args).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        return _VGGShaped(*args).eval()
