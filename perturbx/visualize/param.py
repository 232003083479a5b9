"""Image parameterisations: what the optimiser changes, and how that becomes an image.

A parameterisation is a small configuration object; :meth:`build` makes the parameters
of ``n`` images on a device and returns an :class:`ImageParam`, whose
``image(tensors)`` maps parameters to images ``(n, C, H, W)`` in ``[0, 1]``
(differentiable, channels first whatever the model's layout).

* :class:`Pixels`: one free value per pixel and channel (squashed by a sigmoid).
* :class:`Fourier`: the decorrelated basis of Olah et al. (2017, "Feature Visualization"),
  as in Lucid and lucent: a random spectrum scaled by ``1 / f**decay_power`` (so that
  every frequency band gets about the same share of the gradient) and, for RGB images,
  Lucid's colour decorrelation, then a sigmoid.
* :class:`DeepImagePrior`: a small convolutional generator with a fixed noise input
  (Ulyanov, Vedaldi & Lempitsky 2018); its weights are the parameters.

Pixels and Fourier parameters have a leading image axis and ``image`` takes any number of
rows, so the zeroth-order optimiser can score many perturbed parameter sets in one batch
(``batched = True``); the deep image prior is for the autograd optimiser only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx._utils import Configurable, check_float, check_int

from ._torch import torch

#: Lucid's square root of the colour correlation matrix of ImageNet images (rows: RGB).
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]], dtype=np.float32)
#: The same, normalised so that its largest column has unit norm (Lucid's ``color_correlation_normalized``).
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
#: Lucid's divisor of the inverse FFT ("reduces saturation")
FOURIER_DIVISOR = 4.0


@dataclass
class ImageParam:
    """The parameters of ``n`` images and the map from parameters to images.

    Attributes
    ----------
    tensors : list of torch.Tensor
        The leaves the optimiser updates (float32, on the model's device).
    render : callable
        ``render(tensors) -> images (m, C, H, W)`` in [0, 1]; for a batched
        parameterisation ``m`` is the leading size of the tensors given.
    batched : bool
        True when the tensors have a leading image axis that ``render`` keeps, so that
        perturbed copies can be rendered as extra rows.
    """

    tensors: list
    render: Any
    batched: bool

    def image(self, tensors: list | None = None):
        """Images ``(m, C, H, W)`` in [0, 1] of ``tensors`` (default: the current parameters)."""
        return self.render(self.tensors if tensors is None else tensors)


def _seeded_normal(shape: tuple[int, ...], sd: float, rng: np.random.Generator, device):
    """Normal noise of ``shape`` with standard deviation ``sd`` drawn from ``rng``, as float32 on ``device``."""
    return torch.as_tensor(rng.standard_normal(shape) * sd, dtype=torch.float32, device=device)


def _to_rgb(raw, decorrelate: bool):
    """``sigmoid(C raw)`` over the channel axis of ``raw`` ``(m, C, H, W)``; C is Lucid's colour matrix."""
    if decorrelate:
        matrix = torch.as_tensor(COLOR_CORRELATION, device=raw.device)
        raw = torch.einsum("dc,mchw->mdhw", matrix, raw)
    return torch.sigmoid(raw)


def _check_decorrelate(decorrelate: bool, channels: int, owner: str) -> bool:
    if decorrelate and channels != 3:
        raise ValueError(f"The 'decorrelate' parameter of {owner} applies Lucid's RGB colour matrix, so it needs "
                         f"3 channels; the model's samples have {channels}. Pass decorrelate=False.")
    return decorrelate


class Pixels(Configurable):
    """One free parameter per pixel and channel: ``image = sigmoid(C p)``.

    Parameters
    ----------
    sd : float, default 0.01
        Standard deviation of the initial parameters (the image starts near grey, 0.5).
    decorrelate : bool, default False
        Apply Lucid's colour decorrelation matrix ``C`` before the sigmoid (RGB only).
    """

    batched = True

    def __init__(self, *, sd: float = 0.01, decorrelate: bool = False) -> None:
        self.sd = check_float(sd, "sd", "Pixels", low=0.0, high=np.inf, high_open=True)
        self.decorrelate = bool(decorrelate)

    def build(self, n: int, chw: tuple[int, int, int], device, rng: np.random.Generator) -> ImageParam:
        """Parameters ``(n, C, H, W)`` of ``n`` images of shape ``chw`` (C, H, W)."""
        decorrelate = _check_decorrelate(self.decorrelate, chw[0], "Pixels")
        pixels = _seeded_normal((n, *chw), self.sd, rng, device)
        return ImageParam([pixels], lambda t: _to_rgb(t[0], decorrelate), batched=True)


def fourier_frequencies(h: int, w: int) -> np.ndarray:
    """Spatial frequency (cycles per pixel) of each coefficient of a real 2-D FFT, ``(h, w // 2 + 1)``."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def fourier_scale(h: int, w: int, decay_power: float) -> np.ndarray:
    """Olah et al.'s spectrum scaling ``1 / max(f, 1 / max(h, w)) ** decay_power``, ``(h, w // 2 + 1)``."""
    return 1.0 / np.maximum(fourier_frequencies(h, w), 1.0 / max(h, w)) ** decay_power


class Fourier(Configurable):
    """The decorrelated Fourier basis of Olah et al. (2017), as Lucid's ``fft_image``.

    The parameters are the real and imaginary parts of a real 2-D spectrum per image and
    channel, ``(n, C, H, W // 2 + 1, 2)``; the image is
    ``sigmoid(C irfft2(s * spectrum, norm="ortho") / 4)`` with ``s = 1 / max(f, 1/max(H, W))
    ** decay_power`` (``f`` in cycles per pixel) and ``C`` Lucid's colour decorrelation
    matrix (RGB only). The scaling makes a unit step in any coefficient move the image by
    an amount that falls with frequency, which whitens the gradient of natural-image
    statistics: optimisation runs faster and builds fewer high-frequency patterns.

    Parameters
    ----------
    sd : float, default 0.01
        Standard deviation of the initial spectrum.
    decay_power : float, default 1.0
        Exponent of the ``1/f`` scaling (0: no scaling, plain Fourier pixels).
    decorrelate : bool, default True
        Apply the colour decorrelation (needs 3 channels; set False otherwise).
    """

    batched = True

    def __init__(self, *, sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> None:
        self.sd = check_float(sd, "sd", "Fourier", low=0.0, high=np.inf, high_open=True)
        self.decay_power = check_float(decay_power, "decay_power", "Fourier", low=0.0, high=np.inf, high_open=True)
        self.decorrelate = bool(decorrelate)

    def build(self, n: int, chw: tuple[int, int, int], device, rng: np.random.Generator) -> ImageParam:
        """Spectra ``(n, C, H, W // 2 + 1, 2)`` of ``n`` images of shape ``chw`` (C, H, W)."""
        c, h, w = chw
        decorrelate = _check_decorrelate(self.decorrelate, c, "Fourier")
        scale = torch.as_tensor(fourier_scale(h, w, self.decay_power), dtype=torch.float32, device=device)
        spectrum = _seeded_normal((n, c, h, w // 2 + 1, 2), self.sd, rng, device)

        def render(tensors):
            coefficients = torch.view_as_complex(tensors[0].contiguous()) * scale
            raw = torch.fft.irfft2(coefficients, s=(h, w), norm="ortho") / FOURIER_DIVISOR
            return _to_rgb(raw, decorrelate)

        return ImageParam([spectrum], render, batched=True)


class DeepImagePrior(Configurable):
    """A small convolutional generator per image, with a fixed noise input (Ulyanov et al. 2018).

    Noise ``z`` ``(width, H / 2**levels, W / 2**levels)`` goes through ``levels`` blocks of
    [nearest 2x upsampling, 3x3 convolution, LeakyReLU(0.2)] and a 1x1 convolution to the
    image's channels, then a sigmoid (sizes that are not multiples of ``2**levels`` are
    resized to the image at the end). The weights and biases of every convolution are the
    parameters; ``z`` stays fixed. The ``n`` images of a run get independent generators
    (grouped convolutions, one group per image), so they are optimised together in one pass.

    Parameters
    ----------
    width : int, default 32
        Channels of the noise input and of every hidden layer.
    levels : int, default 3
        Upsampling blocks (the noise is ``2**levels`` times smaller than the image).
    noise_sd : float, default 0.1
        Standard deviation of the fixed noise input.
    """

    batched = False

    def __init__(self, *, width: int = 32, levels: int = 3, noise_sd: float = 0.1) -> None:
        self.width = check_int(width, "width", "DeepImagePrior")
        self.levels = check_int(levels, "levels", "DeepImagePrior", minimum=0)
        self.noise_sd = check_float(noise_sd, "noise_sd", "DeepImagePrior", low=0.0, high=np.inf, high_open=True)

    def build(self, n: int, chw: tuple[int, int, int], device, rng: np.random.Generator) -> ImageParam:
        """Generator weights for ``n`` images of shape ``chw`` (C, H, W)."""
        c, h, w = chw
        k = self.width
        low = (max(1, h // 2 ** self.levels), max(1, w // 2 ** self.levels))
        noise = _seeded_normal((1, n * k, *low), self.noise_sd, rng, device)
        shapes = [(k, k, 3)] * self.levels + [(c, k, 1)]
        tensors = []
        for c_out, c_in, size in shapes:   # PyTorch's default (Kaiming-uniform) initialisation, seeded
            bound = 1.0 / math.sqrt(c_in * size * size)
            tensors.append(torch.as_tensor(rng.uniform(-bound, bound, (n * c_out, c_in, size, size)),
                                           dtype=torch.float32, device=device))
            tensors.append(torch.as_tensor(rng.uniform(-bound, bound, n * c_out), dtype=torch.float32, device=device))
        F = torch.nn.functional

        def render(params):
            x = noise
            for i in range(self.levels):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.leaky_relu(F.conv2d(x, params[2 * i], params[2 * i + 1], padding=1, groups=n), 0.2)
            x = F.conv2d(x, params[-2], params[-1], groups=n)
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            return torch.sigmoid(x.reshape(n, c, h, w))

        return ImageParam(tensors, render, batched=False)


PARAMETERISATIONS = (Pixels, Fourier, DeepImagePrior)


def check_param(param: object, owner: str) -> Pixels | Fourier | DeepImagePrior:
    """Validate the ``param`` argument of ``owner``."""
    if not isinstance(param, PARAMETERISATIONS):
        raise TypeError(f"The 'param' parameter of {owner} must be a perturbx.visualize parameterisation "
                        f"(Pixels(), Fourier() or DeepImagePrior()). Got {type(param).__name__} instead.")
    return param
