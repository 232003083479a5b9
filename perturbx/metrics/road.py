"""ROAD: remove and debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022).

Removing pixels by replacing them with a constant leaks which pixels were removed (the
mask's shape is information the model can read). ROAD fills them instead by *noisy
linear imputation*: each removed pixel takes the weighted mean of its eight neighbours
(1/6 for the four edge neighbours, 1/12 for the diagonal ones), solved jointly for all
removed pixels as one sparse linear system per channel, plus Gaussian noise of standard
deviation ``noise``. The score is recorded after removing each percentage of the pixels,
most relevant first (MoRF: a faithful map makes it fall fast) or least relevant first
(LeRF: it should stay high).

The percentages stream through :func:`perturbx.engine.run` like every perturbation: a
rank sampler yields keep-masks in chunks of the adapter's batch size and
:class:`ImputationRenderer` turns each chunk into imputed images (on the host: a sparse
solve), which the adapter scores in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perturbx._utils import check_choice, check_random_state
from perturbx.targets import Class, Target, check_scores

from ._common import ORDERS, pixel_ranks, prepare, target_label, trapezoid
from ._perturb import RankSampler, score_perturbations

__all__ = ["ImputationRenderer", "RoadCurve", "noisy_linear_imputation", "road"]

#: (row offset, column offset, weight) of the eight neighbours in the imputation
NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6),
              (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))


def noisy_linear_imputation(x_chw: np.ndarray, removed: np.ndarray, noise: float = 0.01,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """Fill the ``removed`` pixels of an image by the neighbour-weighted linear system, plus noise.

    Parameters
    ----------
    x_chw : ndarray (C, H, W)
    removed : bool ndarray (H, W)
    noise : float, default 0.01
        Standard deviation of the Gaussian noise added to each imputed value (units of x).
    rng : numpy Generator, optional
        Source of the noise (needed when ``noise > 0``).

    Returns
    -------
    ndarray (C, H, W), float64
        ``x`` where not removed; the imputed values (the same for every channel's system
        matrix, with each channel's own right-hand side) where removed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = x_chw.shape
    flat = np.asarray(x_chw, dtype=np.float64).reshape(c, h * w)
    out = flat.copy()
    idx = np.flatnonzero(removed)
    if idx.size == 0:
        return out.reshape(c, h, w)
    var = np.full(h * w, -1, dtype=np.int64)
    var[idx] = np.arange(idx.size)
    rows, cols, vals = [], [], []
    diag = np.zeros(idx.size)
    rhs = np.zeros((idx.size, c))
    r, q = np.divmod(idx, w)
    for dr, dq, weight in NEIGHBOURS:
        rr, qq = r + dr, q + dq
        valid = (rr >= 0) & (rr < h) & (qq >= 0) & (qq < w)
        eq = np.flatnonzero(valid)
        nb = rr[valid] * w + qq[valid]
        diag[eq] += weight
        unknown = var[nb] >= 0
        rows.append(eq[unknown])
        cols.append(var[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        rhs[eq[~unknown]] += weight * flat[:, nb[~unknown]].T
    rows.append(np.arange(idx.size))
    cols.append(np.arange(idx.size))
    vals.append(diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(idx.size, idx.size)).tocsc()
    solved = np.asarray(spsolve(a, rhs)).reshape(idx.size, c).T
    if noise > 0:
        if rng is None:
            raise ValueError("noisy_linear_imputation with noise > 0 needs rng (a numpy Generator).")
        solved = solved + noise * rng.standard_normal(solved.shape)
    out[:, idx] = solved
    return out.reshape(c, h, w)


class ImputationRenderer:
    """Renderer: keep-masks ``(n, H, W)`` -> the sample with every 0-pixel imputed (:func:`noisy_linear_imputation`)."""

    def __init__(self, x: np.ndarray, layout, backend, dtype, noise: float, rng: np.random.Generator) -> None:
        self.layout, self.backend, self.dtype = layout, backend, dtype
        self.noise, self.rng = noise, rng
        self._x_chw = layout.to_chw_array(np.asarray(x, dtype=np.float64))

    @property
    def sample_nbytes(self) -> int:
        return int(self._x_chw.size) * np.dtype(self.dtype).itemsize

    def render(self, masks):
        keep = self.backend.to_numpy(masks) > 0.5
        images = [self.layout.from_chw_array(noisy_linear_imputation(self._x_chw, ~k, self.noise, self.rng))
                  for k in keep]
        return self.backend.asarray(np.stack(images), self.dtype)


class _ScoreAndTop(Target):
    """A class's score and whether it is still the top class: ``(n, 2)`` from a classifier's scores."""

    def __init__(self, label: int) -> None:
        self.label = int(label)

    def scores(self, outputs) -> np.ndarray:
        s = check_scores(outputs, len(outputs), "the model")
        return np.stack([s[:, self.label], (s.argmax(axis=1) == self.label).astype(np.float64)], axis=1)

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.label, self.label])


@dataclass
class RoadCurve:
    """The ROAD curve of one sample and one target.

    Attributes
    ----------
    percentages : ndarray (P,)
        Percent of the pixels removed (imputed) at each point.
    scores : ndarray (P,)
        The target's scalar after each removal, in the model's output units.
    predicted : bool ndarray (P,) or None
        For a class target: whether the class is still the model's top class (the ROAD
        paper's accuracy, per sample; Quantus's ``ROAD`` output). None for other targets.
    order : {"morf", "lerf", "random"}
    target : int or Target
    n_queries : int
    params : dict
    """

    percentages: np.ndarray
    scores: np.ndarray
    predicted: np.ndarray | None
    order: str
    target: object
    n_queries: int
    params: dict = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """Area under the score curve over the removed fraction (percent / 100)."""
        return trapezoid(self.scores, self.percentages / 100.0)


def road(model: object, x: np.ndarray, attribution: object, target: object = None, *,
         percentages: object = None, order: str = "morf", noise: float = 0.01, random_state: object = 0,
         progress: bool | None = None) -> RoadCurve:
    """ROAD (Rong et al. 2022): score after imputing the top ``p`` % of pixels, for each percentage.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    x : ndarray
        One sample in the adapter's layout.
    attribution : Explanation or ndarray (H, W)
    target : int or perturbx.targets target, optional
        Default: the Explanation's target, else the top class.
    percentages : sequence of float in [0, 100], optional
        Default ``1, 3, ..., 99`` (Quantus's). ``floor(H * W * p / 100)`` pixels are removed.
    order : {"morf", "lerf", "random"}, default "morf"
        Most relevant first, least relevant first, or random (a control).
    noise : float >= 0, default 0.01
        Standard deviation of the imputation noise (units of ``x``; the paper's 0.01 is for
        images in [0, 1]).
    random_state : int, Generator or None, default 0
        Seed of the noise and of the random order.
    progress : bool or None

    Returns
    -------
    RoadCurve

    Notes
    -----
    Queries: ``len(percentages)`` (one more to find the top class when needed). All
    channels of a pixel are imputed together, whatever the number of channels (Quantus
    0.6's ``ROAD`` indexes channels as pixels and works on one-channel images only).
    """
    owner = "road"
    order = check_choice(order, "order", owner, ORDERS)
    pct = np.arange(1, 100, 2, dtype=np.float64) if percentages is None else np.asarray(percentages, np.float64)
    if pct.ndim != 1 or pct.size == 0 or not np.all((pct >= 0) & (pct <= 100)):
        raise ValueError(f"The 'percentages' argument of {owner} must be a non-empty sequence of numbers in "
                         f"[0, 100]. Got {percentages!r}.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"The 'noise' argument of {owner} must be a real number >= 0. Got {noise!r}.")
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter, x, amap, target, _ = prepare(model, x, attribution, target, owner)
    before = adapter.n_queries
    counts = np.floor(amap.size * pct / 100.0).astype(np.int64)
    sampler = RankSampler(pixel_ranks(amap, order, rng), np.zeros_like(counts), counts, remove=True)
    renderer = ImputationRenderer(x, adapter.layout, adapter.backend, adapter.dtype, float(noise), rng)
    is_class = isinstance(target, Class) and target.output is None
    scored = _ScoreAndTop(int(target.labels[0])) if is_class else target
    out = score_perturbations(adapter, x, x, scored, sampler, owner, renderer=renderer, progress=progress)
    return RoadCurve(pct, out[:, 0], out[:, 1] > 0.5 if is_class else None, order, target_label(target),
                     adapter.n_queries - before, {"noise": float(noise), "order": order})
