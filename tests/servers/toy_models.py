"""Tiny numpy models with known outputs for the target tests (standard library and numpy only).

``toy_detector`` is a detector whose two boxes never move and whose scores are the mean
brightness inside each box, so hiding a box's pixels lowers its score and nothing else
does. ``multi_head`` returns every kind of output a target reads, as named outputs.
"""

from __future__ import annotations

import numpy as np

#: the toy detector's boxes (x1, y1, x2, y2) on a 32 x 32 image
TOY_BOXES = np.array([[4, 4, 12, 12], [18, 14, 28, 26]], dtype=np.float64)


def toy_detector(batch: np.ndarray) -> dict[str, np.ndarray]:
    """Named outputs ``boxes`` (n, 2, 4), ``scores`` (n, 2), ``labels`` (n, 2) of a CHW batch (n, C, 32, 32)."""
    batch = np.asarray(batch, dtype=np.float64)
    n = len(batch)
    scores = np.stack([batch[:, :, y1:y2, x1:x2].mean(axis=(1, 2, 3)) for x1, y1, x2, y2 in TOY_BOXES.astype(int)],
                      axis=1)
    return {"boxes": np.broadcast_to(TOY_BOXES, (n, 2, 4)).copy(), "scores": scores,
            "labels": np.tile(np.array([0.0, 1.0]), (n, 1))}


def multi_head(weights: np.ndarray):
    """A model over (n, 3, 16, 16) returning ``logits`` (n, 4), ``dense`` (n, 3, 16, 16), ``embedding`` (n, 8)
    and a detector's ``boxes``, ``scores`` and ``labels``; ``weights`` (4, 3, 16, 16) seeds it."""
    w = np.asarray(weights, dtype=np.float64)

    def fn(batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(batch, dtype=np.float64)
        n = len(x)
        logits = x.reshape(n, -1) @ w.reshape(4, -1).T
        dense = np.cumsum(x, axis=2) / 16.0
        embedding = np.concatenate([logits, np.tanh(logits)], axis=1)
        boxes = np.broadcast_to(np.array([[2.0, 2.0, 8.0, 8.0], [8.0, 6.0, 15.0, 14.0]]), (n, 2, 4)).copy()
        scores = np.stack([x[:, :, 2:8, 2:8].mean(axis=(1, 2, 3)), x[:, :, 6:14, 8:15].mean(axis=(1, 2, 3))], 1)
        return {"logits": logits, "dense": dense, "embedding": embedding, "boxes": boxes, "scores": scores,
                "labels": np.tile(np.array([0.0, 1.0]), (n, 1))}

    return fn
