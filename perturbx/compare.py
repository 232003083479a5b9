"""Run several explainers over many images and score them side by side.

:func:`compare` explains every image with every method, scores each explanation with
the chosen metrics (faithfulness, localisation, robustness, sanity) and its cost
(model queries and seconds), and returns a :class:`Comparison`: one row per image and
method, one aggregated row per method (mean and a bootstrap percentile interval), the
scale of every map, a markdown table and a CSV. Its figures and the self-contained HTML
report are drawn by :mod:`perturbx.report` (matplotlib and jinja2, imported only there).
"""

from __future__ import annotations

import copy
import csv
import datetime
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import as_adapter
from .explanation import Explanation, _display_image
from .metrics.faithfulness import Curve
from .metrics.specs import ZERO_BEST, Case, MetricSpec, direction, resolve_metrics

__all__ = ["CONFIDENCE", "NEGLIGIBLE", "N_RESAMPLES", "Comparison", "MapScale", "compare", "mean_interval"]

COST_COLUMNS = ("queries", "seconds")
#: Coverage of the summary's intervals
CONFIDENCE = 0.95
#: Bootstrap resamples behind each interval
N_RESAMPLES = 2000
#: A map in score units is flagged negligible when max|a| < NEGLIGIBLE * |f(x)|
NEGLIGIBLE = 0.01


@dataclass(frozen=True)
class MapScale:
    """The colour scale of one map and whether its range is negligible.

    Attributes
    ----------
    max_abs : float
        ``max |a|`` over the map's pixels: its colour scale runs from ``-max_abs`` to
        ``+max_abs``, symmetric about zero.
    score : float
        ``f(x)``: the model's score of the explained class on the unperturbed image
        (NaN when the explanation did not say).
    units : {"score", "other"}
        "score" when the map's values are changes of that score, or expected scores
        (the perturbation methods: occlusion, RISE, LIME, KernelSHAP, ...); "other" for
        gradients, activations and optimised masks, whose values are not comparable with
        a score.
    threshold : float
        The share of ``|f(x)|`` below which a map in score units is negligible.
    """

    max_abs: float
    score: float
    units: str
    threshold: float = NEGLIGIBLE

    @property
    def relative(self) -> float:
        """``max_abs / |f(x)|`` for a map in score units (NaN otherwise)."""
        if self.units != "score" or not np.isfinite(self.score) or self.score == 0:
            return float("nan")
        return self.max_abs / abs(self.score)

    @property
    def negligible(self) -> bool | None:
        """``max_abs < threshold * |f(x)|`` for a map in score units; None when not judged."""
        if self.units != "score" or not np.isfinite(self.score):
            return None
        return bool(self.max_abs < self.threshold * abs(self.score))


