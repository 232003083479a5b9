"""Two optimisers behind one interface: autograd (torch models) and zeroth-order (any adapter).

A :class:`MaskProblem` says how parameters become masks, masks become a model batch and
scores become a loss, plus an exactly differentiable regulariser. Both optimisers run the
same update rule (the method's torch optimiser, e.g. Adam or SGD with momentum) on the
same parameters; they differ only in where the gradient of the model's term comes from:

Update rules are written out here (:class:`Adam`, :class:`SGD`, the formulas of
``torch.optim``) so that the first explanation of a session does not pay for importing
``torch.optim``'s compiler machinery (seconds).

* :class:`Autograd` back-propagates through a ``perturbx.adapters.Torch`` module (its
  weights frozen for the call and their ``requires_grad`` flags restored afterwards);
* :class:`ZerothOrder` estimates it from the model's scores alone with antithetic
  Gaussian perturbations of the parameters (NES), one batched ``adapter.predict_batch``
  call per step (split only if the step's rows exceed the adapter's ``batch_size``).

The regulariser (area, smoothness) never needs the model, so its gradient is exact in
both cases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perturbx.engine import QueryBudgetError, predict_in_batches

from .masks import _torch

OPTIMIZERS = ("auto", "autograd", "zeroth_order")


@dataclass
class MaskProblem:
    """``n`` masks optimised together (one per target and area), all on the model's device.

    Attributes
    ----------
    params : torch.Tensor, shape (n, h, w)
        Initial parameters (float32); the optimiser works on a copy.
    generate : callable
        Parameters ``(m, h, w)`` -> masks ``(m, H, W)`` in [0, 1] (differentiable).
    render : callable
        Masks ``(m, H, W)`` -> model batch ``(m, *sample_shape)`` (differentiable).
    targets : ndarray of int, shape (n,)
        Position (among the target's ``T`` scalars) of the scalar each mask's loss uses.
    model_loss : callable
        ``(scores (m,), positions (m,))`` -> loss ``(m,)``: each row's target scalar and the
        position of that scalar among the target's ``T`` (e.g. the score for a deletion game).
    regulariser : callable
        ``(masks (n, H, W), step)`` -> loss ``(n,)``; never calls the model.
    make_optimizer : callable
        ``() -> Adam or SGD``: a fresh instance of the method's update rule.
    steps : int
    jitter : bool
        Flip the rendered batch horizontally on even steps (TorchRay's jitter).
    """

    params: object
    generate: Callable
    render: Callable
    targets: np.ndarray
    model_loss: Callable
    regulariser: Callable
    make_optimizer: Callable
    steps: int
    jitter: bool = False
    #: the bound target (set by the explainer): the model output -> scalars ``(m, T)``; None: the model's
    #: class scores, ``targets`` then being class indices
    target: object = None


@dataclass
class OptimResult:
    """Final parameters and masks, and the objective of every step.

    ``objective`` and ``model_term`` are ``(steps_done, n)``; for the zeroth-order
    optimiser the model term of a step is the mean over its perturbed evaluations.
    """

    params: object
    masks: np.ndarray
    objective: np.ndarray
    model_term: np.ndarray
    n_queries: int
    steps_done: int
    stopped_by_budget: bool = False
    info: dict = field(default_factory=dict)


class Adam:
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` with default betas and eps, updating in place."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t, self.m, self.v = 0, None, None

    def step(self, params, grad) -> None:
        """``params -= lr * m_hat / (sqrt(v_hat) + eps)``."""
        b1, b2 = self.betas
        self.t += 1
        if self.m is None:
            self.m, self.v = grad.new_zeros(grad.shape), grad.new_zeros(grad.shape)
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / (1 - b2 ** self.t) ** 0.5).add_(self.eps)
        params.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))


class SGD:
    """SGD with momentum and dampening, as ``torch.optim.SGD`` (TorchRay's update), in place."""

    def __init__(self, lr: float, momentum: float = 0.9, dampening: float = 0.9) -> None:
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.buf = None

    def step(self, params, grad) -> None:
        """``buf = momentum buf + (1 - dampening) grad`` (``buf = grad`` at first); ``params -= lr buf``."""
        if self.buf is None:
            self.buf = grad.clone()
        else:
            self.buf.mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
        params.add_(self.buf, alpha=-self.lr)


@contextlib.contextmanager
def grad_enabled():
    """Autograd on, even inside a caller's ``torch.no_grad`` or ``torch.inference_mode``."""
    torch = _torch()
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def frozen(module):
    """Weights of ``module`` excluded from autograd; their ``requires_grad`` flags restored on exit."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def score_torch_batch(adapter, batch, target=None) -> np.ndarray:
    """A torch batch's target scalars ``(n, T)`` (or class scores without a target), on the adapter's backend,
    in ``batch_size`` calls."""
    batch = batch.cpu().numpy() if adapter.backend.name == "numpy" else batch.to(adapter.backend.device)
    return predict_in_batches(adapter, batch, target)


def _flip(batch, layout):
    """Mirror a batch horizontally (the W axis of the model's layout)."""
    return batch.flip(1 + layout.name.index("W"))


def _steps_within(budget: int | None, per_step: int, steps: int, name: str) -> tuple[int, bool]:
    """Steps that fit in ``budget`` model rows; raises if not even one does."""
    if budget is None or budget >= per_step * steps:
        return steps, False
    if budget < per_step:
        raise QueryBudgetError(f"{name} needs {per_step} model queries per step but only {budget} are left "
                               f"of max_queries; raise max_queries.")
    return budget // per_step, True


class Autograd:
    """Gradient descent through a ``perturbx.adapters.Torch`` module (one forward row per mask per step)."""

    name = "autograd"

    def __init__(self, adapter) -> None:
        from perturbx.adapters import Torch

        if not isinstance(adapter, Torch):
            raise TypeError(f"optimizer='autograd' needs a perturbx.adapters.Torch model; got "
                            f"{type(adapter).__name__}. Use optimizer='zeroth_order' (or 'auto') for other models.")
        self.adapter = adapter

    def _scores(self, batch, target, positions):
        """The scalar at ``positions`` (n,) of each row's target scalars, differentiable."""
        torch = _torch()
        out = self.adapter._postprocess(self.adapter.module(batch))
        if target is None and (not isinstance(out, torch.Tensor) or out.ndim != 2):
            raise ValueError(f"The torch module must return scores of shape (n, n_classes); got "
                             f"{getattr(out, 'shape', type(out).__name__)}.")
        values = out if target is None else target.torch_scores(out)
        return values[torch.arange(len(values), device=values.device), positions]

    def run(self, problem: MaskProblem, budget: int | None = None) -> OptimResult:
        """Optimise ``problem``; ``budget`` caps the model rows (the run stops early at it)."""
        torch = _torch()
        n = problem.params.shape[0]
        steps, cut = _steps_within(budget, n, problem.steps, "the autograd optimiser")
        targets = torch.as_tensor(problem.targets, device=problem.params.device)
        layout = self.adapter.layout
        history, model_hist = np.zeros((steps, n)), np.zeros((steps, n))
        with grad_enabled(), frozen(self.adapter.module):
            params = problem.params.detach().clone().requires_grad_(True)
            rule = problem.make_optimizer()
            for t in range(steps):
                masks = problem.generate(params)
                batch = problem.render(masks)
                if problem.jitter and t % 2 == 0:
                    batch = _flip(batch, layout)
                model = problem.model_loss(self._scores(batch, problem.target, targets), problem.targets)
                total = model + problem.regulariser(masks, t)
                (grad,) = torch.autograd.grad(total.sum(), params)
                self.adapter.n_queries += n
                with torch.no_grad():
                    rule.step(params, grad)
                    params.clamp_(0.0, 1.0)
                history[t], model_hist[t] = total.detach().cpu().numpy(), model.detach().cpu().numpy()
            with torch.no_grad():
                final = problem.generate(params).cpu().numpy()
        return OptimResult(params.detach(), final, history, model_hist, steps * n, steps, cut)


def _interpolation_std(g: int, hw: tuple[int, int]):
    """Per-pixel standard deviation ``(H, W)`` of i.i.d. unit noise on a ``g x g`` lattice, bilinearly upsampled."""
    torch = _torch()
    eye = torch.eye(g, dtype=torch.float64)[:, None, :, None]   # one-hot lattice columns
    F = torch.nn.functional
    wy = F.interpolate(eye, size=(hw[0], 1), mode="bilinear", align_corners=False)[:, 0, :, 0]   # (g, H)
    wx = F.interpolate(eye, size=(hw[1], 1), mode="bilinear", align_corners=False)[:, 0, :, 0]   # (g, W)
    return torch.outer(wy.pow(2).sum(0).sqrt(), wx.pow(2).sum(0).sqrt()).float()


class ZerothOrder:
    """Antithetic NES on the masks, with smooth search directions, for any adapter.

    Each step makes the current masks ``M = generate(params)`` and draws, per mask,
    ``n_pairs`` smooth random fields ``v`` (Gaussian noise on a ``grid`` lattice,
    bilinearly upsampled to the image). It scores ``clamp(M +- sigma v, 0, 1)`` in one
    batch (``2 n_pairs`` rows per mask) and estimates the gradient of the model's term
    with respect to the mask as ``mean((L+ - L-) v) / (2 sigma c)``, where ``c`` (the area
    of a lattice cell in pixels) brings the estimate, a gradient summed over the
    directions' footprint, back to a per-pixel scale. That estimate is back-propagated
    through the mask parametrisation together with the exact gradient of the regulariser,
    so one step costs the model ``2 n_pairs`` rows per mask whatever the parametrisation.

    Parameters
    ----------
    adapter : perturbx.adapters.Adapter
    n_pairs : int
        Antithetic pairs per mask and step.
    sigma : float
        Scale of the mask perturbations (masks live in [0, 1]).
    grid : int
        Side of the lattice of the search directions (cells of ``H / grid`` pixels).
    rng : numpy Generator
        Source of the directions (the run is reproducible from the seed).
    """

    name = "zeroth_order"

    def __init__(self, adapter, n_pairs: int, sigma: float, grid: int, rng: np.random.Generator) -> None:
        self.adapter, self.rng = adapter, rng
        self.n_pairs, self.sigma, self.grid = int(n_pairs), float(sigma), int(grid)
        self._std = None

    def _directions(self, n: int, hw: tuple[int, int], device):
        """Smooth fields ``(n, n_pairs, H, W)`` of unit variance at every pixel, and the cell area.

        Lattice noise, bilinearly upsampled, divided by its exact per-pixel standard
        deviation (bilinear interpolation has less variance between lattice points than
        on them; left alone, that would favour some pixels in every step's noise).
        """
        torch = _torch()
        g = min(self.grid, *hw)
        if self._std is None or self._std.shape != hw:
            self._std = _interpolation_std(g, hw).to(device)
        coarse = torch.as_tensor(self.rng.standard_normal((n * self.n_pairs, 1, g, g)), dtype=torch.float32)
        fields = torch.nn.functional.interpolate(coarse.to(device), size=hw, mode="bilinear", align_corners=False)
        return (fields / self._std).reshape(n, self.n_pairs, *hw), hw[0] * hw[1] / (g * g)

    def _model_loss(self, problem: MaskProblem, masks, step: int) -> np.ndarray:
        """Model loss ``(n, 2 * n_pairs)`` of perturbed masks ``(n * 2 * n_pairs, H, W)`` (one batched call)."""
        torch = _torch()
        adapter = self.adapter
        batch = problem.render(masks)
        if problem.jitter and step % 2 == 0:
            batch = _flip(batch, adapter.layout)
        scores = score_torch_batch(adapter, batch, problem.target)
        n = len(problem.targets)
        positions = np.repeat(problem.targets, 2 * self.n_pairs)
        picked = scores[np.arange(len(scores)), positions]
        return problem.model_loss(torch.as_tensor(picked), positions).numpy().reshape(n, 2 * self.n_pairs)

    def run(self, problem: MaskProblem, budget: int | None = None) -> OptimResult:
        """Optimise ``problem``; ``budget`` caps the model rows (the run stops early at it)."""
        torch = _torch()
        n, k = problem.params.shape[0], self.n_pairs
        steps, cut = _steps_within(budget, 2 * k * n, problem.steps, "the zeroth-order optimiser")
        history, model_hist = np.zeros((steps, n)), np.zeros((steps, n))
        with grad_enabled():
            params = problem.params.detach().clone().requires_grad_(True)
            rule = problem.make_optimizer()
            for t in range(steps):
                masks = problem.generate(params)
                hw = tuple(masks.shape[1:])
                v, cell = self._directions(n, hw, masks.device)
                with torch.no_grad():
                    cand = torch.cat([masks[:, None] + self.sigma * v, masks[:, None] - self.sigma * v], dim=1)
                    losses = self._model_loss(problem, cand.clamp(0.0, 1.0).reshape(-1, *hw), t)
                diff = torch.as_tensor(losses[:, :k] - losses[:, k:], dtype=masks.dtype, device=masks.device)
                g_masks = (diff[:, :, None, None] * v).mean(dim=1) / (2.0 * self.sigma * cell)
                reg = problem.regulariser(masks, t)
                (grad,) = torch.autograd.grad((masks * g_masks).sum() + reg.sum(), params)
                with torch.no_grad():
                    rule.step(params, grad)
                    params.clamp_(0.0, 1.0)
                model_hist[t] = losses.mean(axis=1)
                history[t] = model_hist[t] + reg.detach().cpu().numpy()
            with torch.no_grad():
                final = problem.generate(params).cpu().numpy()
        return OptimResult(params.detach(), final, history, model_hist, steps * 2 * k * n, steps, cut)
