"""The training loop: FastSHAP's objective on the queried games, validated against KernelSHAP.

For a minibatch of images the network gives raw values ``(B, T, M)``, scaled by a fixed
``value_scale`` and normalised additively so that every image's values sum exactly to
``f(x) - f(baseline)`` for every target (:func:`perturbx.amortized.game.normalise`); the
loss is the Shapley kernel's least-squares objective over the image's coalitions,

    mean_{b, k, t} w_bt (v_bt(z_bk) - v_bt(0) - z_bk . phi_bt)^2 / value_var,

a mean without the kernel's weights because the coalitions are drawn from the kernel itself
(in complementary pairs). The target weights ``w_bt`` are 1 (FastSHAP's objective) unless
``top_weight`` gives each image's top trained class (largest ``f(x)``) that many times the
weight of its other classes, all scaled to mean 1 (:func:`target_weights`). ``value_var``
is the mean square of ``v(z) - v(0)`` over the training rows, so the loss is in units of
the game's own spread (about 1 for an untrained network). After each epoch the network
explains the validation images and its values are compared with KernelSHAP's (mean Pearson
correlation over the images, each on its top trained class); the best epoch's weights are
kept, and training stops after ``patience`` epochs without improvement. Everything a
resumed run needs (weights, optimiser, schedule, history) is in :meth:`Trainer.state_dict`;
each epoch's shuffle comes from a stream of its own (``seed``, epoch), so a resumed run
repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import GameTable
from .game import normalise

__all__ = ["TrainConfig", "Trainer", "Validation", "explain_batch", "pearson_rows", "raw_values", "target_weights"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (see :class:`perturbx.Amortized`)."""

    epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    top_weight: float = 1.0


@dataclass
class Validation:
    """Held-out images and KernelSHAP's values of their top trained class.

    Attributes
    ----------
    images : tensor (n, C, H, W)
    delta : ndarray (n, T)
        ``f(x) - f(baseline)`` of every trained target.
    column : ndarray (n,) int
        Which of the T targets was validated (the top trained class).
    reference : ndarray (n, M)
        KernelSHAP's values of that target.
    errors : ndarray (n, M)
        KernelSHAP's jackknife standard errors.
    """

    images: torch.Tensor
    delta: np.ndarray
    column: np.ndarray
    reference: np.ndarray
    errors: np.ndarray

    def pearson(self, net: nn.Module, scale: float) -> float:
        """Mean Pearson correlation, over the images, of ``net``'s values of the validated target with KernelSHAP's."""
        phi = explain_batch(net, self.images, self.delta, scale)
        return float(pearson_rows(phi[np.arange(len(phi)), self.column], self.reference).mean())


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (n, M) -> (n,); 0 for a flat row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1))
    return np.divide((a * b).sum(1), denom, out=np.zeros(len(a)), where=denom > 0)


def target_weights(full: np.ndarray, top_weight: float) -> np.ndarray | None:
    """Loss weights ``(N, T)`` of each training image's targets: ``top_weight`` for its top one, 1 for the rest.

    ``full`` (N, T) are the scores ``f(x)``; the top target is the largest (the first on a tie).
    The weights are scaled to mean 1 over all entries, so the loss keeps its units. None for
    ``top_weight == 1`` (every weight 1: FastSHAP's objective, computed without weights).
    """
    if top_weight == 1.0:
        return None
    w = np.ones(full.shape)
    w[np.arange(len(full)), np.argmax(full, axis=1)] = top_weight
    return w / w.mean()


def raw_values(net: nn.Module, images: torch.Tensor, scale: float, batch_size: int = 64) -> np.ndarray:
    """The network's values ``(n, T, M)`` float64 of ``images`` before the efficiency normalisation.

    One forward pass per ``batch_size`` images (eval mode, no autograd), times ``scale``
    (the unit of the game's values, :func:`perturbx.amortized.fitting.value_scale`).
    """
    net.eval()
    parts = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            parts.append(net(images[lo:lo + batch_size]).flatten(2).double().cpu().numpy())
    return np.concatenate(parts) * scale


def explain_batch(net: nn.Module, images: torch.Tensor, delta: np.ndarray, scale: float,
                  batch_size: int = 64) -> np.ndarray:
    """Normalised values ``(n, T, M)`` float64 of ``images``: they sum to ``delta`` ``(n, T)`` exactly."""
    return normalise(raw_values(net, images, scale, batch_size), np.asarray(delta, dtype=np.float64))


@dataclass
class Trainer:
    """Fits ``net`` to the games of ``table`` (images ``(N, C, H, W)``), validating after every epoch."""

    net: nn.Module
    images: torch.Tensor
    table: GameTable
    validation: Validation
    config: TrainConfig
    scale: float
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -np.inf
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    stale: int = 0
    stopped: str = ""

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.config.epochs)
        t = self.table
        self._z = torch.from_numpy(t.z.astype(np.float32))
        self._gain = torch.from_numpy((t.values - t.empty[:, None, :]).astype(np.float32))
        self._delta = torch.from_numpy((t.full - t.empty).astype(np.float32))
        self.value_var = float(max(np.mean((t.values - t.empty[:, None, :]) ** 2), 1e-12))
        weights = target_weights(t.full, self.config.top_weight)
        #: (N, T) loss weight of each image's targets (:func:`target_weights`); None: all 1
        self.weights = None if weights is None else torch.from_numpy(weights.astype(np.float32))

    @property
    def done(self) -> bool:
        return bool(self.stopped)

    def run(self, on_epoch: Callable[[Trainer], None] | None = None) -> None:
        """Train until ``epochs`` or the early stop; ``on_epoch(self)`` after each epoch (checkpoints, progress)."""
        while not self.done:
            loss = self._train_epoch()
            score = self.validation.pearson(self.net, self.scale)
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "loss": loss, "validation_pearson": score})
            if score > self.best_score + 1e-4:
                self.best_score, self.best_epoch, self.stale = score, self.epoch, 0
                self.best_state = copy.deepcopy(self.net.state_dict())
            else:
                self.stale += 1
            if self.stale >= self.config.patience:
                self.stopped = f"early stop: no better validation Pearson for {self.config.patience} epochs"
            elif self.epoch >= self.config.epochs:
                self.stopped = f"reached epochs={self.config.epochs}"
            if on_epoch is not None:
                on_epoch(self)

    def _train_epoch(self) -> float:
        self.net.train()
        n, size = len(self.table), self.config.batch_size
        order = torch.from_numpy(np.random.default_rng([self.config.seed, self.epoch]).permutation(n))
        total = 0.0
        for lo in range(0, n, size):
            i = order[lo:lo + size]
            if len(i) < 2 and n >= 2:  # batch normalisation needs two images
                continue
            phi = normalise(self.net(self.images[i]).flatten(2) * self.scale, self._delta[i])
            pred = torch.einsum("bkm,btm->bkt", self._z[i], phi)
            squared = (self._gain[i] - pred) ** 2
            loss = (squared if self.weights is None else squared * self.weights[i][:, None, :]).mean() / self.value_var
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(i)
        self.schedule.step()
        return total / n

    def best_network(self) -> nn.Module:
        """The network with the best validation epoch's weights (the current ones if none was better)."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        return self.net.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": list(self.history), "best_score": self.best_score,
                "best_epoch": self.best_epoch, "best_state": self.best_state, "stale": self.stale,
                "stopped": self.stopped, "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.history = int(state["epoch"]), [dict(h) for h in state["history"]]
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self.best_state, self.stale, self.stopped = state["best_state"], int(state["stale"]), str(state["stopped"])
