"""Private helpers shared across perturbx: argument checks, layouts, targets, seeds.

Everything a public function validates at its boundary goes through here, so every
error message has the same shape: which argument, what was expected, what was seen,
and, where there is one, the fix.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LAYOUTS = ("CHW", "HWC", "HW")

RandomState = int | np.random.Generator | None


def check_random_state(random_state: RandomState, *, owner: str = "random_state") -> np.random.Generator:
    """Turn ``random_state`` into a ``numpy.random.Generator``.

    An int gives the same stream on every call (run-to-run reproducible); a Generator
    is used as is (and advances); None draws fresh entropy.
    """
    if random_state is None or isinstance(random_state, numbers.Integral):
        if random_state is not None and int(random_state) < 0:
            raise ValueError(f"{owner} must be a non-negative int, a numpy Generator or None. "
                             f"Got {random_state!r} instead.")
        return np.random.default_rng(None if random_state is None else int(random_state))
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise TypeError(f"{owner} must be an int, a numpy.random.Generator or None. "
                    f"Got {type(random_state).__name__} instead.")


def check_int(value: object, name: str, owner: str, *, minimum: int = 1) -> int:
    """Validate an integer parameter ``>= minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"The {name!r} parameter of {owner} must be an int >= {minimum}. "
                         f"Got {value!r} instead.")
    return int(value)


def check_float(value: object, name: str, owner: str, *, low: float, high: float,
                low_open: bool = False, high_open: bool = False) -> float:
    """Validate a real parameter in the interval [low, high] (ends optionally open)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"The {name!r} parameter of {owner} must be a real number in "
                         f"{lo}{low}, {high}{hi}. Got {value!r} instead.")
    return float(value)


def check_int_tuple(value: object, name: str, owner: str, *, lengths: Sequence[int] = (2,)) -> tuple[int, ...]:
    """Validate a tuple of positive ints (an int is broadcast to the first allowed length)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * lengths[0]
    ok = isinstance(value, Sequence) and len(value) in lengths and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        shapes = " or ".join(f"{n} ints" for n in lengths)
        raise ValueError(f"The {name!r} parameter of {owner} must be a positive int or a tuple of "
                         f"{shapes} >= 1. Got {value!r} instead.")
    return tuple(int(v) for v in value)  # type: ignore[union-attr]


def check_choice(value: object, name: str, owner: str, choices: Sequence[str]) -> str:
    """Validate a string option against its allowed values."""
    if value not in choices:
        raise ValueError(f"The {name!r} parameter of {owner} must be one of {tuple(choices)}. "
                         f"Got {value!r} instead.")
    return str(value)


