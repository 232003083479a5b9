"""The weight cache shared by the built-in models: where it lives, atomic save, checked load.

A cache file is a ``torch.save``-d dictionary with the model's ``state_dict``,
the recipe ``version`` it was trained with and whatever metadata the model
keeps (held-out scores, constructor arguments). It is written to a temporary
file in the same directory and renamed into place, so a concurrent reader sees
either the old file or the whole new one, and read with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def default_cache_dir() -> Path:
    """``$PERTURBX_CACHE`` if set, else ``~/.cache/perturbx``."""
    env = os.environ.get("PERTURBX_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "perturbx"


def cache_file(cache_dir: str | os.PathLike | None, stem: str, version: str) -> Path:
    """Path ``cache_dir / f"{stem}_v{version}.pt"`` (``None``: :func:`default_cache_dir`)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{stem}_v{version}.pt"


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``blob`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_train(
    path: Path,
    version: str,
    *,
    retrain: bool,
    build: Callable[[dict[str, Any]], nn.Module],
    train: Callable[[], tuple[nn.Module, dict[str, Any]]],
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a cached model, or train it and cache it.

    Parameters
    ----------
    path : pathlib.Path
        Cache file.
    version : str
        Recipe version the file must carry; another version counts as unusable.
    retrain : bool
        Train and overwrite even if the file is usable.
    build : callable
        ``build(blob)`` returns an untrained model of the architecture that the
        cached metadata ``blob`` describes; its ``state_dict`` is then loaded.
    train : callable
        ``train()`` returns ``(model, metadata)``; the metadata (plain Python
        values) is stored next to the weights and the version.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on the CPU.
    blob : dict
        The cached dictionary (metadata, ``version`` and ``state_dict``).

    Warns
    -----
    RuntimeWarning
        When an existing file is unusable (unreadable, another version, weights
        that do not fit); the model is then retrained and the file replaced.
    """
    if not retrain and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("version") != version:
                raise ValueError(f"recipe version {blob.get('version')!r} in cache")
            model = build(blob)
            model.load_state_dict(blob["state_dict"])
            return model.eval(), blob
        except Exception as exc:  # any unusable cache file -> retrain
            warnings.warn(f"ignoring unusable cache file {path} ({exc}); retraining",
                          RuntimeWarning, stacklevel=3)
    model, metadata = train()
    blob = {**metadata, "state_dict": model.state_dict(), "version": version}
    save_atomic(blob, path)
    return model.eval(), blob
