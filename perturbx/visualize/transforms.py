"""Transformation robustness: random padding, jitter, scaling and rotation at every step.

Olah et al. (2017) apply small random transformations to the image before the model
sees it, at every optimisation step, so that the result must excite the model wherever
it is shifted, however it is scaled or rotated by a little; this removes most of the
high-frequency patterns that plain gradient ascent produces. Lucid and lucent chain pad,
jitter, scale, rotate and jitter as separate resamplings that change the image size; here
all of them are one affine map per image (one bilinear resampling, one ``grid_sample``
call for the whole batch) and the model always gets images of its own size:

* ``pad`` p widens the field of view by p pixels on every side (filled with ``fill``),
  and the result is resampled to the image size (Lucid pads, then resizes to the model);
* ``jitter`` j shifts the content by an integer number of pixels in ``[-j, j]`` per axis;
* ``scale`` (lo, hi) zooms the content by a factor drawn uniformly from ``[lo, hi]``;
* ``degrees`` d rotates it about the centre by an angle drawn uniformly from ``[-d, d]``.

Every image of a batch gets its own draw, from the numpy Generator passed in (runs are
reproducible from the seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perturbx._utils import Configurable, check_choice, check_float, check_int

from ._torch import torch

PADDING_MODES = ("constant", "border", "reflection")


@dataclass
class Draw:
    """Parameters of one random transformation per image.

    ``scale`` (n,), ``degrees`` (n,) and ``shift`` (n, 2) in pixels ``(dx, dy)``: the
    content point at ``u`` (pixels from the image centre, x right, y down) lands at
    ``R(degrees) scale u + shift`` in the output, where ``R`` turns x towards y
    (clockwise on screen).
    """

    scale: np.ndarray
    degrees: np.ndarray
    shift: np.ndarray

    def repeat(self, k: int) -> Draw:
        """Each image's draw repeated ``k`` times (rows ``i * k ... i * k + k - 1``)."""
        return Draw(np.repeat(self.scale, k), np.repeat(self.degrees, k), np.repeat(self.shift, k, axis=0))


def affine_warp(images, draw: Draw, *, pad: int = 0, fill: float = 0.5, padding_mode: str = "constant"):
    """Resample ``images`` ``(n, C, H, W)`` under the per-image affine maps of ``draw``.

    The output has the input's size; it shows the field of view widened by ``pad`` pixels
    on every side. Pixels that come from outside the image take ``fill``
    (``padding_mode="constant"``), the nearest edge pixel (``"border"``) or the mirror image
    (``"reflection"``). Bilinear sampling at pixel centres (``align_corners=False``), so the
    identity map and integer shifts reproduce pixels exactly.

    Returns
    -------
    torch.Tensor, shape (n, C, H, W)
    """
    n, _, h, w = images.shape
    device, dtype = images.device, images.dtype
    rad = np.deg2rad(np.asarray(draw.degrees, dtype=np.float64))
    cos, sin = np.cos(rad), np.sin(rad)
    inv_scale = 1.0 / np.asarray(draw.scale, dtype=np.float64)
    zoom = np.array([(w + 2.0 * pad) / w, (h + 2.0 * pad) / h])
    half = np.array([w / 2.0, h / 2.0])
    # u = (1/s) R(-theta) (zoom * o - t) in pixels from the centre; R(-theta) = [[cos, sin], [-sin, cos]]
    inv_rot = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) * inv_scale[:, None, None]
    linear = inv_rot * (zoom * half)[None, None, :] / half[None, :, None]
    offset = -np.einsum("nij,nj->ni", inv_rot, np.asarray(draw.shift, dtype=np.float64)) / half
    theta = np.concatenate([linear, offset[:, :, None]], axis=2)
    grid = torch.nn.functional.affine_grid(torch.as_tensor(theta, dtype=dtype, device=device), [n, 1, h, w],
                                           align_corners=False)
    if padding_mode == "constant":
        out = torch.nn.functional.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)
        return out + fill
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
                                           align_corners=False)


