"""What the mask-optimisation explainers share: validation, optimiser choice, the run, the result."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx._utils import check_choice, check_float, check_int, check_random_state
from perturbx.adapters import Adapter, Torch
from perturbx.explainer import Explainer, Request
from perturbx.targets import Target

from .masks import _torch
from .objectives import REFERENCE_SIDE
from .optimizers import OPTIMIZERS, Autograd, MaskProblem, OptimResult, ZerothOrder, grad_enabled, score_torch_batch

#: smallest image side the mask parametrisations make sense for
MIN_SIDE = 8
#: a mask whose values spread less than this never moved from its start (its map is constant)
MOVED_TOLERANCE = 1e-3


def _moved(masks: np.ndarray) -> np.ndarray:
    """Whether each mask ``(T, A, H, W)`` is not constant: ``(T, A)`` bool."""
    flat = masks.reshape(*masks.shape[:2], -1)
    return (flat.max(axis=-1) - flat.min(axis=-1)) > MOVED_TOLERANCE


@dataclass
class Setup:
    """One explanation's inputs, as the method's ``_problem`` sees them.

    ``x`` is the validated sample in the model's layout, ``hw`` its (H, W), ``scale``
    the factor from 224-px constants to this image (``sqrt(H W) / 224``), ``target``
    the bound target, ``targets`` the positions ``0 .. T-1`` of its scalars (a mask's
    loss reads the scalar at its position), ``device`` where masks and batches are built.
    """

    x: np.ndarray
    hw: tuple[int, int]
    scale: float
    adapter: Adapter
    target: Target
    device: Any
    rng: np.random.Generator
    #: the target's scalars for the unperturbed input, (T,)
    reference: np.ndarray | None = None

    @property
    def targets(self) -> np.ndarray:
        """Positions ``(T,)`` of the target's scalars."""
        return np.arange(self.target.n_outputs)