@dataclass
class Comparison:
    """What :func:`compare` measured.

    Attributes
    ----------
    rows : list of dict
        One per (image, method): ``image``, ``method``, ``target`` and one float per
        column of :attr:`columns` (NaN where a metric has no value).
    methods : list of str
    columns : list of str
        Metric columns, then ``queries`` and ``seconds`` (per explanation).
    maps : dict str -> ndarray (N, H, W) float32
        Every method's map of every image.
    images : ndarray (N, H, W, 3) or (N, H, W)
        The images as displayed (scaled to [0, 1]).
    ground_truth : ndarray (N, H, W) of bool or None
    curves : dict
        ``curves[column][method]`` is a list (one per image) of ``(fractions, scores)``
        for the curve metrics (deletion, insertion).
    params : dict
        Every explainer's parameters, every metric's settings, the model and the call
        (``params["compare"]["wall_seconds"]``: wall-clock seconds of the whole
        :func:`compare` call, explaining and scoring, without any report). A
        ``params["notes"]`` dict (name -> text), when present, is printed in the report.
    versions : dict
        Python, platform and library versions.
    class_names : sequence of str or None
    scores : ndarray (N,) or None
        ``f(x)``: the model's score of the explained class on each unperturbed image.
    map_units : dict str -> {"score", "other"}
        Per method, whether its maps are in units of that score (see :class:`MapScale`).
    """

    rows: list[dict[str, Any]]
    methods: list[str]
    columns: list[str]
    maps: dict[str, np.ndarray]
    images: np.ndarray
    ground_truth: np.ndarray | None = None
    curves: dict[str, dict[str, list]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    scores: np.ndarray | None = None
    map_units: dict[str, str] = field(default_factory=dict)
    _png_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def summary(self, confidence: float = CONFIDENCE, *, n_resamples: int = N_RESAMPLES,
                random_state: int = 0) -> list[dict[str, Any]]:
        """One row per method: ``method``, ``n``, and per column ``<col>`` (mean), ``<col>_lo``, ``<col>_hi``.

        ``[<col>_lo, <col>_hi]`` is the bootstrap percentile interval of the mean over the
        images (:func:`mean_interval`: ``n_resamples`` resamples, seeded with
        ``random_state``), so it stays within the values seen and within the metric's
        range. NaN values (a metric with no value for an image) are left out.
        """
        out = []
        for method in self.methods:
            rows = [r for r in self.rows if r["method"] == method]
            row: dict[str, Any] = {"method": method, "n": len(rows)}
            for col in self.columns:
                values = np.array([r[col] for r in rows], dtype=np.float64)
                row[col], row[f"{col}_lo"], row[f"{col}_hi"] = mean_interval(values, confidence, n_resamples,
                                                                              random_state)
            out.append(row)
        return out

    def best_methods(self, column: str, *, digits: int = 3, summary: list[dict] | None = None) -> list[str]:
        """The methods whose mean of ``column`` is the best, ties at the displayed precision included.

        Best is the highest or lowest mean by the column's direction (closest to 0 for
        ``randomization_spearman``); two means tie when they print alike with ``digits``
        decimals (whole numbers for ``queries``). Empty for a column without a direction
        or with a single method.
        """
        summary = self.summary() if summary is None else summary
        sign = direction(column)
        if not sign or len(summary) < 2:
            return []
        key = abs if column in ZERO_BEST else float
        values = {row["method"]: key(row[column]) for row in summary if np.isfinite(row[column])}
        if not values:
            return []
        best = max(values.values(), key=lambda v: sign * v)
        shown = format_value(best, column_digits(column, digits))
        return [m for m, v in values.items() if format_value(v, column_digits(column, digits)) == shown]

    def map_scale(self, method: str, image: int, *, threshold: float = NEGLIGIBLE) -> MapScale:
        """The colour scale of ``method``'s map of image ``image`` (see :class:`MapScale`)."""
        score = float(self.scores[image]) if self.scores is not None else float("nan")
        heat = np.asarray(self.maps[method][image], dtype=np.float64)
        max_abs = float(np.nanmax(np.abs(heat))) if heat.size else 0.0
        return MapScale(max_abs, score, self.map_units.get(method, "other"), threshold)

    def to_markdown(self, *, per_image: bool = False, digits: int = 3) -> str:
        """The summary as a markdown table: mean, then the interval in brackets; the best means in bold."""
        summary = self.summary()
        best = {c: set(self.best_methods(c, digits=digits, summary=summary)) for c in self.columns}
        head = ["method", "n"] + [column_label(c) for c in self.columns]
        lines = [_md_row(head), _md_row(["---"] * len(head))]
        for row in summary:
            cells = []
            for c in self.columns:
                mean, interval = format_cell(row, c, digits)
                mean = f"**{mean}**" if row["method"] in best[c] else mean
                cells.append(f"{mean} {interval}".strip())
            lines.append(_md_row([row["method"], str(row["n"]), *cells]))
        if per_image:
            head = ["image", "method", "target", *self.columns]
            lines += ["", _md_row(head), _md_row(["---"] * len(head))]
            lines += [_md_row([str(r["image"]), r["method"], str(r["target"])] +
                              [format_value(r[c], digits) for c in self.columns]) for r in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path, *, summary: bool = False) -> Path:
        """Write the per-image rows (or, with ``summary=True``, the aggregated rows) as CSV."""
        path = Path(path)
        rows = self.summary() if summary else self.rows
        fields = list(rows[0]) if rows else ["method"]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self, *, n_images: int | None = 8, path: str | Path | None = None, dpi: int = 90):
        """Grid of images (rows) x methods (columns), ground truth outlined; needs matplotlib.

        Drawn by :func:`perturbx.report.maps_figure`; returns the Figure (also saved to
        ``path`` when given).
        """
        from .report import maps_figure

        return maps_figure(self, n_images=n_images, path=path, dpi=dpi)

    def plot_curves(self, *, path: str | Path | None = None, dpi: int = 90):
        """Mean deletion / insertion curve of every method (:func:`perturbx.report.curves_figure`)."""
        from .report import curves_figure

        return curves_figure(self, path=path, dpi=dpi)

    def save_figures(self, folder: str | Path, *, n_images: int | None = 8, grid: str = "maps.png",
                     curves: str = "curves.png") -> list[Path]:
        """Write the maps grid and (with curve metrics) the curves as PNG files into ``folder``."""
        from .report import save_figures

        return save_figures(self, folder, n_images=n_images, grid=grid, curves=curves)

    def to_html(self, path: str | Path, *, title: str = "perturbx comparison", n_images: int | None = 8,
                extra_figures: Sequence[tuple[str, bytes]] = ()) -> Path:
        """One self-contained HTML file (:func:`perturbx.report.write_html`); needs matplotlib and jinja2.

        ``extra_figures``: (title, PNG bytes) pairs added as sections, e.g. feature visualisations.
        """
        from .report import write_html

        return write_html(self, path, title=title, n_images=n_images, extra_figures=extra_figures)


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                  random_state: int = 0) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its bootstrap percentile interval.

    Parameters
    ----------
    values : ndarray (n,)
        One value per image; NaN and inf are left out.
    confidence : float, default 0.95
    n_resamples : int, default 2000
    random_state : int, default 0
        Seed of the resampling (``scipy.stats.bootstrap``, ``method="percentile"``).

    Returns
    -------
    (mean, lo, hi) : floats
        NaN, NaN, NaN without finite values; ``lo = hi = NaN`` for a single value. The
        interval is made of means of resamples, so it lies within ``[min, max]`` of the
        values (a share stays in [0, 1]).
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    if np.all(v == v[0]):
        return float(v[0]), float(v[0]), float(v[0])
    ci = stats.bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                         random_state=np.random.default_rng(random_state)).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)


