"""The two optimisation loops behind every visualisation: autograd and antithetic NES.

A :class:`Problem` holds ``m`` objectives with ``k`` images each (``n = m k`` rows, the
rows of objective ``i`` are ``i k ... i k + k - 1``), their image parameters, the random
transformations and the step schedule. Both loops maximise the objectives with Adam on
the parameters and draw a fresh transformation per image and step.

* :func:`run_autograd` back-propagates through a ``perturbx.adapters.Torch`` module (weights
  frozen for the call, flags restored), reading named layers through forward hooks: one
  forward row per image and step.
* :func:`run_zeroth_order` needs only the adapter's ``predict_batch``: per image and step it
  draws ``n_pairs`` Gaussian directions ``e`` in parameter space, scores the transformed
  images of ``theta +- sigma e`` (the two of a pair under the same transformation) in one
  batched call, and estimates the gradient of the model terms as
  ``mean((f+ - f-) e) / (2 sigma)`` (antithetic Gaussian smoothing, i.e. NES); image terms
  (total variation, alpha-norm, pixel diversity) get their exact gradient.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from perturbx.engine import QueryBudgetError, progress_enabled
from perturbx.optimize.optimizers import Adam, frozen, grad_enabled, score_torch_batch

from ._layers import capture
from ._torch import torch
from .objectives import Context, Objective
from .param import ImageParam
from .transforms import Transforms


@dataclass
class Problem:
    """One visualisation run's inputs (see the module docstring)."""

    adapter: object
    param: ImageParam
    objectives: list[Objective]
    per: int
    transforms: Transforms
    rng: np.random.Generator
    steps: int
    learning_rate: float
    layers: dict = field(default_factory=dict)
    monitor: list[Objective] | None = None

    @property
    def n(self) -> int:
        return len(self.objectives) * self.per

    def values(self, ctx: Context, objectives: list[Objective] | None = None):
        """Each row's objective ``(n,)``: objective ``i`` evaluated on its own ``k`` rows."""
        objectives = self.objectives if objectives is None else objectives
        k = self.per
        return torch.cat([obj(ctx.rows(slice(i * k, (i + 1) * k))) for i, obj in enumerate(objectives)])

    def to_layout(self, images):
        """Images ``(n, C, H, W)`` in the model's layout."""
        name = self.adapter.layout.name
        if name == "HWC":
            return images.permute(0, 2, 3, 1)
        if name == "HW":
            return images[:, 0]
        return images


@dataclass
class Trace:
    """What a loop did: objective per step ``(steps_done, n)``, queries, whether the budget cut it short."""

    objective: np.ndarray
    n_queries: int
    stopped_by_budget: bool
    monitor: np.ndarray | None = None


def steps_within(budget: int | None, per_step: int, steps: int, name: str) -> tuple[int, bool]:
    """Steps that fit in ``budget`` model rows; a QueryBudgetError if not even one does."""
    if budget is None or budget >= per_step * steps:
        return steps, False
    if budget < per_step:
        raise QueryBudgetError(f"{name} needs {per_step} model queries per step (and one per image at the end) "
                               f"but max_queries leaves {max(budget, 0)}; raise max_queries.")
    return budget // per_step, True


def _bar(steps: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=desc, unit="step", disable=not progress_enabled(progress), leave=False)


def module_logits(adapter, batch):
    """The module's output ``(n, n_classes)`` with autograd (no softmax), counted as ``n`` queries."""
    out = adapter.module(batch)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(f"The torch module must return scores of shape (n, n_classes); got "
                         f"{getattr(out, 'shape', type(out).__name__)}.")
    adapter.n_queries += int(batch.shape[0])
    return out


def run_autograd(problem: Problem, budget: int | None, progress: bool | None) -> Trace:
    """Gradient ascent through a Torch module; parameters updated in place."""
    steps, cut = steps_within(budget, problem.n, problem.steps, "The autograd optimiser")
    tensors = problem.param.tensors
    rules = [Adam(problem.learning_rate) for _ in tensors]
    history = np.zeros((steps, problem.n))
    monitor = None if problem.monitor is None else np.zeros((steps, problem.n))
    module = problem.adapter.module
    with grad_enabled(), frozen(module), capture(problem.layers) as recorder, _bar(steps, progress,
                                                                                    "visualize") as bar:
        for t in tensors:
            t.requires_grad_(True)
        for step in range(steps):
            image = problem.param.image()
            seen = problem.transforms(image, problem.rng)
            logits = module_logits(problem.adapter, problem.to_layout(seen))
            ctx = Context(image, logits, recorder.take())
            values = problem.values(ctx)
            if monitor is not None:
                monitor[step] = problem.values(ctx, problem.monitor).detach().cpu().numpy()
            grads = torch.autograd.grad(values.sum(), tensors)
            if step == 0:
                _warn_if_flat(grads, problem.objectives)
            with torch.no_grad():
                for rule, t, g in zip(rules, tensors, grads, strict=True):
                    rule.step(t, -g)
            history[step] = values.detach().cpu().numpy()
            bar.update(1)
        for t in tensors:
            t.requires_grad_(False)
    return Trace(history, steps * problem.n, cut, monitor)


