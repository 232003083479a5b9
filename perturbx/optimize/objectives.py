"""Terms of the mask objectives (torch, differentiable; every term returns one value per mask).

Losses are minimised. Pixel-size constants are given for a 224 x 224 image, as in the
papers, and scaled so that the same relative mask costs the same at any image size:
``REFERENCE_PIXELS = 224 ** 2`` turns means over pixels back into the papers' sums.
"""

from __future__ import annotations

import numpy as np

from .masks import _torch

#: image side (pixels) at which the papers' constants are stated
REFERENCE_SIDE = 224
REFERENCE_PIXELS = REFERENCE_SIDE ** 2
GAMES = ("deletion", "preservation")
#: what the model term of a mask objective is made of (MeaningfulPerturbation)
OBJECTIVES = ("log_odds", "log_odds_to_chance", "score")


def game_loss(scores, game: str):
    """Loss of the target's scores ``(n,)`` under a game.

    ``"deletion"``: the mask deletes (its zeros) what makes the score drop, so the loss is
    the score. ``"preservation"``: the mask keeps (its ones) what holds the score up, so
    the loss is minus the score.
    """
    return scores if game == "deletion" else -scores


def log_odds_loss(log_odds, reference, floor: float, game: str, depth: float = 1.0):
    """Model term from a class's log-odds ``(n,)``: how much of the way to chance is left.

    ``reference`` (n,) is the unperturbed input's log-odds ``l_x`` and ``floor`` the
    log-odds at chance level, ``-log(C - 1)``; ``span = l_x - floor`` (at least 1e-6, for a
    class already at chance). Deletion: ``max(l - floor + depth * span, 0) / span - depth``,
    1 for the input, 0 once the class is down to chance, and ``-depth`` at the lowest
    target, as far below chance as ``depth`` times the input was above it. With
    ``depth = 1`` (default) the deletion keeps paying through chance until the class is
    as confidently absent as it was present; with ``depth = 0`` it stops paying at chance
    ("the model is undecided"), where deleting the edges of a flat object often suffices.
    Bounded either way, so the area term decides the rest. Preservation:
    ``max(l_x - max(l, floor), 0) / span`` (``depth`` unused), 0 while the mask keeps the
    input's log-odds, 1 at chance.
    """
    span = (reference - floor).clamp_min(1e-6)
    if game == "deletion":
        return (log_odds - floor + depth * span).clamp_min(0.0) / span - depth
    return (reference - log_odds.clamp_min(floor)).clamp_min(0.0) / span


def l1_area(masks, game: str):
    """Fraction of the image the game pays for, ``(n,)``: deleted ``mean(1 - m)`` or kept ``mean(m)``.

    Times ``REFERENCE_PIXELS`` this is the paper's ``||1 - m||_1`` at 224 px.
    """
    area = masks.flatten(1).mean(dim=1)
    return 1.0 - area if game == "deletion" else area


def total_variation(masks, beta: float = 3.0):
    """``mean_u |s grad m(u)|^beta`` over both axes, ``(n,)``, in units of a 224-px image.

    ``s = sqrt(H W) / 224`` rescales the per-pixel differences so that, times
    ``REFERENCE_PIXELS``, this is the paper's ``sum_u ||grad m(u)||_beta^beta`` of the same
    mask drawn at 224 x 224 (finite differences along rows and along columns).
    """
    h, w = masks.shape[-2:]
    s = float(np.sqrt(h * w)) / REFERENCE_SIDE
    dy = (s * (masks[:, 1:, :] - masks[:, :-1, :])).abs().pow(beta).flatten(1).sum(dim=1)
    dx = (s * (masks[:, :, 1:] - masks[:, :, :-1])).abs().pow(beta).flatten(1).sum(dim=1)
    return (dy + dx) / (h * w)


def area_reference(n_pixels: int, areas, device=None):
    """Sorted target masks ``(A, n_pixels)``: ``int(n_pixels (1 - a))`` zeros, then ones (TorchRay's rounding)."""
    torch = _torch()
    ref = torch.ones(len(areas), n_pixels, device=device)
    for i, a in enumerate(areas):
        ref[i, : int(n_pixels * (1.0 - a))] = 0.0
    return ref


def area_ranking(masks, reference):
    """Ranking-based area constraint of Fong et al. (2019), ``(n,)``.

    ``mean((sort(m) - r)^2)`` between the mask's values sorted ascending and the sorted
    target ``r`` (:func:`area_reference`): zero exactly when the mask is binary with the
    target area, whatever its shape.
    """
    ranked = masks.flatten(1).sort(dim=1).values
    return (ranked - reference).pow(2).mean(dim=1)
