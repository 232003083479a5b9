"""Distillation: one network trained to give an ensemble's values, so that explaining costs one forward pass.

An :class:`~perturbx.amortized.network.Ensemble` of k networks agrees better with the Shapley
values than any of its members but costs k forward passes per explanation. The student starts
from the first member's weights and is fitted, with no model query, to the ensemble's
normalised values on the training images:

    mean_{b, t, m} w_bt (phi_student_btm - phi_ensemble_btm)^2 / mean(phi_ensemble^2),

with the training loss's target weights ``w_bt`` (all 1 unless ``top_class_weight`` weights each
image's top class, :func:`~perturbx.amortized.train.target_weights`: the student spends its
capacity where the members were asked to). It runs at half the training learning rate, on a
cosine schedule over ``epochs``; the last epoch's weights are kept (the schedule ends at a
learning rate of zero; the validation images are too few to choose between nearly equal epochs).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .game import normalise
from .network import Ensemble
from .train import TrainConfig, explain_batch

__all__ = ["distil"]


def distil(ensemble: Ensemble, images: torch.Tensor, delta: np.ndarray, scale: float, config: TrainConfig,
           epochs: int, weights: torch.Tensor | None = None) -> tuple[nn.Module, list[float]]:
    """A single network fitted to ``ensemble``'s values on ``images`` ``(N, C, H, W)``.

    Parameters
    ----------
    ensemble : Ensemble
    images : tensor (N, C, H, W)
        The training images.
    delta : ndarray (N, T)
        ``f(x) - f(baseline)`` of every trained target (the normalisation's sums).
    scale : float
        The unit of the networks' raw output.
    config : TrainConfig
        Batch size, learning rate (halved), weight decay and seed of the fit.
    epochs : int
        Passes over the images.
    weights : tensor (N, T), optional
        The training loss's weight of each image's targets (:attr:`Trainer.weights
        <perturbx.amortized.train.Trainer>`, from :func:`~perturbx.amortized.train.target_weights`);
        None weights every target alike.

    Returns
    -------
    (network, losses)
        The student in eval mode, and the mean loss of each epoch.
    """
    targets = torch.from_numpy(explain_batch(ensemble, images, delta, scale).astype(np.float32))  # (N, T, M)
    sums = torch.from_numpy(np.asarray(delta, dtype=np.float32))
    var = max(float((targets ** 2).mean()), 1e-12)
    student = copy.deepcopy(ensemble.members[0]).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate / 2,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    n, size, losses = len(images), config.batch_size, []
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([config.seed, 3, epoch]).permutation(n))
        total = 0.0
        for lo in range(0, n, size):
            i = order[lo:lo + size]
            if len(i) < 2 and n >= 2:  # batch normalisation needs two images
                continue
            phi = normalise(student(images[i]).flatten(2) * scale, sums[i])
            squared = (phi - targets[i]) ** 2
            loss = (squared if weights is None else squared * weights[i][:, :, None]).mean() / var
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(i)
        schedule.step()
        losses.append(total / n)
    return student.eval(), losses