def _warn_if_flat(grads, objectives: list[Objective]) -> None:
    """Warn when the objective has no gradient at the initial images (it would never move)."""
    if all(not bool(g.abs().max() > 0) for g in grads):
        warnings.warn(f"The objective {', '.join(repr(o) for o in objectives)} has zero gradient at the initial "
                      f"images, so the optimisation cannot move: typically a channel after a ReLU that is off at "
                      f"every position. Use the layer before the ReLU (its pre-activation) or a larger initial "
                      f"'sd' of the parameterisation.", RuntimeWarning, stacklevel=5)


def _antithetic_rows(n: int, k: int) -> np.ndarray:
    """For rows ordered (image i, sign s, pair j), the index ``i k + j`` of their shared transformation."""
    i, _, j = np.meshgrid(np.arange(n), np.arange(2), np.arange(k), indexing="ij")
    return (i * k + j).ravel()


def run_zeroth_order(problem: Problem, n_pairs: int, sigma: float, budget: int | None,
                     progress: bool | None) -> Trace:
    """Antithetic NES on the parameters (any adapter); the image terms' gradients are exact."""
    n, k = problem.n, n_pairs
    steps, cut = steps_within(budget, 2 * k * n, problem.steps, "The zeroth-order optimiser")
    (theta,) = problem.param.tensors
    rule = Adam(problem.learning_rate)
    model_terms = [o.select(("scores",)) for o in problem.objectives]
    image_terms = [o.select(("image",)) for o in problem.objectives]
    history = np.zeros((steps, n))
    shared = _antithetic_rows(n, k)
    shape = tuple(theta.shape[1:])
    with grad_enabled(), _bar(steps, progress, "visualize (zeroth order)") as bar:
        for step in range(steps):
            eps = torch.as_tensor(problem.rng.standard_normal((n, 1, k, *shape)), dtype=theta.dtype,
                                  device=theta.device)
            with torch.no_grad():
                cand = theta[:, None, None] + sigma * torch.cat([eps, -eps], dim=1)   # (n, 2, k, ...)
                images = problem.param.image([cand.reshape(n * 2 * k, *shape)])
                draw = problem.transforms.draw(n * k, problem.rng)
                seen = problem.transforms.apply(images, _take(draw, shared))
                scores = torch.as_tensor(score_torch_batch(problem.adapter, problem.to_layout(seen)))
                f = _grouped_values(problem, model_terms, Context(images, scores), k).reshape(n, 2, k)
                diff = (f[:, 0] - f[:, 1]).to(theta.dtype).to(theta.device)
                g_model = (diff.reshape(n, k, *(1,) * len(shape)) * eps[:, 0]).mean(dim=1) / (2.0 * sigma)
            theta.requires_grad_(True)
            image = problem.param.image()
            img_values = problem.values(Context(image), image_terms)
            (g_image,) = torch.autograd.grad(img_values.sum(), theta) if img_values.requires_grad else (0.0,)
            theta.requires_grad_(False)
            with torch.no_grad():
                rule.step(theta, -(g_model + g_image))
            history[step] = f.mean(dim=(1, 2)).numpy() + img_values.detach().cpu().numpy()
            bar.update(1)
    return Trace(history, steps * 2 * k * n, cut)


def _take(draw, index: np.ndarray):
    """The draw of each row in ``index``."""
    return type(draw)(draw.scale[index], draw.degrees[index], draw.shift[index])


def _grouped_values(problem: Problem, objectives: list[Objective], ctx: Context, k: int):
    """Model-term values of the ``n * 2k`` perturbed rows: the rows of image ``r`` use image ``r``'s objective."""
    rows_per_objective = problem.per * 2 * k
    return torch.cat([obj(ctx.rows(slice(i * rows_per_objective, (i + 1) * rows_per_objective)))
                      for i, obj in enumerate(objectives)])