def compare(model: object, images: object, explainers: object, metrics: object = "default",
            ground_truth: object = None, n_jobs: int = 1, *, targets: object = None,
            class_names: Sequence[str] | None = None, random_state: int = 0) -> Comparison:
    """Explain every image with every method and score the explanations.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        The model, as for an explainer (set ``output="probs"`` on a Torch adapter for
        the probability-based deletion/insertion curves of the RISE paper).
    images : ndarray (N, *sample_shape) or sequence of samples
        Samples in the adapter's layout.
    explainers : mapping name -> explainer, or sequence of explainers / method names
        Names are resolved by :mod:`perturbx.registry` with settings for the image size.
    metrics : "default", "all", or sequence of names / :mod:`perturbx.metrics.specs` objects
        Cost (queries, seconds) is always measured.
    ground_truth : ndarray (N, H, W) of bool, optional
        Object masks, for the pointing game and energy pointing.
    n_jobs : int, default 1
        Images explained in parallel threads (each with its own copy of the model);
        seconds per explanation then include the contention.
    targets : ndarray (N,) of int, a target, or a sequence of N targets, optional
        What to explain per image: a class index per image, one :mod:`perturbx.targets`
        target for every image (e.g. ``Region(mask, 1)``), or one per image (e.g. a
        ``Detection(box)`` of each image's object). Each must be one scalar. Default: the
        model's top class (one extra query per image, not charged to any method).
    class_names : sequence of str, optional
        For the report.
    random_state : int, default 0
        Seed of the methods resolved by name.

    Returns
    -------
    Comparison
        Its ``params["compare"]["wall_seconds"]`` is the wall-clock time of this call
        (explaining and scoring every image with every method; no report is written here).
    """
    started = time.perf_counter()
    adapter = as_adapter(model)
    xs = _check_images(adapter, images)
    masks = _check_masks(ground_truth, xs, adapter)
    spatial = adapter.layout.spatial_shape(xs[0].shape)
    named = _named_explainers(explainers, spatial, random_state)
    specs = resolve_metrics(metrics, masks is not None)
    n_jobs = _check_n_jobs(n_jobs)
    target_arr = _targets(adapter, xs, targets)
    blocks = [b for b in np.array_split(np.arange(len(xs)), min(n_jobs, len(xs))) if b.size]
    work = [(_own_copy(adapter) if len(blocks) > 1 else adapter, block) for block in blocks]
    if len(work) == 1:
        results = [_run_block(a, b, xs, masks, target_arr, named, specs) for a, b in work]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=len(work), prefer="threads")(
            delayed(_run_block)(a, b, xs, masks, target_arr, named, specs) for a, b in work)
    return _assemble(results, xs, masks, adapter, named, specs, class_names,
                     {"n_jobs": n_jobs, "targets": "given" if targets is not None else "top class",
                      "n_images": len(xs), "random_state": random_state,
                      "wall_seconds": round(time.perf_counter() - started, 3)})


