"""Deletion and insertion curves (Petsiuk, Das & Saenko 2018, "RISE", section 4.1).

Deletion removes pixels from the input in decreasing order of attribution, ``step``
pixels at a time, replacing them by a substrate (zeros in the paper), and records the
model's score for the target after every step; a faithful map makes the score fall
fast (low area under the curve). Insertion starts from the substrate (a blurred copy
in the paper) and puts the input's pixels back in the same order; a faithful map makes
the score rise fast (high area).

The steps run through the same machinery as every perturbation method: a sampler
yields the step numbers in chunks of the adapter's batch size, each chunk turns into
keep-masks on the model's backend, :class:`~perturbx.renderers.BlendRenderer` blends
input and substrate, and a collector keeps one score per step. Memory is one chunk of
masks plus the curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from perturbx import engine
from perturbx._utils import check_int, check_random_state
from perturbx.adapters import as_adapter
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.renderers import BlendRenderer

from ._common import as_map, resolve_target, target_in_range, target_label

__all__ = ["Curve", "deletion", "insertion", "pixel_order"]

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


@dataclass
class Curve:
    """A deletion or insertion curve for one sample and one target.

    Attributes
    ----------
    kind : {"deletion", "insertion"}
    fractions : ndarray (S + 1,)
        Fraction of the pixels removed (deletion) or inserted (insertion) at each step,
        from 0 to 1.
    scores : ndarray (S + 1,)
        The target's scalar at each step, in the model's output units.
    target : int or Target
        The class index for a class target, else the bound :mod:`perturbx.targets` target.
    step : int
        Pixels removed or inserted per step.
    n_queries : int
        Model rows evaluated to draw the curve.
    params : dict
        The substrate and step used.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    target: object
    step: int
    n_queries: int
    params: dict = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """Area under the curve over the fraction axis [0, 1] (trapezoidal rule)."""
        return float(_trapezoid(self.scores, self.fractions))


def pixel_order(attribution: np.ndarray) -> np.ndarray:
    """Rank of every pixel ``(H, W)`` in decreasing attribution (0 = most important).

    Ties keep raster order (a stable sort), so the order is deterministic.
    """
    flat = np.asarray(attribution, dtype=np.float64).ravel()
    order = np.argsort(-flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(attribution))


@dataclass(frozen=True)
class StepChunk:
    """Steps ``steps`` (n,) of a curve; pixels of rank < ``step * k`` are moved at step k."""

    steps: np.ndarray
    sampler: StepSampler

    @property
    def size(self) -> int:
        return len(self.steps)

    def materialize(self, backend, dtype):
        """Keep-masks ``(n, H, W)``: 1 where the pixel shows the input, 0 where the substrate."""
        ranks = self.sampler.ranks_on(backend)
        moved = ranks[None, :] < backend.asarray(self.steps[:, None] * self.sampler.step, np.int64)
        keep = ~moved if self.sampler.kind == "deletion" else moved
        return backend.cast(keep, dtype).reshape(len(self.steps), *self.sampler.spatial)


class StepSampler:
    """Yields the steps ``first .. n_steps`` of a deletion or insertion curve in chunks."""

    chunk_type = StepChunk

    def __init__(self, ranks: np.ndarray, step: int, kind: str, first: int) -> None:
        self.spatial = tuple(ranks.shape)
        self.step, self.kind, self.first = step, kind, first
        self.n_steps = math.ceil(ranks.size / step)
        self.n_total = self.n_steps + 1 - first
        self._ranks = ranks.ravel()
        self._cache: dict[tuple[str, str], object] = {}

    def ranks_on(self, backend):
        key = (backend.name, str(backend.device))
        if key not in self._cache:
            self._cache[key] = backend.asarray(self._ranks, np.int64)
        return self._cache[key]

    def chunks(self, chunk_size: int) -> Iterator[StepChunk]:
        for start in range(self.first, self.n_steps + 1, chunk_size):
            yield StepChunk(np.arange(start, min(start + chunk_size, self.n_steps + 1)), self)


class CurveCollector:
    """Estimator that keeps the score of every step (the curve is small)."""

    chunk_type = StepChunk

    def __init__(self, n_steps: int) -> None:
        self.scores = np.full(n_steps + 1, np.nan)

    def update(self, chunk: StepChunk, masks, scores: np.ndarray) -> None:
        self.scores[chunk.steps] = scores[:, 0]

    def finalize(self) -> np.ndarray:
        return self.scores


