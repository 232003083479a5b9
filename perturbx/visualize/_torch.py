"""The one place ``perturbx.visualize`` imports PyTorch, with the message that says what to install."""

from __future__ import annotations

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("perturbx.visualize needs PyTorch for the image parameterisations and transformations "
                      "(the model itself can be any black box): pip install 'perturbx[torch]'") from exc

__all__ = ["torch"]
