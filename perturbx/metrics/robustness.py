"""Infidelity and sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019), local Lipschitz estimate.

Infidelity asks whether the map predicts how much the score changes when parts of the
input are perturbed; max- and average sensitivity ask how much the map itself changes
when the input moves a little, and the local Lipschitz estimate (Alvarez-Melis &
Jaakkola 2018) how much per unit of input change. Infidelity draws fresh random masks
for every perturbation (Quantus 0.6's ``Infidelity`` repeats one deterministic sweep of
patches ``n_perturb_samples`` times, so its expectation is over a single draw).
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

from ._common import as_map, check_real, resolve_target, target_in_range

__all__ = ["avg_sensitivity", "explain_perturbed", "infidelity", "lipschitz_ratios", "local_lipschitz_estimate",
           "max_sensitivity", "perturbed_inputs", "sensitivity_ratios"]


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


def perturbed_inputs(x: np.ndarray, noises) -> np.ndarray:
    """``x + noise`` for each noise, ``(n, *x.shape)`` in the dtype of ``x``."""
    return np.stack([(x + noise).astype(x.dtype) for noise in noises])


def explain_perturbed(adapter, explainer, xs: np.ndarray, target: object, owner: str,
                      shape: tuple[int, int]) -> np.ndarray:
    """The maps ``(n, H, W)`` of the inputs ``xs`` ``(n, *sample_shape)``.

    The explainer batches its own model queries through the adapter; the target stays
    that of the unperturbed explanation.
    """
    return np.stack([as_map(explainer.explain(adapter, xi, target), shape, owner)[0] for xi in xs])


def _start(model: object, explainer: object, x: np.ndarray, target: object, n_samples: int, random_state: object,
           reference: object, owner: str):
    """``(adapter, x, a0, target, n, rng)`` shared by the sensitivity metrics."""
    if not hasattr(explainer, "explain"):
        raise TypeError(f"The 'explainer' argument of {owner} must have an explain(model, x, target) "
                        f"method. Got {type(explainer).__name__}.")
    n = check_int(n_samples, "n_samples", owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    e0 = reference if reference is not None else explainer.explain(adapter, x, target)
    a0, t0 = as_map(e0, adapter.layout.spatial_shape(x.shape), owner)
    return adapter, x, a0, (t0 if target is None else target), n, rng


def sensitivity_ratios(a0: np.ndarray, maps: np.ndarray, *, relative: bool = True) -> np.ndarray:
    """``||a_j - a0|| / ||a0||`` for each map ``a_j`` (Frobenius norms; not divided when not ``relative`` or
    ``||a0|| = 0``)."""
    diffs = np.linalg.norm((maps - a0[None]).reshape(len(maps), -1), axis=1)
    norm0 = float(np.linalg.norm(a0)) if relative else 0.0
    return diffs / norm0 if norm0 > 0 else diffs


def _check_radius(radius: object, owner: str) -> float:
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not radius > 0:
        raise ValueError(f"The 'radius' argument of {owner} must be a real number > 0. Got {radius!r}.")
    return float(radius)


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
    radius = _check_radius(radius, owner)
    adapter, x, a0, target, n, rng = _start(model, explainer, x, target, n_samples, random_state, reference, owner)
    xs = perturbed_inputs(x, (rng.uniform(-radius, radius, size=x.shape) for _ in range(n)))
    maps = explain_perturbed(adapter, explainer, xs, target, owner, a0.shape)
    return float(sensitivity_ratios(a0, maps, relative=relative).max())


def avg_sensitivity(model: object, explainer: object, x: np.ndarray, target: int | None = None, *,
                    radius: float = 0.02, n_samples: int = 10, relative: bool = True,
                    random_state: object = 0, reference: object = None) -> float:
    """Average sensitivity (Yeh et al. 2019): the mean, not the max, of :func:`max_sensitivity`'s ratios.

    ``mean_j ||Phi(x + u_j) - Phi(x)|| / ||Phi(x)||`` over ``n_samples`` uniform draws
    from the L-infinity ball of ``radius``; parameters are those of
    :func:`max_sensitivity` (Quantus's ``AvgSensitivity`` with ``lower_bound=radius``).

    Returns
    -------
    float
        Lower is better; 0 for a map that does not change.
    """
    owner = "avg_sensitivity"
    radius = _check_radius(radius, owner)
    adapter, x, a0, target, n, rng = _start(model, explainer, x, target, n_samples, random_state, reference, owner)
    xs = perturbed_inputs(x, (rng.uniform(-radius, radius, size=x.shape) for _ in range(n)))
    maps = explain_perturbed(adapter, explainer, xs, target, owner, a0.shape)
    return float(sensitivity_ratios(a0, maps, relative=relative).mean())


def lipschitz_ratios(a0: np.ndarray, maps: np.ndarray, x0: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``||a_j - a0||_2 / ||x_j - x0||_2`` for each perturbed input ``x_j`` and its map ``a_j`` (n,)."""
    num = np.linalg.norm((maps - a0[None]).reshape(len(maps), -1), axis=1)
    den = np.linalg.norm((np.asarray(xs, np.float64) - np.asarray(x0, np.float64)[None]).reshape(len(xs), -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def local_lipschitz_estimate(model: object, explainer: object, x: np.ndarray, target: int | None = None, *,
                             std: float = 0.1, n_samples: int = 10, random_state: object = 0,
                             reference: object = None) -> float:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): ``max_j ||a(x_j) - a(x)|| / ||x_j - x||``.

    The points ``x_j = x + N(0, std^2)`` (Quantus's default perturbation: Gaussian noise of
    ``perturb_std=0.1``); Euclidean norms of the flattened maps and inputs.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    explainer : object with ``explain(model, x, target)``
    x : ndarray
    target : int, optional
    std : float, default 0.1
        Standard deviation of the noise, in the units of ``x``.
    n_samples : int, default 10
    random_state : int, Generator or None, default 0
    reference : Explanation, optional

    Returns
    -------
    float
        Map units per input unit; lower is better.
    """
    owner = "local_lipschitz_estimate"
    std = check_real(std, "std", owner)
    adapter, x, a0, target, n, rng = _start(model, explainer, x, target, n_samples, random_state, reference, owner)
    xs = perturbed_inputs(x, (rng.normal(0.0, std, size=x.shape) for _ in range(n)))
    maps = explain_perturbed(adapter, explainer, xs, target, owner, a0.shape)
    return float(lipschitz_ratios(a0, maps, x, xs).max())
