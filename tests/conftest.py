"""Shared fixtures: small models whose behaviour the tests know; one thread choice for the whole run.

Threads: the test run uses :func:`perturbx.dataset_runs.default_threads` (``$PERTURBX_THREADS``,
else half the cores) for torch and for the BLAS/OpenMP pools of numpy and scipy, set here once,
before any test module imports torch. The subprocesses the tests start (examples, README blocks,
workers) inherit it through ``PERTURBX_THREADS`` and ``OMP_NUM_THREADS``. Run
``PERTURBX_THREADS=4 python -m pytest ...`` to change it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from perturbx.adapters import Adapter
from perturbx.dataset_runs import THREADS_ENV, default_threads

THREADS = default_threads()
os.environ[THREADS_ENV] = str(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # torch, imported later by the test modules, starts with it


def pytest_configure(config) -> None:
    """Pin the thread pools already loaded (numpy's BLAS; torch if a plugin imported it) to THREADS."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=THREADS)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(THREADS)


class SpyAdapter(Adapter):
    """Numpy adapter that records every batch the engine sends to the model."""

    def __init__(self, fn, *, batch_size: int = 16, input_layout: str = "CHW") -> None:
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self.fn = fn
        self.batch_sizes: list[int] = []

    def _forward(self, batch):
        self.batch_sizes.append(len(batch))
        return self.fn(np.asarray(batch))


def linear_model(weights: np.ndarray):
    """Scores ``(N, K)`` = per-class weighted pixel sums; ``weights`` is ``(K, *sample_shape)``."""
    flat = weights.reshape(len(weights), -1).astype(np.float64)
    return lambda batch: batch.reshape(len(batch), -1).astype(np.float64) @ flat.T


@pytest.fixture
def spy():
    return SpyAdapter


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def small_cnn():
    """A random-init torch CNN over (3, 20, 23) images with 5 classes (float64 off: float32)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 5))
    return net.eval()
