"""Feature visualisation and class models: :class:`FeatureVisualization`.

Configured in ``__init__`` (parameterisation, transformations, steps, optimiser, seed,
query budget) and run with ``.visualize(model, objective, shape)``. With a
``perturbx.adapters.Torch`` model the images are optimised by autograd and any objective
works; with any other adapter (ONNX, Remote, a numpy function), or
``optimizer="zeroth_order"``, by antithetic NES on the image parameters through
``predict_batch``, and only class and image objectives apply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perturbx._utils import Configurable, check_choice, check_float, check_int, check_random_state
from perturbx.adapters import Adapter, Torch, as_adapter
from perturbx.optimize.optimizers import grad_enabled, score_torch_batch

from . import figures
from ._layers import capture, resolve
from ._optim import Problem, module_logits, run_autograd, run_zeroth_order
from ._torch import torch
from .objectives import ClassLogit, ClassProbability, Context, Objective, check_objectives, probabilities
from .param import DeepImagePrior, Fourier, check_param
from .result import Visualization
from .transforms import Transforms, check_transforms

OPTIMIZERS = ("auto", "autograd", "zeroth_order")
#: smallest image side the transformations and the Fourier basis make sense for
MIN_SIDE = 8


@dataclass
class Run:
    """A validated run: the adapter, one sample's shape (model layout and CHW), device, seed, optimiser."""

    adapter: Adapter
    shape: tuple[int, ...]
    chw: tuple[int, int, int]
    device: Any
    rng: np.random.Generator
    optimizer: str


def sample_shape(adapter: Adapter, shape: object, owner: str) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """One sample's shape in the adapter's layout and as (C, H, W); ``shape=None`` asks the adapter."""
    if shape is None:
        shape = adapter.sample_shape
        if shape is None:
            raise ValueError(f"The 'shape' parameter of {owner} is needed: {type(adapter).__name__} does not say "
                             f"what one sample looks like. Pass shape=(C, H, W) in the adapter's layout "
                             f"({adapter.layout.name!r}), e.g. shape=(3, 64, 64).")
    ok = isinstance(shape, (tuple, list)) and len(shape) == adapter.layout.ndim and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not ok:
        raise ValueError(f"The 'shape' parameter of {owner} must be one sample's shape in the adapter's layout "
                         f"{adapter.layout.name!r} ({adapter.layout.ndim} positive ints). Got {shape!r} instead.")
    shape = tuple(int(s) for s in shape)
    chw = adapter.layout.to_chw(shape)
    if min(chw[1:]) < MIN_SIDE:
        raise ValueError(f"The 'shape' parameter of {owner} gives an image of {chw[1]} x {chw[2]} pixels; "
                         f"visualisations need at least {MIN_SIDE} x {MIN_SIDE}. Check the adapter's input_layout.")
    return shape, chw


def start_run(owner: str, model: object, shape: object, optimizer: str, random_state: object) -> Run:
    """Wrap the model, check the shape and pick the optimiser for one run."""
    adapter = as_adapter(model)
    shape, chw = sample_shape(adapter, shape, owner)
    choice = optimizer
    if choice == "auto":
        choice = "autograd" if isinstance(adapter, Torch) else "zeroth_order"
    if choice == "autograd" and not isinstance(adapter, Torch):
        raise TypeError(f"optimizer='autograd' of {owner} differentiates the model, so it needs a "
                        f"perturbx.adapters.Torch model; got {type(adapter).__name__}. Use optimizer='zeroth_order' "
                        f"(or 'auto') for black-box models.")
    device = adapter.device if isinstance(adapter, Torch) else torch.device("cpu")
    return Run(adapter, shape, chw, device, check_random_state(random_state), choice)


def default_learning_rate(learning_rate: float | None, optimizer: str, param) -> float:
    """``learning_rate``, or the default of the optimiser and parameterisation (see FeatureVisualization)."""
    if learning_rate is not None:
        return learning_rate
    if optimizer == "zeroth_order":
        return 0.2
    return 0.01 if isinstance(param, DeepImagePrior) else 0.05


def check_black_box(objectives: list[Objective], optimizer: str, param, owner: str) -> None:
    """The zeroth-order optimiser sees only class scores, and needs a batched parameterisation."""
    if optimizer != "zeroth_order":
        return
    layered = sorted({name for o in objectives for name in o.layers})
    if layered:
        raise ValueError(f"The 'objective' parameter of {owner} reads layer(s) {layered}, but the model is optimised "
                         f"as a black box (optimizer='zeroth_order', or an adapter other than Torch), which only "
                         f"returns class scores. Use class objectives (ClassLogit, ClassProbability) and image "
                         f"terms (TotalVariation, AlphaNorm, Diversity()), or pass a perturbx.adapters.Torch model.")
    if not param.batched:
        raise ValueError(f"The 'param' parameter of {owner} is {type(param).__name__}, whose parameters are network "
                         f"weights; the zeroth-order optimiser perturbs per-image parameters. Use Fourier() or "
                         f"Pixels() for black-box models.")


