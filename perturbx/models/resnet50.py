"""A ResNet-50-shaped network of our own definition (optional dependency: torch).

:func:`resnet50_shaped` builds torchvision's ResNet-50 (v1.5: the stride of a downsampling
bottleneck on its 3x3 convolution) without torchvision, with torchvision's module names, so
that benchmarks can time a model of a deployed size (``benchmarks/gpu.sh``) and hooks on
``"layer4"`` work as with the real thing. The weights are random, not pretrained.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

from .classifier import _ResNetShaped, _seeded_eval

__all__ = ["RESNET50_LAYERS", "resnet50_shaped"]

#: bottleneck blocks per stage of ResNet-50
RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)


class _Bottleneck(nn.Module):
    """Bottleneck block (1x1, 3x3, 1x1 convolutions, 4x expansion) with torchvision's attribute names.

    ``relu`` follows the first two convolutions and a separate, non-inplace ``relu3`` the
    residual addition, so per-module hooks see each activation once.
    """

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.relu3 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.relu3(self.bn3(self.conv3(out)) + identity)


class _ResNet50Shaped(_ResNetShaped):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        c_in, stages = 64, []
        for i, (n_blocks, width) in enumerate(zip(RESNET50_LAYERS, (64, 128, 256, 512), strict=True)):
            blocks = []
            for b in range(n_blocks):
                blocks.append(_Bottleneck(c_in, width, stride=2 if b == 0 and i > 0 else 1))
                c_in = width * _Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._head(c_in, n_classes)


def resnet50_shaped(n_classes: int = 1000, *, random_state: int | None = None) -> nn.Module:
    """A randomly initialised network shaped like torchvision's ResNet-50.

    Bottleneck blocks in layers ``[3, 4, 6, 3]`` of widths 64-128-256-512 (outputs four
    times wider), 25.6 M parameters for 1000 classes (torchvision's count), about 4.1 G
    multiply-adds per 224x224 image, and torchvision's attribute names (``conv1``, ``bn1``,
    ``relu``, ``maxpool``, ``layer1`` ... ``layer4``, ``avgpool``, ``fc``; blocks have
    ``conv1`` ... ``bn3``, ``relu`` and ``downsample``, and additionally ``relu2`` and
    ``relu3``). All ReLUs are non-inplace. For speed benchmarks: the weights are random.

    Parameters
    ----------
    n_classes : int, default 1000
        Number of output logits.
    random_state : int or None, default None
        If given, seeds the initialisation (a forked torch RNG: the global torch random
        state is left as it was); None uses the global torch RNG.

    Returns
    -------
    torch.nn.Module
        In eval mode. Input ``(N, 3, 224, 224)`` (any size >= 32 works), output logits
        ``(N, n_classes)``.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"The 'n_classes' parameter of resnet50_shaped must be an int >= 1. Got {n_classes!r}.")
    return _seeded_eval(lambda: _ResNet50Shaped(n_classes), random_state)