def _check_images(adapter, images: object) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) or (isinstance(images, Sequence) and not isinstance(images, str)):
        seq = list(images)
    else:
        raise TypeError(f"The 'images' argument of compare must be an array (N, *sample_shape) or a sequence of "
                        f"samples. Got {type(images).__name__}.")
    if not seq:
        raise ValueError("The 'images' argument of compare is empty; pass at least one sample.")
    xs = [adapter.check_sample(x) for x in seq]
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"The images given to compare have different shapes {sorted(shapes)}; resize them to "
                         f"one shape first.")
    return xs


def _check_masks(ground_truth: object, xs: list[np.ndarray], adapter) -> np.ndarray | None:
    if ground_truth is None:
        return None
    masks = np.asarray(ground_truth)
    expected = (len(xs), *adapter.layout.spatial_shape(xs[0].shape))
    if masks.shape != expected:
        raise ValueError(f"The 'ground_truth' argument of compare must be masks of shape (N, H, W) = {expected}. "
                         f"Got shape {masks.shape}.")
    return masks.astype(bool)


def _check_n_jobs(n_jobs: object) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"The 'n_jobs' argument of compare must be an int >= 1 or -1 (all cores). Got {n_jobs!r}.")
    if n_jobs == -1:
        import os

        return max(1, os.cpu_count() or 1)
    return int(n_jobs)


def _named_explainers(explainers: object, spatial: tuple[int, int], random_state: int) -> dict[str, Any]:
    from .registry import canonical_name, make_explainer

    if isinstance(explainers, str):
        explainers = [e for e in explainers.split(",") if e.strip()]
    items = list(explainers.items()) if isinstance(explainers, Mapping) else [(None, e) for e in explainers]
    if not items:
        raise ValueError("The 'explainers' argument of compare is empty; pass at least one method.")
    named: dict[str, Any] = {}
    for name, exp in items:
        if isinstance(exp, str):
            key = canonical_name(exp)
            name, exp = name or key, make_explainer(key, size=spatial, random_state=random_state)
        if not hasattr(exp, "explain"):
            raise TypeError(f"Every explainer given to compare must have an explain(model, x, target) method. "
                            f"Got {type(exp).__name__}.")
        name = str(name or type(exp).__name__)
        if name in named:
            raise ValueError(f"Two explainers given to compare are both named {name!r}; pass a dict with distinct "
                             f"names.")
        named[name] = exp
    return named


