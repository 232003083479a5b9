"""Shared fixtures: small models whose behaviour the tests know."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx.adapters import Adapter


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