class MaskExplainer(Explainer):
    """Base of :class:`~perturbx.MeaningfulPerturbation` and :class:`~perturbx.ExtremalPerturbation`.

    A method says how to build its :class:`~perturbx.optimize.optimizers.MaskProblem`
    (``_problem``) and how final masks become attributions (``_attributions``); the
    base validates the input and targets, picks the optimiser from the adapter, runs it,
    scores the final masks once and builds the :class:`~perturbx.Explanation`.
    """

    def _init_common(self, *, steps: int, learning_rate: float, optimizer: str, n_pairs: int,
                     search_sigma: float, search_grid: int, random_state: object, max_queries: int | None) -> None:
        owner = type(self).__name__
        self.steps = check_int(steps, "steps", owner)
        self.learning_rate = check_float(learning_rate, "learning_rate", owner, low=0.0, high=np.inf,
                                         low_open=True, high_open=True)
        self.optimizer = check_choice(optimizer, "optimizer", owner, OPTIMIZERS)
        self.n_pairs = check_int(n_pairs, "n_pairs", owner)
        self.search_sigma = check_float(search_sigma, "search_sigma", owner, low=0.0, high=1.0, low_open=True)
        self.search_grid = check_int(search_grid, "search_grid", owner, minimum=2)
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", owner, minimum=2)

    @abstractmethod
    def _problem(self, setup: Setup) -> MaskProblem:
        """The masks, renderer, loss and schedule for one explanation."""

    @abstractmethod
    def _attributions(self, masks: np.ndarray) -> np.ndarray:
        """Saliency ``(T, H, W)`` from the final masks ``(T, masks per target, H, W)``."""

    def _method_extras(self, masks: np.ndarray, setup: Setup) -> dict[str, Any]:
        """Extras of the method that are not per target (e.g. the areas asked for)."""
        return {}

    #: True when a method optimises one mask per target (its extras then drop that axis)
    single_mask = False

    def _select_optimizer(self, adapter: Adapter, target: Target, rng: np.random.Generator):
        choice = self.optimizer
        if choice == "auto":
            choice = "autograd" if isinstance(adapter, Torch) and target.differentiable else "zeroth_order"
        if choice == "autograd":
            if not target.differentiable:
                raise TypeError(f"optimizer='autograd' back-propagates through the target, but target={target!r} "
                                f"is not a differentiable torch expression of the output; use "
                                f"optimizer='zeroth_order' (or 'auto').")
            return Autograd(adapter)
        return ZerothOrder(adapter, self.n_pairs, self.search_sigma, self.search_grid, rng)

    def _check_sample(self, adapter: Adapter, x: object) -> np.ndarray:
        x = adapter.check_sample(x)
        hw = adapter.layout.spatial_shape(x.shape)
        if min(hw) < MIN_SIDE:
            raise ValueError(f"{type(self).__name__} optimises a mask over an image of at least "
                             f"{MIN_SIDE} x {MIN_SIDE} pixels; got a sample of shape {x.shape} "
                             f"(H, W = {hw}). Check the adapter's input_layout.")
        return x

    def _explain(self, request: Request) -> tuple[np.ndarray, dict[str, Any]]:
        """Optimise the mask(s) of every target scalar, score them once, turn them into maps."""
        adapter, hw, target = request.adapter, request.hw, request.target
        optimiser = self._select_optimizer(adapter, target, request.rng)
        device = adapter.device if isinstance(adapter, Torch) else _torch().device("cpu")
        setup = Setup(request.x, hw, float(np.sqrt(hw[0] * hw[1])) / REFERENCE_SIDE, adapter, target, device,
                      request.rng, request.reference)
        budget = request.budget
        with grad_enabled():
            problem = self._problem(setup)
            problem.target = target
            if budget is not None:
                budget -= len(problem.targets)  # keep one row per mask for scoring the final masks
            result = optimiser.run(problem, budget)
            kept = self._score_masks(problem, result, adapter)
        masks = result.masks.reshape(target.n_outputs, -1, *hw)
        self._warn_if_constant(masks, target)
        extras = self._extras(result, masks, kept, target.single)
        extras.update(optimizer=optimiser.name, steps_done=result.steps_done, optimizer_queries=result.n_queries,
                      stopped_by_budget=result.stopped_by_budget, **self._method_extras(masks, setup))
        return self._attributions(masks), extras

    @staticmethod
    def _score_masks(problem: MaskProblem, result: OptimResult, adapter: Adapter) -> np.ndarray:
        """The target scalar of the input perturbed by each final mask ``(n,)`` (one batched call)."""
        torch = _torch()
        with torch.no_grad():
            batch = problem.render(problem.generate(result.params))
        scores = score_torch_batch(adapter, batch, problem.target)
        return scores[np.arange(len(scores)), problem.targets]

    def _warn_if_constant(self, masks: np.ndarray, target: Target) -> None:
        """A RuntimeWarning naming the targets whose masks are constant (the optimiser never moved them)."""
        flat = _moved(masks)
        if not flat.all():
            names = [n for n, ok in zip(target.names, flat.all(axis=1), strict=True) if not ok]
            warnings.warn(f"{type(self).__name__}: the mask of {names} stayed constant (spread below "
                          f"{MOVED_TOLERANCE}), so its map is constant and explains nothing: the model's "
                          f"{'score' if len(names) == 1 else 'scores'} did not respond to the optimiser. "
                          f"extras['moved'] is False there.", RuntimeWarning, stacklevel=4)

    def _extras(self, result: OptimResult, masks: np.ndarray, kept: np.ndarray, single: bool) -> dict[str, Any]:
        """Per-target results: ``masks`` (T, A, H, W), ``mask_scores`` (T, A), ``moved`` (T, A), ``objective``
        and ``model_term`` (T, steps, A); the A axis is dropped for one mask per target, T for one target."""
        n_targets, per = masks.shape[:2]
        out = {"masks": masks, "mask_scores": kept.reshape(n_targets, per), "moved": _moved(masks)}
        for name in ("objective", "model_term"):
            out[name] = getattr(result, name).reshape(result.steps_done, n_targets, per).transpose(1, 0, 2)
        if self.single_mask:
            out = {"mask" if k == "masks" else k: v[..., 0] if k in ("objective", "model_term") else v[:, 0]
                   for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if single else out
