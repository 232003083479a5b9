"""Targets of embedding models: similarity of the output to a reference embedding."""

from __future__ import annotations

import numpy as np

from .base import BindInfo, Outputs, Target, pick_output, torch_module

METRICS = ("cosine", "dot", "euclidean")


class Similarity(Target):
    """Similarity of an embedding model's output ``(n, D)`` to reference embedding(s).

    Why does the model find this image like another one: explain ``sim(f(x), r)`` where
    ``r = f(x_ref)`` is the other image's embedding (xaitk-saliency's similarity saliency
    answers the same question with another estimator).

    Parameters
    ----------
    reference : array (D,) or (T, D)
        Reference embedding(s); T of them give T scalars.
    metric : {"cosine", "dot", "euclidean"}, default "cosine"
        ``"euclidean"`` is the negative distance, so that larger is more alike for every metric.
    output : str, optional
        For a model with named outputs: which one holds the embedding.
    """

    differentiable = True

    def __init__(self, reference: object, metric: str = "cosine", *, output: str | None = None) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim not in (1, 2) or ref.shape[-1] < 1 or not np.all(np.isfinite(ref)):
            raise ValueError(f"The 'reference' of Similarity must be a finite embedding of shape (D,) or (T, D). "
                             f"Got shape {ref.shape}.")
        if metric not in METRICS:
            raise ValueError(f"The 'metric' of Similarity must be one of {METRICS}. Got {metric!r}.")
        if metric == "cosine" and np.any(np.linalg.norm(ref.reshape(-1, ref.shape[-1]), axis=1) == 0):
            raise ValueError("The 'reference' of Similarity has a zero vector, whose cosine similarity is undefined.")
        self.single = ref.ndim == 1
        self.reference, self.metric, self.output = ref.reshape(-1, ref.shape[-1]), metric, output

    def _flat(self, arr):
        if arr.ndim < 2:
            raise ValueError(f"target={self!r} needs embeddings of shape (n, D); the model returned shape "
                             f"{tuple(arr.shape)}.")
        flat = arr.reshape(len(arr), -1)
        if flat.shape[1] != self.reference.shape[1]:
            raise ValueError(f"target={self!r}: the model returns embeddings of {flat.shape[1]} values but the "
                             f"reference has {self.reference.shape[1]}; they must have the same length.")
        return flat

    def bind(self, output: Outputs, info: BindInfo) -> Similarity:
        self._flat(np.asarray(pick_output(output, self.output, self), dtype=np.float64))
        return self

    def scores(self, outputs: Outputs) -> np.ndarray:
        emb = self._flat(np.asarray(pick_output(outputs, self.output, self), dtype=np.float64))
        ref = self.reference
        if self.metric == "dot":
            return emb @ ref.T
        if self.metric == "euclidean":
            return -np.sqrt(np.maximum(((emb[:, None, :] - ref[None]) ** 2).sum(-1), 0.0))
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb @ ref.T) / np.maximum(norms, 1e-12) / np.linalg.norm(ref, axis=1)[None]

    def torch_scores(self, outputs):
        torch = torch_module()
        emb = self._flat(pick_output(outputs, self.output, self))
        ref = torch.as_tensor(self.reference, dtype=emb.dtype, device=emb.device)
        if self.metric == "dot":
            return emb @ ref.T
        if self.metric == "euclidean":
            return -torch.cdist(emb, ref)
        return torch.nn.functional.normalize(emb, dim=1, eps=1e-12) @ torch.nn.functional.normalize(ref, dim=1).T

    @property
    def labels(self) -> np.ndarray:
        return np.arange(len(self.reference), dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [f"{self.metric} similarity" + ("" if self.single else f" to reference {i}")
                for i in range(len(self.reference))]

    def subset(self, index: int) -> Similarity:
        return Similarity(self.reference[index], self.metric, output=self.output)

    def describe(self) -> dict:
        return {"kind": "Similarity", "metric": self.metric, "labels": self.labels.tolist(),
                "embedding_size": int(self.reference.shape[1])}

    def __repr__(self) -> str:
        shape = self.reference.shape if not self.single else self.reference.shape[1:]
        return f"Similarity(reference=<{shape}>, metric={self.metric!r})"
