"""Argument handling shared by the metrics: attribution maps, masks and targets."""

from __future__ import annotations

import contextlib

import numpy as np

from perturbx.explanation import Explanation
from perturbx.targets import BindInfo, Class, Target, bind, check_scores, evaluate


def as_map(attribution: object, spatial: tuple[int, int] | None, owner: str) -> tuple[np.ndarray, object]:
    """One attribution map ``(H, W)`` as float64, and the target it explains when known.

    The target is the Explanation's bound :class:`~perturbx.targets.Target` (a class index
    for an Explanation made without one), None for a bare map.

    Parameters
    ----------
    attribution : Explanation or array-like (H, W)
        An :class:`~perturbx.Explanation` of one target, or a bare map.
    spatial : (H, W) or None
        Expected size of the map (the sample's spatial size); None skips the check.
    owner : str
        Name of the calling metric, for error messages.
    """
    target = None
    if isinstance(attribution, Explanation):
        if attribution.attributions.ndim != 2:
            raise ValueError(f"{owner} scores one map at a time, but the Explanation holds "
                             f"{len(attribution.targets)} targets (attributions of shape "
                             f"{attribution.attributions.shape}); pass e.attributions[i] and target=e.targets[i].")
        target = attribution.target if attribution.target is not None else int(attribution.targets[0])
        attribution = attribution.attributions
    try:
        a = np.asarray(attribution, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The 'attribution' argument of {owner} must be an Explanation or a numeric "
                        f"array (H, W). Got {type(attribution).__name__}.") from exc
    if a.ndim != 2:
        raise ValueError(f"The 'attribution' argument of {owner} must be one map of shape (H, W). "
                         f"Got shape {a.shape}.")
    if spatial is not None and a.shape != tuple(spatial):
        raise ValueError(f"The 'attribution' argument of {owner} has shape {a.shape} but the sample's "
                         f"spatial size is {tuple(spatial)}; the map must cover the sample pixel for pixel.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"The 'attribution' argument of {owner} contains NaN or infinite values.")
    return a, target


def as_mask(mask: object, shape: tuple[int, int], owner: str) -> np.ndarray:
    """A ground-truth mask ``(H, W)`` as bool, checked against the map's shape."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"The 'mask' argument of {owner} has shape {m.shape} but the attribution map "
                         f"has shape {tuple(shape)}; they must match.")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"The 'mask' argument of {owner} must be boolean (or 0/1). Got values other "
                             f"than 0 and 1 (dtype {m.dtype}).")
        m = m.astype(bool)
    return m


def reference_output(adapter, x: np.ndarray) -> object:
    """The model's raw output for the unperturbed sample (one query)."""
    return adapter.predict_raw(adapter.backend.asarray(x[None], adapter.dtype))


def resolve_target(adapter, x: np.ndarray, target: object, from_map: object, owner: str,
                   *, need_reference: bool = False) -> tuple[Target, np.ndarray | None]:
    """The bound target a metric scores, and the target's scalars ``(T,)`` for ``x`` when they were computed.

    ``target`` (an int or a :mod:`perturbx.targets` target), else the explanation's
    (``from_map``), else the model's top class. A class index needs no query (its range is
    checked when the model answers, :func:`target_in_range`); a target that must be bound
    (the top class, every detection, ...) or ``need_reference`` costs one query for ``x``.
    """
    if target is None:
        target = from_map
    elif isinstance(target, bool) or (not isinstance(target, (int, np.integer, Target))) or (
            isinstance(target, (int, np.integer)) and target < 0):
        raise TypeError(f"The 'target' argument of {owner} must be a non-negative int, a target from "
                        f"perturbx.targets or None. Got {target!r}.")
    if isinstance(target, (int, np.integer)):
        target = Class(int(target))
    if target is not None and target.bound and not need_reference:
        return target, None
    output = reference_output(adapter, x)
    if target is None or not target.bound:
        info = BindInfo(adapter.layout.spatial_shape(x.shape), adapter._model_name())
        return bind(Class(None) if target is None else target, output, info)
    if isinstance(target, Class) and target.output is None and target.score == "output":
        n_classes = check_scores(output, 1, adapter._model_name()).shape[1]
        if max(target.labels) >= n_classes:
            raise ValueError(f"The 'target' argument of {owner} is {target_label(target)} but the model returns "
                             f"{n_classes} classes; use a class index in [0, {n_classes - 1}].")
    return target, evaluate(target, output, 1, adapter._model_name())[0]


def target_label(target: Target) -> object:
    """How a metric's result names its target: the class index for one class, else the target."""
    if isinstance(target, Class) and target.n_outputs == 1:
        return int(target.labels[0])
    return target


@contextlib.contextmanager
def target_in_range(target: object, owner: str):
    """Turn the engine's IndexError for a class the model does not return into a ValueError."""
    try:
        yield
    except IndexError as exc:
        if "out of bounds" not in str(exc):
            raise
        raise ValueError(f"The 'target' argument of {owner} is {target_label(target)} but the model returns "
                         f"fewer classes ({exc}); use a class index the model returns.") from exc


ORDERS = ("morf", "lerf", "random")


def pixel_ranks(attribution: np.ndarray, order: str = "morf", rng: np.random.Generator | None = None) -> np.ndarray:
    """Rank of every pixel ``(H, W)`` (0 = first moved) in the given order.

    ``"morf"``: most relevant first (decreasing attribution); ``"lerf"``: least relevant
    first (increasing attribution); ``"random"``: a uniform random permutation from
    ``rng``, whatever the map. Ties keep raster order (a stable sort), so the order is
    deterministic and all channels of a pixel always move together.
    """
    flat = np.asarray(attribution, dtype=np.float64).ravel()
    if order == "random":
        if rng is None:
            raise ValueError("pixel_ranks(order='random') needs a random generator (rng).")
        sequence = rng.permutation(flat.size)
    else:
        sequence = np.argsort(-flat if order == "morf" else flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[sequence] = np.arange(flat.size)
    return ranks.reshape(np.shape(attribution))


def prepare(model: object, x: object, attribution: object, target: object, owner: str, *,
            need_reference: bool = False):
    """``(adapter, x, map (H, W), bound target of one scalar, reference scalars or None)`` for a metric."""
    from perturbx.adapters import as_adapter

    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    amap, map_target = as_map(attribution, adapter.layout.spatial_shape(x.shape), owner)
    bound, ref = resolve_target(adapter, x, target, map_target, owner, need_reference=need_reference)
    one_scalar(bound, owner)
    return adapter, x, amap, bound, ref


def one_scalar(target: Target, owner: str) -> None:
    """Raise ValueError unless the bound target gives one scalar per row."""
    if target.n_outputs != 1:
        raise ValueError(f"{owner} scores one scalar, but the target has {target.n_outputs} ({target.names}); "
                         f"pass target.subset(i) or an Explanation of one target.")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors; NaN when either is constant (no correlation is defined)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    da, db = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum() / denom) if denom > 0 else float("nan")


def torch_module_of(model: object, argument: str, owner: str):
    """The ``torch.nn.Module`` behind ``model`` (a module or a Torch adapter), else a TypeError naming ``argument``."""
    from perturbx.adapters import Torch

    if isinstance(model, Torch):
        return model.module
    module_type = type(model).__module__.split(".")[0]
    if module_type == "torch":
        import torch

        if isinstance(model, torch.nn.Module):
            return model
    raise TypeError(f"The {argument!r} argument of {owner} must be a torch.nn.Module or a "
                    f"perturbx.adapters.Torch adapter: {owner} reads the model's parameters or layers, which a "
                    f"{type(model).__name__} does not expose (a remote, ONNX or plain-function model is only "
                    f"answers). Pass the torch model itself.")


def check_real(value: object, name: str, owner: str, *, low: float = 0.0, low_open: bool = True) -> float:
    """A finite real ``> low`` (``>= low`` when not ``low_open``), else a ValueError naming ``name``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and np.isfinite(value) and (value > low if low_open else value >= low)
    if not ok:
        sign = ">" if low_open else ">="
        raise ValueError(f"The {name!r} argument of {owner} must be a finite real number {sign} {low:g}. "
                         f"Got {value!r}.")
    return float(value)


def trapezoid(y: np.ndarray, x: np.ndarray | None = None) -> float:
    """Area under ``y`` by the trapezoidal rule (over ``x``, else unit spacing); any numpy version.

    numpy 2.4 removed ``np.trapz`` and numpy < 2 lacks ``np.trapezoid``; this is neither.
    """
    y = np.asarray(y, dtype=np.float64)
    dx = np.ones(len(y) - 1) if x is None else np.diff(np.asarray(x, dtype=np.float64))
    return float(np.sum(dx * (y[1:] + y[:-1])) / 2.0) if len(y) > 1 else 0.0
