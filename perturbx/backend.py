"""Array backends: where perturbed batches are built and estimates are folded.

An adapter owns its backend. Plain Python and scikit-learn models get the numpy
backend; a torch module gets a torch backend on its device, so that masks, perturbed
batches and running estimates never leave the GPU. Only the handful of operations the
renderers and estimators need are here; everything else is ordinary broadcasting and
indexing, which numpy arrays and torch tensors share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor


class NumpyBackend:
    """Arrays in host memory."""

    name = "numpy"
    device = "cpu"

    def asarray(self, a: np.ndarray, dtype=np.float32) -> np.ndarray:
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def bmm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(a, b, out=out)

    def cast(self, a: np.ndarray, dtype=np.float32) -> np.ndarray:
        return a.astype(dtype, copy=False)

    def zeros(self, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def concatenate(self, arrays: list) -> np.ndarray:
        return np.concatenate(arrays)


class TorchBackend:
    """Tensors on one torch device; nothing here records autograd history."""

    name = "torch"

    def __init__(self, device) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)

    def _dtype(self, dtype):
        return getattr(self._torch, np.dtype(dtype).name)

    def asarray(self, a: np.ndarray, dtype=np.float32):
        if self.device.type != "cuda":
            return self._torch.as_tensor(np.asarray(a), dtype=self._dtype(dtype), device=self.device)
        # through pinned memory, without waiting: a copy from pageable memory would wait for the GPU's queue
        host = np.require(np.asarray(a, dtype=np.dtype(dtype)), requirements=("C", "W"))
        return self._torch.from_numpy(host).pin_memory().to(self.device, non_blocking=True)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def arange(self, n: int):
        return self._torch.arange(n, device=self.device)

    def bmm(self, a, b, out=None):
        return self._torch.matmul(a, b) if out is None else self._torch.matmul(a, b, out=out)

    def cast(self, a, dtype=np.float32):
        return a.to(self._dtype(dtype))

    def zeros(self, shape: tuple[int, ...], dtype=np.float64):
        return self._torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def concatenate(self, arrays: list):
        return self._torch.cat(arrays)


NUMPY = NumpyBackend()