def final_context(problem: Problem, optimizer: str) -> Context:
    """The final, untransformed images with the model's output and layers (one row per image, counted)."""
    with torch.no_grad():
        image = problem.param.image()
        batch = problem.to_layout(image)
        if optimizer == "autograd":
            with capture(problem.layers) as recorder:
                logits = module_logits(problem.adapter, batch)
                return Context(image, logits, recorder.take())
        return Context(image, torch.as_tensor(score_torch_batch(problem.adapter, batch)))


class FeatureVisualization(Configurable):
    """Images that maximise an objective: class models, channel and neuron visualisations.

    Parameters
    ----------
    param : Pixels, Fourier or DeepImagePrior, optional
        Image parameterisation; default ``Fourier()`` (colour decorrelation for RGB only).
    transforms : Transforms, "standard", "auto" or None, default "auto"
        Random transformations applied to the image at every step; ``"standard"`` is
        :meth:`Transforms.standard` for the image's size, None applies none. ``"auto"``:
        standard with autograd, none with the zeroth-order optimiser (its gradient estimate
        would have to average over the transformations too; on the demo CNN that costs
        it more queries than it has, benchmarks/results/visualize.md).
    steps : int, default 256
        Optimisation steps (Adam).
    learning_rate : float, optional
        Adam's step size; default 0.05 with autograd (lucent's), 0.01 for a deep image
        prior (Ulyanov et al.'s; 0.05 diverges on the demo CNN), 0.2 with the zeroth-order
        optimiser (measured on the demo CNN).
    n_images : int, default 1
        Images per objective, optimised together (add :class:`Diversity` to make them differ).
    optimizer : {"auto", "autograd", "zeroth_order"}, default "auto"
        "auto": autograd for ``adapters.Torch`` models, zeroth-order otherwise.
    n_pairs : int, default 16
        Zeroth order: antithetic pairs of directions per image and step (``2 n_pairs`` queries).
    search_sigma : float, default 0.2
        Zeroth order: scale of the parameter perturbations.
    random_state : int, numpy Generator or None
        Seeds the initial parameters, the transformations and the search directions.
    max_queries : int, optional
        Most model rows the run may use (the final scoring included); the run stops at the
        budget (``stopped_by_budget``) and raises ``QueryBudgetError`` if not one step fits.
    progress : bool or None
        Show a progress bar (None: only on a terminal).

    Examples
    --------
    >>> from perturbx.adapters import Torch
    >>> from perturbx.models import load_demo_model
    >>> from perturbx.visualize import ClassLogit, FeatureVisualization
    >>> vis = FeatureVisualization(steps=128, random_state=0).visualize(
    ...     Torch(load_demo_model()), [ClassLogit(c) for c in range(4)], shape=(3, 64, 64))
    >>> vis.images.shape, vis.probabilities.shape
    ((4, 1, 3, 64, 64), (4, 1, 4))
    """

    def __init__(self, *, param=None, transforms: Transforms | str | None = "auto", steps: int = 256,
                 learning_rate: float | None = None, n_images: int = 1, optimizer: str = "auto", n_pairs: int = 16,
                 search_sigma: float = 0.2, random_state: object = None, max_queries: int | None = None,
                 progress: bool | None = None) -> None:
        owner = "FeatureVisualization"
        self.param = None if param is None else check_param(param, owner)
        self.transforms = check_transforms(transforms, owner)
        self.steps = check_int(steps, "steps", owner)
        self.learning_rate = None if learning_rate is None else check_float(
            learning_rate, "learning_rate", owner, low=0.0, high=np.inf, low_open=True, high_open=True)
        self.n_images = check_int(n_images, "n_images", owner)
        self.optimizer = check_choice(optimizer, "optimizer", owner, OPTIMIZERS)
        self.n_pairs = check_int(n_pairs, "n_pairs", owner)
        self.search_sigma = check_float(search_sigma, "search_sigma", owner, low=0.0, high=np.inf,
                                        low_open=True, high_open=True)
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", owner)
        self.progress = progress

    def visualize(self, model: object, objective: Objective | Sequence[Objective],
                  shape: tuple[int, ...] | None = None) -> Visualization:
        """Optimise ``n_images`` images per objective.

        Parameters
        ----------
        model : Adapter, torch.nn.Module or callable
            A :mod:`perturbx.adapters` adapter (a bare model is wrapped with defaults).
        objective : Objective or sequence of Objective
            What to maximise; with a list, each objective gets its own ``n_images`` images
            (all optimised in the same batches): one row of the result per objective.
        shape : tuple of int, optional
            One sample's shape in the adapter's layout, e.g. ``(3, 64, 64)``; needed unless
            the adapter knows it (``adapter.sample_shape``).

        Returns
        -------
        Visualization
        """
        start = time.perf_counter()
        owner = "FeatureVisualization"
        objectives = check_objectives(objective, owner)
        run = start_run(owner, model, shape, self.optimizer, self.random_state)
        param = self._param(run.chw)
        check_black_box(objectives, run.optimizer, param, owner)
        layers = resolve(run.adapter.module, {n for o in objectives for n in o.layers}, _owner_of(objectives)) \
            if run.optimizer == "autograd" else {}
        with grad_enabled():
            problem = Problem(run.adapter, param.build(len(objectives) * self.n_images, run.chw, run.device,
                                                       run.rng),
                              objectives, self.n_images, self._transforms(run.chw, run.optimizer), run.rng,
                              self.steps, default_learning_rate(self.learning_rate, run.optimizer, param), layers)
            return self._solve(problem, run, start)

    def _param(self, chw: tuple[int, int, int]):
        return self.param if self.param is not None else Fourier(decorrelate=chw[0] == 3)

    def _transforms(self, chw: tuple[int, int, int], optimizer: str) -> Transforms:
        choice = self.transforms
        if choice == "auto":
            choice = "standard" if optimizer == "autograd" else None
        if choice is None:
            return Transforms()
        return Transforms.standard(max(chw[1:])) if choice == "standard" else choice

    def _solve(self, problem: Problem, run: Run, start: float) -> Visualization:
        before = run.adapter.n_queries
        budget = None if self.max_queries is None else self.max_queries - problem.n
        if run.optimizer == "autograd":
            trace = run_autograd(problem, budget, self.progress)
        else:
            trace = run_zeroth_order(problem, self.n_pairs, self.search_sigma, budget, self.progress)
        ctx = final_context(problem, run.optimizer)
        with torch.no_grad():
            final = problem.values(ctx).detach().cpu().numpy()
            probs = probabilities(ctx.logits.detach().double()).cpu().numpy()
        m, k = len(problem.objectives), problem.per
        images = problem.to_layout(ctx.image).detach().cpu().numpy().astype(np.float32)
        images = images.reshape(m, k, *run.shape)
        return Visualization(
            images=images, rgb=figures.to_rgb(images, run.adapter.layout.name),
            objective=trace.objective.reshape(-1, m, k), final_objective=final.reshape(m, k),
            probabilities=probs.reshape(m, k, -1), objectives=[repr(o) for o in problem.objectives],
            n_queries=run.adapter.n_queries - before, seconds=time.perf_counter() - start, optimizer=run.optimizer,
            steps_done=len(trace.objective), stopped_by_budget=trace.stopped_by_budget, params=self.get_params(),
            layout=run.adapter.layout.name)


