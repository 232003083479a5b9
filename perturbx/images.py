"""Reading images from files: the one reader of ``perturbx compare`` and :func:`perturbx.explain_dataset`.

:func:`read_image` turns a PNG, JPEG, BMP, GIF (first frame), TIFF or WebP file, or a
``.npy`` array, into one float32 sample in a model's layout, values of integer data
scaled to [0, 1]. :func:`image_files` lists the files of a folder that it reads. Pillow
decodes the image files (it comes with scikit-image and matplotlib); it is imported only
when an image file is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "image_files", "read_image"]

#: File name endings :func:`read_image` accepts (lower case; matched case-insensitively)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy")

_LAYOUTS = ("CHW", "HWC", "HW")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def image_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The files of ``folder`` that :func:`read_image` reads, sorted by path.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing folder (the caller says what to do when it is not one, or when the
        list is empty).
    recursive : bool, default False
        Also the files of its sub-folders.

    Returns
    -------
    list of pathlib.Path
    """
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike, *, layout: str = "CHW", channels: int | None = None,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file as a float32 sample in ``layout``.

    Parameters
    ----------
    path : str or os.PathLike
        A file ending in one of :data:`IMAGE_SUFFIXES`. Image files: greyscale stays one
        channel, colour becomes RGB (palette and CMYK converted, alpha dropped), 8- and
        16-bit values divided by 255 and 65535; a GIF gives its first frame. ``.npy``:
        an array ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` (channels last when only the
        last axis has 1, 3 or 4 entries), read without pickle; integers divided by their
        dtype's maximum, floats as stored.
    layout : {"CHW", "HWC", "HW"}, default "CHW"
        Layout of the result; "HW" averages the channels of a colour image.
    channels : {None, 1, 3}, default None
        None keeps the image's channels; 3 repeats a greyscale channel; 1 averages colour.
    size : (H, W), optional
        Resize to ``H x W`` pixels (bilinear, anti-aliased; scikit-image).

    Returns
    -------
    ndarray, float32
        ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)``.

    Raises
    ------
    ValueError
        The file does not exist, its type is not accepted, it cannot be decoded, an
        array has the wrong number of axes, or the channels cannot be converted.
    """
    path = Path(path)
    _check_options(layout, channels, size)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"read_image cannot read image {path}: files ending in {path.suffix or '(nothing)'!r} are "
                         f"not read; use one of {', '.join(IMAGE_SUFFIXES)}.")
    if not path.is_file():
        raise ValueError(f"read_image cannot read image {path}: no such file.")
    hwc = _read_npy(path) if path.suffix.lower() == ".npy" else _read_picture(path)
    hwc = _convert_channels(hwc, channels, path)
    if size is not None and hwc.shape[:2] != tuple(size):
        from skimage.transform import resize

        hwc = resize(hwc, tuple(size), order=1, anti_aliasing=True, preserve_range=True)
    hwc = hwc.astype(np.float32, copy=False)
    if layout == "HWC":
        return hwc
    if layout == "CHW":
        return np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    return hwc[..., 0] if hwc.shape[-1] == 1 else hwc.mean(axis=-1)


def _check_options(layout: object, channels: object, size: object) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"The 'layout' argument of read_image must be one of {_LAYOUTS}. Got {layout!r}.")
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise ValueError(f"The 'channels' argument of read_image must be None, 1 or 3. Got {channels!r}.")
    if size is not None:
        ok = (isinstance(size, (tuple, list)) and len(size) == 2
              and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size))
        if not ok:
            raise ValueError(f"The 'size' argument of read_image must be two ints >= 1 (H, W). Got {size!r}.")


def _scaled(arr: np.ndarray) -> np.ndarray:
    """Integers divided by their dtype's maximum, booleans as 0/1, floats as stored (float64)."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    return arr.astype(np.float64, copy=False)


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"read_image cannot read image {path}: not a .npy array without pickled objects "
                         f"({exc}).") from exc
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"read_image cannot read image {path}: the array has dtype {arr.dtype}; expected numbers.")
    if arr.ndim == 2:
        return _scaled(arr)[..., None]
    if arr.ndim != 3:
        raise ValueError(f"read_image cannot read image {path}: the array has shape {arr.shape}; expected (H, W), "
                         f"(C, H, W) or (H, W, C).")
    channels_last = arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4)
    return _scaled(arr if channels_last else np.moveaxis(arr, 0, -1))


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.seek(0)
            if img.mode in _SIXTEEN_BIT:
                arr = np.asarray(img, dtype=np.float64) / 65535.0
            elif img.mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                arr = arr / 65535.0 if img.mode == "I" and arr.min() >= 0 and arr.max() <= 65535 else arr
            elif img.mode in ("1", "L", "LA", "La"):
                arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"read_image cannot read image {path}: {exc}") from exc
    return arr[..., None] if arr.ndim == 2 else arr


def _convert_channels(hwc: np.ndarray, channels: int | None, path: Path) -> np.ndarray:
    have = hwc.shape[-1]
    if channels is None or channels == have:
        return hwc
    if channels == 3 and have == 1:
        return np.repeat(hwc, 3, axis=-1)
    if channels == 1 and have in (3, 4):
        return hwc[..., :3].mean(axis=-1, keepdims=True)
    raise ValueError(f"read_image cannot give image {path} {channels} channel(s): it has {have}. Pass channels=None "
                     f"to keep them, or convert the file.")
