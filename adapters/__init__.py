"""Model adapters: the only way perturbx talks to a model.

``Callable`` (a function over numpy batches), ``Torch`` (a ``torch.nn.Module``, batches
built on its device), ``SKLearn`` (a fitted estimator over flattened samples), ``ONNX``
(an ONNX Runtime session) and ``Remote`` (a model server speaking the Open Inference
Protocol, or any JSON endpoint).
``as_adapter`` wraps a bare model with defaults. PyTorch is imported only when a
``Torch`` adapter is made.
"""

from __future__ import annotations

import sys

from .base import Adapter
from .function import Callable
from .onnx_runtime import ONNX
from .remote import MalformedResponseError, Remote, RemoteError
from .sklearn_estimator import SKLearn
from .torch_module import Torch

__all__ = ["ONNX", "Adapter", "Callable", "MalformedResponseError", "Remote", "RemoteError", "SKLearn", "Torch",
           "as_adapter"]


def as_adapter(model: object) -> Adapter:
    """Return ``model`` if it is an adapter, else wrap it with default settings.

    A ``torch.nn.Module`` becomes ``Torch(model)``, any other callable
    ``Callable(model)``. A scikit-learn estimator needs ``SKLearn(est, sample_shape=...)``
    because the sample shape cannot be guessed from a flat-feature model.
    """
    if isinstance(model, Adapter):
        return model
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return Torch(model)
    if hasattr(model, "predict_proba") or hasattr(model, "decision_function"):
        raise TypeError(f"{type(model).__name__} looks like a scikit-learn estimator; wrap it as "
                        f"perturbx.adapters.SKLearn(model, sample_shape=...) so perturbx knows the "
                        f"shape of one sample.")
    if callable(model):
        return Callable(model)
    raise TypeError(f"model must be a perturbx adapter, a torch.nn.Module or a callable "
                    f"fn(batch) -> scores. Got {type(model).__name__}.")
