"""A small dataset run, for tests/test_dataset_runs.py: imported by the test, and run as a subprocess
(``python -m tests.servers.dataset_job OUT N_JOBS``) that the test kills part-way.

``PERTURBX_TEST_SLEEP`` (seconds per model call, default 0) slows the model down so that a
kill lands in the middle of the run.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from perturbx import RISE
from perturbx.adapters import Callable
from perturbx.dataset_runs import explain_dataset

N_IMAGES, SHAPE, N_CLASSES = 12, (3, 12, 12), 3


def images() -> np.ndarray:
    return np.random.default_rng(0).random((N_IMAGES, *SHAPE)).astype(np.float32)


def weights() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(N_CLASSES, int(np.prod(SHAPE))))


def linear_scores(batch: np.ndarray) -> np.ndarray:
    """A linear classifier; sleeps ``PERTURBX_TEST_SLEEP`` seconds per call."""
    delay = float(os.environ.get("PERTURBX_TEST_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    return batch.reshape(len(batch), -1).astype(np.float64) @ weights().T


def job() -> tuple:
    """(explainer, model, images) of the run."""
    return RISE(n_masks=32, grid_size=3, random_state=0), Callable(linear_scores, batch_size=16), images()


if __name__ == "__main__":
    explainer, model, data = job()
    explain_dataset(explainer, model, data, out=sys.argv[1], n_jobs=int(sys.argv[2]))
