"""Pre-images: an image the network cannot tell apart from a given one at a layer (Mahendran & Vedaldi).

Given ``x`` and a layer with representation ``phi``, :class:`PreImage` starts from noise and
maximises ``-||phi(x_hat) - phi(x)||^2 / ||phi(x)||^2 - tv R_TV(x_hat) - alpha_norm R_alpha(x_hat)``
by autograd (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by
Inverting Them"; 2016, with jitter as in their natural pre-images). The parameterisation
can be pixels, the Fourier basis or a deep image prior (Ulyanov et al. 2018, who replace
the regularisers by the generator's structure).
"""

from __future__ import annotations

import time

import numpy as np

from perturbx._utils import Configurable, check_float, check_int, check_random_state
from perturbx.adapters import Torch, as_adapter
from perturbx.optimize.optimizers import grad_enabled

from . import figures
from ._layers import capture, resolve
from ._optim import Problem, module_logits, run_autograd
from ._torch import torch
from .objectives import AlphaNorm, Match, TotalVariation, total_variation
from .param import Pixels, check_param
from .result import PreImageResult
from .transforms import Transforms
from .visualizer import default_learning_rate, final_context, start_run


class PreImage(Configurable):
    """Invert a layer's representation of an image, from noise.

    Parameters
    ----------
    layer : str
        The layer, by its name in ``module.named_modules()`` (e.g. ``"features.5"``).
    tv : float, default 1.0
        Weight of the total-variation regulariser :class:`TotalVariation` (``beta``); 0 turns
        it off. On the demo CNN's ``features.5``, from noise in 300 steps, 1.0 gives relative
        errors of 0.06-0.12 where 0 leaves 0.17-0.26 (the noise the layer cannot see stays).
    alpha_norm : float, default 0.0
        Weight of the alpha-norm regulariser :class:`AlphaNorm` (``alpha``, around 0.5).
    alpha : float, default 6.0
    beta : float, default 2.0
    param : Pixels, Fourier or DeepImagePrior, optional
        Default ``Pixels(sd=1.0)``: per-pixel noise (sigmoid of a standard normal) to start from.
    transforms : Transforms or None, default None
        Random transformations at every step (Mahendran & Vedaldi's jitter), none by default.
    steps : int, default 300
    learning_rate : float, optional
        Adam's step size; default 0.05, or 0.01 for a deep image prior.
    random_state : int, numpy Generator or None
    max_queries : int, optional
        Most forward rows (the two for ``x`` and the final image included).
    progress : bool or None
    """

    def __init__(self, layer: str, *, tv: float = 1.0, alpha_norm: float = 0.0, alpha: float = 6.0,
                 beta: float = 2.0, param=None, transforms: Transforms | None = None, steps: int = 300,
                 learning_rate: float | None = None, random_state: object = None, max_queries: int | None = None,
                 progress: bool | None = None) -> None:
        owner = "PreImage"
        if not isinstance(layer, str) or not layer:
            raise TypeError(f"The 'layer' parameter of PreImage must be a module name as in module.named_modules(), "
                            f"e.g. 'features.5'. Got {layer!r} instead.")
        self.layer = layer
        self.tv = check_float(tv, "tv", owner, low=0.0, high=np.inf, high_open=True)
        self.alpha_norm = check_float(alpha_norm, "alpha_norm", owner, low=0.0, high=np.inf, high_open=True)
        self.alpha = AlphaNorm(alpha).alpha
        self.beta = TotalVariation(beta).beta
        self.param = None if param is None else check_param(param, owner)
        if transforms is not None and not isinstance(transforms, Transforms):
            raise TypeError(f"The 'transforms' parameter of PreImage must be None or a perturbx.visualize.Transforms. "
                            f"Got {transforms!r} instead.")
        self.transforms = transforms
        self.steps = check_int(steps, "steps", owner)
        self.learning_rate = None if learning_rate is None else check_float(
            learning_rate, "learning_rate", owner, low=0.0, high=np.inf, low_open=True, high_open=True)
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", owner, minimum=3)
        self.progress = progress

    def invert(self, model: object, x: np.ndarray) -> PreImageResult:
        """A pre-image of ``x`` at ``layer``.

        Parameters
        ----------
        model : perturbx.adapters.Torch or torch.nn.Module
            Pre-images read a layer, so the model must be a torch module.
        x : ndarray
            One sample in the adapter's layout, no batch axis.

        Returns
        -------
        PreImageResult
        """
        start = time.perf_counter()
        adapter = as_adapter(model)
        if not isinstance(adapter, Torch):
            raise TypeError(f"The 'model' parameter of PreImage.invert must be a perturbx.adapters.Torch model (or a "
                            f"torch.nn.Module): pre-images read the layer {self.layer!r}, which a "
                            f"{type(adapter).__name__} cannot expose.")
        x = adapter.check_sample(x)
        run = start_run("PreImage", adapter, tuple(x.shape), "autograd", self.random_state)
        before = adapter.n_queries
        layers = resolve(adapter.module, [self.layer], "PreImage")
        with grad_enabled():
            match = Match(self.layer, self._representation(adapter, layers, x))
            objective = match - self.tv * TotalVariation(self.beta) - self.alpha_norm * AlphaNorm(self.alpha)
            param = self.param if self.param is not None else Pixels(sd=1.0)
            problem = Problem(adapter, param.build(1, run.chw, run.device, run.rng), [objective], 1,
                              self.transforms or Transforms(), run.rng, self.steps,
                              default_learning_rate(self.learning_rate, "autograd", param), layers, monitor=[match])
            budget = None if self.max_queries is None else self.max_queries - 2
            trace = run_autograd(problem, budget, self.progress)
            ctx = final_context(problem, "autograd")
            with torch.no_grad():
                error = float(match.relative_error(ctx)[0])
                tv_hat = float(total_variation(ctx.image, beta=1.0)[0])
                tv_x = float(total_variation(torch.as_tensor(adapter.layout.to_chw_array(x))[None], beta=1.0)[0])
        image = problem.to_layout(ctx.image)[0].detach().cpu().numpy().astype(np.float32)
        return PreImageResult(
            image=image, rgb=figures.to_rgb(image, adapter.layout.name), relative_error=error, total_variation=tv_hat,
            input_total_variation=tv_x, objective=trace.objective[:, 0],
            relative_error_history=np.sqrt(np.maximum(-trace.monitor[:, 0], 0.0)), layer=self.layer,
            n_queries=adapter.n_queries - before, seconds=time.perf_counter() - start,
            steps_done=len(trace.objective), stopped_by_budget=trace.stopped_by_budget, params=self.get_params(),
            layout=adapter.layout.name)

    @staticmethod
    def _representation(adapter: Torch, layers: dict, x: np.ndarray):
        """The layer's output for ``x`` (one forward row, counted)."""
        with torch.no_grad(), capture(layers) as recorder:
            module_logits(adapter, torch.as_tensor(x[None], device=adapter.device))
            return next(iter(recorder.take().values()))[0]