def _targets(adapter, xs: list[np.ndarray], targets: object) -> list[object]:
    """One target per image: a class index (int) or a :mod:`perturbx.targets` target."""
    from .targets import Target

    if targets is None:
        return [int(t) for t in np.argmax(adapter.predict(np.stack(xs)), axis=1)]
    if isinstance(targets, Target) or callable(targets):
        return [targets] * len(xs)
    items = list(targets) if isinstance(targets, (Sequence, np.ndarray)) and not isinstance(targets, str) else None
    ok = items is not None and len(items) == len(xs) and all(
        isinstance(t, Target) or (isinstance(t, (int, np.integer)) and not isinstance(t, bool)) for t in items)
    if not ok:
        seen = f"{len(items)} items" if items is not None else type(targets).__name__
        raise ValueError(f"The 'targets' argument of compare must be {len(xs)} class indices or targets (one per "
                         f"image), or one target for every image. Got {seen}.")
    return [t if isinstance(t, Target) else int(t) for t in items]


def _own_copy(adapter):
    """A copy with its own query counter and, for a torch adapter, its own module (hooks stay per thread)."""
    out = copy.copy(adapter)
    out.n_queries = 0
    module = getattr(adapter, "module", None)
    if module is not None:
        out.module = copy.deepcopy(module)
    return out


def _run_block(adapter, block: np.ndarray, xs, masks, targets, named: dict[str, Any],
               specs: list[MetricSpec]) -> list[tuple[list, dict[str, np.ndarray], dict, float]]:
    """Explain and score the images ``block``; per image (rows, maps, curves, f(x) of the target)."""
    out = []
    for i in block:
        i = int(i)
        rows, maps, curves, score = [], {}, {}, float("nan")
        for name, explainer in named.items():
            e = explainer.explain(adapter, xs[i], targets[i])
            target, label = _one_scalar(e, targets[i], i)
            row: dict[str, Any] = {"image": i, "method": name, "target": label}
            case = Case(adapter, xs[i], e, explainer, target, None if masks is None else masks[i])
            for spec in specs:
                for col, value in spec(case).items():
                    if isinstance(value, Curve):
                        curves[(col, name)] = (value.fractions, value.scores)
                        value = value.auc
                    row[col] = float(value)
            row["queries"], row["seconds"] = int(e.n_queries), float(e.seconds)
            rows.append(row)
            maps[name] = _single_map(e)
            if not np.isfinite(score):
                score = _target_score(e)
        out.append((rows, maps, curves, score))
    return out


def _one_scalar(e: object, asked: object, image: int) -> tuple[object, object]:
    """The target a row's metrics score and its label (the class index, or the target's name)."""
    if isinstance(asked, int):
        return asked, asked
    bound = getattr(e, "target", None)
    if bound is None:
        return asked, repr(asked)
    if bound.n_outputs != 1:
        raise ValueError(f"compare explains one scalar per image, but target {asked!r} of image {image} has "
                         f"{bound.n_outputs} ({bound.names}); give one box, class or channel per image.")
    return bound, bound.names[0]


def _single_map(e: object) -> np.ndarray:
    a = e.attributions if isinstance(e, Explanation) else np.asarray(e)
    return np.asarray(a, dtype=np.float32)


def _target_score(e: object) -> float:
    """f(x) of the explained target, from the explanation (NaN when it has none)."""
    scores = np.ravel(np.asarray(getattr(e, "scores", np.nan), dtype=np.float64))
    return float(scores[0]) if scores.size else float("nan")