def _curve(kind: str, model: object, x: np.ndarray, attribution: object, target: int | None, step: int | None,
           substrate: object, random_state: object, progress: bool | None) -> Curve:
    owner = kind
    adapter = as_adapter(model)
    x = adapter.check_sample(x)
    spatial = adapter.layout.spatial_shape(x.shape)
    amap, map_target = as_map(attribution, spatial, owner)
    step = spatial[1] if step is None else check_int(step, "step", owner)
    substrate = check_baseline(substrate, owner)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    before = adapter.n_queries
    target, ref = resolve_target(adapter, x, target, map_target, owner)
    if target.n_outputs != 1:
        raise ValueError(f"{owner} records one scalar per step, but the target has {target.n_outputs} "
                         f"({target.names}); pass target.subset(i) or an Explanation of one target.")
    base = resolve_baseline(substrate, x, adapter.layout, rng)
    first = 1 if kind == "deletion" and ref is not None else 0  # a deletion curve starts at the input
    sampler = StepSampler(pixel_order(amap), step, kind, first)
    collector = CurveCollector(sampler.n_steps)
    if first:
        collector.scores[0] = ref[0]
    renderer = BlendRenderer(x, base, adapter.layout, adapter.backend, adapter.dtype)
    with target_in_range(target, owner):
        engine.run(engine.Plan(sampler, renderer, collector), adapter, target, progress=progress, desc=kind)
    n_pixels = amap.size
    fractions = np.minimum(np.arange(sampler.n_steps + 1) * step, n_pixels) / n_pixels
    return Curve(kind, fractions, collector.finalize(), target_label(target), step, adapter.n_queries - before,
                 {"step": step, "substrate": substrate if not isinstance(substrate, np.ndarray) else "array"})


def deletion(model: object, x: np.ndarray, attribution: object, target: int | None = None, *,
             step: int | None = None, substrate: object = 0.0, random_state: object = None,
             progress: bool | None = None) -> Curve:
    """Deletion curve: remove pixels in decreasing order of attribution (lower AUC is better).

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        The model, as for an explainer. The curve uses its scores as they come (use
        ``Torch(..., output="probs")`` for the paper's probabilities).
    x : ndarray
        One sample in the adapter's layout, no batch axis.
    attribution : Explanation or ndarray (H, W)
        The map that orders the pixels; all channels of a pixel are removed together.
    target : int, optional
        Class whose score is recorded; default: the Explanation's target, else the
        model's top class for ``x``.
    step : int, optional
        Pixels removed per step; default the image width (one row's worth, as the
        paper's code). The curve has ``ceil(H * W / step) + 1`` points.
    substrate : float, str, array or callable, default 0.0
        What removed pixels become, any ``baseline=`` of :mod:`perturbx.baselines`
        ("blur", "mean", a number, an array).
    random_state : int, Generator or None
        Only used by a "noise" substrate.
    progress : bool or None

    Returns
    -------
    Curve
        ``curve.auc`` is the area under the curve, in score units.

    Notes
    -----
    Queries: ``ceil(H * W / step) + 1`` (the first point is the unperturbed input).
    With neither ``target`` nor an Explanation, the top class comes from that first point.
    """
    return _curve("deletion", model, x, attribution, target, step, substrate, random_state, progress)


def insertion(model: object, x: np.ndarray, attribution: object, target: int | None = None, *,
              step: int | None = None, substrate: object = "blur", random_state: object = None,
              progress: bool | None = None) -> Curve:
    """Insertion curve: start from the substrate, insert pixels in decreasing order (higher AUC is better).

    Parameters are those of :func:`deletion`; the substrate defaults to ``"blur"``
    (:class:`perturbx.baselines.Blur`, the paper's blurred canvas).

    Returns
    -------
    Curve

    Notes
    -----
    Queries: ``ceil(H * W / step) + 1``, every step from the bare substrate to the full
    input; one more to find the top class when neither ``target`` nor an Explanation
    says which class.
    """
    return _curve("insertion", model, x, attribution, target, step, substrate, random_state, progress)