class Transforms(Configurable):
    """Random pad, jitter, scale and rotation, drawn afresh for every image at every step.

    Parameters
    ----------
    pad : int, default 0
        Pixels added on every side of the field of view (then resampled to the image size).
    jitter : int, default 0
        Largest shift in pixels along each axis (integers in ``[-jitter, jitter]``).
    scale : tuple of float, default (1.0, 1.0)
        Range ``(lo, hi)`` of the zoom factor, ``0 < lo <= hi``.
    degrees : float, default 0.0
        Largest rotation angle in degrees (uniform in ``[-degrees, degrees]``).
    fill : float, default 0.5
        Value of pixels from outside the image with ``padding_mode="constant"``.
    padding_mode : {"constant", "border", "reflection"}, default "constant"

    Notes
    -----
    :meth:`standard` gives Lucid's ``standard_transforms`` (pad 12, jitter 8 then 4,
    scale 0.9-1.1, rotation +-10 degrees, for 128-px images), with the pixel amounts
    scaled to the image size and the two jitters merged.
    """

    def __init__(self, *, pad: int = 0, jitter: int = 0, scale: tuple[float, float] = (1.0, 1.0),
                 degrees: float = 0.0, fill: float = 0.5, padding_mode: str = "constant") -> None:
        self.pad = check_int(pad, "pad", "Transforms", minimum=0)
        self.jitter = check_int(jitter, "jitter", "Transforms", minimum=0)
        ok = (isinstance(scale, (tuple, list)) and len(scale) == 2
              and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in scale)
              and scale[0] <= scale[1])
        if not ok:
            raise ValueError(f"The 'scale' parameter of Transforms must be a pair (lo, hi) of numbers with "
                             f"0 < lo <= hi, e.g. (0.9, 1.1). Got {scale!r} instead.")
        self.scale = (float(scale[0]), float(scale[1]))
        self.degrees = check_float(degrees, "degrees", "Transforms", low=0.0, high=180.0)
        self.fill = check_float(fill, "fill", "Transforms", low=-np.inf, high=np.inf)
        self.padding_mode = check_choice(padding_mode, "padding_mode", "Transforms", PADDING_MODES)

    @classmethod
    def standard(cls, side: int = 128) -> Transforms:
        """Lucid's standard transformations for images of about ``side`` pixels."""
        s = side / 128.0
        return cls(pad=max(1, round(12 * s)), jitter=max(1, round(12 * s)), scale=(0.9, 1.1), degrees=10.0)

    @property
    def is_identity(self) -> bool:
        """True when every draw is the identity map."""
        return self.pad == 0 and self.jitter == 0 and self.scale == (1.0, 1.0) and self.degrees == 0.0

    def draw(self, n: int, rng: np.random.Generator) -> Draw:
        """Random parameters for ``n`` images."""
        scale = rng.uniform(self.scale[0], self.scale[1], n)
        degrees = rng.uniform(-self.degrees, self.degrees, n)
        shift = rng.integers(-self.jitter, self.jitter + 1, (n, 2)).astype(np.float64)
        return Draw(scale, degrees, shift)

    def apply(self, images, draw: Draw):
        """``images`` ``(n, C, H, W)`` transformed by ``draw`` (n images' parameters)."""
        if self.is_identity:
            return images
        return affine_warp(images, draw, pad=self.pad, fill=self.fill, padding_mode=self.padding_mode)

    def __call__(self, images, rng: np.random.Generator):
        """``images`` ``(n, C, H, W)``, each under a fresh random transformation."""
        return self.apply(images, self.draw(int(images.shape[0]), rng))


def check_transforms(transforms: object, owner: str) -> Transforms | str | None:
    """Validate a ``transforms`` argument: None, ``"standard"``, ``"auto"`` or a :class:`Transforms`."""
    if transforms is None or isinstance(transforms, Transforms) or (
            isinstance(transforms, str) and transforms in ("standard", "auto")):
        return transforms
    raise TypeError(f"The 'transforms' parameter of {owner} must be None, 'auto', 'standard' or a "
                    f"perturbx.visualize.Transforms. Got {transforms!r} instead.")
