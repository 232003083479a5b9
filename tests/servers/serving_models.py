"""Local models that the explainer runtime loads by name in tests (``"tests.servers.serving_models:heads"``).

Module-level functions over numpy batches, so the MLServer process and the test process build
the same models: ``heads`` returns every kind of output a target reads (class logits, a dense
map, an embedding, detections) for (n, 3, 16, 16) images; ``detector`` is the toy detector on
(n, 3, 32, 32); ``margin`` is a function target (top logit minus the second); ``slow_heads`` is
``heads`` answering late.
"""

from __future__ import annotations

import time

import numpy as np

from tests.servers.toy_models import multi_head, toy_detector

heads = multi_head(np.random.default_rng(7).normal(size=(4, 3, 16, 16)))
detector = toy_detector


def margin(outputs) -> np.ndarray:
    """Scalar (n, 1): the largest logit minus the second largest."""
    logits = np.sort(np.asarray(outputs["logits"]), axis=1)
    return (logits[:, -1] - logits[:, -2])[:, None]


#: batch sizes that ``slow_heads`` was called with (in-process tests read it)
calls: list[int] = []


def slow_heads(batch: np.ndarray) -> dict[str, np.ndarray]:
    """``heads`` answering after 0.2 s, recording each call's batch size in ``calls``."""
    calls.append(len(batch))
    time.sleep(0.2)
    return heads(batch)
