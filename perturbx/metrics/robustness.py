"""Infidelity and max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019).

Infidelity asks whether the map predicts how much the score changes when parts of the
input are perturbed; max-sensitivity asks how much the map itself changes when the
input moves a little.
"""

from __future__ import annotations

import numbers

import numpy as np

from perturbx import engine
from perturbx._utils import check_float, check_int, check_int_tuple, check_random_state
from perturbx.adapters import as_adapter
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.renderers import BlendRenderer
from perturbx.samplers import RandomGridSampler

from ._common import as_map, resolve_target, target_in_range

__all__ = ["infidelity", "max_sensitivity"]


class _DotCollector:
    """Keeps, per perturbation, ``sum(M * a)`` (M = 1 - keep-mask) and the perturbed score."""

    chunk_type = None

    def __init__(self, backend, amap: np.ndarray, dtype) -> None:
        self.backend = backend
        self._a = backend.asarray(amap.reshape(-1, 1), dtype)
        self._a_sum = float(amap.sum())
        self.dots: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def update(self, chunk, masks, scores: np.ndarray) -> None:
        kept = self.backend.bmm(masks.reshape(masks.shape[0], -1), self._a)  # (n, 1): sum(K * a)
        self.dots.append(self._a_sum - self.backend.to_numpy(kept)[:, 0].astype(np.float64))
        self.scores.append(scores[:, 0])

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.dots), np.concatenate(self.scores)


def infidelity(model: object, x: np.ndarray, attribution: object, target: int | None = None, *,
               n_perturbations: int = 200, grid_size: object = 4, p_keep: float = 0.7,
               baseline: object = 0.0, normalize: bool = True, random_state: object = 0,
               progress: bool | None = None) -> float:
    """Infidelity (Yeh et al. 2019, eq. 2) under random removal of smooth regions.

    ``E[(beta * sum(M * a) - (f(x) - f(x - M * (x - b))))**2]`` over random masks ``M``
    (H, W) with values in [0, 1], where ``a`` is the map, ``b`` the baseline and ``f`` the
    target's score. ``M`` is one minus a RISE mask (a ``grid_size`` grid whose cells are
    kept with probability ``p_keep``, upsampled and shifted), so each perturbation
    removes a few smooth blobs of the image. The map is read as the score each pixel
    contributes relative to the baseline (the convention of occlusion, RISE, LIME, SHAP,
    gradient x input and integrated gradients); a model linear in the pixels with
    ``a = sum over channels of w * (x - b)`` has infidelity 0.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    x : ndarray
        One sample in the adapter's layout.
    attribution : Explanation or ndarray (H, W)
    target : int, optional
        Default: the Explanation's target, else the top class.
    n_perturbations : int, default 200
        Random masks, one model query each.
    grid_size : int or (gh, gw), default 4
    p_keep : float in (0, 1], default 0.7
        Probability that a grid cell is left alone.
    baseline : baseline spec, default 0.0
        What removed pixels become.
    normalize : bool, default True
        Scale the map by the least-squares optimal ``beta`` first (as Captum's
        ``normalize=True``), so that maps of different units compare; ``beta = 1``
        otherwise.
    random_state : int, Generator or None, default 0
        Seed of the masks (an int gives every method the same masks).
    progress : bool or None

    Returns
    -------
    float
        Infidelity in squared score units (0 is perfect).
    """
    owner = "infidelity"
    n = check_int(n_perturbations, "n_perturbations", owner)
    grid = check_int_tuple(grid_size, "grid_size", owner)
    p = check_float(p_keep, "p_keep", owner, low=0.0, high=1.0, low_open=True)
    baseline = check_baseline(baseline, owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    spatial = adapter.layout.spatial_shape(x.shape)
    amap, map_target = as_map(attribution, spatial, owner)
    target, ref = resolve_target(adapter, x, target, map_target, owner, need_reference=True)
    if target.n_outputs != 1:
        raise ValueError(f"{owner} scores one scalar, but the target has {target.n_outputs} ({target.names}); "
                         f"pass target.subset(i) or an Explanation of one target.")
    base = resolve_baseline(baseline, x, adapter.layout, rng)
    collector = _DotCollector(adapter.backend, amap, adapter.dtype)
    plan = engine.Plan(RandomGridSampler(spatial, n, grid, p, rng),
                       BlendRenderer(x, base, adapter.layout, adapter.backend, adapter.dtype), collector)
    with target_in_range(target, owner):
        engine.run(plan, adapter, target, progress=progress, desc=owner)
    dots, scores = collector.finalize()
    return infidelity_from_pairs(dots, ref[0] - scores, normalize=normalize)


def infidelity_from_pairs(dots: np.ndarray, drops: np.ndarray, *, normalize: bool) -> float:
    """``mean((beta * dots - drops)**2)``; ``beta`` least-squares optimal when ``normalize`` else 1."""
    beta = 1.0
    if normalize:
        denom = float(np.mean(dots * dots))
        beta = float(np.mean(dots * drops)) / denom if denom > 0 else 0.0
    return float(np.mean((beta * dots - drops) ** 2))


def max_sensitivity(model: object, explainer: object, x: np.ndarray, target: int | None = None, *,
                    radius: float = 0.02, n_samples: int = 10, relative: bool = True,
                    random_state: object = 0, reference: object = None) -> float:
    """Max-sensitivity (Yeh et al. 2019, eq. 3), estimated by Monte Carlo as Captum's ``sensitivity_max``.

    ``max_j ||Phi(x + u_j) - Phi(x)|| / ||Phi(x)||`` over ``n_samples`` points ``u_j``
    drawn uniformly from the L-infinity ball of ``radius`` (Frobenius norms of the
    ``(H, W)`` maps; the ratio is not divided when ``relative=False`` or when
    ``||Phi(x)|| = 0``). The target stays that of the unperturbed explanation.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    explainer : object with ``explain(model, x, target)``
        Re-run ``n_samples`` times; a sampling method should have an int
        ``random_state`` so that only the input changes.
    x : ndarray
        One sample in the adapter's layout.
    target : int, optional
    radius : float, default 0.02
        Half-width of the noise, in the units of ``x``.
    n_samples : int, default 10
    relative : bool, default True
    random_state : int, Generator or None, default 0
        Seed of the noise.
    reference : Explanation, optional
        The explanation of ``x`` if already computed (saves one run).

    Returns
    -------
    float
        0 for a map that does not change (for example a constant map).
    """
    owner = "max_sensitivity"
    if not hasattr(explainer, "explain"):
        raise TypeError(f"The 'explainer' argument of {owner} must have an explain(model, x, target) "
                        f"method. Got {type(explainer).__name__}.")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not radius > 0:
        raise ValueError(f"The 'radius' argument of {owner} must be a real number > 0. Got {radius!r}.")
    n = check_int(n_samples, "n_samples", owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    e0 = reference if reference is not None else explainer.explain(adapter, x, target)
    a0, t0 = as_map(e0, None, owner)
    target = t0 if target is None else target
    norm0 = float(np.linalg.norm(a0)) if relative else 0.0
    worst = 0.0
    for _ in range(n):
        noisy = x + rng.uniform(-radius, radius, size=x.shape).astype(x.dtype)
        a, _ = as_map(explainer.explain(adapter, noisy, target), a0.shape, owner)
        worst = max(worst, float(np.linalg.norm(a - a0)))
    return worst / norm0 if norm0 > 0 else worst