def _map_units(explainer: object) -> str:
    """"score" when the explainer's maps are changes of the target score (the perturbation methods)."""
    from .explainers.base import PerturbationExplainer

    return "score" if isinstance(explainer, PerturbationExplainer) else "other"


def _assemble(results, xs, masks, adapter, named, specs, class_names, call: dict) -> Comparison:
    per_image = [item for block in results for item in block]
    per_image.sort(key=lambda item: item[0][0]["image"])
    rows = [r for item in per_image for r in item[0]]
    methods = list(named)
    columns = [c for s in specs for c in s.columns] + list(COST_COLUMNS)
    maps = {m: np.stack([item[1][m] for item in per_image]) for m in methods}
    curves: dict[str, dict[str, list]] = {}
    for item in per_image:
        for (col, m), curve in item[2].items():
            curves.setdefault(col, {}).setdefault(m, []).append(curve)
    images = np.stack([_display_image(x, adapter.layout.name) for x in xs]).astype(np.float32)
    params = {"compare": call, "model": repr(adapter),
              "explainers": {m: {"class": type(e).__name__, **_plain(_get_params(e))} for m, e in named.items()},
              "metrics": {s.name: _plain(s.params()) for s in specs},
              "columns": {**{c: {"group": getattr(s, "group", ""), "guide": getattr(s, "guide", "")}
                             for s in specs for c in s.columns},
                          **{c: {"group": "cost", "guide": ""} for c in COST_COLUMNS}}}
    scores = np.array([item[3] for item in per_image], dtype=np.float64)
    return Comparison(rows, methods, columns, maps, images, masks, curves, params, library_versions(),
                      list(class_names) if class_names is not None else None, scores,
                      {m: _map_units(e) for m, e in named.items()})


def _get_params(explainer: object) -> dict:
    get = getattr(explainer, "get_params", None)
    return get() if callable(get) else {}


def _plain(value: object) -> Any:
    """JSON-friendly copy of a parameter dict (arrays and objects become short strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    return repr(value)


def library_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries that shape the results."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("perturbx", "numpy", "scipy", "scikit-image", "scikit-learn", "torch", "onnxruntime",
                 "matplotlib", "jinja2"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "perturbx" not in out:
        from . import __version__

        out["perturbx"] = __version__
    out["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return out


# --- formatting shared by the markdown table and the HTML report -----------------------------------


def column_label(col: str) -> str:
    """The column name with an arrow saying which way is better."""
    arrow = {1: " ↑", -1: " ↓"}.get(direction(col), "")
    return f"{col}{arrow}"


def column_digits(col: str, digits: int = 3) -> int:
    """Decimals shown for a column's means (whole numbers for ``queries``)."""
    return 0 if col == "queries" else digits


def format_value(v: float | None, digits: int = 3) -> str:
    """A number as printed in the tables ("–" for none or NaN; whole numbers from 1000 on)."""
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def format_cell(row: dict, col: str, digits: int = 3) -> tuple[str, str]:
    """A summary cell as (mean, interval): ``("0.351", "[0.120, 0.602]")``; the interval is "" when it is
    unknown (one image) or a single point."""
    d = column_digits(col, digits)
    mean, lo, hi = row[col], row.get(f"{col}_lo", np.nan), row.get(f"{col}_hi", np.nan)
    if not np.isfinite(mean):
        return "–", ""
    if not (np.isfinite(lo) and np.isfinite(hi)) or format_value(lo, d) == format_value(hi, d):
        return format_value(mean, d), ""
    return format_value(mean, d), f"[{format_value(lo, d)}, {format_value(hi, d)}]"


def format_scale(value: float) -> str:
    """A map's ``max |a|`` in two significant digits (``0.0086``, ``0.92``, ``4.6e+02``)."""
    return "0" if value == 0 else f"{value:.2g}"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