def _owner_of(objectives: list[Objective]) -> str:
    """The name of the first layer term, for error messages about its ``layer``."""
    for o in objectives:
        for _, t in o.terms():
            if t.kind == "layer":
                return type(t).__name__
    return "the objective"


CLASS_OBJECTIVES = ("log_probability", "logit", "probability")


def class_models(model: object, shape: tuple[int, ...] | None = None, classes: Sequence[int] | None = None, *,
                 objective: str = "log_probability", visualizer: FeatureVisualization | None = None) -> Visualization:
    """Class models (Simonyan et al. 2014): one row of images per class.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    shape : tuple of int, optional
        One sample's shape in the adapter's layout (needed unless the adapter knows it).
    classes : sequence of int, optional
        Default: every class of the model (one query finds how many).
    objective : {"log_probability", "logit", "probability"}, default "log_probability"
        What each row maximises: ``ClassProbability(c, log=True)`` (the class must win,
        not only score high), ``ClassLogit(c)`` (Simonyan et al.'s unnormalised score) or
        ``ClassProbability(c)``.
    visualizer : FeatureVisualization, optional
        Default ``FeatureVisualization()`` (Fourier basis, standard transformations).

    Returns
    -------
    Visualization
        ``.figure()`` is the grid.
    """
    adapter = as_adapter(model)
    check_choice(objective, "objective", "class_models", CLASS_OBJECTIVES)
    if classes is None:
        shape_, _ = sample_shape(adapter, shape, "class_models")
        probe = adapter.backend.asarray(np.full((1, *shape_), 0.5, dtype=np.float32), adapter.dtype)
        classes = range(adapter.predict_batch(probe).shape[1])
    make = {"logit": ClassLogit, "probability": ClassProbability,
            "log_probability": lambda c: ClassProbability(c, log=True)}[objective]
    visualizer = FeatureVisualization() if visualizer is None else visualizer
    return visualizer.visualize(adapter, [make(int(c)) for c in classes], shape)


def channel_visualizations(model: object, layer: str, channels: Sequence[int], shape: tuple[int, ...] | None = None,
                           *, visualizer: FeatureVisualization | None = None) -> Visualization:
    """One row of images per channel of ``layer``, maximising its mean activation (Torch models)."""
    from .objectives import Channel

    visualizer = FeatureVisualization() if visualizer is None else visualizer
    return visualizer.visualize(model, [Channel(layer, int(c)) for c in channels], shape)