@dataclass(frozen=True)
class Layout:
    """Where the channel axis of one sample is.

    ``"CHW"`` (channels first, PyTorch), ``"HWC"`` (channels last, TensorFlow/PIL) or
    ``"HW"`` (one channel, no channel axis).
    """

    name: str

    def __post_init__(self) -> None:
        check_choice(self.name, "input_layout", "the adapter", LAYOUTS)

    @property
    def ndim(self) -> int:
        return len(self.name)

    def spatial_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) of a sample of this layout."""
        i = self.name.index("H")
        return int(sample_shape[i]), int(sample_shape[i + 1])

    def n_channels(self, sample_shape: tuple[int, ...]) -> int:
        return 1 if self.name == "HW" else int(sample_shape[self.name.index("C")])

    def to_chw(self, sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(C, H, W) of a sample of this layout."""
        return (self.n_channels(sample_shape), *self.spatial_shape(sample_shape))

    def expand_masks(self, masks):
        """Make masks broadcast against a batch ``(n, *sample_shape)`` of this layout.

        ``masks`` is ``(n, H, W)`` (one value for every channel of a pixel) or
        ``(n, C, H, W)`` (per channel). Works for numpy arrays and torch tensors.
        """
        if masks.ndim == 3:
            if self.name == "CHW":
                return masks[:, None, :, :]
            if self.name == "HWC":
                return masks[:, :, :, None]
            return masks
        if self.name == "CHW":
            return masks
        if self.name == "HWC":
            return masks.permute(0, 2, 3, 1) if hasattr(masks, "permute") else masks.transpose(0, 2, 3, 1)
        return masks[:, 0]

    def to_chw_array(self, a: np.ndarray) -> np.ndarray:
        """Reorder one numpy sample of this layout to (C, H, W), or a batch to (..., C, H, W), as a view (no copy)."""
        if self.name == "HWC":
            return np.moveaxis(a, -1, -3)
        if self.name == "HW":
            return a[..., None, :, :]
        return a

    def from_chw_array(self, a: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_chw_array`; also for a batch ``(..., C, H, W)``, as a view (no copy)."""
        if self.name == "HWC":
            return np.moveaxis(a, -3, -1)
        if self.name == "HW":
            return a[..., 0, :, :]
        return a


#: Channel counts that give an image away (grey, RGB, RGBA), for the layout check of :func:`check_sample`
IMAGE_CHANNELS = (1, 3, 4)
#: The other two axes must both be at least this long before an axis of IMAGE_CHANNELS is taken for channels
MIN_IMAGE_SIDE = 8
#: Integer dtypes of raw pixels, refused by :func:`check_sample` (their scale, 0..255 or 0..65535, is not ours
#: to guess)
PIXEL_DTYPES = (np.uint8, np.uint16)


def check_sample(x: object, layout: Layout, expected_shape: tuple[int, ...] | None = None,
                 *, dtype=np.float32) -> np.ndarray:
    """Validate one input sample (no batch axis) against a layout and return it as ``dtype``.

    Parameters
    ----------
    x : array-like
        One sample, in ``layout``, without a batch axis. Floats, bools and signed ints are
        converted to ``dtype``; raw pixels (uint8, uint16) are refused, never rescaled.
    layout : Layout
    expected_shape : tuple of int, optional
        The shape the model declares for one sample. When it is None, a 3-axis sample
        that looks like the other channel order (:func:`layout_mismatch`) is refused.
    dtype : numpy dtype, default float32

    Raises
    ------
    TypeError
        ``x`` is not array-like with a numeric dtype, or holds raw uint8/uint16 pixels.
    ValueError
        Wrong number of axes for the layout, a shape that differs from the model's, a
        shape that looks like the other channel order, or NaN/inf values.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"x must be a numpy array (one sample, no batch axis). Got {type(x).__name__}.") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"x must be a numeric array. Got dtype {arr.dtype}.")
    if arr.dtype in PIXEL_DTYPES:
        raise TypeError(_pixel_dtype_message(arr.dtype))
    if arr.ndim != layout.ndim:
        hint = ""
        if arr.ndim == layout.ndim + 1 and arr.shape[0] == 1:
            hint = " It looks batched: pass x[0] (one sample, without the batch axis)."
        elif arr.ndim in (2, 3):
            hint = f" If the sample is laid out differently, set input_layout on the adapter (one of {LAYOUTS})."
        raise ValueError(f"x must be one sample of layout {layout.name!r} with {layout.ndim} axes. "
                         f"Got shape {arr.shape}.{hint}")
    if expected_shape is not None and tuple(arr.shape) != tuple(expected_shape):
        hint = _transposed_hint(arr.shape, expected_shape)
        raise ValueError(f"x has shape {arr.shape} but the model expects samples of shape "
                         f"{tuple(expected_shape)} (layout {layout.name!r}).{hint}")
    if expected_shape is None and (guess := layout_mismatch(arr.shape, layout)) is not None:
        raise ValueError(_layout_message(arr.shape, layout, guess))
    if min(layout.spatial_shape(arr.shape)) < 1:
        raise ValueError(f"x has an empty spatial axis: shape {arr.shape}.")
    arr = arr.astype(dtype, copy=False)
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"x contains {n_bad} NaN or infinite values; explanations need finite input.")
    return arr


def check_sample_shape(sample_shape: object, layout: Layout, owner: str) -> tuple[int, ...]:
    """Validate a declared ``sample_shape`` (positive ints, one per axis of ``layout``).

    A declared shape is taken as the user's word: it is not put through the channel-order
    guess of :func:`check_sample` (this is how a model with, say, 224 channels of 224 x 3
    pixels is accepted).
    """
    try:
        items = tuple(sample_shape) if not isinstance(sample_shape, str) else None  # type: ignore[arg-type]
    except TypeError:
        items = None
    if not items or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in items):
        raise ValueError(f"The 'sample_shape' parameter of {owner} must be a tuple of positive ints, the shape of "
                         f"one sample without the batch axis. Got {sample_shape!r} instead.")
    shape = tuple(int(s) for s in items)
    if len(shape) != layout.ndim:
        raise ValueError(f"The 'sample_shape' parameter of {owner} must have {layout.ndim} axes for "
                         f"input_layout={layout.name!r}. Got {shape}; set input_layout to the layout of one sample "
                         f"(one of {LAYOUTS}).")
    return shape


def layout_mismatch(shape: tuple[int, ...], layout: Layout) -> str | None:
    """The channel order a 3-axis ``shape`` looks like when it is not ``layout``'s, else None.

    For "CHW": a last axis of 1, 3 or 4 (:data:`IMAGE_CHANNELS`) after two axes of at least
    :data:`MIN_IMAGE_SIDE` looks "HWC" (e.g. ``(224, 224, 3)``); for "HWC" the reverse
    (``(3, 224, 224)`` looks "CHW"). Other shapes and layouts give None.
    """
    if len(shape) != 3 or layout.name not in ("CHW", "HWC"):
        return None
    first, middle, last = (int(s) for s in shape)
    if layout.name == "CHW" and last in IMAGE_CHANNELS and min(first, middle) >= MIN_IMAGE_SIDE:
        return "HWC"
    if layout.name == "HWC" and first in IMAGE_CHANNELS and min(middle, last) >= MIN_IMAGE_SIDE:
        return "CHW"
    return None


def _layout_message(shape: tuple[int, ...], layout: Layout, guess: str) -> str:
    """The error of :func:`check_sample` for a sample whose shape looks like the ``guess`` channel order."""
    c, h, w = Layout(guess).to_chw(shape)
    read_c, read_h, read_w = layout.to_chw(shape)
    moved = "np.moveaxis(x, -1, 0)" if guess == "HWC" else "np.moveaxis(x, 0, -1)"
    order = "channels first" if layout.name == "CHW" else "channels last"
    return (f"x has shape {tuple(shape)}, which looks like input_layout={guess!r} ({c} channels of {h}x{w} "
            f"pixels), but the adapter's input_layout is {layout.name!r} ({order}), which would read it as "
            f"{read_c} channels of {read_h}x{read_w} pixels. Pass {moved} to match input_layout={layout.name!r}, "
            f"or make the adapter with input_layout={guess!r} if the model takes that order. If the model really "
            f"takes {read_c} channels of {read_h}x{read_w} pixels, say so with sample_shape={tuple(shape)} on the "
            f"adapter.")


def _transposed_hint(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """A hint when ``shape`` is ``expected`` with its channel axis moved to the other end."""
    if len(shape) == 3 and len(expected) == 3:
        if tuple(shape) == (expected[1], expected[2], expected[0]):
            return " It looks channels-last: pass np.moveaxis(x, -1, 0), or check the adapter's input_layout."
        if tuple(shape) == (expected[2], expected[0], expected[1]):
            return " It looks channels-first: pass np.moveaxis(x, 0, -1), or check the adapter's input_layout."
    return ""


def _pixel_dtype_message(dtype: np.dtype) -> str:
    top = np.iinfo(dtype).max
    return (f"x has dtype {dtype} (raw pixel values 0..{top}); perturbx refuses it rather than convert it, "
            f"because the value range the model takes cannot be told from the dtype. Pass "
            f"x.astype(np.float32) / {top} for a model that takes [0, 1], or x.astype(np.float32) for one that "
            f"takes 0..{top} (perturbx.images.read_image reads image files to [0, 1]).")


class Configurable:
    """``get_params()`` and ``repr`` from the names of ``__init__``'s parameters (scikit-learn style).

    Every explainer stores each ``__init__`` parameter under its own name.
    """

    def get_params(self) -> dict[str, Any]:
        """The explainer's configuration, as given to ``__init__``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if not isinstance(v, np.ndarray))
        return f"{type(self).__name__}({args})"
