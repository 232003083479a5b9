"""The explainer network: a small U-Net that maps an image to one value per player and target.

FastSHAP (Jethani et al. 2022) trains a U-Net whose output, averaged over each
superpixel, is that superpixel's Shapley value. Ours is the same idea kept small for
a CPU: an encoder of ``depth`` stages (two 3x3 convolutions with batch normalisation and
ReLU each, max pooling between them, widths doubling from ``width``), a decoder that
upsamples and concatenates the encoder's features of the same resolution until it
reaches the first resolution at least as fine as the player grid, then an average
pooling onto the grid and a 1x1 convolution to one channel per target. The last layer
starts at zero, so an untrained network gives every player the same share of
``f(x) - f(baseline)`` (after the efficiency normalisation of
:func:`perturbx.amortized.game.normalise`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Ensemble", "ExplainerUNet"]


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _norm(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out), nn.ReLU())


def decoder_levels(hw: tuple[int, int], grid: tuple[int, int], depth: int) -> int:
    """How many decoder stages bring the bottom (``hw / 2**(depth-1)``) back to a resolution >= ``grid``."""
    levels = 0
    h, w = hw[0] >> (depth - 1), hw[1] >> (depth - 1)
    while levels < depth - 1 and (h < grid[0] or w < grid[1]):
        h, w, levels = h * 2, w * 2, levels + 1
    return levels


class ExplainerUNet(nn.Module):
    """Image ``(N, C, H, W)`` -> raw player values ``(N, T, rows, cols)``.

    Parameters
    ----------
    in_channels : int
        Channels of the (CHW) image.
    n_outputs : int
        Targets explained at once (T), e.g. every class of a classifier.
    hw : (H, W)
        Image size in pixels (fixes the decoder's length).
    grid : (rows, cols)
        The player grid.
    width : int, default 16
        Channels of the first stage; stage k has ``width * 2**k`` (capped at ``8 * width``).
    depth : int, default 4
        Encoder stages (``depth - 1`` poolings by 2).
    """

    def __init__(self, in_channels: int, n_outputs: int, hw: tuple[int, int], grid: tuple[int, int], *,
                 width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        widths = [width * min(2 ** k, 8) for k in range(depth)]
        self.encoder = nn.ModuleList(_block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths,
                                                                              strict=False))
        n_up = decoder_levels(hw, self.grid, depth)
        ups, c = [], widths[-1]
        for k in range(n_up):
            skip = widths[depth - 2 - k]
            ups.append(_block(c + skip, skip))
            c = skip
        self.decoder = nn.ModuleList(ups)
        self.head = nn.Conv2d(c, n_outputs, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.encoder):
            x = block(x if k == 0 else nn.functional.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for k, block in enumerate(self.decoder):
            skip = skips[-2 - k]
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(nn.functional.adaptive_avg_pool2d(x, self.grid))


class Ensemble(nn.Module):
    """The mean of several explainer networks' raw values (each trained from its own seed on the same games).

    The efficiency normalisation is additive, so the normalised values of the mean are the mean
    of the members' normalised values: they still sum exactly to ``f(x) - f(baseline)``.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)
