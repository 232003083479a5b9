"""Saving and loading: ``torch.save`` of plain data and tensors, ``torch.load(weights_only=True)``.

A file is a dict with ``format`` (:data:`FORMAT`) and ``format_version``; numpy arrays
are stored as tensors (``weights_only`` loading reads tensors and plain Python values
only, never arbitrary pickled objects). Writes go through a temporary file and a rename
(:func:`perturbx.models._cache.save_atomic`), so a reader never sees half a file. A file
that cannot be read, is not an ``Amortized`` file, or lacks what a use needs is a
ValueError that says which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perturbx.models._cache import save_atomic

__all__ = ["FORMAT", "FORMAT_VERSION", "from_blob", "read", "to_blob", "write"]

FORMAT = "perturbx.Amortized"
FORMAT_VERSION = 1
#: keys every file has besides its contents
HEADER = ("format", "format_version")


def to_blob(value: Any) -> Any:
    """``value`` with every numpy array (nested in dicts, lists and tuples) as a tensor."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: to_blob(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_blob(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_blob(value: Any) -> Any:
    """Inverse of :func:`to_blob`: tensors back to numpy arrays (state dicts are read with ``torch`` directly)."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: from_blob(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_blob(v) for v in value]
    return value


def write(blob: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``blob`` (with the format keys added) to ``path`` atomically."""
    save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, **to_blob(blob)}, Path(path))


def read(path: str | os.PathLike, *, needs: tuple[str, ...] = (), what: str = "an Amortized explainer") -> dict:
    """The dict stored at ``path``, checked to be an ``Amortized`` file holding the keys ``needs``.

    Raises
    ------
    ValueError
        The file does not exist, cannot be read by ``torch.load(weights_only=True)`` (truncated,
        corrupt, or holding pickled objects), is not an ``Amortized`` file, has another format
        version, or lacks one of ``needs``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Cannot load {what} from {str(path)!r}: no such file.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"Cannot load {what} from {str(path)!r}: the file is not a readable checkpoint "
                         f"(torch.load(weights_only=True) failed: {type(exc).__name__}: {exc}). It may be "
                         f"truncated or corrupt; save or train it again.") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"Cannot load {what} from {str(path)!r}: it is not a {FORMAT} file (format: {found!r}).")
    if blob.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"Cannot load {what} from {str(path)!r}: it has format version "
                         f"{blob.get('format_version')!r}, this perturbx reads version {FORMAT_VERSION}.")
    missing = [k for k in needs if k not in blob]
    if missing:
        raise ValueError(f"Cannot load {what} from {str(path)!r}: the file lacks {missing}"
                         + ("; it is the checkpoint of an unfinished fit: resume it with Amortized(..., "
                            "checkpoint=path).fit(model, data)." if "calibration" in missing else "."))
    return blob
