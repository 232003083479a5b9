"""Meaningful perturbation (Fong & Vedaldi 2017): the smallest smooth blur that changes the decision."""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_choice, check_float, check_int_tuple
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.optimize.base import MaskExplainer, Setup
from perturbx.optimize.masks import UpsampledMask, _torch
from perturbx.optimize.objectives import (
    GAMES,
    OBJECTIVES,
    REFERENCE_PIXELS,
    game_loss,
    l1_area,
    log_odds_loss,
    total_variation,
)
from perturbx.optimize.optimizers import Adam, MaskProblem
from perturbx.optimize.renderers import BlendPerturbation, blur
from perturbx.targets import Class, Target


class MeaningfulPerturbation(MaskExplainer):
    """Optimise a smooth mask that deletes (or preserves) the evidence for a class.

    Deletion game (default): find the keep-mask ``m`` (1 keeps a pixel, 0 replaces it by
    the blurred image) minimising ``L(x_m) + l1_coeff ||1 - m||_1 + tv_coeff
    sum_u |grad m(u)|^tv_beta``; the saliency is ``1 - m``, what had to be deleted.
    Preservation game: the mask keeps (its ones) what holds the class up, ``L`` rewarding
    the kept class, ``l1_coeff ||m||_1``; the saliency is ``m``. The mask is a
    ``mask_shape`` grid bilinearly upsampled to the image and clamped to [0, 1] after
    every step.

    The model term ``L`` (``objective``): by default (``"log_odds"``, for class targets)
    the class's softmax log-odds ``l = log p_c - log sum_{k != c} p_k`` measured in units of
    the way from the input's ``l_x`` down to chance ``l_0 = -log(C - 1)``: ``(l - l_0) /
    (l_x - l_0)``, 1 for the input, 0 at chance, and held at -1 below ``2 l_0 - l_x``, where the
    class is as confidently absent as it was present
    (:func:`perturbx.optimize.objectives.log_odds_loss`). The paper uses the probability
    ``p_c`` itself (``objective="score"``), whose gradient vanishes when the model is
    confident: at ``p_c = 0.9999`` a deletion that halves the odds moves ``p_c`` by 1e-4, and
    on classifiers with probabilities near 1 every mask stays where it started. The
    log-odds move by the same amount at any confidence, and the term is bounded like a
    probability (a range of 2 instead of 1), so the area and smoothness coefficients keep
    their meaning. ``objective="log_odds_to_chance"`` stops paying at chance (the term
    ``max(l - l_0, 0) / (l_x - l_0)``, the default of earlier versions): there the model is
    only undecided, and on small flat-coloured objects deleting their edges suffices, so
    the map marks a rim; going on to the mirrored target deletes more of the object
    (benchmarks/RESULTS.md, issue 20). Log-odds are computed from
    probabilities when the model returns them (rows that sum to 1) without forming
    ``1 - p_c``, so even a probability that rounds to 1.0 in float32 keeps its information,
    and from logits otherwise. For other targets (a detection, a region) the objective is
    their scalar, as the paper's.

    Defaults (224 x 224 images): blur sigma 10 px, a 28 x 28 mask, ``l1_coeff = 1e-4``,
    ``tv_coeff = 1e-2``, ``tv_beta = 3``, Adam with learning rate 0.1, 500 steps: the
    paper's settings as reproduced by the PyTorch re-implementation
    jacobgil/pytorch-explain-black-box (28 x 28 mask upsampled bilinearly, Adam 0.1,
    ``1e-4``, ``1e-2``, ``beta = 3`` in its first version; 500 iterations in its current
    one). The paper's text itself could not be consulted here. Pixel-size constants are
    scaled to the image: the blur sigma by ``s = sqrt(H W) / 224``; the L1 and TV sums are
    taken over the upsampled mask as if it were drawn at 224 x 224 (so the same relative
    mask costs the same at any size, see :mod:`perturbx.optimize.objectives`); the mask
    grid stays 28 x 28, a fixed fraction of the image (for objects a few percent of a small
    image, a coarser grid marks them better: ``tests/test_confident.py`` uses 14 x 14 at
    64 px). The coefficients assume a model term of order one: a probability, as in the
    paper, or the default normalised log-odds (from 1 down to -1), from logits or
    probabilities alike.

    A mask that never moved from its start (a model whose score does not respond, or a
    step budget too small) gives a constant map: ``extras["moved"]`` is False for that
    target and a ``RuntimeWarning`` says so, rather than returning it as an explanation.

    Parameters
    ----------
    game : {"deletion", "preservation"}, default "deletion"
    objective : {"log_odds", "log_odds_to_chance", "score"}, default "log_odds"
        The model term: the normalised log-odds above (class targets; other targets use
        their scalar), the same stopping at chance (the previous default, whose seeded
        results it reproduces), or the target's scalar as the paper (``"score"``).
    baseline : None, float, str, array or callable, default None
        What the mask's zeros show. None: the input blurred with ``blur_sigma``; anything
        else as in :mod:`perturbx.baselines`.
    blur_sigma : float, default 10.0
        Blur of the default baseline, in pixels of a 224-px image.
    mask_shape : int or (h, w), default 28
        Resolution of the optimised mask.
    l1_coeff, tv_coeff : float, default 1e-4, 1e-2
        Weights of the area and smoothness terms (224-px units).
    tv_beta : float, default 3.0
    steps : int, default 500
        Optimisation steps (one model row per target per step with autograd).
    learning_rate : float, default 0.1
        Adam's learning rate (both optimisers).
    optimizer : {"auto", "autograd", "zeroth_order"}, default "auto"
        "auto" back-propagates through a ``perturbx.adapters.Torch`` model and uses the
        zeroth-order estimate for any other adapter.
    n_pairs : int, default 8
        Zeroth-order only: antithetic pairs per step (``2 * n_pairs`` model rows per
        target per step).
    search_sigma : float, default 0.25
        Zeroth-order only: scale of the mask perturbations (masks live in [0, 1]).
    search_grid : int, default 8
        Zeroth-order only: side of the lattice of the smooth search directions.
    random_state : int, Generator or None
        Seed of the zeroth-order directions and of a ``"noise"`` baseline.
    max_queries : int, optional
        Stop the optimisation when it would exceed this many model rows (the first and
        the final scoring queries included).

    Notes
    -----
    ``Explanation.extras``: ``mask`` (H, W), the final keep-mask; ``mask_scores``, the
    target score of the input perturbed by it; ``objective`` and ``model_term`` (steps,);
    ``optimizer``; ``steps_done``; ``stopped_by_budget``. Queries: autograd
    ``1 + T (steps + 1)``; zeroth-order ``1 + T (2 n_pairs steps + 1)``.
    """

    single_mask = True

    def __init__(self, *, game: str = "deletion", objective: str = "log_odds", baseline=None,
                 blur_sigma: float = 10.0, mask_shape=28,
                 l1_coeff: float = 1e-4, tv_coeff: float = 1e-2, tv_beta: float = 3.0, steps: int = 500,
                 learning_rate: float = 0.1, optimizer: str = "auto", n_pairs: int = 8, search_sigma: float = 0.25,
                 search_grid: int = 8, random_state=None, max_queries: int | None = None) -> None:
        owner = "MeaningfulPerturbation"
        self.game = check_choice(game, "game", owner, GAMES)
        self.objective = check_choice(objective, "objective", owner, OBJECTIVES)
        self.baseline = None if baseline is None else check_baseline(baseline, owner)
        self.blur_sigma = check_float(blur_sigma, "blur_sigma", owner, low=0.0, high=np.inf, high_open=True)
        self.mask_shape = check_int_tuple(mask_shape, "mask_shape", owner)
        if min(self.mask_shape) < 2:
            raise ValueError(f"The 'mask_shape' parameter of {owner} must be at least 2 x 2. "
                             f"Got {mask_shape!r} instead.")
        self.l1_coeff = check_float(l1_coeff, "l1_coeff", owner, low=0.0, high=np.inf, high_open=True)
        self.tv_coeff = check_float(tv_coeff, "tv_coeff", owner, low=0.0, high=np.inf, high_open=True)
        self.tv_beta = check_float(tv_beta, "tv_beta", owner, low=1.0, high=np.inf, high_open=True)
        self._init_common(steps=steps, learning_rate=learning_rate, optimizer=optimizer, n_pairs=n_pairs,
                          search_sigma=search_sigma, search_grid=search_grid, random_state=random_state,
                          max_queries=max_queries)

    def _perturbed(self, setup: Setup) -> np.ndarray:
        """What a mask value of 0 shows, in the model's layout."""
        layout = setup.adapter.layout
        if self.baseline is None:
            return blur(setup.x, layout, self.blur_sigma * setup.scale)
        return resolve_baseline(self.baseline, setup.x, layout, setup.rng)

    def _problem(self, setup: Setup) -> MaskProblem:
        torch = _torch()
        render = BlendPerturbation(setup.x, self._perturbed(setup), setup.adapter.layout, setup.device)
        n = len(setup.targets)
        init = 1.0 if self.game == "deletion" else 0.5
        params = torch.full((n, *self.mask_shape), init, dtype=torch.float32, device=setup.device)
        l1 = self.l1_coeff * REFERENCE_PIXELS
        tv = self.tv_coeff * REFERENCE_PIXELS

        def regulariser(masks, step):
            return l1 * l1_area(masks, self.game) + tv * total_variation(masks, self.tv_beta)

        lr = self.learning_rate
        return MaskProblem(
            params=params, generate=UpsampledMask(setup.hw, self.mask_shape), render=render,
            targets=setup.targets, model_loss=self._model_loss(setup), regulariser=regulariser,
            make_optimizer=lambda: Adam(lr), steps=self.steps)

    def _prepare_target(self, target: Target) -> Target:
        """A class is explained through its log-odds unless ``objective="score"``."""
        if self.objective != "score" and isinstance(target, Class) and target.score == "output":
            index = target.index if target.index is None or not target.single else target.index[0]
            return Class(index, output=target.output, score="log_odds")
        return target

    def _model_loss(self, setup: Setup):
        """``(scores, positions) -> loss``: the normalised log-odds for a log-odds class, else the game's score."""
        target = setup.target
        if not (isinstance(target, Class) and target.score == "log_odds"):
            return lambda s, positions: game_loss(s, self.game)
        torch = _torch()
        reference = torch.as_tensor(setup.reference, dtype=torch.float32, device=setup.device)
        floor = target.chance_log_odds
        depth = 1.0 if self.objective == "log_odds" else 0.0

        def loss(scores, positions):
            ref = reference.to(scores.device)[torch.as_tensor(positions, device=scores.device)]
            return log_odds_loss(scores, ref.to(scores.dtype), floor, self.game, depth)

        return loss

    def _attributions(self, masks: np.ndarray) -> np.ndarray:
        return 1.0 - masks[:, 0] if self.game == "deletion" else masks[:, 0].copy()
