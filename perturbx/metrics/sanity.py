"""Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

The layers of a copy of the model are re-initialised one after another, from the output
towards the input ("cascading" randomisation), and the sample is explained again after
every step. A map that depends on what the model learned must drift away from the
original (Spearman rank correlation falling towards 0); a map that stays the same is
explaining the input, not the model. Needs PyTorch, imported only when called.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np

from perturbx._utils import check_int

from ._common import as_map, target_label

__all__ = ["RandomizationResult", "layer_seed", "model_randomization", "parameter_layers", "spearman"]


@dataclass
class RandomizationResult:
    """Outcome of :func:`model_randomization`.

    Attributes
    ----------
    layers : list of str
        Layer randomised at each step, output side first; step ``k`` has layers
        ``0 .. k`` randomised (cascading) or layer ``k`` alone (independent).
    spearman : ndarray (L,)
        Spearman rank correlation between the original map and the map after each
        step (NaN when a map is constant).
    maps : ndarray (L + 1, H, W)
        The original map, then the map after each step.
    target : int
        Class explained at every step (that of the original explanation).
    cascade : bool
        Whether the layers were randomised cumulatively (True) or one at a time.
    """

    layers: list[str]
    spearman: np.ndarray
    maps: np.ndarray
    target: int
    cascade: bool = True


def spearman(a: np.ndarray, b: np.ndarray, *, absolute: bool = False) -> float:
    """Spearman rank correlation of two maps (of absolute values when ``absolute``); NaN if one is constant."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def parameter_layers(module) -> list[str]:
    """Names of the sub-modules that own parameters, in registration order (input side first)."""
    return [name for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def layer_seed(random_state: int, step: int) -> int:
    """Torch seed of the layer re-initialised at ``step``: drawn from ``SeedSequence([random_state, step])``.

    Derived rather than ``random_state + step`` so that it never repeats the small seed a
    model was built with (``torch.manual_seed(0)`` then ``random_state=0`` would give the
    trained layer's own initial weights back).
    """
    return int(np.random.SeedSequence([random_state, step]).generate_state(1)[0])


def _reinitialise(module, seed: int) -> None:
    """Fresh random parameters for one layer: its ``reset_parameters()``, else N(0, std of the old values)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for p in module.parameters(recurse=False):
            std = float(p.std()) if p.numel() > 1 else 1.0
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * (std or 1.0))


def _restore(target, source) -> None:
    """Copy the own parameters and buffers of ``source`` into the same-shaped layer ``target``."""
    import torch

    with torch.no_grad():
        for (_, p), (_, q) in zip(target.named_parameters(recurse=False), source.named_parameters(recurse=False),
                                  strict=True):
            p.copy_(q)
        for (_, b), (_, c) in zip(target.named_buffers(recurse=False), source.named_buffers(recurse=False),
                                  strict=True):
            b.copy_(c)


def _split_model(model):
    """(module, adapter factory) for a torch module or a perturbx Torch adapter."""
    from perturbx.adapters import Torch

    if isinstance(model, Torch):
        settings = {"device": model.device, "batch_size": model.batch_size,
                    "input_layout": model.input_layout, "output": model.output}
        return model.module, lambda m: Torch(m, **settings)
    import torch

    if isinstance(model, torch.nn.Module):
        return model, Torch
    raise TypeError(f"The 'model' argument of model_randomization must be a torch.nn.Module or a "
                    f"perturbx.adapters.Torch adapter (it re-initialises the model's layers). Got "
                    f"{type(model).__name__}; a remote, ONNX or plain-function model cannot be randomised.")


def model_randomization(model, explainer, x: np.ndarray, target: int | None = None, *,
                        layers: list[str] | None = None, absolute: bool = False, cascade: bool = True,
                        random_state: int = 0) -> RandomizationResult:
    """Cascading (or independent) randomisation of a torch model's layers, with the Spearman correlation per step.

    Parameters
    ----------
    model : torch.nn.Module or perturbx.adapters.Torch
        Left untouched: a deep copy is randomised.
    explainer : object with ``explain(model, x, target)``
        Called once on the original model and once per step, with a Torch adapter of
        the same settings. A sampling method should have an int ``random_state``.
    x : ndarray
        One sample in the model's layout.
    target : int, optional
        Class to explain (default: the original explanation's, i.e. the top class).
    layers : list of str, optional
        Names (``named_modules``) to randomise, in this order; default every layer that
        owns parameters, from the last registered to the first (for ``Sequential`` and
        most CNNs: from the output towards the input).
    absolute : bool, default False
        Correlate absolute values of the maps (Adebayo et al. report both).
    cascade : bool, default True
        True: step ``k`` has layers ``0 .. k`` randomised (cascading). False: step ``k``
        has layer ``k`` alone randomised, every other layer as trained (independent
        randomisation, Adebayo et al.'s second test), which tells which layer a map
        depends on.
    random_state : int, default 0
        Seed of the new parameters (layer ``k`` uses :func:`layer_seed` ``(random_state, k)``).

    Returns
    -------
    RandomizationResult
    """
    module, make_adapter = _split_model(model)
    seed = check_int(random_state, "random_state", "model_randomization", minimum=0)
    names = parameter_layers(module)[::-1] if layers is None else list(layers)
    known = dict(module.named_modules())
    missing = [n for n in names if n not in known]
    if missing or not names:
        raise ValueError(f"The 'layers' argument of model_randomization names {missing or 'no layer'}, "
                         f"but the model's layers with parameters are {parameter_layers(module)}.")
    first = explainer.explain(make_adapter(module), x, target)
    a0, target = as_map(first, None, "model_randomization")
    if not isinstance(cascade, bool):
        raise TypeError(f"The 'cascade' argument of model_randomization must be a bool. Got {cascade!r}.")
    randomised = copy.deepcopy(module)
    parts = dict(randomised.named_modules())
    maps, rhos = [a0], []
    for k, name in enumerate(names):
        if not cascade and k > 0:  # put the previous layer back as trained
            _restore(parts[names[k - 1]], known[names[k - 1]])
        _reinitialise(parts[name], layer_seed(seed, k))
        a, _ = as_map(explainer.explain(make_adapter(randomised), x, target), a0.shape, "model_randomization")
        maps.append(a)
        rhos.append(spearman(a0, a, absolute=absolute))
    return RandomizationResult(names, np.array(rhos), np.stack(maps), target_label(target), cascade)
