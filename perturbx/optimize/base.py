"""What the mask-optimisation explainers share: validation, optimiser choice, the run, the result."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx._utils import Configurable, check_choice, check_float, check_int, check_random_state, normalise_targets
from perturbx.adapters import Adapter, Torch, as_adapter
from perturbx.explanation import Explanation

from .masks import _torch
from .objectives import REFERENCE_SIDE
from .optimizers import OPTIMIZERS, Autograd, MaskProblem, OptimResult, ZerothOrder, grad_enabled, score_torch_batch

#: smallest image side the mask parametrisations make sense for
MIN_SIDE = 8


@dataclass
class Setup:
    """One explanation's inputs, as the method's ``_problem`` sees them.

    ``x`` is the validated sample in the model's layout, ``hw`` its (H, W), ``scale``
    the factor from 224-px constants to this image (``sqrt(H W) / 224``), ``targets``
    the classes explained (T,), ``device`` where masks and batches are built.
    """

    x: np.ndarray
    hw: tuple[int, int]
    scale: float
    adapter: Adapter
    targets: np.ndarray
    device: Any
    rng: np.random.Generator


class MaskExplainer(Configurable, ABC):
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

    def _select_optimizer(self, adapter: Adapter, rng: np.random.Generator):
        choice = self.optimizer
        if choice == "auto":
            choice = "autograd" if isinstance(adapter, Torch) else "zeroth_order"
        if choice == "autograd":
            return Autograd(adapter)
        return ZerothOrder(adapter, self.n_pairs, self.search_sigma, self.search_grid, rng)

    def explain(self, model: object, x: np.ndarray, target: int | list[int] | None = None) -> Explanation:
        """Optimise the mask(s) explaining the model's score(s) for one image.

        Parameters
        ----------
        model : Adapter or callable or torch.nn.Module
            A :mod:`perturbx.adapters` adapter, or a bare model wrapped with defaults.
        x : ndarray
            One image in the adapter's ``input_layout`` (``CHW``, ``HWC`` or ``HW``), no
            batch axis, at least 8 x 8 pixels.
        target : int, sequence of int or None
            Class(es) to explain; None explains the model's top class for ``x``.

        Returns
        -------
        Explanation
            ``attributions`` ``(H, W)`` for None or an int, ``(T, H, W)`` for a sequence;
            ``extras`` as documented by the method.
        """
        start = time.perf_counter()
        adapter = as_adapter(model)
        x = adapter.check_sample(x)
        hw = adapter.layout.spatial_shape(x.shape)
        if min(hw) < MIN_SIDE:
            raise ValueError(f"{type(self).__name__} optimises a mask over an image of at least "
                             f"{MIN_SIDE} x {MIN_SIDE} pixels; got a sample of shape {x.shape} "
                             f"(H, W = {hw}). Check the adapter's input_layout.")
        queries_before = adapter.n_queries
        scores = adapter.predict_batch(adapter.backend.asarray(x[None], adapter.dtype))[0]
        targets, single = normalise_targets(target, len(scores), int(np.argmax(scores)))
        rng = check_random_state(self.random_state)
        optimiser = self._select_optimizer(adapter, rng)
        device = adapter.device if isinstance(adapter, Torch) else _torch().device("cpu")
        setup = Setup(x, hw, float(np.sqrt(hw[0] * hw[1])) / REFERENCE_SIDE, adapter, targets, device, rng)
        budget = None if self.max_queries is None else self.max_queries - 1
        with grad_enabled():
            problem = self._problem(setup)
            if budget is not None:
                budget -= len(problem.targets)  # keep one row per mask for scoring the final masks
            result = optimiser.run(problem, budget)
            kept = self._score_masks(problem, result, adapter)
        masks = result.masks.reshape(len(targets), -1, *hw)
        maps = self._attributions(masks)
        extras = self._extras(result, masks, kept, single)
        extras.update(optimizer=optimiser.name, steps_done=result.steps_done, optimizer_queries=result.n_queries,
                      stopped_by_budget=result.stopped_by_budget, **self._method_extras(masks, setup))
        return Explanation(
            attributions=maps[0] if single else maps, targets=targets,
            n_queries=adapter.n_queries - queries_before, seconds=time.perf_counter() - start,
            method=type(self).__name__, params=self.get_params(), scores=scores[targets],
            input=x, input_layout=adapter.layout.name, extras=extras)

    @staticmethod
    def _score_masks(problem: MaskProblem, result: OptimResult, adapter: Adapter) -> np.ndarray:
        """The target score of the input perturbed by each final mask ``(n,)`` (one batched call)."""
        torch = _torch()
        with torch.no_grad():
            batch = problem.render(problem.generate(result.params))
        scores = score_torch_batch(adapter, batch)
        return scores[np.arange(len(scores)), problem.targets]

    def _extras(self, result: OptimResult, masks: np.ndarray, kept: np.ndarray, single: bool) -> dict[str, Any]:
        """Per-target results: ``masks`` (T, A, H, W), ``mask_scores`` (T, A), ``objective`` and
        ``model_term`` (T, steps, A); the A axis is dropped for one mask per target, T for one target."""
        n_targets, per = masks.shape[:2]
        out = {"masks": masks, "mask_scores": kept.reshape(n_targets, per)}
        for name in ("objective", "model_term"):
            out[name] = getattr(result, name).reshape(result.steps_done, n_targets, per).transpose(1, 0, 2)
        if self.single_mask:
            out = {"mask" if k == "masks" else k: v[..., 0] if k in ("objective", "model_term") else v[:, 0]
                   for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if single else out
